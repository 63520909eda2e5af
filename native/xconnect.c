/*
 * xconnect.c - port cross-connect: every packet leaves on the port mapped
 * to the port it came in on. The simplest terminal stage, and the io-forward
 * path the benchmark compares with dpdk-testpmd.
 */
#include <errno.h>

#include "dp_internal.h"

struct xconnect {
    uint16_t out[DP_MAX_PORTS];
};

static int xconnect_init(struct dp_stage *st)
{
    struct xconnect *xc = st->priv;
    unsigned i;

    for (i = 0; i < DP_MAX_PORTS; i++)
        xc->out[i] = DP_PORT_NONE;
    return 0;
}

static uint16_t xconnect_process(struct dp_stage *st, struct rte_mbuf **pkts,
                                 uint16_t n)
{
    const struct xconnect *xc = st->priv;
    struct dp_worker *w = st->w;
    uint16_t out = xc->out[w->rx_port], i;

    /* A burst comes from one rx queue: one decision for all of it, and the
     * packets themselves are never touched (as in testpmd's io mode). */
    if (likely(out < DP_MAX_PORTS)) {
        dp_emit_bulk(w, out, pkts, n);
        return 0;
    }
    for (i = 0; i < n; i++) {
        if (out == DP_PORT_PUNT)
            dp_punt(st, pkts[i]);
        else
            dp_drop(st, pkts[i], DP_DROP_NO_EGRESS);
    }
    return 0;
}

int dp_xconnect_set(struct dp_stage *st, uint16_t in_port, uint16_t out_port)
{
    struct xconnect *xc = st->priv;

    if (st->ops->process != xconnect_process) {
        dp_set_error(EINVAL, "stage is a %s, not an xconnect", st->ops->kind);
        return -EINVAL;
    }
    if (in_port >= DP_MAX_PORTS ||
        (out_port >= DP_MAX_PORTS && out_port != DP_PORT_NONE &&
         out_port != DP_PORT_PUNT)) {
        dp_set_error(ERANGE, "xconnect %u -> %u", in_port, out_port);
        return -ERANGE;
    }
    xc->out[in_port] = out_port;
    return 0;
}

const struct dp_stage_ops dp_xconnect_ops = {
    .kind = "xconnect",
    .priv_size = sizeof(struct xconnect),
    .init = xconnect_init,
    .process = xconnect_process,
};
