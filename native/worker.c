/*
 * worker.c - the per-core burst loop: rx burst -> stages -> tx burst.
 *
 * One struct dp_worker per worker thread. Only that thread writes it (the
 * counters included); other threads read counters without locks and sum
 * them. The loop returns to Python only when Python has something to do:
 * stop, a command (attention flag), or the time budget. Punted packets go
 * to the slow path's own thread, which drains every worker's punt ring.
 */
#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include <rte_ethdev.h>
#include <rte_errno.h>
#include <rte_lcore.h>
#include <rte_malloc.h>
#include <rte_rcu_qsbr.h>

#include "dp_internal.h"
#include "router.h"

static volatile int dp_stop_flag;

static const char *const drop_reason_names[] = {
#define DP_DROP_NAME(sym, name) name,
    DP_DROP_REASONS(DP_DROP_NAME)
#undef DP_DROP_NAME
};

const char *dp_drop_reason_name(unsigned reason)
{
    return reason < DP_DROP__COUNT ? drop_reason_names[reason] : NULL;
}

unsigned dp_drop_reason_count(void)
{
    return DP_DROP__COUNT;
}

static const char *const punt_reason_names[] = {
    [DP_PUNT_OTHER] = "other",
    [DP_PUNT_LOCAL] = "local",
    [DP_PUNT_RESOLVE] = "resolve",
    [DP_PUNT_NO_ROUTE] = "no_route",
    [DP_PUNT_HOP_LIMIT] = "hop_limit",
    [DP_PUNT_TOO_BIG] = "too_big",
    [DP_PUNT_HBH] = "hbh",
    [DP_PUNT_IP4_OPTIONS] = "ip4_options",
    [DP_PUNT_L2_MULTICAST] = "l2_multicast",
    [DP_PUNT_MULTICAST] = "multicast",
    [DP_PUNT_ARP] = "arp",
    [DP_PUNT_SCOPE] = "scope",
};
_Static_assert(RTE_DIM(punt_reason_names) <= DP_MAX_PUNT_REASONS,
               "raise DP_MAX_PUNT_REASONS");

const char *dp_punt_reason_name(unsigned reason)
{
    return reason < RTE_DIM(punt_reason_names) ? punt_reason_names[reason]
                                                : NULL;
}

void dp_request_stop(void)
{
    __atomic_store_n(&dp_stop_flag, 1, __ATOMIC_RELEASE);
}

void dp_clear_stop(void)
{
    __atomic_store_n(&dp_stop_flag, 0, __ATOMIC_RELEASE);
}

int dp_stop_requested(void)
{
    return __atomic_load_n(&dp_stop_flag, __ATOMIC_ACQUIRE);
}

/* ---- life cycle ------------------------------------------------------------ */

int dp_worker_create(unsigned id, int socket, struct dp_pool *pool,
                     struct dp_worker **out)
{
    char name[RTE_RING_NAMESIZE];
    struct dp_worker *w;

    w = rte_zmalloc_socket("dp_worker", sizeof(*w), RTE_CACHE_LINE_SIZE,
                           socket);
    if (w == NULL) {
        dp_set_error(ENOMEM, "worker %u", id);
        return -ENOMEM;
    }
    w->id = id;
    w->lcore = LCORE_ID_ANY;
    w->pool = dp_pool_mempool(pool);
    /* Stage ticks (expiry scans, link timers) every millisecond. */
    w->tick_interval_tsc = dp_tsc_hz() / 1000;
    pthread_mutex_init(&w->req.callers, NULL);

    snprintf(name, sizeof(name), "dp_punt_%u", id);
    w->punt_ring = rte_ring_create(name, DP_RING_SIZE, socket,
                                   RING_F_SP_ENQ | RING_F_SC_DEQ);
    snprintf(name, sizeof(name), "dp_inject_%u", id);
    w->inject_ring = rte_ring_create(name, DP_RING_SIZE, socket,
                                     RING_F_SC_DEQ);
    if (w->punt_ring == NULL || w->inject_ring == NULL) {
        int err = rte_errno;
        dp_set_error(err, "worker %u rings", id);
        dp_worker_destroy(w);
        return -err;
    }
    dp_telemetry_add(w);
    *out = w;
    return 0;
}

static void drain_ring_free(struct rte_ring *r)
{
    struct rte_mbuf *m;

    if (r == NULL)
        return;
    while (rte_ring_dequeue(r, (void **)&m) == 0)
        rte_pktmbuf_free(m);
    rte_ring_free(r);
}

void dp_worker_destroy(struct dp_worker *w)
{
    unsigned i;

    if (w == NULL)
        return;
    dp_telemetry_remove(w);
    for (i = 0; i < DP_MAX_PORTS; i++) {
        struct dp_txbuf *tb = &w->tx[i];
        rte_pktmbuf_free_bulk(tb->pkts, tb->n);
        tb->n = 0;
    }
    for (i = 0; i < w->n_stages; i++) {
        struct dp_stage *st = w->stages[i];
        if (st->ops->fini)
            st->ops->fini(st);
        rte_free(st->priv);
        rte_free(st);
    }
    drain_ring_free(w->punt_ring);
    drain_ring_free(w->inject_ring);
    pthread_mutex_destroy(&w->req.callers);
    rte_free(w);
}

int dp_worker_add_rxq(struct dp_worker *w, uint16_t port_id, uint16_t queue)
{
    if (w->n_rxq >= DP_MAX_RXQ_PER_WORKER || port_id >= DP_MAX_PORTS) {
        dp_set_error(ERANGE, "worker %u: rx queue %u/%u", w->id, port_id,
                     queue);
        return -ERANGE;
    }
    w->rxq[w->n_rxq].port = port_id;
    w->rxq[w->n_rxq].queue = queue;
    w->n_rxq++;
    return 0;
}

int dp_worker_set_txq(struct dp_worker *w, uint16_t port_id, uint16_t queue,
                      int shared)
{
    if (port_id >= DP_MAX_PORTS || queue >= DP_MAX_QUEUES) {
        dp_set_error(ERANGE, "worker %u: tx queue %u/%u", w->id, port_id,
                     queue);
        return -ERANGE;
    }
    w->tx[port_id].queue = queue;
    w->tx[port_id].shared = shared != 0;
    w->tx[port_id].enabled = 1;
    return 0;
}

int dp_worker_set_port_via(struct dp_worker *w, uint16_t port_id,
                           struct dp_stage *st)
{
    if (port_id >= DP_MAX_PORTS || st == NULL || st->w != w ||
        st->ops->transmit == NULL || w->tx[port_id].enabled) {
        dp_set_error(EINVAL, "worker %u: port %u cannot be sent through a %s "
                     "stage", w->id, port_id, st ? st->ops->kind : "(no)");
        return -EINVAL;
    }
    w->tx[port_id].via = st;
    return 0;
}

int dp_worker_add_stage(struct dp_worker *w, const char *kind,
                        struct dp_stage **out)
{
    const struct dp_stage_ops *ops = dp_stage_ops_find(kind);
    struct dp_stage *st;
    int rc;

    if (ops == NULL) {
        dp_set_error(ENOENT, "unknown stage kind '%s'", kind);
        return -ENOENT;
    }
    if (w->n_stages >= DP_MAX_STAGES) {
        dp_set_error(ENOSPC, "worker %u: more than %d stages", w->id,
                     DP_MAX_STAGES);
        return -ENOSPC;
    }
    st = rte_zmalloc("dp_stage", sizeof(*st), RTE_CACHE_LINE_SIZE);
    if (st == NULL) {
        dp_set_error(ENOMEM, "stage %s", kind);
        return -ENOMEM;
    }
    st->ops = ops;
    st->w = w;
    if (ops->priv_size) {
        st->priv = rte_zmalloc("dp_stage_priv", ops->priv_size,
                               RTE_CACHE_LINE_SIZE);
        if (st->priv == NULL) {
            rte_free(st);
            dp_set_error(ENOMEM, "stage %s state", kind);
            return -ENOMEM;
        }
    }
    if (ops->init && (rc = ops->init(st)) < 0) {
        rte_free(st->priv);
        rte_free(st);
        return rc;
    }
    w->stages[w->n_stages++] = st;
    *out = st;
    return 0;
}

int dp_worker_thread_init(struct dp_worker *w, int cpu)
{
    if (rte_thread_register() != 0) {
        dp_set_error(rte_errno, "worker %u: register thread with EAL",
                     w->id);
        return -rte_errno;
    }
    if (cpu >= 0) {
        rte_cpuset_t set;
        CPU_ZERO(&set);
        CPU_SET(cpu, &set);
        if (rte_thread_set_affinity(&set) != 0) {
            rte_thread_unregister();
            dp_set_error(EINVAL, "worker %u: pin to cpu %d", w->id, cpu);
            return -EINVAL;
        }
    }
    w->lcore = rte_lcore_id();
    /* Route-table writers wait for this worker's quiescent points, but
     * only while it is inside dp_worker_poll (online). */
    if (dp_qsbr_init() < 0) {
        rte_thread_unregister();
        return -ENOMEM;
    }
    if (rte_rcu_qsbr_thread_register(dp_qsbr, w->id)) {
        rte_thread_unregister();
        dp_set_error(rte_errno, "worker %u: register with RCU", w->id);
        return -rte_errno;
    }
    return 0;
}

void dp_worker_thread_fini(struct dp_worker *w)
{
    rte_rcu_qsbr_thread_unregister(dp_qsbr, w->id);
    w->lcore = LCORE_ID_ANY;
    rte_thread_unregister();
}

void dp_worker_set_cycle_sampling(struct dp_worker *w, unsigned shift)
{
    w->sample_mask = shift >= 63 ? UINT64_MAX : (1ull << shift) - 1;
}

void dp_worker_set_idle_rx_skip(struct dp_worker *w, unsigned loops)
{
    w->idle_rx_skip = (uint16_t)RTE_MIN(loops, 1023u);
}

void dp_worker_notify(struct dp_worker *w)
{
    __atomic_store_n(&w->attention, 1, __ATOMIC_RELEASE);
}

/* ---- the burst loop ------------------------------------------------------- */

void dp_tx_send(struct dp_worker *w, uint16_t port, struct rte_mbuf **pkts,
                uint16_t n)
{
    dp_tx_send_inline(w, port, pkts, n);
}

void dp_txbuf_flush(struct dp_worker *w, uint16_t port)
{
    struct dp_txbuf *tb = &w->tx[port];

    dp_tx_send(w, port, tb->pkts, tb->n);
    tb->n = 0;
}

static inline void flush_dirty(struct dp_worker *w)
{
    uint16_t i;

    for (i = 0; i < w->n_dirty; i++)
        if (w->tx[w->dirty[i]].n)
            dp_txbuf_flush(w, w->dirty[i]);
    w->n_dirty = 0;
}

static inline void drop_unclaimed(struct dp_worker *w, struct rte_mbuf **pkts,
                                  uint16_t n)
{
    rte_pktmbuf_free_bulk(pkts, n);
    w->stats.drops[DP_DROP_NO_EGRESS] += n;
    w->stats.dropped += n;
}

/* Run the stages over one burst. When measuring, t is the TSC at the start
 * and the TSC after the last stage is returned. */
static inline uint64_t run_pipeline(struct dp_worker *w,
                                    struct rte_mbuf **pkts, uint16_t n,
                                    uint64_t t, int measure)
{
    uint16_t i;

    for (i = 0; i < w->n_stages && n; i++) {
        struct dp_stage *st = w->stages[i];
        uint16_t in = n;

        w->inline_tx_cycles = 0;
        n = st->ops->process(st, pkts, n);
        st->stats.calls++;
        st->stats.packets += in;
        st->stats.passed += n;
        if (measure) {
            uint64_t t1 = rte_rdtsc();
            st->stats.cycles += t1 - t - w->inline_tx_cycles;
            st->stats.sampled_packets += in;
            w->stats.tx_cycles += w->inline_tx_cycles;
            t = t1;
        }
    }
    if (unlikely(n))
        drop_unclaimed(w, pkts, n);
    return t;
}

static inline uint16_t drain_inject(struct dp_worker *w)
{
    struct rte_mbuf *pkts[DP_BURST];
    unsigned n, i;

    n = rte_ring_sc_dequeue_burst(w->inject_ring, (void **)pkts, DP_BURST,
                                  NULL);
    for (i = 0; i < n; i++)
        dp_emit(w, pkts[i]->port, pkts[i]);
    w->stats.injected += n;
    return n;
}

static inline void run_ticks(struct dp_worker *w)
{
    uint64_t now_ns = dp_clock_ns();
    uint16_t i;

    for (i = 0; i < w->n_stages; i++)
        if (w->stages[i]->ops->tick)
            w->stages[i]->ops->tick(w->stages[i], now_ns);
}

/* The stage timers, due at TSC t: run, their output sent, their time
 * counted apart. Returns the TSC after them. */
static inline uint64_t run_due_ticks(struct dp_worker *w, uint64_t t)
{
    uint64_t after;

    w->last_tick_tsc = t;
    run_ticks(w);
    flush_dirty(w);
    after = rte_rdtsc();
    w->stats.tick_cycles += after - t;
    return after;
}

/* ---- commands run inside the loop ------------------------------------------- */

/* A dump page is read in steps of DUMP_STEP records until it is full, the
 * walk ends, or DUMP_BUDGET_US have gone: whatever the records cost (a
 * netflow record looks its routes up), the worker is back to its rx queues
 * soon. */
#define DUMP_STEP 16
#define DUMP_BUDGET_US 50

static int dump_step(struct dp_cmd *c, unsigned done, unsigned max)
{
    if (c->kind == DP_CMD_DUMP_NETFLOW)
        return dp_netflow_show(c->st, &c->cursor,
                               (struct dp_flow_record *)c->p + done, max);
    return dp_ip6flow_show(c->st, (int)c->a0, &c->cursor,
                           (struct dp_ip6flow_entry *)c->p + done, max);
}

static int dump_page(struct dp_cmd *c)
{
    const uint64_t start = rte_rdtsc();
    const uint64_t budget = dp_tsc_hz() * DUMP_BUDGET_US / 1000000;
    unsigned done = 0;

    if (c->p == NULL || c->max == 0) {
        dp_set_error(EINVAL, "dump: no room for records");
        return -EINVAL;
    }
    do {
        int rc = dump_step(c, done, RTE_MIN(c->max - done, (unsigned)DUMP_STEP));

        if (rc < 0)
            return rc;
        done += (unsigned)rc;
    } while (done < c->max && c->cursor != 0 && rte_rdtsc() - start < budget);
    return (int)done;
}

static int run_cmd(struct dp_cmd *c)
{
    switch (c->kind) {
    case DP_CMD_DUMP_NETFLOW:
    case DP_CMD_DUMP_IP6FLOW:
        return dump_page(c);
    case DP_CMD_NETFLOW_TIMEOUTS:
        return dp_netflow_set_timeouts(c->st, (uint32_t)c->a0, (uint32_t)c->a1);
    case DP_CMD_NETFLOW_SETCONFIG:
        return dp_netflow_setconfig(c->st, (uint16_t)c->a0, (uint32_t)c->a1);
    case DP_CMD_NETFLOW_IFINDEX:
        return dp_netflow_set_ifindex(c->st, (uint16_t)c->a0, (uint32_t)c->a1);
    case DP_CMD_ONE2MANY_STATS:
        return dp_one2many_stats(c->st, (int)c->a0, c->p, (int)c->a1);
    case DP_CMD_IP6FLOW_CONFIGURE:
        return dp_ip6flow_configure(c->st, c->p);
    case DP_CMD_IP6FLOW_INVALIDATE:
        return dp_ip6flow_invalidate_all(c->st);
    case DP_CMD_XCONNECT_SET:
        return dp_xconnect_set(c->st, (uint16_t)c->a0, (uint16_t)c->a1);
    default:
        dp_set_error(EINVAL, "unknown worker command %d", c->kind);
        return -EINVAL;
    }
}

/* Whoever takes a posted request runs it: the worker in its loop, or the
 * caller when no worker runs. */
static void run_request(struct dp_worker_req *r)
{
    uint32_t posted = DP_REQ_POSTED;

    if (!__atomic_compare_exchange_n(&r->state, &posted, DP_REQ_TAKEN, 0,
                                     __ATOMIC_ACQUIRE, __ATOMIC_RELAXED))
        return;
    r->rc = run_cmd(&r->cmd);
    if (r->rc < 0)
        snprintf(r->err, sizeof(r->err), "%s", dp_last_error());
    __atomic_store_n(&r->state, DP_REQ_DONE, __ATOMIC_RELEASE);
}

int dp_worker_exec(struct dp_worker *w, struct dp_cmd *cmd, uint32_t timeout_us)
{
    struct dp_worker_req *r = &w->req;
    uint64_t waited_us = 0;
    int rc;

    if (cmd->st == NULL || cmd->st->w != w) {
        dp_set_error(EINVAL, "worker %u: command %d for another worker's stage",
                     w->id, cmd->kind);
        return -EINVAL;
    }
    pthread_mutex_lock(&r->callers);
    r->cmd = *cmd;
    __atomic_store_n(&r->state, DP_REQ_POSTED, __ATOMIC_RELEASE);
    for (;;) {
        uint32_t state = __atomic_load_n(&r->state, __ATOMIC_ACQUIRE);
        struct timespec nap = { 0, 20000 };

        if (state == DP_REQ_DONE)
            break;
        if (state == DP_REQ_POSTED &&
            __atomic_load_n(&w->lcore, __ATOMIC_ACQUIRE) == LCORE_ID_ANY) {
            run_request(r); /* no worker thread runs: nothing else reads its tables */
            continue;
        }
        if (state == DP_REQ_POSTED && waited_us >= timeout_us) {
            uint32_t posted = DP_REQ_POSTED;

            if (__atomic_compare_exchange_n(&r->state, &posted, DP_REQ_IDLE,
                                            0, __ATOMIC_ACQUIRE,
                                            __ATOMIC_RELAXED)) {
                pthread_mutex_unlock(&r->callers);
                dp_set_error(ETIMEDOUT, "worker %u did not run command %d "
                             "within %u us", w->id, cmd->kind, timeout_us);
                return -ETIMEDOUT;
            }
            continue; /* taken meanwhile: it is running */
        }
        nanosleep(&nap, NULL);
        waited_us += 20;
    }
    rc = r->rc;
    if (rc < 0)
        dp_set_error(0, "%s", r->err);
    cmd->cursor = r->cmd.cursor;
    __atomic_store_n(&r->state, DP_REQ_IDLE, __ATOMIC_RELEASE);
    pthread_mutex_unlock(&r->callers);
    return rc;
}

int dp_worker_poll(struct dp_worker *w, uint64_t budget_us)
{
    const uint64_t hz = dp_tsc_hz();
    const uint64_t entry = rte_rdtsc();
    /* budget 0: stay until Python has something to do (stop, command). */
    const uint64_t deadline = budget_us ? entry + budget_us * hz / 1000000
                                        : UINT64_MAX;
    struct rte_mbuf *pkts[DP_BURST];
    uint64_t t = entry;
    unsigned clock_skips = 0;   /* loops since the clock was last read */
    int reason = 0;

    if (w->last_exit_tsc) {
        uint64_t gap = entry - w->last_exit_tsc;
        w->stats.last_gap_cycles = gap;
        if (gap > w->stats.max_gap_cycles)
            w->stats.max_gap_cycles = gap;
    }
    w->stats.polls++;
    rte_rcu_qsbr_thread_online(dp_qsbr, w->id);
    /* Stages read the clock their ticks leave (netflow's flow times): a
     * tick due now runs before the first burst, not after it. */
    if (entry - w->last_tick_tsc >= w->tick_interval_tsc)
        t = run_due_ticks(w, entry);

    for (;;) {
        const int measure = (w->stats.loops & w->sample_mask) == 0;
        uint64_t loop_start;
        uint32_t moved = 0;
        uint16_t q;

        if (unlikely(measure && clock_skips)) {
            /* A sampled loop times its parts from a fresh clock; the loops
             * that skipped their read were all busy (below). */
            const uint64_t now = rte_rdtsc();
            w->stats.busy_cycles += now - t;
            t = now;
            clock_skips = 0;
        }
        loop_start = t;
        w->measuring = measure;

        for (q = 0; q < w->n_rxq; q++) {
            struct dp_rxq *rq = &w->rxq[q];
            uint16_t n;

            if (unlikely(rq->skip)) {
                rq->skip--;
                continue;
            }
            n = rte_eth_rx_burst(rq->port, rq->queue, pkts, DP_BURST);
            if (n == 0) {
                w->stats.empty_polls++;
                if (rq->idle < DP_IDLE_POLLS)
                    rq->idle++;
                else
                    rq->skip = w->idle_rx_skip;
                continue;
            }
            rq->idle = 0;
            w->stats.rx += n;
            w->stats.rx_bursts++;
            w->port_stats[rq->port].rx += n;
            w->rx_port = rq->port;
            moved += n;
            if (measure) {
                uint64_t t1 = rte_rdtsc();
                w->stats.rx_cycles += t1 - t;
                w->stats.sampled_rx += n;
                t = run_pipeline(w, pkts, n, t1, 1);
                flush_dirty(w);
                t1 = rte_rdtsc();
                w->stats.tx_cycles += t1 - t;
                t = t1;
            } else {
                run_pipeline(w, pkts, n, 0, 0);
                flush_dirty(w);
            }
        }
        w->measuring = 0; /* flushes below belong to no stage */
        if (unlikely(rte_ring_count(w->inject_ring))) {
            moved += drain_inject(w);
            flush_dirty(w);
        }
        w->stats.loops++;
        rte_rcu_qsbr_quiescent(dp_qsbr, w->id); /* no table pointer held */
        /* A loop that moved a full burst was busy whatever the clock says,
         * so under load the clock (rdtsc, ~25 cycles: a packet's worth of
         * forwarding) is read once in DP_CLOCK_SKIPS + 1 loops; ticks, stop
         * and commands wait those few microseconds. */
        if (!measure && moved >= DP_BURST && clock_skips < DP_CLOCK_SKIPS) {
            clock_skips++;
            continue;
        }
        t = rte_rdtsc();
        if (moved || clock_skips)
            w->stats.busy_cycles += t - loop_start;
        clock_skips = 0;

        if (unlikely(t - w->last_tick_tsc >= w->tick_interval_tsc))
            t = run_due_ticks(w, t); /* the next loop's busy time starts after them */
        if (unlikely(__atomic_load_n(&dp_stop_flag, __ATOMIC_RELAXED))) {
            reason |= DP_POLL_STOP;
            break;
        }
        if (unlikely(w->attention)) {
            __atomic_store_n(&w->attention, 0, __ATOMIC_RELAXED);
            reason |= DP_POLL_ATTENTION;
            break;
        }
        if (unlikely(__atomic_load_n(&w->req.state, __ATOMIC_ACQUIRE) ==
                     DP_REQ_POSTED)) {
            uint64_t t1;

            run_request(&w->req); /* bounded (a dump: one page), the loop goes on */
            t1 = rte_rdtsc();
            w->stats.commands++;
            if (t1 - t > w->stats.max_command_cycles)
                w->stats.max_command_cycles = t1 - t;
            t = t1;
        }
        if (unlikely(t >= deadline)) {
            reason |= DP_POLL_TIMEOUT;
            break;
        }
    }
    rte_rcu_qsbr_thread_offline(dp_qsbr, w->id);
    w->last_exit_tsc = rte_rdtsc();
    w->stats.total_cycles += w->last_exit_tsc - entry;
    return reason;
}

/* ---- slow path rings --------------------------------------------------------- */

int dp_worker_inject(struct dp_worker *w, uint16_t port_id,
                     const uint8_t *data, uint32_t len)
{
    struct rte_mbuf *m;
    char *p;

    if (port_id >= DP_MAX_PORTS ||
        !(w->tx[port_id].enabled || w->tx[port_id].via != NULL)) {
        dp_set_error(ENODEV, "inject: port %u is not an egress of worker %u",
                     port_id, w->id);
        return -ENODEV;
    }
    m = rte_pktmbuf_alloc(w->pool);
    if (m == NULL) {
        dp_set_error(ENOBUFS, "inject: mbuf pool empty");
        return -ENOBUFS;
    }
    p = rte_pktmbuf_append(m, len);
    if (p == NULL) {
        rte_pktmbuf_free(m);
        dp_set_error(EMSGSIZE, "inject: %u bytes do not fit an mbuf", len);
        return -EMSGSIZE;
    }
    memcpy(p, data, len);
    m->port = port_id;
    if (rte_ring_mp_enqueue(w->inject_ring, m) != 0) {
        rte_pktmbuf_free(m);
        dp_set_error(ENOBUFS, "inject: ring full");
        return -ENOBUFS;
    }
    return 0;
}

int dp_worker_drain_inject(struct dp_worker *w)
{
    unsigned n = 0, k;

    if (__atomic_load_n(&w->lcore, __ATOMIC_ACQUIRE) != LCORE_ID_ANY) {
        dp_set_error(EBUSY, "worker %u is running: it sends its own", w->id);
        return -EBUSY;
    }
    while ((k = drain_inject(w)) > 0)
        n += k;
    flush_dirty(w);
    return (int)n;
}

int dp_worker_punt_recv(struct dp_worker *w, uint8_t *buf, uint32_t cap,
                        uint16_t *port_id, uint32_t *len, uint32_t *reason)
{
    struct rte_mbuf *m;
    uint32_t n;
    const void *d;

    if (rte_ring_sc_dequeue(w->punt_ring, (void **)&m) != 0)
        return 0;
    n = RTE_MIN(cap, rte_pktmbuf_pkt_len(m));
    d = rte_pktmbuf_read(m, 0, n, buf);
    if (d != buf)
        memcpy(buf, d, n);
    *port_id = m->port;
    *len = n;
    *reason = m->hash.usr;
    rte_pktmbuf_free(m);
    return 1;
}

unsigned dp_worker_punt_pending(const struct dp_worker *w)
{
    return rte_ring_count(w->punt_ring);
}

static uint64_t cost_of(double rate)
{
    uint64_t cost = rate > 0 ? (uint64_t)(1e9 / rate) : 0;

    return cost == 0 && rate > 0 ? 1 : cost;
}

int dp_worker_set_punt_policer(struct dp_worker *w, unsigned reason,
                               double rate, uint32_t burst, double source_share)
{
    struct dp_punt_policer *p;
    uint64_t cost, src_cost = 0, src_burst = 0;

    if (reason >= DP_MAX_PUNT_REASONS || !(rate >= 0) || rate > 1e9 ||
        (rate > 0 && burst == 0) || !(source_share > 0) || source_share > 1) {
        dp_set_error(EINVAL, "punt policer %u: rate %g, burst %u, source share %g",
                     reason, rate, burst, source_share);
        return -EINVAL;
    }
    p = &w->police[reason];
    cost = cost_of(rate);
    if (cost && source_share < 1) {
        src_cost = cost_of(rate * source_share);
        src_burst = (uint64_t)(burst * source_share + 0.5);
        if (src_burst == 0)
            src_burst = 1;
    }
    __atomic_store_n(&p->depth_ns, cost * burst, __ATOMIC_RELAXED);
    __atomic_store_n(&p->src_depth_ns, src_cost * src_burst, __ATOMIC_RELAXED);
    __atomic_store_n(&p->src_cost_ns, src_cost, __ATOMIC_RELAXED);
    __atomic_store_n(&p->cost_ns, cost, __ATOMIC_RELAXED);
    /* every bucket full again */
    __atomic_store_n(&p->epoch_ns, dp_clock_ns(), __ATOMIC_RELEASE);
    return 0;
}

unsigned dp_punt_wait(struct dp_worker *const *ws, unsigned n,
                      uint32_t timeout_us)
{
    /* Short naps while the timeout allows: a punt waits at most one nap,
     * and the naps grow while the rings stay empty (an idle router wakes
     * ~2k times a second, not 20k). */
    uint64_t waited_us = 0, nap_us = 50;

    for (;;) {
        unsigned i, pending = 0;
        struct timespec ts;

        for (i = 0; i < n; i++)
            pending += rte_ring_count(ws[i]->punt_ring);
        if (pending || waited_us >= timeout_us)
            return pending;
        nap_us = RTE_MIN(nap_us, timeout_us - waited_us);
        ts.tv_sec = 0;
        ts.tv_nsec = (long)nap_us * 1000;
        nanosleep(&ts, NULL);
        waited_us += nap_us;
        nap_us = RTE_MIN(nap_us * 2, 500u);
    }
}

/* ---- counters, read lock-free from any thread -------------------------------- */

void dp_worker_stats(const struct dp_worker *w, struct dp_worker_stats *out)
{
    memcpy(out, &w->stats, sizeof(*out));
}

int dp_worker_port_stats(const struct dp_worker *w, uint16_t port_id,
                         struct dp_worker_port_stats *out)
{
    if (port_id >= DP_MAX_PORTS) {
        dp_set_error(ERANGE, "port %u", port_id);
        return -ERANGE;
    }
    memcpy(out, &w->port_stats[port_id], sizeof(*out));
    return 0;
}

unsigned dp_worker_lcore(const struct dp_worker *w)
{
    return w->lcore;
}

unsigned dp_worker_stage_count(const struct dp_worker *w)
{
    return w->n_stages;
}

struct dp_stage *dp_worker_stage(struct dp_worker *w, unsigned index)
{
    return index < w->n_stages ? w->stages[index] : NULL;
}

const char *dp_stage_kind(const struct dp_stage *st)
{
    return st->ops->kind;
}

void dp_stage_stats(const struct dp_stage *st, struct dp_stage_stats *out)
{
    memcpy(out, &st->stats, sizeof(*out));
}
