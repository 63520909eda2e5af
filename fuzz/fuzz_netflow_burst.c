/*
 * fuzz_netflow_burst.c - the netflow stage's burst function on arbitrary
 * frames, with time, timeouts, per-port metering, flushes, paged dumps and
 * the export ring drained through every wire encoder (see fuzz_env.h for
 * the input format). A fresh, small cache per input (64 flows, a 64-record
 * export ring, so "cache full" and "export ring full" are reachable).
 *
 * Checked besides memory safety: every packet of a burst is metered,
 * skipped or unmetered; the stage passes every packet on; the cache never
 * holds more than max_flows; at the end, after a full flush, every flow
 * created was exported or counted as an export failure; no mbuf leaks.
 *
 * Control ops (0xa0 | k): k 0-3 toggle an extra route, 4 set timeouts (u8
 * active, u8 inactive), 5 setconfig (u8: bit0 port, bit1 ingress), 6 flush
 * (u8 max), 7 drain + encode, 8 show, 9 set ifindex (u8 port, u16), 10 info.
 */
#include <stdio.h>
#include <stdlib.h>

#include "fuzz_env.h"

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    fz_init(1);
    return 0;
}

static void info(struct dp_stage *st, struct dp_netflow_info *i)
{
    if (dp_netflow_info(st, i) < 0)
        abort();
    if (i->flows_used > i->max_flows) {
        fprintf(stderr, "netflow: %lu flows in a cache of %u\n",
                (unsigned long)i->flows_used, i->max_flows);
        abort();
    }
}

/* Drain the export ring and put the records through every encoder, into a
 * buffer of exactly the size asked for. */
static void drain(struct dp_stage *st)
{
    static const int formats[] = {DP_NF_FMT_V5, DP_NF_FMT_V9,
                                  DP_NF_FMT_IPFIX};
    struct dp_flow_record rec[32];
    unsigned n, f, v;

    while ((n = dp_netflow_export_drain(st, rec, 32)) > 0) {
        for (f = 0; f < 3; f++)
            for (v = 4; v <= 6; v += 2) {
                int size = dp_nf_record_size(formats[f], (int)v);
                uint8_t *buf;
                int rc;

                if (size <= 0)
                    continue;
                buf = malloc((size_t)size * n);
                rc = dp_nf_encode(formats[f], (int)v, rec, n, 1000,
                                  1700000000000ll, buf, (size_t)size * n);
                if (rc < 0 || (unsigned)rc > n) {
                    fprintf(stderr, "netflow: encode fmt %d v%u: %d of %u\n",
                            formats[f], v, rc, n);
                    abort();
                }
                free(buf);
            }
    }
}

static void show(struct dp_stage *st)
{
    struct dp_flow_record rec[5];
    uint32_t cursor = 0;
    int guard = 0;

    do {
        if (dp_netflow_show(st, &cursor, rec, 5) < 0)
            abort();
    } while (cursor != 0 && ++guard < 100000);
}

static void control(struct dp_stage *st, struct fz_rd *r, unsigned k)
{
    struct dp_netflow_info i;

    switch (k) {
    case 0: case 1: case 2: case 3:
        fz_route_toggle(k);
        break;
    case 4: {
        uint8_t a = fz_u8(r), b = fz_u8(r);
        if (dp_netflow_set_timeouts(st, a + 1u, b + 1u) < 0)
            abort();
        break;
    }
    case 5: {
        uint8_t v = fz_u8(r);
        if (dp_netflow_setconfig(st, v & 1, (v >> 1) & 1) < 0)
            abort();
        break;
    }
    case 6: {
        /* A stop's flush cut short: the next burst or tick finishes it. */
        struct dp_flow_record recs[256];
        dp_netflow_flush(st, recs, fz_u8(r));
        break;
    }
    case 7:
        drain(st);
        break;
    case 8:
        show(st);
        break;
    case 9: {
        uint8_t p = fz_u8(r);
        dp_netflow_set_ifindex(st, p & 1, fz_u16(r));
        break;
    }
    case 10:
        info(st, &i);
        break;
    default:
        break;
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct fz_rd r = {data, size};
    struct dp_netflow_conf conf = {
        .max_flows = 64, .active_timeout = 30, .inactive_timeout = 5,
        .lowat = 0, .export_ring = 64, .scan_budget = 16,
    };
    struct dp_netflow_info a, b;
    struct dp_stage *st;
    uint16_t port = 0;
    static struct dp_flow_record shut_recs[64];
    int guard;

    if (dp_worker_add_stage(fz_worker, "netflow", &st) < 0 ||
        dp_netflow_configure(st, &conf) < 0 ||
        dp_netflow_attach_router(st, fz_router) < 0) {
        fprintf(stderr, "netflow stage: %s\n", dp_last_error());
        abort();
    }
    while (fz_more(&r)) {
        uint8_t op = fz_u8(&r);

        if (FZ_OP_BURST(op)) {
            struct rte_mbuf *pkts[DP_BURST];
            unsigned n = fz_read_burst(&r, op, port, pkts);
            uint16_t passed;

            info(st, &a);
            passed = dp_stage_process_mbufs(st, pkts, (uint16_t)n, port);
            info(st, &b);
            if (passed != n ||
                b.packets - a.packets + b.skipped - a.skipped +
                        b.unmetered - a.unmetered != n) {
                fprintf(stderr, "netflow: burst of %u: %u passed, %lu "
                        "metered, %lu skipped, %lu unmetered\n", n, passed,
                        (unsigned long)(b.packets - a.packets),
                        (unsigned long)(b.skipped - a.skipped),
                        (unsigned long)(b.unmetered - a.unmetered));
                abort();
            }
        } else if (FZ_OP_CLOCK(op)) {
            dp_clock_advance((uint64_t)(fz_u16(&r) + 1u) * 10000000u);
            dp_stage_tick_now(st);
        } else if (FZ_OP_CTRL(op)) {
            control(st, &r, op & 31u);
        } else if (FZ_OP_PORT(op)) {
            port = op & 1;
        } else {
            dp_stage_tick_now(st);
        }
    }
    /* Shutdown: everything cached is exported (or counted as lost). */
    for (guard = 0; dp_netflow_flush(st, shut_recs, 64) > 0; guard++) {
        if (guard > 1000) {
            fprintf(stderr, "netflow: flush makes no progress\n");
            abort();
        }
    }
    drain(st);
    info(st, &b);
    if (b.flows_used != 0 || b.flows_created != b.exported + b.export_failed) {
        fprintf(stderr, "netflow: %lu flows created, %lu exported, %lu lost, "
                "%lu still cached\n", (unsigned long)b.flows_created,
                (unsigned long)b.exported, (unsigned long)b.export_failed,
                (unsigned long)b.flows_used);
        abort();
    }
    dp_worker_pop_stage(fz_worker);
    fz_router_restore();
    fz_check_no_leak("netflow");
    return 0;
}
