/*
 * core.c - errors, the settable clock, EAL and mbuf pools.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdlib.h>
#include <stdio.h>
#include <string.h>

#include <sys/mman.h>
#include <time.h>

#include <rte_eal.h>
#include <rte_malloc.h>
#include <rte_mbuf_pool_ops.h>
#include <rte_errno.h>
#include <rte_lcore.h>
#include <rte_mbuf.h>
#include <rte_mempool.h>

#include "dp_internal.h"

/* ---- errors ---------------------------------------------------------------- */

static __thread char dp_errbuf[512];

void dp_set_error(int err, const char *fmt, ...)
{
    va_list ap;
    int n;

    va_start(ap, fmt);
    n = vsnprintf(dp_errbuf, sizeof(dp_errbuf), fmt, ap);
    va_end(ap);
    if (err && n >= 0 && (size_t)n < sizeof(dp_errbuf))
        snprintf(dp_errbuf + n, sizeof(dp_errbuf) - n, ": %s",
                 rte_strerror(err));
}

const char *dp_last_error(void)
{
    return dp_errbuf;
}

/* ---- clock ------------------------------------------------------------------ */
/*
 * Everything that ages (flow timeouts, link delays) reads dp_clock_ns(), so
 * tests can switch to a manual clock and step it instead of sleeping.
 */
static uint64_t clock_manual_ns;
static int clock_manual;
static uint64_t clock_tsc_hz;
/* ns = tsc * clock_ns_mult >> 32: a multiply instead of a 128-bit division
 * (~80 cycles; the punt policer reads the clock per punted packet). The
 * rate is off by under 1e-9, a constant: the clock stays monotonic. */
static uint64_t clock_ns_mult;

uint64_t dp_tsc_hz(void)
{
    if (unlikely(clock_tsc_hz == 0)) {
        uint64_t hz = rte_get_tsc_hz();

        if (hz) {
            clock_ns_mult = (uint64_t)((((unsigned __int128)1000000000u << 32) + hz / 2) / hz);
            __atomic_store_n(&clock_tsc_hz, hz, __ATOMIC_RELEASE);
        }
    }
    return clock_tsc_hz;
}

uint64_t dp_clock_ns(void)
{
    uint64_t hz;

    if (__atomic_load_n(&clock_manual, __ATOMIC_ACQUIRE))
        return __atomic_load_n(&clock_manual_ns, __ATOMIC_RELAXED);
    hz = dp_tsc_hz();
    if (unlikely(hz == 0)) {
        /* No EAL yet (the exporter or a tool used alone): the TSC rate is
         * unknown, and dividing by it killed the process with SIGFPE. */
        struct timespec ts;

        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
    }
    return (uint64_t)(((unsigned __int128)rte_rdtsc() * clock_ns_mult) >> 32);
}

void dp_clock_set_manual(uint64_t now_ns)
{
    __atomic_store_n(&clock_manual_ns, now_ns, __ATOMIC_RELAXED);
    __atomic_store_n(&clock_manual, 1, __ATOMIC_RELEASE);
}

void dp_clock_advance(uint64_t delta_ns)
{
    __atomic_fetch_add(&clock_manual_ns, delta_ns, __ATOMIC_RELAXED);
}

void dp_clock_use_tsc(void)
{
    __atomic_store_n(&clock_manual, 0, __ATOMIC_RELEASE);
}

int dp_clock_is_manual(void)
{
    return __atomic_load_n(&clock_manual, __ATOMIC_ACQUIRE);
}

/* ---- EAL ------------------------------------------------------------------ */

int dp_eal_init(int argc, char **argv)
{
    int rc = rte_eal_init(argc, argv);

    if (rc < 0) {
        int err = rte_errno ? rte_errno : EINVAL;
        dp_set_error(err, "rte_eal_init failed (see the EAL log above)");
        return -err;
    }
    dp_tsc_hz();
    dp_telemetry_register();
    return rc;
}

int dp_eal_cleanup(void)
{
    int rc = rte_eal_cleanup();

    if (rc < 0) {
        dp_set_error(-rc, "rte_eal_cleanup");
        return rc;
    }
    return 0;
}

unsigned dp_socket_count(void)
{
    return rte_socket_count();
}

int dp_lcore_to_cpu(unsigned lcore)
{
    return rte_lcore_to_cpu_id((int)lcore);
}

/* ---- mbuf pools ------------------------------------------------------------- */

struct dp_pool {
    struct rte_mempool *mp;
};

/*
 * Without hugepages, DPDK's default populate keeps every mbuf within one
 * 4 KiB page (an object must be IOVA-contiguous), so each 2.3 KiB mbuf
 * starts at the same offset of its own page and all mbuf headers fall in one
 * L1 cache set: every header read misses (about 13 cycles a packet here,
 * bench/one2many.py). Where I/O addresses are virtual (IOVA as VA: virtual
 * devices, vfio with an IOMMU), an mbuf may span pages, so the pool is
 * packed instead. With hugepages (production) both layouts are the same.
 */
static struct rte_mempool *mbuf_pool_create(const char *name, unsigned n,
                                            unsigned cache,
                                            unsigned data_room, int socket)
{
    struct rte_pktmbuf_pool_private priv = {
        .mbuf_data_room_size = (uint16_t)data_room,
    };
    struct rte_mempool *mp;

    if (rte_eal_has_hugepages() || rte_eal_iova_mode() != RTE_IOVA_VA)
        return rte_pktmbuf_pool_create(name, n, cache, 0, data_room, socket);
    mp = rte_mempool_create_empty(name, n, sizeof(struct rte_mbuf) + data_room,
                                  cache, sizeof(priv), socket,
                                  RTE_MEMPOOL_F_NO_IOVA_CONTIG);
    if (mp == NULL)
        return NULL;
    if (rte_mempool_set_ops_byname(mp, rte_mbuf_best_mempool_ops(), NULL) != 0)
        goto fail;
    rte_pktmbuf_pool_init(mp, &priv);
    if (rte_mempool_populate_default(mp) < 0)
        goto fail;
    rte_mempool_obj_iter(mp, rte_pktmbuf_init, NULL);
    return mp;
fail:
    rte_mempool_free(mp);
    rte_errno = ENOMEM;
    return NULL;
}

int dp_pool_create(const char *name, unsigned n_mbufs, unsigned cache,
                   unsigned data_room, int socket, struct dp_pool **out)
{
    struct dp_pool *pool = calloc(1, sizeof(*pool));

    if (pool == NULL) {
        dp_set_error(ENOMEM, "pool %s", name);
        return -ENOMEM;
    }
    pool->mp = mbuf_pool_create(name, n_mbufs, cache, data_room, socket);
    if (pool->mp == NULL) {
        int err = rte_errno;
        free(pool);
        dp_set_error(err, "cannot create mbuf pool %s (%u mbufs of %u bytes "
                     "on socket %d)", name, n_mbufs, data_room, socket);
        return -err;
    }
    *out = pool;
    return 0;
}

void dp_pool_free(struct dp_pool *pool)
{
    if (pool == NULL)
        return;
    rte_mempool_free(pool->mp);
    free(pool);
}

unsigned dp_pool_avail(const struct dp_pool *pool)
{
    return rte_mempool_avail_count(pool->mp);
}

unsigned dp_pool_in_use(const struct dp_pool *pool)
{
    return rte_mempool_in_use_count(pool->mp);
}

unsigned dp_pool_size(const struct dp_pool *pool)
{
    return pool->mp->size;
}

struct rte_mempool *dp_pool_mempool(struct dp_pool *pool)
{
    return pool->mp;
}

/* ---- big tables (flow caches) ---------------------------------------------- */
/*
 * Tables no device reads need no DMA memory. With hugepages they come from
 * DPDK's heap (hugepage-backed, NUMA-local); without (--no-huge: tests,
 * laptops) from anonymous memory with transparent huge pages requested, so
 * random lookups do not also miss the TLB on every access.
 */
#define DP_THP_SIZE ((size_t)2 << 20)

#ifndef MADV_POPULATE_WRITE
#define MADV_POPULATE_WRITE 23 /* Linux 5.14 */
#endif

/* Fault the whole table in now, as hugepage memory is: otherwise the first
 * packets to reach each page pay for the kernel zeroing it (a million new
 * flows cost more in clear_page than in metering). */
static void populate(uint8_t *p, size_t len)
{
    size_t off;

    if (madvise(p, len, MADV_POPULATE_WRITE) == 0)
        return;
    for (off = 0; off < len; off += 4096)
        ((volatile uint8_t *)p)[off] = 0;
}

/* Without hugepages: a 2 MiB-aligned anonymous mapping (over-allocate, trim
 * both ends), so every 2 MiB of the table can be a transparent huge page,
 * not only those that happen to be aligned. */
void *dp_table_alloc(size_t size, int socket)
{
    size_t len = RTE_ALIGN_CEIL(size, DP_THP_SIZE);
    uint8_t *raw, *p;

    if (rte_eal_has_hugepages())
        return rte_zmalloc_socket("dp_table", size, RTE_CACHE_LINE_SIZE,
                                  socket);
    raw = mmap(NULL, len + DP_THP_SIZE, PROT_READ | PROT_WRITE,
               MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (raw == MAP_FAILED)
        return NULL;
    p = RTE_PTR_ALIGN_CEIL(raw, DP_THP_SIZE);
    if (p > raw)
        munmap(raw, (size_t)(p - raw));
    if (raw + DP_THP_SIZE > p)
        munmap(p + len, (size_t)(raw + DP_THP_SIZE - p));
    madvise(p, len, MADV_HUGEPAGE);
    populate(p, len);
    return p;
}

void dp_table_free(void *p, size_t size)
{
    if (p == NULL)
        return;
    if (rte_eal_has_hugepages())
        rte_free(p);
    else
        munmap(p, RTE_ALIGN_CEIL(size, DP_THP_SIZE));
}
