/*
 * fuzz_env.h - what the stage fuzz targets share: one EAL (--no-huge, two
 * net_null ports), an mbuf pool, a worker, a router with a fixed table, a
 * manual clock, and mbufs whose frame bytes live in their own malloc()
 * block so AddressSanitizer sees every byte read past the frame.
 */
#ifndef DP_FUZZ_ENV_H
#define DP_FUZZ_ENV_H

#include <stddef.h>
#include <stdint.h>

#include "dp_internal.h"
#include "router.h"
#include "stage_hook.h"

#define FZ_PORTS 2
#define FZ_MAX_FRAME 9216

extern struct dp_pool *fz_pool;
extern struct dp_worker *fz_worker;
extern struct dp_router *fz_router;
extern const uint8_t fz_port_mac[FZ_PORTS][6];

/* Once, from LLVMFuzzerInitialize: EAL, pool, ports, worker, router. */
void fz_init(int with_router);

/* A frame as an mbuf chain: one segment, or two split at `split` (0 or
 * >= len: one). Each segment's bytes sit in a malloc() block of exactly
 * their length; freeing the mbuf frees it (external buffer). */
struct rte_mbuf *fz_mbuf(const uint8_t *data, uint32_t len, uint32_t split,
                         uint16_t port);

/* Free what the worker punted; returns how many. */
unsigned fz_drain_punts(void);

/* Every mbuf must be back in the pool between inputs. */
void fz_check_no_leak(const char *where);

/* The extra route fuzz inputs can add/remove, and undo at the end. */
void fz_route_toggle(unsigned which);
void fz_port_toggle(unsigned port);
void fz_router_restore(void);

/* Input reader: every read past the end yields zeros and marks it done. */
struct fz_rd {
    const uint8_t *p;
    size_t n;
};

static inline int fz_more(const struct fz_rd *r)
{
    return r->n > 0;
}

static inline uint8_t fz_u8(struct fz_rd *r)
{
    uint8_t v;

    if (r->n == 0)
        return 0;
    v = *r->p++;
    r->n--;
    return v;
}

static inline uint16_t fz_u16(struct fz_rd *r)
{
    uint16_t lo = fz_u8(r);
    return (uint16_t)(lo | (uint16_t)fz_u8(r) << 8);
}

/* Up to want bytes; *got says how many there were. */
static inline const uint8_t *fz_bytes(struct fz_rd *r, size_t want,
                                      size_t *got)
{
    const uint8_t *p = r->p;

    *got = want < r->n ? want : r->n;
    r->p += *got;
    r->n -= *got;
    return p;
}

/*
 * The stage targets' input: a program of ops, one op byte each.
 *   0x00-0x7f  burst of (b & 31) + 1 frames on the current rx port; each
 *              frame: u16 length (LE, mod FZ_MAX_FRAME+1), u8 split
 *              (0: one segment), then its bytes
 *   0x80-0x9f  advance the clock by (u16 + 1) * 10 ms, then tick
 *   0xa0-0xbf  control op (b & 31): per target
 *   0xc0-0xdf  rx port = b & 1
 *   0xe0-0xff  tick without advancing
 * Each burst is processed through the stage hook; frames are built with
 * fz_mbuf.
 */
#define FZ_OP_BURST(b) ((b) < 0x80)
#define FZ_OP_CLOCK(b) ((b) >= 0x80 && (b) < 0xa0)
#define FZ_OP_CTRL(b) ((b) >= 0xa0 && (b) < 0xc0)
#define FZ_OP_PORT(b) ((b) >= 0xc0 && (b) < 0xe0)

/* Reads one burst's frames for op byte b into mbufs; returns the count. */
unsigned fz_read_burst(struct fz_rd *r, uint8_t b, uint16_t port,
                       struct rte_mbuf **pkts);

#endif
