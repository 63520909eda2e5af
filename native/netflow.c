/*
 * netflow.c - FreeBSD ng_netflow's flow cache as a per-worker burst stage.
 *
 * Semantics kept from the seed (sys/netgraph/netflow/netflow.c):
 *  - key: src, dst, sport, dport, proto, ToS, input ifindex; ports only for
 *    TCP/UDP and only on first fragments;
 *  - per flow: packets, bytes (IP length), OR of TCP flags, first/last;
 *  - on a hit: FIN or RST, the active timeout, or a byte counter about to
 *    overflow its 32-bit export field expire the flow at once (active);
 *    a new flow is never expired by its first packet;
 *  - a scan expires (INACTIVE && (SMALL || used > lowat)) || AGED flows
 *    (inactive expiries); small = <= 4 packets;
 *  - a full cache never breaks forwarding: the packet is counted as an
 *    allocation failure and passed on;
 *  - at shutdown every cached flow is expired and exported.
 *
 * What differs, and why:
 *  - one cache per worker, no locks (the seed locks per bucket);
 *  - an open-addressing table (flowtable.h, a keyed NH hash)
 *    whose hot entry is one cache line holding key, counters and times, so a
 *    hit costs two memory misses, prefetched in stages over the burst;
 *  - the seed's every-second walk of the whole cache becomes a lazy timer
 *    wheel of 1-second slots, visited a bounded number of flows per 1 ms
 *    tick: a flow is checked when it could first have become inactive or
 *    aged, and re-armed if it was touched since. Same decisions, and the
 *    packet path never waits for a full scan.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <rte_errno.h>
#include <rte_malloc.h>
#include <rte_random.h>

#include "dp_internal.h"
#include "flowparse.h"
#include "flowtable.h"
#include "router.h"

#define NF_WHEEL_SLOTS 4096u /* seconds; later deadlines re-arm */
#define NF_NONE UINT32_MAX
#define NF_SMALL_PACKETS 4
#ifndef NF_BUCKET_AHEAD
#define NF_BUCKET_AHEAD 14 /* packets between a bucket prefetch and its read */
#endif
#ifndef NF_ENTRY_AHEAD
#define NF_ENTRY_AHEAD 14  /* packets between an entry prefetch and its use */
#endif
#define NF_BYTES_LIMIT (UINT32_MAX - 65535u) /* seed: UINT_MAX - IF_MAXMTU */

_Static_assert(NF_SKIP__COUNT <= DP_NF_MAX_SKIP_REASONS,
               "raise DP_NF_MAX_SKIP_REASONS");

/* One cached flow: the key and what a hit touches, in one cache line. */
struct nf_flow {
    struct nf_key key;
    uint32_t packets;
    uint32_t bytes;
    uint32_t first;   /* ms since the stage's epoch */
    uint32_t last;
    uint16_t out_ifx;
    uint8_t tcp_flags;
    uint8_t live;     /* 0: free, else the IP version (4 or 6) */
    uint8_t src_mask;
    uint8_t dst_mask;
    uint16_t nh;      /* the router's next hop for dst (0: none) */
} __rte_aligned(64);
_Static_assert(sizeof(struct nf_flow) == 64, "a flow entry is one cache line");

/* What only creation, expiry and the scan touch: timer wheel links. */
struct nf_cold {
    uint32_t wprev;
    uint32_t wnext;
    uint16_t wslot;
    uint16_t pad;
};

struct netflow {
    struct flowtable table;
    struct nf_flow *flows;
    struct nf_cold *cold;
    uint32_t *free;             /* stack of free entry numbers */
    uint32_t n_free;
    uint32_t *wheel;            /* slot -> first flow */
    struct rte_ring *export_ring;
    uint64_t epoch_ms;          /* clock ms at configure */
    uint32_t now;               /* ms since epoch, updated each tick */
    uint32_t scan_s;            /* next wheel second to visit */
    uint32_t max_flows;
    uint32_t active_ms;
    uint32_t inactive_ms;
    uint32_t lowat;
    uint32_t scan_budget;
    uint32_t used;
    uint32_t flush_from;        /* where the next flush call resumes; not 0:
                                 * a flush is under way (see finish_flush) */
    int configured;
    struct dp_router *router;   /* route data for records, if routed */
    uint16_t ifindex[DP_MAX_PORTS];
    uint32_t conf[DP_MAX_PORTS];   /* DP_NF_CONF_* per input port */
    struct dp_netflow_info info;
};

static const char *const skip_names[] = {
#define NF_SKIP_NAME(sym, name) name,
    NF_SKIP_REASONS(NF_SKIP_NAME)
#undef NF_SKIP_NAME
};

const char *dp_netflow_skip_reason_name(unsigned reason)
{
    return reason < NF_SKIP__COUNT ? skip_names[reason] : NULL;
}

static int netflow_init(struct dp_stage *st)
{
    struct netflow *nf = st->priv;
    unsigned i;

    for (i = 0; i < DP_MAX_PORTS; i++) {
        nf->ifindex[i] = i + 1; /* ifIndex 0 means "unknown" to collectors */
        nf->conf[i] = DP_NF_CONF_INGRESS;
    }
    return 0;
}

static void netflow_free(struct netflow *nf)
{
    dp_table_free(nf->table.b, nf->table.bytes);
    dp_table_free(nf->flows, sizeof(*nf->flows) * (size_t)nf->max_flows);
    dp_table_free(nf->cold, sizeof(*nf->cold) * (size_t)nf->max_flows);
    dp_table_free(nf->free, sizeof(*nf->free) * (size_t)nf->max_flows);
    rte_free(nf->wheel);
    rte_ring_free(nf->export_ring);
    nf->table.b = NULL;
    nf->flows = NULL;
    nf->cold = NULL;
    nf->free = NULL;
    nf->wheel = NULL;
    nf->export_ring = NULL;
}

static void netflow_fini(struct dp_stage *st)
{
    netflow_free(st->priv);
}

static struct netflow *nf_of(struct dp_stage *st);

int dp_netflow_configure(struct dp_stage *st, const struct dp_netflow_conf *c)
{
    struct netflow *nf = nf_of(st);
    char name[RTE_RING_NAMESIZE];
    int socket = st->w->pool->socket_id;
    uint32_t i, buckets;

    if (nf == NULL)
        return -EINVAL;
    if (nf->configured) {
        dp_set_error(EBUSY, "netflow cache already configured");
        return -EBUSY;
    }
    if (c->max_flows < 8 || c->max_flows > (1u << 28) ||
        c->active_timeout == 0 || c->inactive_timeout == 0 ||
        c->scan_budget == 0 || !rte_is_power_of_2(c->export_ring) ||
        c->export_ring < 64) {
        dp_set_error(EINVAL, "netflow: 8 <= max_flows <= 2^28, timeouts > 0, "
                     "scan_budget > 0, export_ring a power of two >= 64");
        return -EINVAL;
    }
    nf->max_flows = c->max_flows;
    buckets = ft_buckets_for(c->max_flows);
    nf->table.mask = buckets - 1;
    nf->table.bytes = sizeof(struct ft_bucket) * (size_t)buckets;
    /* A random seed: nobody who knows the code can aim collisions. */
    nf->table.seed = (uint32_t)rte_rand();
    nf->table.b = dp_table_alloc(nf->table.bytes, socket);
    nf->flows = dp_table_alloc(sizeof(*nf->flows) * (size_t)c->max_flows, socket);
    nf->cold = dp_table_alloc(sizeof(*nf->cold) * (size_t)c->max_flows, socket);
    nf->free = dp_table_alloc(sizeof(*nf->free) * (size_t)c->max_flows, socket);
    nf->wheel = rte_malloc_socket("nf_wheel", sizeof(uint32_t) *
                                  NF_WHEEL_SLOTS, RTE_CACHE_LINE_SIZE, socket);
    snprintf(name, sizeof(name), "nfx_%u_%p", st->w->id, (void *)st);
    nf->export_ring = rte_ring_create_elem(name,
                                           sizeof(struct dp_flow_record),
                                           c->export_ring, socket,
                                           RING_F_SP_ENQ | RING_F_SC_DEQ);
    if (nf->table.b == NULL || nf->flows == NULL || nf->cold == NULL ||
        nf->free == NULL || nf->wheel == NULL || nf->export_ring == NULL) {
        int err = rte_errno ? rte_errno : ENOMEM;
        netflow_free(nf);
        dp_set_error(err, "netflow: cache of %u flows", c->max_flows);
        return -err;
    }
    for (i = 0; i < NF_WHEEL_SLOTS; i++)
        nf->wheel[i] = NF_NONE;
    for (i = 0; i < c->max_flows; i++)
        nf->free[i] = c->max_flows - 1 - i; /* hand out low numbers first */
    nf->n_free = c->max_flows;
    nf->active_ms = c->active_timeout * 1000u;
    nf->inactive_ms = c->inactive_timeout * 1000u;
    nf->lowat = c->lowat ? c->lowat : c->max_flows / 4 * 3;
    nf->scan_budget = c->scan_budget;
    nf->epoch_ms = dp_clock_ns() / 1000000u;
    nf->now = 0;
    nf->scan_s = 0;
    nf->configured = 1;
    return 0;
}

/* ---- timer wheel ---------------------------------------------------------- */

static inline void wheel_unlink(struct netflow *nf, uint32_t i)
{
    struct nf_cold *c = &nf->cold[i];

    if (c->wprev != NF_NONE)
        nf->cold[c->wprev].wnext = c->wnext;
    else
        nf->wheel[c->wslot] = c->wnext;
    if (c->wnext != NF_NONE)
        nf->cold[c->wnext].wprev = c->wprev;
}

/* Arm flow i to be looked at in second `at` (clamped to the wheel span). */
static inline void wheel_arm(struct netflow *nf, uint32_t i, uint32_t at)
{
    struct nf_cold *c = &nf->cold[i];
    uint32_t slot;

    if (at <= nf->scan_s)
        at = nf->scan_s + 1;
    if (at - nf->scan_s >= NF_WHEEL_SLOTS)
        at = nf->scan_s + NF_WHEEL_SLOTS - 1;
    slot = at & (NF_WHEEL_SLOTS - 1);
    c->wslot = slot;
    c->wprev = NF_NONE;
    c->wnext = nf->wheel[slot];
    if (c->wnext != NF_NONE)
        nf->cold[c->wnext].wprev = i;
    nf->wheel[slot] = i;
}

/* When could flow f next need a decision: becoming inactive or aged. */
static inline uint32_t next_check_s(const struct netflow *nf,
                                    const struct nf_flow *f)
{
    uint32_t idle = (f->last + nf->inactive_ms) / 1000u + 1;
    uint32_t aged = (f->first + nf->active_ms) / 1000u + 1;
    return RTE_MIN(idle, aged);
}

/* ---- expiry and export ------------------------------------------------------ */

static void fill_record(const struct netflow *nf, const struct nf_key *k,
                        const struct nf_flow *f, uint8_t reason,
                        struct dp_flow_record *r)
{
    /* flow times are ms since the epoch, modulo 2^32 (49 days): rebuild the
     * full value relative to now */
    uint64_t now = nf->epoch_ms + nf->now;

    memset(r, 0, sizeof(*r));
    memcpy(r->src, k->src, 16);
    memcpy(r->dst, k->dst, 16);
    r->packets = f->packets;
    r->bytes = f->bytes;
    r->first_ms = now - (uint32_t)(nf->now - f->first);
    r->last_ms = now - (uint32_t)(nf->now - f->last);
    r->sport = k->sport;
    r->dport = k->dport;
    r->in_ifx = k->in_ifx;
    r->out_ifx = f->out_ifx;
    r->proto = k->proto;
    r->tos = k->tos;
    r->tcp_flags = f->tcp_flags;
    r->ipver = f->live;
    r->src_mask = f->src_mask;
    r->dst_mask = f->dst_mask;
    r->end_reason = reason;
    if (nf->router && f->nh) {
        /* the next hop as it is now (the flow keeps its id, not a copy) */
        const struct dp_nexthop *nh = &nf->router->active->nh[f->nh];
        if (nh->family == f->live)
            memcpy(r->nexthop, nh->gateway, f->live == 4 ? 4 : 16);
    }
}

static inline int flow_eq(const struct netflow *nf, uint32_t idx,
                          const struct nf_key *key)
{
    return memcmp(&nf->flows[idx].key, key, sizeof(*key)) == 0;
}

/*
 * Take flow i out of the cache and put its record on the export ring. A full
 * ring loses the record (counted); the exporter advances sequence numbers by
 * the lost count so collectors see the gap.
 */
static void expire_hashed(struct netflow *nf, uint32_t i, uint32_t h,
                          uint8_t reason)
{
    struct nf_flow *f = &nf->flows[i];
    struct dp_flow_record rec;

    fill_record(nf, &f->key, f, reason, &rec);
    if (rte_ring_sp_enqueue_elem(nf->export_ring, &rec, sizeof(rec)) == 0)
        nf->info.exported++;
    else
        nf->info.export_failed++;
    ft_delete(&nf->table, h, i);
    wheel_unlink(nf, i);
    f->live = 0;
    nf->free[nf->n_free++] = i;
    nf->used--;
}

static void expire(struct netflow *nf, uint32_t i, uint8_t reason)
{
    const struct nf_key *k = &nf->flows[i].key;

    expire_hashed(nf, i, ft_hash(&nf->table, k, sizeof(*k)), reason);
}

/* The end of a stop's flush: every index back to empty, no flow cached,
 * every entry free (low numbers handed out first, as at configure). */
static void reset_indexes(struct netflow *nf)
{
    uint32_t i;

    nf->flush_from = 0;

    memset(nf->table.b, 0, nf->table.bytes);
    for (i = 0; i < NF_WHEEL_SLOTS; i++)
        nf->wheel[i] = NF_NONE;
    for (i = 0; i < nf->max_flows; i++)
        nf->free[i] = nf->max_flows - 1 - i;
    nf->n_free = nf->max_flows;
}

/* The stop's flush, one flow: the next cached flow from flush_from on leaves
 * the cache (its record in *rec) without being unlinked from the indexes
 * (see dp_netflow_flush). 0 when no flow is left. */
static int flush_take(struct netflow *nf, struct dp_flow_record *rec)
{
    while (nf->used && nf->flush_from < nf->max_flows) {
        struct nf_flow *f = &nf->flows[nf->flush_from++];

        if (!f->live)
            continue;
        fill_record(nf, &f->key, f, DP_NF_END_FORCED, rec);
        f->live = 0;
        nf->used--;
        return 1;
    }
    return 0;
}

/* A stop's flush left unfinished before the packet path or the scan ran
 * again (the caller broke dp.h's rule): the rest of the cache goes onto the
 * export ring (what does not fit is counted lost), so that the indexes can
 * be emptied and nothing points at a freed flow. */
static void finish_flush(struct netflow *nf)
{
    struct dp_flow_record rec;

    while (flush_take(nf, &rec)) {
        if (rte_ring_sp_enqueue_elem(nf->export_ring, &rec, sizeof(rec)) == 0)
            nf->info.exported++;
        else
            nf->info.export_failed++;
    }
    reset_indexes(nf);
}

/* ---- the packet path ------------------------------------------------------- */

/* What ng_netflow takes from the route table when a flow starts: the
 * output interface and next hop of the destination's route, and the
 * prefix lengths of the routes to source and destination. */
static void route_data(struct netflow *nf, struct nf_flow *f, int ipver)
{
    uint32_t gen;
    const struct rt_copy *rt = rt_view(nf->router, &gen);
    uint32_t d = rt_lookup(rt, ipver, f->key.dst);
    const struct dp_nexthop *nh = &rt->nh[d];

    if (nh->kind == DP_NH_FORWARD || nh->kind == DP_NH_RESOLVE) {
        f->out_ifx = nf->ifindex[nh->port];
        f->nh = (uint16_t)d;
    }
    if (nh->kind != DP_NH_NONE)
        f->dst_mask = nh->plen;
    nh = &rt->nh[rt_lookup(rt, ipver, f->key.src)];
    if (nh->kind != DP_NH_NONE)
        f->src_mask = nh->plen;
}

static inline void create(struct netflow *nf, const struct nf_pkt *p,
                          uint32_t h)
{
    struct nf_flow *f;
    uint32_t i;

    if (unlikely(nf->n_free == 0)) {
        nf->info.alloc_failed++;
        return;
    }
    i = nf->free[--nf->n_free];
    f = &nf->flows[i];
    f->key = p->key;
    f->packets = 1;
    f->bytes = p->plen;
    f->first = f->last = nf->now;
    f->tcp_flags = p->tcp_flags;
    f->out_ifx = 0;
    f->src_mask = 0;
    f->dst_mask = 0;
    f->nh = 0;
    if (nf->router)
        route_data(nf, f, p->ipver);
    f->live = p->ipver;
    ft_insert(&nf->table, h, i);
    nf->used++;
    nf->info.flows_created++;
    wheel_arm(nf, i, next_check_s(nf, f));
}

static inline void hit(struct netflow *nf, uint32_t i, const struct nf_pkt *p)
{
    struct nf_flow *f = &nf->flows[i];

    f->bytes += p->plen;
    f->packets++;
    f->tcp_flags |= p->tcp_flags;
    f->last = nf->now;
    if (unlikely((p->tcp_flags & (RTE_TCP_FIN_FLAG | RTE_TCP_RST_FLAG)) ||
                 nf->now - f->first > nf->active_ms ||
                 f->bytes >= NF_BYTES_LIMIT)) {
        uint8_t reason = (p->tcp_flags & (RTE_TCP_FIN_FLAG | RTE_TCP_RST_FLAG))
                             ? DP_NF_END_EOF : DP_NF_END_ACTIVE;
        expire(nf, i, reason);
        nf->info.act_exp++;
    }
}

#define NF_FLOW_EQ(nf, idx, key) flow_eq((nf), (idx), (key))

/* Stage 2: the entry a matching signature in the home bucket points at,
 * prefetched (a guess, confirmed in stage 3). */
static inline uint32_t nf_candidate(struct netflow *nf, uint32_t h)
{
    uint32_t c = ft_candidate(&nf->table, h);

    if (c != FT_NONE)
        rte_prefetch0(&nf->flows[c]);
    return c;
}

/* Stage 3: confirm the guess (in cache by now) or look properly, then hit or
 * create; flows created or expired earlier in the burst are seen here. */
static inline void nf_meter(struct netflow *nf, const struct nf_pkt *p,
                            uint32_t h, uint32_t idx)
{
    if (idx == FT_NONE || !nf->flows[idx].live || !flow_eq(nf, idx, &p->key))
        FT_LOOKUP(&nf->table, h, &p->key, NF_FLOW_EQ, nf, idx);
    if (idx != FT_NONE)
        hit(nf, idx, p);
    else
        create(nf, p, h);
}

static uint16_t netflow_process(struct dp_stage *st, struct rte_mbuf **pkts,
                                uint16_t n)
{
    struct netflow *nf = st->priv;
    struct nf_pkt parsed[DP_BURST];
    uint32_t hash[DP_BURST], cand[DP_BURST];
    uint16_t i, k = 0, hashed = 0, s2 = 0, s3 = 0;
    uint16_t in_ifx = nf->ifindex[st->w->rx_port];

    if (unlikely(!nf->configured))
        return n;
    if (unlikely(nf->flush_from))
        finish_flush(nf);
    if (unlikely(!(nf->conf[st->w->rx_port] & DP_NF_CONF_INGRESS))) {
        nf->info.unmetered += n;
        return n;
    }
    /*
     * A software pipeline over the burst, so that a bounded number of misses
     * is in flight at any time (a burst's worth of prefetches at once fills
     * the core's miss buffers, and the next prefetch waits for one):
     *   packet k: parsed;
     *   packet k - 1: hashed (a packet later, so the hash's 8-byte loads of
     *           the key do not wait for the parser's narrower stores to
     *           reach the cache), its home bucket prefetched;
     *   NF_BUCKET_AHEAD packets later: stage 2 (nf_candidate);
     *   NF_ENTRY_AHEAD packets after that: stage 3 (nf_meter).
     */
    for (i = 0; i < n; i++) {
        int r = nf_parse(pkts[i], in_ifx, &parsed[k]);

        if (unlikely(r >= 0)) {
            nf->info.skips[r]++;
            nf->info.skipped++;
        } else {
            nf->info.packets++;
            nf->info.bytes += parsed[k].plen;
            k++;
        }
        if (hashed + 1 < k) {
            hash[hashed] = ft_hash(&nf->table, &parsed[hashed].key,
                                   sizeof(parsed[hashed].key));
            rte_prefetch0(ft_home(&nf->table, hash[hashed]));
            hashed++;
        }
        if (s2 + NF_BUCKET_AHEAD < hashed) {
            cand[s2] = nf_candidate(nf, hash[s2]);
            s2++;
        }
        if (s3 + NF_ENTRY_AHEAD < s2) {
            nf_meter(nf, &parsed[s3], hash[s3], cand[s3]);
            s3++;
        }
    }
    /* The tail of the burst, spaced the same way. */
    for (; s3 < k; s3++) {
        for (; hashed < k && hashed < s3 + NF_BUCKET_AHEAD + NF_ENTRY_AHEAD + 1;
             hashed++) {
            hash[hashed] = ft_hash(&nf->table, &parsed[hashed].key,
                                   sizeof(parsed[hashed].key));
            rte_prefetch0(ft_home(&nf->table, hash[hashed]));
        }
        for (; s2 < hashed && s2 < s3 + NF_ENTRY_AHEAD + 1; s2++)
            cand[s2] = nf_candidate(nf, hash[s2]);
        nf_meter(nf, &parsed[s3], hash[s3], cand[s3]);
    }
    return n; /* metering never holds a packet back */
}

#define NF_SCAN_BATCH 16

/* One flow the wheel brought up: the seed's rule. Expired, or armed again
 * for when it could next expire (never in the second being scanned). */
static inline void scan_one(struct netflow *nf, uint32_t i, uint32_t h,
                            uint32_t now_s)
{
    struct nf_flow *f = &nf->flows[i];
    /* (INACTIVE && (SMALL || used > lowat)) || AGED. An idle flow is
     * reported as idle even when it is also aged. */
    int idle = nf->now - f->last > nf->inactive_ms;

    if (idle && (f->packets <= NF_SMALL_PACKETS || nf->used > nf->lowat)) {
        expire_hashed(nf, i, h, DP_NF_END_IDLE);
        nf->info.inact_exp++;
        return;
    }
    if (nf->now - f->first > nf->active_ms) {
        expire_hashed(nf, i, h, DP_NF_END_ACTIVE);
        nf->info.inact_exp++;
        return;
    }
    wheel_unlink(nf, i);
    if (idle) {
        /* kept while the cache is roomy; looked at again each second, as
         * the seed's scan does */
        wheel_arm(nf, i, RTE_MIN(now_s + 1,
                                 (f->first + nf->active_ms) / 1000u + 1));
    } else {
        wheel_arm(nf, i, next_check_s(nf, f));
    }
}

/* The seed's once-a-second scan, spread over 1 ms ticks. */
static void netflow_tick(struct dp_stage *st, uint64_t now_ns)
{
    struct netflow *nf = st->priv;
    uint32_t budget, now_s;

    if (unlikely(!nf->configured))
        return;
    if (unlikely(nf->flush_from))
        finish_flush(nf);
    if (unlikely(now_ns / 1000000u < nf->epoch_ms))
        return; /* the clock was set back (tests): wait for it */
    nf->now = (uint32_t)(now_ns / 1000000u - nf->epoch_ms);
    now_s = nf->now / 1000u;
    for (budget = nf->scan_budget; budget && nf->scan_s <= now_s;) {
        uint32_t slot = nf->scan_s & (NF_WHEEL_SLOTS - 1);
        uint32_t batch[NF_SCAN_BATCH], hash[NF_SCAN_BATCH];
        uint32_t i, j, m = 0;

        /* A batch of the second's flows, their entries fetched together,
         * then their hash buckets: otherwise each expiring flow waits for
         * its entry and then its bucket, one flow after another. */
        for (i = nf->wheel[slot];
             i != NF_NONE && m < RTE_MIN(budget, (uint32_t)NF_SCAN_BATCH);
             i = nf->cold[i].wnext) {
            rte_prefetch0(&nf->flows[i]);
            batch[m++] = i;
        }
        if (m == 0) {
            nf->scan_s++;
            continue;
        }
        for (j = 0; j < m; j++) {
            const struct nf_key *k = &nf->flows[batch[j]].key;

            hash[j] = ft_hash(&nf->table, k, sizeof(*k));
            rte_prefetch0(ft_home(&nf->table, hash[j]));
        }
        for (j = 0; j < m; j++)
            scan_one(nf, batch[j], hash[j], now_s);
        budget -= m;
        nf->info.scanned += m;
    }
}

/* ---- control --------------------------------------------------------------- */

static struct netflow *nf_of(struct dp_stage *st)
{
    if (st->ops->process != netflow_process) {
        dp_set_error(EINVAL, "stage is a %s, not netflow", st->ops->kind);
        return NULL;
    }
    return st->priv;
}

int dp_netflow_attach_router(struct dp_stage *st, struct dp_router *r)
{
    struct netflow *nf = nf_of(st);

    if (nf == NULL)
        return -EINVAL;
    nf->router = r;
    return 0;
}

int dp_netflow_set_ifindex(struct dp_stage *st, uint16_t port_id,
                           uint16_t ifindex)
{
    struct netflow *nf = nf_of(st);

    if (nf == NULL)
        return -EINVAL;
    if (port_id >= DP_MAX_PORTS) {
        dp_set_error(ERANGE, "port %u", port_id);
        return -ERANGE;
    }
    nf->ifindex[port_id] = ifindex;
    return 0;
}

int dp_netflow_setconfig(struct dp_stage *st, uint16_t port_id, uint32_t conf)
{
    struct netflow *nf = nf_of(st);

    if (nf == NULL)
        return -EINVAL;
    if (port_id >= DP_MAX_PORTS || (conf & ~(uint32_t)DP_NF_CONF_INGRESS)) {
        dp_set_error(EINVAL, "netflow setconfig: port %u conf %#x (known "
                     "flags: ingress=1)", port_id, conf);
        return -EINVAL;
    }
    nf->conf[port_id] = conf;
    return 0;
}

int dp_netflow_set_timeouts(struct dp_stage *st, uint32_t active,
                            uint32_t inactive)
{
    struct netflow *nf = nf_of(st);

    if (nf == NULL)
        return -EINVAL;
    if (active == 0 || inactive == 0) {
        dp_set_error(EINVAL, "netflow timeouts must be > 0 s");
        return -EINVAL;
    }
    /* Flows already armed keep their check time; a shorter timeout takes
     * effect at their next visit (at most the old timeout later). */
    nf->active_ms = active * 1000u;
    nf->inactive_ms = inactive * 1000u;
    return 0;
}

int dp_netflow_info(const struct dp_stage *st, struct dp_netflow_info *out)
{
    const struct netflow *nf = nf_of((struct dp_stage *)st);

    if (nf == NULL)
        return -EINVAL;
    memcpy(out, &nf->info, sizeof(*out));
    out->flows_used = nf->used;
    out->clock_ms = nf->now;
    out->scanned_to_ms = (uint64_t)nf->scan_s * 1000u;
    out->max_flows = nf->max_flows;
    out->active_timeout = nf->active_ms / 1000u;
    out->inactive_timeout = nf->inactive_ms / 1000u;
    out->lowat = nf->lowat;
    return 0;
}

unsigned dp_netflow_export_drain(struct dp_stage *st,
                                 struct dp_flow_record *out, unsigned max)
{
    struct netflow *nf = nf_of(st);

    if (nf == NULL || !nf->configured)
        return 0;
    return rte_ring_sc_dequeue_burst_elem(nf->export_ring, out, sizeof(*out),
                                          max, NULL);
}

unsigned dp_netflow_export_pending(const struct dp_stage *st)
{
    const struct netflow *nf = nf_of((struct dp_stage *)st);

    return nf && nf->configured ? rte_ring_count(nf->export_ring) : 0;
}

/*
 * The stop's flush: every flow goes, so none is taken out of the hash table
 * or its timer-wheel slot one at a time (a random cache line or three each,
 * 40 ns a flow at 1M flows). The entries are read in order instead, their
 * records written straight into the caller's array (not through the export
 * ring: two copies fewer), and once the last is gone both indexes are
 * emptied whole. Until then they point at freed entries, which is why the
 * packet path must not run between the first call and the one that
 * returns 0 (the workers are stopped: dp.h).
 */
int dp_netflow_flush(struct dp_stage *st, struct dp_flow_record *out,
                     unsigned max)
{
    struct netflow *nf = nf_of(st);
    unsigned n = 0;

    if (nf == NULL)
        return -EINVAL;
    if (!nf->configured)
        return 0;
    nf->now = (uint32_t)(dp_clock_ns() / 1000000u - nf->epoch_ms);
    while (n < max && flush_take(nf, &out[n]))
        n++;
    nf->info.exported += n;
    if (nf->used == 0 && nf->flush_from)
        reset_indexes(nf);
    return (int)n;
}

int dp_netflow_show(struct dp_stage *st, uint32_t *cursor,
                    struct dp_flow_record *out, unsigned max)
{
    struct netflow *nf = nf_of(st);
    uint32_t i, end;
    unsigned n = 0;

    if (nf == NULL)
        return -EINVAL;
    if (!nf->configured) {
        *cursor = 0;
        return 0;
    }
    end = RTE_MIN(nf->max_flows, *cursor + DP_DUMP_SCAN_SLOTS);
    for (i = *cursor; i < end && n < max; i++)
        if (nf->flows[i].live)
            fill_record(nf, &nf->flows[i].key, &nf->flows[i], 0, &out[n++]);
    *cursor = i < nf->max_flows ? i : 0;
    return (int)n;
}

const struct dp_stage_ops dp_netflow_ops = {
    .kind = "netflow",
    .priv_size = sizeof(struct netflow),
    .init = netflow_init,
    .fini = netflow_fini,
    .process = netflow_process,
    .tick = netflow_tick,
};

/* ---- flow-table introspection (tests, bench/hash_spread.py) ---------------- */

/* How the cache's keys spread over its table (on the worker's thread, or
 * while it is not polling): per key, its home bucket (from the hash), how
 * far past it the key lives and what a lookup for it reads. */
int dp_netflow_table_spread(const struct dp_stage *st, struct dp_ft_spread *out)
{
    const struct netflow *nf = nf_of((struct dp_stage *)st);
    const struct flowtable *t;
    uint32_t *home_load, b, max_ovf = 0;

    if (nf == NULL || out == NULL)
        return -EINVAL;
    memset(out, 0, sizeof(*out));
    if (!nf->configured)
        return 0;
    t = &nf->table;
    out->buckets = t->mask + 1;
    home_load = calloc(out->buckets, sizeof(*home_load));
    if (home_load == NULL) {
        dp_set_error(ENOMEM, "netflow: table spread");
        return -ENOMEM;
    }
    for (b = 0; b <= t->mask; b++) {
        const struct ft_bucket *bk = &t->b[b];
        int i;

        max_ovf = RTE_MAX(max_ovf, bk->overflow);
        for (i = 0; i < FT_SLOTS; i++) {
            uint32_t idx = bk->idx[i], h, home, d, c, cmp = 0;
            const struct nf_flow *f;

            if (bk->sig[i] == 0)
                continue;
            f = &nf->flows[idx];
            h = ft_hash(t, &f->key, sizeof(f->key));
            home = h & t->mask;
            d = (b - home) & t->mask;
            /* a lookup reads buckets home..b and compares the key of every
             * slot with its signature until it reaches its own */
            for (c = 0; c <= d; c++) {
                const struct ft_bucket *pb = &t->b[(home + c) & t->mask];
                int j, end = c == d ? i + 1 : FT_SLOTS;

                for (j = 0; j < end; j++)
                    cmp += pb->sig[j] == ft_sig(h);
            }
            out->keys++;
            home_load[home]++;
            out->max_displacement = RTE_MAX(out->max_displacement, d);
            out->displaced += d != 0;
            out->probe_sum += d + 1;
            out->compare_sum += cmp;
            out->max_compares = RTE_MAX(out->max_compares, cmp);
        }
    }
    for (b = 0; b <= t->mask; b++)
        out->max_home_load = RTE_MAX(out->max_home_load, home_load[b]);
    out->max_overflow = max_ovf;
    free(home_load);
    return 0;
}

/* bench/hash_spread.py: n packed keys of key_len bytes hashed with a fresh
 * random table key, as a new table gets one; returns the TSC cycles of the
 * loop (the hashes of a burst are independent, as in the stages' first
 * pass). The two key sizes the stages use get their own constant-length
 * copies of the loop, as the stages' inlined calls do. */
#define FT_HASH_LOOP(fn, tbl, keys, klen, n, out)                              \
    do {                                                                       \
        for (uint32_t i_ = 0; i_ < (n); i_++)                                  \
            (out)[i_] = fn((tbl), (keys) + (size_t)i_ * (klen), (klen));       \
    } while (0)

static inline uint32_t ft_hash_crc_old(const struct flowtable *t,
                                       const void *key, uint32_t len)
{
    return rte_hash_crc(key, len, t->seed);
}

static void __attribute__((noinline))
ft_hash_many(int kind, const struct flowtable *t, const uint8_t *keys,
             uint32_t len, uint32_t n, uint32_t *out)
{
    if (kind == DP_FT_HASH_CRC) {
        if (len == 40)
            FT_HASH_LOOP(ft_hash_crc_old, t, keys, 40, n, out);
        else if (len == 36)
            FT_HASH_LOOP(ft_hash_crc_old, t, keys, 36, n, out);
        else
            FT_HASH_LOOP(ft_hash_crc_old, t, keys, len, n, out);
    } else {
        if (len == 40)
            FT_HASH_LOOP(ft_hash, t, keys, 40, n, out);
        else if (len == 36)
            FT_HASH_LOOP(ft_hash, t, keys, 36, n, out);
        else
            FT_HASH_LOOP(ft_hash, t, keys, len, n, out);
    }
}

int64_t dp_ft_hash_keys(int kind, const uint8_t *keys, uint32_t key_len,
                        uint32_t n, uint32_t *out)
{
    struct flowtable t = { .seed = (uint32_t)rte_rand() };
    uint64_t t0;

    if ((kind != DP_FT_HASH_CRC && kind != DP_FT_HASH_KEYED) ||
        key_len == 0 || (n && (keys == NULL || out == NULL))) {
        dp_set_error(EINVAL, "ft_hash_keys: kind 0 or 1, key_len > 0");
        return -EINVAL;
    }
    t0 = rte_rdtsc_precise();
    ft_hash_many(kind, &t, keys, key_len, n, out);
    return (int64_t)(rte_rdtsc_precise() - t0);
}
