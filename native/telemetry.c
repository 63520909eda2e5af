/*
 * telemetry.c - the workers' counters in DPDK telemetry (dpdk-telemetry.py,
 * /var/run/dpdk/<prefix>/dpdk_telemetry.v2): /dataplane/stats (totals and
 * drops by reason) and /dataplane/workers (per worker).
 *
 * The telemetry thread reads counters lock-free like Python does; a lock
 * only keeps a worker from being freed while a reply is being built.
 */
#include <stdio.h>
#include <string.h>

#include <rte_spinlock.h>
#include <rte_telemetry.h>

#include "dp_internal.h"

#define DP_TEL_MAX_WORKERS 128

static rte_spinlock_t tel_lock = RTE_SPINLOCK_INITIALIZER;
static struct dp_worker *tel_workers[DP_TEL_MAX_WORKERS];

void dp_telemetry_add(struct dp_worker *w)
{
    unsigned i;

    rte_spinlock_lock(&tel_lock);
    for (i = 0; i < DP_TEL_MAX_WORKERS; i++)
        if (tel_workers[i] == NULL) {
            tel_workers[i] = w;
            break;
        }
    rte_spinlock_unlock(&tel_lock);
}

void dp_telemetry_remove(struct dp_worker *w)
{
    unsigned i;

    rte_spinlock_lock(&tel_lock);
    for (i = 0; i < DP_TEL_MAX_WORKERS; i++)
        if (tel_workers[i] == w)
            tel_workers[i] = NULL;
    rte_spinlock_unlock(&tel_lock);
}

static void add_stats(struct rte_tel_data *d, const struct dp_worker_stats *s)
{
    unsigned r;

    rte_tel_data_add_dict_u64(d, "rx", s->rx);
    rte_tel_data_add_dict_u64(d, "tx", s->tx);
    rte_tel_data_add_dict_u64(d, "injected", s->injected);
    rte_tel_data_add_dict_u64(d, "punted", s->punted);
    rte_tel_data_add_dict_u64(d, "dropped", s->dropped);
    for (r = 0; r < DP_DROP__COUNT; r++) {
        char key[64];
        snprintf(key, sizeof(key), "drop_%s", dp_drop_reason_name(r));
        rte_tel_data_add_dict_u64(d, key, s->drops[r]);
    }
}

static int tel_stats(const char *cmd, const char *params, struct rte_tel_data *d)
{
    struct dp_worker_stats sum, one;
    unsigned i, r, n = 0;

    (void)cmd;
    (void)params;
    memset(&sum, 0, sizeof(sum));
    rte_spinlock_lock(&tel_lock);
    for (i = 0; i < DP_TEL_MAX_WORKERS; i++) {
        if (tel_workers[i] == NULL)
            continue;
        dp_worker_stats(tel_workers[i], &one);
        sum.rx += one.rx;
        sum.tx += one.tx;
        sum.injected += one.injected;
        sum.punted += one.punted;
        sum.dropped += one.dropped;
        for (r = 0; r < DP_DROP__COUNT; r++)
            sum.drops[r] += one.drops[r];
        n++;
    }
    rte_spinlock_unlock(&tel_lock);
    rte_tel_data_start_dict(d);
    rte_tel_data_add_dict_u64(d, "workers", n);
    add_stats(d, &sum);
    return 0;
}

static int tel_workers_cmd(const char *cmd, const char *params,
                           struct rte_tel_data *d)
{
    struct dp_worker_stats s;
    unsigned i;

    (void)cmd;
    (void)params;
    rte_tel_data_start_dict(d);
    rte_spinlock_lock(&tel_lock);
    for (i = 0; i < DP_TEL_MAX_WORKERS; i++) {
        struct rte_tel_data *wd;
        char key[32];

        if (tel_workers[i] == NULL || (wd = rte_tel_data_alloc()) == NULL)
            continue;
        dp_worker_stats(tel_workers[i], &s);
        rte_tel_data_start_dict(wd);
        add_stats(wd, &s);
        rte_tel_data_add_dict_u64(wd, "max_gap_cycles", s.max_gap_cycles);
        snprintf(key, sizeof(key), "worker%u", tel_workers[i]->id);
        rte_tel_data_add_dict_container(d, key, wd, 0);
    }
    rte_spinlock_unlock(&tel_lock);
    return 0;
}

void dp_telemetry_register(void)
{
    rte_telemetry_register_cmd("/dataplane/stats", tel_stats,
                               "Packets received, sent, punted, dropped by "
                               "reason, summed over the workers");
    rte_telemetry_register_cmd("/dataplane/workers", tel_workers_cmd,
                               "The same counters per worker");
}
