/*
 * fuzz_env.c - see fuzz_env.h.
 */

#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#if defined(__has_feature)
#if __has_feature(address_sanitizer)
#include <sanitizer/lsan_interface.h>
#define FZ_LSAN 1
#endif
#endif

#include <rte_ethdev.h>
#include <rte_mbuf.h>
#include <rte_ring.h>

#include "fuzz_env.h"

struct dp_pool *fz_pool;
struct dp_worker *fz_worker;
struct dp_router *fz_router;
const uint8_t fz_port_mac[FZ_PORTS][6] = {
    {0x02, 0, 0, 0, 0, 0x01},
    {0x02, 0, 0, 0, 0, 0x02},
};

#define DIE(...)                                                              \
    do {                                                                      \
        fprintf(stderr, "fuzz env: " __VA_ARGS__);                            \
        fprintf(stderr, ": %s\n", dp_last_error());                           \
        abort();                                                              \
    } while (0)

/* ---- router: a fixed table that reaches every next-hop kind -------------- */

struct fz_route {
    int family;
    uint8_t addr[16];
    uint8_t plen;
    uint32_t nh;
    int initially;     /* present after fz_init */
    int present;
};

#define V6(a, b, c, d) {0x20, 0x01, 0x0d, 0xb8, a, b, c, d}
#define V4(a, b, c, d) {a, b, c, d}

static struct fz_route routes[] = {
    /* always there */
    {6, {0}, 0, 1, 1, 1},                     /* ::/0 -> fwd port 1 */
    {6, V6(0, 1, 0, 0), 64, 1, 1, 1},         /* 2001:db8:1::/64 fwd port 1 */
    {6, V6(0, 2, 0, 0), 64, 3, 1, 1},         /* resolve */
    {6, {0x20, 0x01, 0x0d, 0xb8, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xfe}, 128,
     4, 1, 1},                                /* local */
    {6, V6(0xde, 0xad, 0, 0), 48, 5, 1, 1},   /* blackhole */
    {6, V6(0x0b, 0xad, 0, 0), 48, 6, 1, 1},   /* reject */
    {6, V6(0, 3, 0, 0), 64, 7, 1, 1},         /* fwd port 0, mtu 1280 */
    {4, V4(10, 1, 0, 0), 16, 2, 1, 1},        /* fwd port 0 */
    {4, V4(10, 2, 0, 0), 16, 8, 1, 1},        /* fwd port 1, mtu 576 */
    {4, V4(10, 0, 0, 1), 32, 9, 1, 1},        /* local */
    {4, V4(10, 3, 0, 0), 16, 10, 1, 1},       /* resolve */
    {4, V4(10, 66, 0, 0), 16, 5, 1, 1},       /* blackhole */
    {4, V4(10, 99, 0, 0), 16, 6, 1, 1},       /* reject */
    /* What control ops toggle (each toggle commits a new generation).
     * IPv6 toggles stay at /24 or shorter: DPDK 22.11's rte_fib6 trie
     * never gives back the tbl8 reservation of a deleted prefix longer
     * than /24, so add/delete cycles of one end in ENOSPC (see
     * fuzz/README.md, findings). Nor ::/0: it rewrites 2^24 entries. */
    {6, {0x20, 0x01, 0x0d}, 24, 3, 0, 0},    /* 2001:d00::/24: resolve */
    {4, V4(10, 1, 1, 0), 24, 8, 0, 0},        /* more specific: other port */
    /* A host route forwarding like its covering route, but through its own
     * next-hop id (as dataplane/routing.py gives every route): with the
     * covering route's id, DPDK 22.11's dir24_8 skips reserving a tbl8
     * group on add but releases one on delete, and every later add of a
     * prefix longer than /24 fails with ENOSPC (see fuzz/README.md). */
    {4, V4(10, 1, 1, 1), 32, 11, 0, 0},
    {6, {0x20, 0x01}, 16, 6, 0, 0},           /* 2001::/16: reject */
};
#define N_ROUTES (sizeof(routes) / sizeof(routes[0]))
#define FIRST_TOGGLE 13

static void nh(uint32_t id, uint8_t kind, uint8_t family, uint16_t port,
               uint16_t mtu, uint8_t plen)
{
    struct dp_nexthop h;

    memset(&h, 0, sizeof(h));
    h.kind = kind;
    h.family = family;
    h.port = port;
    h.mtu = mtu;
    h.plen = plen;
    h.dst_mac[0] = 0x02;
    h.dst_mac[4] = 0x01;
    h.dst_mac[5] = (uint8_t)id;
    memcpy(h.src_mac, fz_port_mac[port % FZ_PORTS], 6);
    if (family == 6) {
        h.gateway[0] = 0xfe;
        h.gateway[1] = 0x80;
        h.gateway[15] = (uint8_t)id;
    } else {
        h.gateway[0] = 10;
        h.gateway[3] = (uint8_t)id;
    }
    if (dp_router_nh_set(fz_router, id, &h) < 0)
        DIE("nh %u", id);
}

static void router_init(void)
{
    struct dp_router_conf c = {
        .max_nexthops = 64,
        .v4_max_routes = 64,
        .v4_tbl8 = 64,
        .v6_max_routes = 64,
        .v6_tbl8 = 64,
    };
    unsigned i, p;

    if (dp_router_create(&c, SOCKET_ID_ANY, &fz_router) < 0)
        DIE("router");
    /* The router lives in DPDK memory, which LeakSanitizer does not scan:
     * its malloc()ed change log would look leaked. */
#ifdef FZ_LSAN
    __lsan_register_root_region(fz_router, sizeof(*fz_router));
#endif
    nh(1, DP_NH_FORWARD, 6, 1, 1500, 64);
    nh(2, DP_NH_FORWARD, 4, 0, 1500, 16);
    nh(3, DP_NH_RESOLVE, 6, 1, 1500, 64);
    nh(4, DP_NH_LOCAL, 6, 0, 1500, 128);
    nh(5, DP_NH_BLACKHOLE, 6, 0, 1500, 32);
    nh(6, DP_NH_REJECT, 6, 0, 1500, 32);
    nh(7, DP_NH_FORWARD, 6, 0, 1280, 64);
    nh(8, DP_NH_FORWARD, 4, 1, 576, 16);
    nh(9, DP_NH_LOCAL, 4, 0, 1500, 32);
    nh(10, DP_NH_RESOLVE, 4, 0, 1500, 16);
    nh(11, DP_NH_FORWARD, 4, 0, 1500, 32);
    for (i = 0; i < FIRST_TOGGLE; i++)
        if (dp_router_route_add(fz_router, routes[i].family, routes[i].addr,
                                routes[i].plen, routes[i].nh) < 0)
            DIE("route %u", i);
    for (p = 0; p < FZ_PORTS; p++)
        dp_router_set_port(fz_router, (uint16_t)p, fz_port_mac[p], 1);
    if (dp_router_commit(fz_router) < 0)
        DIE("commit");
}

void fz_route_toggle(unsigned which)
{
    struct fz_route *r = &routes[FIRST_TOGGLE + which % (N_ROUTES - FIRST_TOGGLE)];
    int rc;

    if (r->present)
        rc = dp_router_route_del(fz_router, r->family, r->addr, r->plen);
    else
        rc = dp_router_route_add(fz_router, r->family, r->addr, r->plen,
                                 r->nh);
    if (rc < 0)
        DIE("toggle route");
    r->present = !r->present;
    if (dp_router_commit(fz_router) < 0)
        DIE("commit");
}

static uint8_t port_up[FZ_PORTS] = {1, 1};

void fz_port_toggle(unsigned port)
{
    port %= FZ_PORTS;
    port_up[port] = !port_up[port];
    dp_router_set_port(fz_router, (uint16_t)port, NULL, port_up[port]);
}

void fz_router_restore(void)
{
    unsigned i;

    if (fz_router == NULL)
        return;
    for (i = FIRST_TOGGLE; i < N_ROUTES; i++)
        if (routes[i].present != routes[i].initially)
            fz_route_toggle(i - FIRST_TOGGLE);
    for (i = 0; i < FZ_PORTS; i++)
        if (!port_up[i])
            fz_port_toggle(i);
}

/* ---- EAL, pool, ports, worker -------------------------------------------- */

void fz_init(int with_router)
{
    /* --no-shconf: no shared files and no IPC, so fuzzers running side by
     * side can share one prefix (and leave one empty runtime dir). */
    char *argv[] = {
        "fuzz", "--no-huge", "--no-pci", "--no-shconf", "--file-prefix=dpfuzz",
        "--no-telemetry", "-m", "512", "-l", "0", "--log-level=4",
        "--vdev=net_null0", "--vdev=net_null1",
    };
    struct dp_port_conf pc = {
        .nb_rxq = 1, .nb_txq = 1, .rx_desc = 256, .tx_desc = 256,
    };
    cpu_set_t cpus;
    uint16_t p;

    if (fz_pool)
        return;
    /* EAL pins the main thread to lcore 0's CPU; parallel fuzzers should
     * not all share one core, so the original mask is put back. */
    sched_getaffinity(0, sizeof(cpus), &cpus);
    if (dp_eal_init((int)RTE_DIM(argv), argv) < 0)
        DIE("EAL init");
    sched_setaffinity(0, sizeof(cpus), &cpus);
    if (rte_eth_dev_count_avail() < FZ_PORTS) {
        fprintf(stderr, "fuzz env: net_null ports missing\n");
        abort();
    }
    if (dp_pool_create("fz_pool", 4095, 0, RTE_MBUF_DEFAULT_BUF_SIZE,
                       SOCKET_ID_ANY, &fz_pool) < 0)
        DIE("pool");
    for (p = 0; p < FZ_PORTS; p++)
        if (dp_port_configure(p, &pc, fz_pool) < 0 || dp_port_start(p) < 0)
            DIE("port %u", p);
    if (dp_worker_create(0, SOCKET_ID_ANY, fz_pool, &fz_worker) < 0)
        DIE("worker");
    for (p = 0; p < FZ_PORTS; p++)
        if (dp_worker_set_txq(fz_worker, p, 0, 0) < 0)
            DIE("txq");
    if (with_router)
        router_init();
    dp_clock_set_manual(1000000000000ull);
}

/* ---- mbufs ------------------------------------------------------------------ */

static void extbuf_free(void *addr, void *opaque)
{
    free(addr);
    free(opaque);
}

static struct rte_mbuf *segment(const uint8_t *d, uint32_t len, uint16_t port)
{
    struct rte_mempool *mp = dp_pool_mempool(fz_pool);
    struct rte_mbuf_ext_shared_info *sh;
    struct rte_mbuf *m;
    void *buf;

    m = rte_pktmbuf_alloc(mp);
    if (m == NULL) {
        fprintf(stderr, "fuzz env: mbuf pool empty (%u in use)\n",
                dp_pool_in_use(fz_pool));
        abort();
    }
    buf = malloc(len ? len : 1);
    sh = malloc(sizeof(*sh));
    if (buf == NULL || sh == NULL)
        abort();
    memcpy(buf, d, len);
    sh->free_cb = extbuf_free;
    sh->fcb_opaque = sh;
    rte_mbuf_ext_refcnt_set(sh, 1);
    rte_pktmbuf_attach_extbuf(m, buf, (rte_iova_t)(uintptr_t)buf,
                              (uint16_t)len, sh);
    m->data_len = (uint16_t)len;
    m->pkt_len = len;
    m->port = port;
    return m;
}

struct rte_mbuf *fz_mbuf(const uint8_t *data, uint32_t len, uint32_t split,
                         uint16_t port)
{
    struct rte_mbuf *m, *tail;

    if (len > FZ_MAX_FRAME)
        len = FZ_MAX_FRAME;
    if (split == 0 || split >= len)
        return segment(data, len, port);
    m = segment(data, split, port);
    tail = segment(data + split, len - split, port);
    if (rte_pktmbuf_chain(m, tail) != 0)
        abort();
    return m;
}

unsigned fz_read_burst(struct fz_rd *r, uint8_t b, uint16_t port,
                       struct rte_mbuf **pkts)
{
    unsigned want = (b & 31u) + 1, n;

    for (n = 0; n < want && fz_more(r); n++) {
        uint32_t len = fz_u16(r) % (FZ_MAX_FRAME + 1);
        uint32_t split = fz_u8(r);
        size_t got;
        const uint8_t *d = fz_bytes(r, len, &got);

        pkts[n] = fz_mbuf(d, (uint32_t)got, split, port);
    }
    return n;
}

unsigned fz_drain_punts(void)
{
    struct rte_mbuf *m;
    unsigned n = 0;

    while (rte_ring_sc_dequeue(fz_worker->punt_ring, (void **)&m) == 0) {
        rte_pktmbuf_free(m);
        n++;
    }
    return n;
}

void fz_check_no_leak(const char *where)
{
    unsigned used = dp_pool_in_use(fz_pool);

    if (used != 0) {
        fprintf(stderr, "fuzz env: %u mbufs not returned to the pool (%s)\n",
                used, where);
        abort();
    }
}
