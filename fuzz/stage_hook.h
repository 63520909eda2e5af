/*
 * stage_hook.h - drive one stage's burst function directly, without a port,
 * an rx queue or dp_worker_poll(). Built only into the fuzz targets (and
 * usable by any C test harness): it needs nothing from native/ beyond
 * dp_internal.h, so native/ stays untouched.
 *
 * If this ever moves into the shim proper (for cffi tests), the dp.h form
 * would be:
 *
 *   int dp_stage_process_test(struct dp_stage *st, const uint8_t **frames,
 *                             const uint32_t *lens, unsigned n,
 *                             uint16_t rx_port);
 *   void dp_stage_tick_test(struct dp_stage *st);
 *
 * i.e. dp_stage_process_frames() below with the mbufs taken from the
 * worker's pool, returning the packets the stage passed on.
 */
#ifndef DP_FUZZ_STAGE_HOOK_H
#define DP_FUZZ_STAGE_HOOK_H

#include <stdint.h>

#include "dp_internal.h"

/* What run_pipeline() does for one stage and one burst: set the worker's
 * input port, call process(), count, free what nobody claimed (as
 * drop_unclaimed), then flush the tx buffers the stage filled (as
 * flush_dirty). n <= DP_BURST. Returns the packets the stage passed on. */
uint16_t dp_stage_process_mbufs(struct dp_stage *st, struct rte_mbuf **pkts,
                                uint16_t n, uint16_t rx_port);

/* The same from raw frames, each copied into a pool mbuf (m->port =
 * rx_port). Returns the packets passed on, or -ENOBUFS / -EMSGSIZE. */
int dp_stage_process_frames(struct dp_stage *st, const uint8_t **frames,
                            const uint32_t *lens, unsigned n,
                            uint16_t rx_port);

/* The stage's periodic duties at dp_clock_ns(), then a tx flush. */
void dp_stage_tick_now(struct dp_stage *st);

/* Remove the last stage of a worker (fini, free): what dp_worker_destroy()
 * does for every stage, so a harness can build a fresh stage per input
 * while keeping the worker. */
void dp_worker_pop_stage(struct dp_worker *w);

#endif
