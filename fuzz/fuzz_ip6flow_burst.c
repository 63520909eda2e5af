/*
 * fuzz_ip6flow_burst.c - the ip6flow stage's burst function on arbitrary
 * frames, with route changes, link flaps, cache reconfiguration and time
 * in between (see fuzz_env.h for the input format). A fresh stage per
 * input (the router, worker and ports persist and are restored), so every
 * crash replays from its input alone.
 *
 * Checked besides memory safety: every packet of a burst is forwarded,
 * punted or dropped exactly once (the counters add up), no mbuf leaks, the
 * cache never holds more than maxflows.
 *
 * Control ops (0xa0 | k): k 0-3 toggle an extra route and commit (new
 * generation), 4-5 flap port k&1's link, 6 reconfigure (u8 maxflows6, u8
 * maxflows4, u8 hash/ipv4 bits, u8 idle timeout), 7 invalidate all,
 * 8 show both caches, 9 read the stats.
 */
#include <stdio.h>
#include <stdlib.h>

#include "fuzz_env.h"

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    fz_init(1);
    return 0;
}

struct counts {
    uint64_t fwd, punts, drops;
};

static void snap(struct dp_stage *st, struct counts *c)
{
    struct dp_ip6flow_stats s4, s6;
    unsigned i;

    dp_ip6flow_stats(st, 4, &s4);
    dp_ip6flow_stats(st, 6, &s6);
    c->fwd = s4.fastforward + s4.forward + s6.fastforward + s6.forward;
    c->punts = 0;
    for (i = 0; i < DP_MAX_PUNT_REASONS; i++)
        c->punts += s4.punts[i] + s6.punts[i];
    c->drops = st->stats.dropped;
    if (s4.flows > s4.maxflows || s6.flows > s6.maxflows) {
        fprintf(stderr, "ip6flow: %lu/%lu v4 flows, %lu/%lu v6 flows\n",
                (unsigned long)s4.flows, (unsigned long)s4.maxflows,
                (unsigned long)s6.flows, (unsigned long)s6.maxflows);
        abort();
    }
}

static void show(struct dp_stage *st, int family)
{
    struct dp_ip6flow_entry e[7];
    uint32_t cursor = 0;
    int guard = 0;

    do {
        if (dp_ip6flow_show(st, family, &cursor, e, 7) < 0)
            abort();
    } while (cursor != 0 && ++guard < 100000);
}

static void control(struct dp_stage *st, struct fz_rd *r, unsigned k)
{
    struct dp_ip6flow_conf c;
    struct dp_ip6flow_stats s;

    switch (k) {
    case 0: case 1: case 2: case 3:
        fz_route_toggle(k);
        break;
    case 4: case 5:
        fz_port_toggle(k & 1);
        break;
    case 6: {
        uint8_t m6 = fz_u8(r), m4 = fz_u8(r), bits = fz_u8(r), idle = fz_u8(r);
        c.maxflows = m6 % 65;
        c.maxflows4 = m4 % 65;
        c.hashsize = 16u << (bits & 3);
        c.hashsize4 = 16u << ((bits >> 2) & 3);
        c.idle_timeout_ms = 1 + idle * 20u;
        c.ipv4 = (bits >> 7) & 1;
        if (dp_ip6flow_configure(st, &c) < 0) {
            fprintf(stderr, "ip6flow configure: %s\n", dp_last_error());
            abort();
        }
        break;
    }
    case 7:
        dp_ip6flow_invalidate_all(st);
        break;
    case 8:
        show(st, 4);
        show(st, 6);
        break;
    case 9:
        dp_ip6flow_stats(st, 4, &s);
        dp_ip6flow_stats(st, 6, &s);
        break;
    default:
        break;
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct fz_rd r = {data, size};
    struct dp_ip6flow_conf conf = {
        .maxflows = 16, .hashsize = 16, .maxflows4 = 16, .hashsize4 = 16,
        .idle_timeout_ms = 1000, .ipv4 = 1,
    };
    struct dp_stage *st;
    uint16_t port = 0;

    if (dp_worker_add_stage(fz_worker, "ip6flow", &st) < 0 ||
        dp_ip6flow_attach(st, fz_router) < 0 ||
        dp_ip6flow_configure(st, &conf) < 0) {
        fprintf(stderr, "ip6flow stage: %s\n", dp_last_error());
        abort();
    }
    while (fz_more(&r)) {
        uint8_t b = fz_u8(&r);

        if (FZ_OP_BURST(b)) {
            struct rte_mbuf *pkts[DP_BURST];
            struct counts before, after;
            unsigned n = fz_read_burst(&r, b, port, pkts);
            uint16_t passed;

            snap(st, &before);
            passed = dp_stage_process_mbufs(st, pkts, (uint16_t)n, port);
            snap(st, &after);
            if (passed != 0 || after.fwd - before.fwd +
                                       after.punts - before.punts +
                                       after.drops - before.drops != n) {
                fprintf(stderr, "ip6flow: burst of %u: %u passed, %lu "
                        "forwarded, %lu punted, %lu dropped\n", n, passed,
                        (unsigned long)(after.fwd - before.fwd),
                        (unsigned long)(after.punts - before.punts),
                        (unsigned long)(after.drops - before.drops));
                abort();
            }
            fz_drain_punts();
        } else if (FZ_OP_CLOCK(b)) {
            dp_clock_advance((uint64_t)(fz_u16(&r) + 1u) * 10000000u);
            dp_stage_tick_now(st);
        } else if (FZ_OP_CTRL(b)) {
            control(st, &r, b & 31u);
        } else if (FZ_OP_PORT(b)) {
            port = b & 1;
        } else {
            dp_stage_tick_now(st);
        }
    }
    dp_worker_pop_stage(fz_worker);
    fz_drain_punts();
    fz_router_restore();
    fz_check_no_leak("ip6flow");
    return 0;
}
