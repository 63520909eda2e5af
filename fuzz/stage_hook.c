/*
 * stage_hook.c - see stage_hook.h. Mirrors worker.c's run_pipeline(),
 * drop_unclaimed() and flush_dirty() for a single stage.
 */
#include <errno.h>

#include <rte_malloc.h>

#include "stage_hook.h"

static void flush_tx(struct dp_worker *w)
{
    uint16_t i;

    for (i = 0; i < w->n_dirty; i++)
        if (w->tx[w->dirty[i]].n)
            dp_txbuf_flush(w, w->dirty[i]);
    w->n_dirty = 0;
}

uint16_t dp_stage_process_mbufs(struct dp_stage *st, struct rte_mbuf **pkts,
                                uint16_t n, uint16_t rx_port)
{
    struct dp_worker *w = st->w;
    uint16_t passed;

    if (n == 0)
        return 0;
    w->rx_port = rx_port;
    w->measuring = 0;
    w->inline_tx_cycles = 0;
    passed = st->ops->process(st, pkts, n);
    if (passed > n)
        rte_panic("stage %s passed %u of %u packets\n", st->ops->kind,
                  passed, n);
    st->stats.calls++;
    st->stats.packets += n;
    st->stats.passed += passed;
    if (passed) {
        rte_pktmbuf_free_bulk(pkts, passed);
        w->stats.drops[DP_DROP_NO_EGRESS] += passed;
        w->stats.dropped += passed;
    }
    flush_tx(w);
    return passed;
}

int dp_stage_process_frames(struct dp_stage *st, const uint8_t **frames,
                            const uint32_t *lens, unsigned n,
                            uint16_t rx_port)
{
    struct rte_mbuf *pkts[DP_BURST];
    unsigned i;

    if (n > DP_BURST)
        return -EINVAL;
    for (i = 0; i < n; i++) {
        char *p;

        pkts[i] = rte_pktmbuf_alloc(st->w->pool);
        if (pkts[i] == NULL) {
            rte_pktmbuf_free_bulk(pkts, i);
            return -ENOBUFS;
        }
        p = rte_pktmbuf_append(pkts[i], lens[i]);
        if (p == NULL) {
            rte_pktmbuf_free_bulk(pkts, i + 1);
            return -EMSGSIZE;
        }
        memcpy(p, frames[i], lens[i]);
        pkts[i]->port = rx_port;
    }
    return dp_stage_process_mbufs(st, pkts, (uint16_t)n, rx_port);
}

void dp_stage_tick_now(struct dp_stage *st)
{
    if (st->ops->tick)
        st->ops->tick(st, dp_clock_ns());
    flush_tx(st->w);
}

void dp_worker_pop_stage(struct dp_worker *w)
{
    struct dp_stage *st;

    if (w->n_stages == 0)
        return;
    st = w->stages[--w->n_stages];
    w->stages[w->n_stages] = NULL;
    if (st->ops->fini)
        st->ops->fini(st);
    rte_free(st->priv);
    rte_free(st);
}
