/*
 * router.c - route table and next hops shared by the ip6flow stages.
 *
 * Every change is applied to the standby copy at once (so errors surface
 * where they happen) and logged; dp_router_commit publishes the standby
 * copy, bumps the generation, waits for every worker to pass a quiescent
 * point (RCU QSBR), and only then replays the log onto the copy the workers
 * just left. Workers therefore only ever read a complete table, and FIB
 * memory (tbl8 groups) is never recycled under a reader.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>

#include <rte_byteorder.h>
#include <rte_errno.h>
#include <rte_malloc.h>
#include <rte_rcu_qsbr.h>

#include "router.h"

enum rt_op_kind { OP_NH, OP_ADD, OP_DEL };

struct rt_op {
    uint8_t kind;
    uint8_t family;
    uint8_t plen;
    uint32_t id;
    uint8_t addr[16];
    struct dp_nexthop nh;
};

#define MAX_QSBR_THREADS 128
struct rte_rcu_qsbr *dp_qsbr;

int dp_qsbr_init(void)
{
    struct rte_rcu_qsbr *q, *none = NULL;
    size_t sz;

    if (__atomic_load_n(&dp_qsbr, __ATOMIC_ACQUIRE))
        return 0;
    /* Workers start together and any of them may get here first: the
     * tracker is built whole, then published once (a worker that saw a
     * half-built one registered against max_threads 0 and failed). */
    sz = rte_rcu_qsbr_get_memsize(MAX_QSBR_THREADS);
    q = rte_zmalloc("dp_qsbr", sz, RTE_CACHE_LINE_SIZE);
    if (q == NULL) {
        dp_set_error(ENOMEM, "rcu: no memory for the quiescent-state tracker");
        return -ENOMEM;
    }
    rte_rcu_qsbr_init(q, MAX_QSBR_THREADS);
    if (!__atomic_compare_exchange_n(&dp_qsbr, &none, q, 0, __ATOMIC_ACQ_REL,
                                     __ATOMIC_ACQUIRE))
        rte_free(q);   /* another thread published first */
    return 0;
}

static void copy_free(struct rt_copy *c)
{
    if (c->fib4)
        rte_fib_free(c->fib4);
    if (c->fib6)
        rte_fib6_free(c->fib6);
    rte_free(c->nh);
    memset(c, 0, sizeof(*c));
}

/* What one copy takes: both FIBs' 2^24-entry first levels (2-byte next
 * hops), their groups for longer prefixes, their RIBs, the next hops. */
size_t dp_router_copy_bytes(const struct dp_router_conf *c)
{
    const size_t rib_node = 64;

    return 2 * ((size_t)2 << 24) + (size_t)c->v4_tbl8 * 256 * 2 +
           (size_t)c->v6_tbl8 * 256 * 2 +
           ((size_t)c->v4_max_routes + c->v6_max_routes) * rib_node +
           (size_t)c->max_nexthops * sizeof(struct dp_nexthop);
}

static int copy_create(struct dp_router *r, struct rt_copy *c, int i,
                       const struct dp_router_conf *conf, int socket)
{
    char name[64];
    struct rte_fib_conf f4 = {
        .type = RTE_FIB_DIR24_8,
        .default_nh = DP_NH_NONE,
        .max_routes = (int)conf->v4_max_routes,
        .dir24_8 = {.nh_sz = RTE_FIB_DIR24_8_2B, .num_tbl8 = conf->v4_tbl8},
    };
    struct rte_fib6_conf f6 = {
        .type = RTE_FIB6_TRIE,
        .default_nh = DP_NH_NONE,
        .max_routes = (int)conf->v6_max_routes,
        .trie = {.nh_sz = RTE_FIB6_TRIE_2B, .num_tbl8 = conf->v6_tbl8},
    };

    snprintf(name, sizeof(name), "dp4_%p_%d", (void *)r, i);
    c->fib4 = rte_fib_create(name, socket, &f4);
    snprintf(name, sizeof(name), "dp6_%p_%d", (void *)r, i);
    c->fib6 = rte_fib6_create(name, socket, &f6);
    c->nh = rte_zmalloc_socket("dp_nexthops",
                               sizeof(*c->nh) * conf->max_nexthops,
                               RTE_CACHE_LINE_SIZE, socket);
    if (c->fib4 == NULL || c->fib6 == NULL || c->nh == NULL) {
        dp_set_error(ENOMEM, "cannot allocate the route tables (%u IPv4 / "
                     "%u IPv6 routes): each of the two copies needs about "
                     "%zu MiB of EAL memory (raise eal.memory_mb): %s",
                     conf->v4_max_routes, conf->v6_max_routes,
                     dp_router_copy_bytes(conf) >> 20, rte_strerror(rte_errno));
        copy_free(c);
        return -ENOMEM;
    }
    return 0;
}

int dp_router_create(const struct dp_router_conf *conf, int socket,
                     struct dp_router **out)
{
    struct dp_router *r;
    int rc, i;

    if (conf->max_nexthops < 2 || conf->max_nexthops > 32767) {
        dp_set_error(ERANGE, "router: max_nexthops %u not in 2..32767",
                     conf->max_nexthops);
        return -ERANGE;
    }
    rc = dp_qsbr_init();
    if (rc < 0)
        return rc;
    r = rte_zmalloc_socket("dp_router", sizeof(*r), RTE_CACHE_LINE_SIZE,
                           socket);
    if (r == NULL) {
        dp_set_error(ENOMEM, "router: no memory");
        return -ENOMEM;
    }
    r->max_nh = conf->max_nexthops;
    for (i = 0; i < 2; i++) {
        rc = copy_create(r, &r->copy[i], i, conf, socket);
        if (rc < 0) {
            dp_router_free(r);
            return rc;
        }
    }
    r->active = &r->copy[0];
    *out = r;
    return 0;
}

void dp_router_free(struct dp_router *r)
{
    if (r == NULL)
        return;
    copy_free(&r->copy[0]);
    copy_free(&r->copy[1]);
    free(r->log);
    rte_free(r);
}

static struct rt_copy *standby(struct dp_router *r)
{
    return r->active == &r->copy[0] ? &r->copy[1] : &r->copy[0];
}

static int apply(struct dp_router *r, struct rt_copy *c, const struct rt_op *op)
{
    int rc = 0;

    switch (op->kind) {
    case OP_NH:
        c->nh[op->id] = op->nh;
        return 0;
    case OP_ADD:
        if (op->family == 4) {
            uint32_t ip;
            memcpy(&ip, op->addr, 4);
            rc = rte_fib_add(c->fib4, rte_be_to_cpu_32(ip), op->plen, op->id);
        } else {
            rc = rte_fib6_add(c->fib6, op->addr, op->plen, op->id);
        }
        break;
    case OP_DEL:
        if (op->family == 4) {
            uint32_t ip;
            memcpy(&ip, op->addr, 4);
            rc = rte_fib_delete(c->fib4, rte_be_to_cpu_32(ip), op->plen);
        } else {
            rc = rte_fib6_delete(c->fib6, op->addr, op->plen);
        }
        break;
    }
    return rc;
}

/* Whether a change can alter the route of a flow some worker cached: only
 * flows through FORWARD next hops are cached, and next-hop contents are read
 * live, so rewriting a next hop never needs it. A host route whose address
 * does not route through a FORWARD next hop now (a neighbour on a connected
 * subnet being learnt) cannot either, nor can removing a host route whose
 * next hop (staged) is no longer FORWARD: a flow cached through it finds a
 * non-FORWARD next hop and is routed again. (The caller must not reuse that
 * next-hop id before a generation bump: dp_router_invalidate.) Every other
 * prefix change does. Called before the change is applied to the standby. */
static int invalidates_flows(struct dp_router *r, const struct rt_op *op)
{
    const int host = op->plen == (op->family == 4 ? 32 : 128);
    const struct rt_copy *c;

    if (op->kind == OP_NH)
        return 0;
    if (!host)
        return 1;
    c = op->kind == OP_ADD ? r->active : standby(r);
    return c->nh[rt_lookup(c, op->family, op->addr)].kind == DP_NH_FORWARD;
}

/* Apply to the standby copy now; keep it for the replay after commit. */
static int stage_op(struct dp_router *r, const struct rt_op *op)
{
    int rc;

    if (r->n_log == r->cap_log) {
        unsigned cap = r->cap_log ? r->cap_log * 2 : 64;
        struct rt_op *l = realloc(r->log, cap * sizeof(*l));
        if (l == NULL) {
            dp_set_error(ENOMEM, "router: no memory for staged changes");
            return -ENOMEM;
        }
        r->log = l;
        r->cap_log = cap;
    }
    const int invalidates = invalidates_flows(r, op);

    rc = apply(r, standby(r), op);
    if (rc < 0) {
        dp_set_error(-rc, "router: %s %s/%u: %s",
                     op->kind == OP_ADD ? "add" : "delete",
                     op->family == 4 ? "IPv4" : "IPv6", op->plen,
                     rc == -ENOENT ? "no such route"
                     : rc == -ENOSPC ? "route table full"
                                     : rte_strerror(-rc));
        return rc;
    }
    r->log[r->n_log++] = *op;
    r->invalidate |= invalidates;
    return 0;
}

static int check_family(int family, uint8_t plen)
{
    if ((family != 4 && family != 6) || plen > (family == 4 ? 32 : 128)) {
        dp_set_error(EINVAL, "router: bad family %d or prefix length %u",
                     family, plen);
        return -EINVAL;
    }
    return 0;
}

int dp_router_nh_set(struct dp_router *r, uint32_t id,
                     const struct dp_nexthop *nh)
{
    struct rt_op op = {.kind = OP_NH, .id = id, .nh = *nh};

    if (id == 0 || id >= r->max_nh) {
        dp_set_error(ERANGE, "router: next-hop id %u not in 1..%u", id,
                     r->max_nh - 1);
        return -ERANGE;
    }
    if (nh->kind == DP_NH_FORWARD && nh->port >= DP_MAX_PORTS) {
        dp_set_error(ERANGE, "router: next-hop port %u", nh->port);
        return -ERANGE;
    }
    return stage_op(r, &op);
}

int dp_router_route_add(struct dp_router *r, int family, const uint8_t *prefix,
                        uint8_t plen, uint32_t nh_id)
{
    struct rt_op op = {.kind = OP_ADD, .family = family, .plen = plen,
                       .id = nh_id};
    int rc = check_family(family, plen);

    if (rc < 0)
        return rc;
    if (nh_id == 0 || nh_id >= r->max_nh) {
        dp_set_error(ERANGE, "router: next-hop id %u not in 1..%u", nh_id,
                     r->max_nh - 1);
        return -ERANGE;
    }
    memcpy(op.addr, prefix, family == 4 ? 4 : 16);
    return stage_op(r, &op);
}

int dp_router_route_del(struct dp_router *r, int family, const uint8_t *prefix,
                        uint8_t plen)
{
    struct rt_op op = {.kind = OP_DEL, .family = family, .plen = plen};
    int rc = check_family(family, plen);

    if (rc < 0)
        return rc;
    memcpy(op.addr, prefix, family == 4 ? 4 : 16);
    return stage_op(r, &op);
}

void dp_router_invalidate(struct dp_router *r)
{
    r->invalidate = 1;
}

int dp_router_commit(struct dp_router *r)
{
    struct rt_copy *next = standby(r), *prev = r->active;
    unsigned i;
    int rc;

    __atomic_store_n(&r->active, next, __ATOMIC_RELEASE);
    if (r->invalidate)
        __atomic_add_fetch(&r->gen, 1, __ATOMIC_RELEASE);
    r->invalidate = 0;
    /* Every worker that might still hold `prev` passes a quiescent point. */
    rte_rcu_qsbr_synchronize(dp_qsbr, RTE_QSBR_THRID_INVALID);
    for (i = 0; i < r->n_log; i++) {
        rc = apply(r, prev, &r->log[i]);
        if (rc < 0) {
            /* The copies were identical before this change set, so this
             * cannot happen short of a DPDK bug; say so loudly. */
            dp_set_error(-rc, "router: replay of change %u failed: the two "
                         "table copies differ", i);
            r->n_log = 0;
            return rc;
        }
    }
    r->n_log = 0;
    return (int)(r->gen & INT32_MAX);
}

int dp_router_lookup(struct dp_router *r, int family, const uint8_t *addr,
                     uint32_t *nh_id)
{
    if (family != 4 && family != 6) {
        dp_set_error(EINVAL, "router: bad family %d", family);
        return -EINVAL;
    }
    *nh_id = rt_lookup(r->active, family, addr);
    return 0;
}

int dp_router_nh_get(struct dp_router *r, uint32_t id, struct dp_nexthop *out)
{
    if (id >= r->max_nh) {
        dp_set_error(ERANGE, "router: next-hop id %u", id);
        return -ERANGE;
    }
    *out = r->active->nh[id];
    return 0;
}

int dp_router_set_port(struct dp_router *r, uint16_t port, const uint8_t *mac,
                       int up)
{
    struct rt_port *p;

    if (port >= DP_MAX_PORTS) {
        dp_set_error(ERANGE, "router: port %u", port);
        return -ERANGE;
    }
    p = &r->port[port];
    if (mac)
        memcpy(p->mac, mac, 6);
    p->configured = 1;
    /* The fast path checks the egress state of every packet (the seed's
     * IFF_UP test): no need to invalidate cached flows. */
    __atomic_store_n(&p->up, !!up, __ATOMIC_RELEASE);
    return 0;
}

uint32_t dp_router_generation(const struct dp_router *r)
{
    return __atomic_load_n(&r->gen, __ATOMIC_ACQUIRE);
}
