/*
 * dp_internal.h - what the C files share and Python never sees: the worker
 * layout, the stage interface and the helpers stages use to hand packets on.
 */
#ifndef DP_INTERNAL_H
#define DP_INTERNAL_H

#include <rte_branch_prediction.h>
#include <rte_common.h>
#include <rte_cycles.h>
#include <rte_ethdev.h>
#include <rte_mbuf.h>
#include <rte_ring.h>
#include <rte_spinlock.h>
#include <pthread.h>
#include <string.h>

#include "dp.h"

#define DP_BURST 32
#define DP_TXBUF_SIZE (2 * DP_BURST)
#define DP_MAX_RXQ_PER_WORKER 64
#define DP_RING_SIZE 4096

/*
 * Drop reasons, declared once: the enum and the names Python, the CLI and
 * metrics show come from this list. Stages add their reasons here.
 */
#define DP_DROP_REASONS(_)                                                   \
    _(NO_EGRESS, "no_egress")   /* no stage claimed the packet */            \
    _(BAD_EGRESS, "bad_egress") /* egress port not set up on this worker */  \
    _(TX_FULL, "tx_full")       /* the port did not take the packet */       \
    _(PUNT_FULL, "punt_full")   /* slow path ring full */                    \
    _(PUNT_POLICED, "punt_policed") /* over its reason's punt rate */        \
    _(INJECT_BAD_PORT, "inject_bad_port")                                   \
    _(NO_ACTIVE_LINK, "no_active_link") /* one2many: every link is down */ \
    _(L2_TRUNCATED, "l2_truncated")     /* router: runt frame */            \
    _(L2_UNSUPPORTED, "l2_unsupported") /* router: not IPv4/IPv6/ARP */     \
    _(L2_OTHER_HOST, "l2_other_host")   /* router: unicast to another MAC */ \
    _(IP6_TRUNCATED, "ip6_truncated")                                       \
    _(IP6_BAD_VERSION, "ip6_bad_version")                                   \
    _(IP6_BAD_LENGTH, "ip6_bad_length") /* payload length beyond frame */   \
    _(IP6_BAD_SRC, "ip6_bad_src")       /* multicast, ::, ::1 source */      \
    _(IP4_TRUNCATED, "ip4_truncated")                                       \
    _(IP4_BAD_VERSION, "ip4_bad_version")                                   \
    _(IP4_BAD_IHL, "ip4_bad_ihl")                                           \
    _(IP4_BAD_LENGTH, "ip4_bad_length")                                     \
    _(IP4_BAD_CHECKSUM, "ip4_bad_checksum")                                 \
    _(IP4_BAD_SRC, "ip4_bad_src") /* martian: 0/8, 127/8, 224/3 source */    \
    _(IP4_DISABLED, "ip4_disabled")     /* router with ipv4 = false */      \
    _(BLACKHOLE, "blackhole")           /* blackhole route */               \
    _(EGRESS_DOWN, "egress_down")       /* route's port link is down */

enum dp_drop_reason {
#define DP_DROP_ENUM(sym, name) DP_DROP_##sym,
    DP_DROP_REASONS(DP_DROP_ENUM)
#undef DP_DROP_ENUM
    DP_DROP__COUNT
};
_Static_assert(DP_DROP__COUNT <= DP_MAX_DROP_REASONS,
               "raise DP_MAX_DROP_REASONS in dp.h");

struct dp_worker;

/* A pipeline stage: one burst function plus optional periodic work. */
struct dp_stage_ops {
    const char *kind;
    size_t priv_size;
    int (*init)(struct dp_stage *st);
    void (*fini)(struct dp_stage *st);
    /* Handle n packets. Packets the stage sends, punts or drops leave the
     * vector through dp_emit/dp_punt/dp_drop; the ones it hands to the next
     * stage are compacted to the front and their count returned. */
    uint16_t (*process)(struct dp_stage *st, struct rte_mbuf **pkts,
                        uint16_t n);
    /* Periodic duties (expiry scans...), run on the worker's thread. */
    void (*tick)(struct dp_stage *st, uint64_t now_ns);
    /* A stage that owns a logical port (a one2many bundle): what the
     * pipeline and the slow path send to that port comes here. */
    void (*transmit)(struct dp_stage *st, struct rte_mbuf **pkts, uint16_t n);
};

struct dp_stage {
    const struct dp_stage_ops *ops;
    struct dp_worker *w;
    struct dp_stage_stats stats;
    void *priv;
} __rte_cache_aligned;

struct dp_rxq {
    uint16_t port;
    uint16_t queue;
    uint16_t idle;  /* empty polls in a row (saturates at DP_IDLE_POLLS) */
    uint16_t skip;  /* loops to go before this queue is polled again */
};

/* A queue empty this many polls in a row is polled once in idle_rx_skip + 1
 * loops until it has packets again (a standby link, a quiet port): its
 * first packet waits a few loops more, the busy queues lose no time. */
#define DP_IDLE_POLLS 16

/* Under load (a full burst moved) the worker reads the clock once in
 * DP_CLOCK_SKIPS + 1 loops (worker.c). */
#define DP_CLOCK_SKIPS 3

/* A token bucket in nanoseconds of credit: a packet costs cost_ns, the
 * bucket holds depth_ns (burst packets' worth). */
struct dp_bucket {
    uint64_t credit_ns;
    uint64_t last_ns;
};

/* Punt policing per reason: the reason's bucket (what the slow path may
 * get), and one of DP_PUNT_SOURCES buckets by source address (a source's
 * share of it). A source over its share is dropped before it takes a token
 * of the reason's bucket: one host's storm leaves the rest to the others
 * (a traceroute, a neighbour). cost_ns 0: no limit; src_cost_ns 0: no
 * per-source limit. Configured from any thread (single aligned words);
 * buckets last used before epoch_ns start full. Used by the worker. */
#define DP_PUNT_SOURCES 64

struct dp_punt_policer {
    uint64_t cost_ns;
    uint64_t depth_ns;
    uint64_t src_cost_ns;
    uint64_t src_depth_ns;
    uint64_t epoch_ns;
    struct dp_bucket all;
    struct dp_bucket src[DP_PUNT_SOURCES];
};

/* A command a caller posts for the worker to run inside its loop
 * (dp_worker_exec). state: the caller posts (IDLE -> POSTED), whoever runs
 * it takes it (POSTED -> TAKEN, a compare-and-swap: one runner) and marks it
 * DONE; the caller reads the result and sets IDLE. */
enum { DP_REQ_IDLE, DP_REQ_POSTED, DP_REQ_TAKEN, DP_REQ_DONE };

struct dp_worker_req {
    uint32_t state;
    int rc;
    struct dp_cmd cmd;
    char err[256];           /* the runner's error message (thread-local there) */
    pthread_mutex_t callers; /* one caller at a time per worker */
} __rte_cache_aligned;

struct dp_txbuf {
    uint16_t n;
    uint16_t queue;
    uint8_t enabled;
    uint8_t shared; /* fewer tx queues than workers: take the port lock */
    struct dp_stage *via; /* a logical port (not enabled): its stage sends */
    struct rte_mbuf *pkts[DP_TXBUF_SIZE];
};

struct dp_worker {
    /* hot, read every loop */
    volatile uint32_t attention;
    unsigned id;
    unsigned lcore;
    uint16_t n_rxq;
    uint16_t n_stages;
    uint16_t n_dirty;
    uint16_t rx_port; /* input port of the burst being processed */
    uint8_t measuring; /* this loop is sampled for cycle accounting */
    uint64_t inline_tx_cycles; /* tx sent from inside a stage, this call */
    struct dp_rxq rxq[DP_MAX_RXQ_PER_WORKER];
    struct dp_stage *stages[DP_MAX_STAGES];
    uint16_t dirty[DP_MAX_PORTS];
    struct rte_ring *punt_ring;
    struct rte_ring *inject_ring;
    struct rte_mempool *pool;
    uint64_t sample_mask;
    uint16_t idle_rx_skip;
    uint64_t tick_interval_tsc;
    uint64_t last_tick_tsc;
    uint64_t last_exit_tsc;
    struct dp_punt_policer police[DP_MAX_PUNT_REASONS];
    struct dp_worker_req req;  /* its own cache lines: callers write it */

    struct dp_worker_stats stats __rte_cache_aligned;
    struct dp_worker_port_stats port_stats[DP_MAX_PORTS];
    struct dp_txbuf tx[DP_MAX_PORTS] __rte_cache_aligned;
} __rte_cache_aligned;

/* Port-wide state shared by workers (tx locks for shared queues). */
extern rte_spinlock_t dp_port_txlock[DP_MAX_PORTS][DP_MAX_QUEUES];

void dp_set_error(int err, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
const struct dp_stage_ops *dp_stage_ops_find(const char *kind);
struct rte_mempool *dp_pool_mempool(struct dp_pool *pool);
void *dp_table_alloc(size_t size, int socket);
void dp_table_free(void *p, size_t size);
void dp_telemetry_register(void);
void dp_telemetry_add(struct dp_worker *w);
void dp_telemetry_remove(struct dp_worker *w);
void dp_txbuf_flush(struct dp_worker *w, uint16_t port);
void dp_tx_send(struct dp_worker *w, uint16_t port, struct rte_mbuf **pkts,
                uint16_t n);

/* Hand pkts to the port's tx queue; what the driver does not take is freed
 * and counted (tx_full). Inline where a stage sends a whole burst
 * (dp_emit_bulk), so no call of ours stands between the stage and the
 * driver: +1.5 % on one2many failover (bench/one2many.py --together, 4 of 4
 * rounds); the flushes call the out-of-line dp_tx_send. */
static __rte_always_inline void
dp_tx_send_inline(struct dp_worker *w, uint16_t port, struct rte_mbuf **pkts,
                  uint16_t n)
{
    struct dp_txbuf *tb = &w->tx[port];
    uint16_t sent;

    uint64_t t0 = w->measuring ? rte_rdtsc() : 0;

    if (unlikely(tb->shared)) {
        rte_spinlock_lock(&dp_port_txlock[port][tb->queue]);
        sent = rte_eth_tx_burst(port, tb->queue, pkts, n);
        rte_spinlock_unlock(&dp_port_txlock[port][tb->queue]);
    } else {
        sent = rte_eth_tx_burst(port, tb->queue, pkts, n);
    }
    if (w->measuring)  /* the driver's time is port-tx's, not the stage's */
        w->inline_tx_cycles += rte_rdtsc() - t0;
    w->stats.tx += sent;
    w->port_stats[port].tx += sent;
    if (unlikely(sent < n)) {
        uint16_t lost = n - sent;
        rte_pktmbuf_free_bulk(&pkts[sent], lost);
        w->stats.drops[DP_DROP_TX_FULL] += lost;
        w->stats.dropped += lost;
        w->port_stats[port].tx_dropped += lost;
    }
}

static inline void dp_drop(struct dp_stage *st, struct rte_mbuf *m,
                           enum dp_drop_reason reason)
{
    rte_pktmbuf_free(m);
    st->stats.drops[reason]++;
    st->stats.dropped++;
    st->w->stats.drops[reason]++;
    st->w->stats.dropped++;
}

/* A port with no tx queue of its own: a logical port's stage sends for it,
 * anything else is dropped (bad_egress). Kept out of line of the hot path. */
static inline void dp_emit_other(struct dp_worker *w, uint16_t out_port,
                                 struct rte_mbuf **pkts, uint16_t n)
{
    struct dp_stage *via = out_port < DP_MAX_PORTS ? w->tx[out_port].via : NULL;

    if (via != NULL) {
        via->ops->transmit(via, pkts, n);
        return;
    }
    rte_pktmbuf_free_bulk(pkts, n);
    w->stats.drops[DP_DROP_BAD_EGRESS] += n;
    w->stats.dropped += n;
}

/* Queue a packet for transmission on out_port; flushed after the burst. */
static inline void dp_emit(struct dp_worker *w, uint16_t out_port,
                           struct rte_mbuf *m)
{
    struct dp_txbuf *tb;

    if (unlikely(out_port >= DP_MAX_PORTS || !w->tx[out_port].enabled)) {
        dp_emit_other(w, out_port, &m, 1);
        return;
    }
    tb = &w->tx[out_port];
    if (tb->n == 0)
        w->dirty[w->n_dirty++] = out_port;
    else if (unlikely(tb->n == DP_TXBUF_SIZE))
        dp_txbuf_flush(w, out_port); /* keeps it on the dirty list */
    tb->pkts[tb->n++] = m;
}

/* Queue n packets for one port: the common case of a whole burst. */
static inline void dp_emit_bulk(struct dp_worker *w, uint16_t out_port,
                                struct rte_mbuf **pkts, uint16_t n)
{
    struct dp_txbuf *tb;

    if (unlikely(out_port >= DP_MAX_PORTS || !w->tx[out_port].enabled)) {
        dp_emit_other(w, out_port, pkts, n);
        return;
    }
    tb = &w->tx[out_port];
    if (tb->n == 0) {
        /* Nothing waiting for this port and a burst's worth to send: send it
         * from the caller's array now, as testpmd's io mode does (no copy,
         * no flush later). Smaller pieces wait to be batched. */
        if (n >= DP_BURST / 2) {
            dp_tx_send_inline(w, out_port, pkts, n);
            return;
        }
        w->dirty[w->n_dirty++] = out_port;
    }
    while (n) {
        uint16_t room = DP_TXBUF_SIZE - tb->n, k = RTE_MIN(room, n);

        if (room == 0) {
            dp_txbuf_flush(w, out_port);
            continue;
        }
        memcpy(&tb->pkts[tb->n], pkts, k * sizeof(*pkts));
        tb->n += k;
        pkts += k;
        n -= k;
    }
}

/* Takes a token from b if it has one. */
static inline int dp_bucket_take(struct dp_bucket *b, uint64_t cost,
                                 uint64_t depth, uint64_t now, uint64_t epoch)
{
    /* A bucket unused since the policer was (re)configured, or a clock
     * stepped back, is full. */
    uint64_t credit = b->last_ns >= epoch && now >= b->last_ns
                      ? b->credit_ns + (now - b->last_ns) : depth;

    b->last_ns = now;
    if (credit > depth)
        credit = depth;
    if (credit < cost) {
        b->credit_ns = credit;
        return 0;
    }
    b->credit_ns = credit - cost;
    return 1;
}

/* Which per-source bucket a punted frame's sender falls in: its IPv6 or
 * IPv4 source, ARP's sender address, else its source MAC. */
static inline unsigned dp_punt_source(const struct rte_mbuf *m)
{
    const uint8_t *d = rte_pktmbuf_mtod(m, const uint8_t *);
    const uint32_t len = rte_pktmbuf_data_len(m);
    uint64_t h = 0, x = 0;

    if (len >= 38 && d[12] == 0x86 && d[13] == 0xdd) {          /* IPv6 source */
        memcpy(&h, d + 22, 8);
        memcpy(&x, d + 30, 8);
        h ^= x;
    } else if (len >= 30 && d[12] == 0x08 && d[13] == 0x00) {   /* IPv4 source */
        memcpy(&h, d + 26, 4);
    } else if (len >= 32 && d[12] == 0x08 && d[13] == 0x06) {   /* ARP sender */
        memcpy(&h, d + 28, 4);
    } else if (len >= 12) {                                     /* source MAC */
        memcpy(&h, d + 6, 6);
    }
    return (unsigned)((h * 0x9E3779B97F4A7C15ull) >> 58) % DP_PUNT_SOURCES;
}

/* May one more packet go to the slow path? Takes its tokens if so. */
static inline int dp_punt_admit(struct dp_punt_policer *p, const struct rte_mbuf *m)
{
    const uint64_t cost = __atomic_load_n(&p->cost_ns, __ATOMIC_RELAXED);
    const uint64_t src_cost = __atomic_load_n(&p->src_cost_ns, __ATOMIC_RELAXED);
    uint64_t now, epoch;

    if (cost == 0)
        return 1;
    now = dp_clock_ns();
    epoch = __atomic_load_n(&p->epoch_ns, __ATOMIC_ACQUIRE);
    if (src_cost && !dp_bucket_take(&p->src[dp_punt_source(m)], src_cost,
                                    __atomic_load_n(&p->src_depth_ns, __ATOMIC_RELAXED),
                                    now, epoch))
        return 0;
    return dp_bucket_take(&p->all, cost,
                          __atomic_load_n(&p->depth_ns, __ATOMIC_RELAXED), now, epoch);
}

/* Hand a packet to Python with why (DP_PUNT_*), within the reason's rate;
 * the reason rides in the RSS hash field, which nothing reads after the
 * stages. */
static inline void dp_punt_why(struct dp_stage *st, struct rte_mbuf *m,
                               uint32_t reason)
{
    struct dp_worker *w = st->w;

    if (unlikely(reason >= DP_MAX_PUNT_REASONS))
        reason = DP_PUNT_OTHER;
    if (unlikely(!dp_punt_admit(&w->police[reason], m))) {
        w->stats.punt_policed[reason]++;
        dp_drop(st, m, DP_DROP_PUNT_POLICED);
        return;
    }
    m->hash.usr = reason;
    if (unlikely(rte_ring_sp_enqueue(w->punt_ring, m) != 0)) {
        dp_drop(st, m, DP_DROP_PUNT_FULL);
        return;
    }
    w->stats.punted++;
    w->stats.punts[reason]++;
}

static inline void dp_punt(struct dp_stage *st, struct rte_mbuf *m)
{
    dp_punt_why(st, m, DP_PUNT_OTHER);
}

#endif /* DP_INTERNAL_H */
