/*
 * router.h - the route table as the ip6flow stages read it: two copies of
 * (IPv4 FIB, IPv6 FIB, next-hop array); workers read the active one, the
 * control side changes the other and swaps (see dp.h for the protocol).
 */
#ifndef DP_ROUTER_H
#define DP_ROUTER_H

#include <rte_fib.h>
#include <rte_fib6.h>

#include "dp_internal.h"

struct rt_copy {
    struct rte_fib *fib4;
    struct rte_fib6 *fib6;
    struct dp_nexthop *nh;       /* max_nexthops entries */
};

struct rt_port {
    uint8_t mac[6];
    uint8_t up;
    uint8_t configured;
};

struct rt_op;

struct dp_router {
    /* read by workers every burst */
    struct rt_copy *active;      /* __atomic: published with release */
    uint32_t gen;                /* __atomic: bumped after each swap */
    struct rt_port port[DP_MAX_PORTS];

    /* control side only */
    struct rt_copy copy[2];
    uint32_t max_nh;
    struct rt_op *log;           /* staged changes, replayed on the other copy */
    unsigned n_log, cap_log;
    int invalidate;              /* the staged changes need a new generation */
} __rte_cache_aligned;

/* A worker's consistent view for one burst: generation first, then the
 * table (the writer publishes the table, then the generation). */
static inline const struct rt_copy *rt_view(const struct dp_router *r,
                                            uint32_t *gen)
{
    *gen = __atomic_load_n(&r->gen, __ATOMIC_ACQUIRE);
    return __atomic_load_n(&r->active, __ATOMIC_ACQUIRE);
}

/* Longest-prefix match of one address (network order; family 4 or 6) in a
 * table copy: the next-hop id, 0 for none. */
static inline uint32_t rt_lookup(const struct rt_copy *rt, int family,
                                 const uint8_t *addr)
{
    uint64_t nh = 0;

    if (family == 4) {
        uint32_t ip;
        memcpy(&ip, addr, 4);
        ip = rte_be_to_cpu_32(ip);
        rte_fib_lookup_bulk(rt->fib4, &ip, &nh, 1);
    } else {
        uint8_t ip[1][16];
        memcpy(ip[0], addr, 16);
        rte_fib6_lookup_bulk(rt->fib6, ip, &nh, 1);
    }
    return (uint32_t)nh;
}

/* The quiescent-state tracker the workers report to (worker.c). */
struct rte_rcu_qsbr;
extern struct rte_rcu_qsbr *dp_qsbr;
int dp_qsbr_init(void);

#endif /* DP_ROUTER_H */
