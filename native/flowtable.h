/*
 * flowtable.h - an open-addressing index from a flow key to an entry number,
 * built for bursts: one cache line per bucket, probed in stages so that a
 * burst's memory misses overlap.
 *
 * A bucket holds 8 slots (a 16-bit signature and a 32-bit entry number
 * each). A key lives in the first bucket with room, counting from its home
 * bucket; every full bucket it passed counts it in `overflow`, so a lookup
 * stops at the first bucket whose overflow is 0, and a delete (which walks
 * the same path) takes the counts back: no tombstones, no rehash.
 *
 * The table stores no keys: the caller's entries do, and the caller passes
 * a function that compares a key with entry n. The table is sized so it is
 * at most 3/4 full when every entry is in use, so an insert always finds
 * room.
 */
#ifndef DP_FLOWTABLE_H
#define DP_FLOWTABLE_H

#include <stdint.h>
#include <string.h>

#include <rte_common.h>
#include <rte_hash_crc.h>
#include <rte_prefetch.h>

#define FT_SLOTS 8
#define FT_NONE UINT32_MAX

struct ft_bucket {
    uint16_t sig[FT_SLOTS];   /* 0: empty slot */
    uint32_t idx[FT_SLOTS];
    uint32_t overflow;        /* keys that live beyond this bucket */
    uint8_t pad[12];
} __rte_aligned(64);
_Static_assert(sizeof(struct ft_bucket) == 64, "a bucket is one cache line");

struct flowtable {
    struct ft_bucket *b;
    uint32_t mask;            /* buckets - 1 */
    uint32_t seed;            /* random: nobody can aim collisions */
    size_t bytes;
};

static inline uint32_t ft_hash(const struct flowtable *t, const void *key,
                               uint32_t len)
{
    return rte_hash_crc(key, len, t->seed);
}

static inline uint16_t ft_sig(uint32_t h)
{
    return (uint16_t)(h >> 16) | 1; /* never 0 (empty) */
}

static inline struct ft_bucket *ft_home(const struct flowtable *t, uint32_t h)
{
    return &t->b[h & t->mask];
}

/* Buckets for `entries` keys at <= 3/4 load, a power of two. */
static inline uint32_t ft_buckets_for(uint32_t entries)
{
    uint64_t need = ((uint64_t)entries * 4 / 3 + FT_SLOTS - 1) / FT_SLOTS;
    return rte_align32pow2((uint32_t)RTE_MAX(need, (uint64_t)2));
}

/*
 * Find the entry for key. `eq(ctx, idx, key)` says whether entry idx holds
 * key.
 */
#define FT_LOOKUP(t, h, key, eq, ctx, out)                                     \
    do {                                                                       \
        uint32_t b_ = (h) & (t)->mask;                                         \
        const uint16_t s_ = ft_sig(h);                                         \
        (out) = FT_NONE;                                                       \
        for (;;) {                                                             \
            const struct ft_bucket *bk_ = &(t)->b[b_];                         \
            for (int i_ = 0; i_ < FT_SLOTS; i_++)                              \
                if (bk_->sig[i_] == s_ && eq((ctx), bk_->idx[i_], (key))) {    \
                    (out) = bk_->idx[i_];                                      \
                    break;                                                     \
                }                                                              \
            if ((out) != FT_NONE || bk_->overflow == 0)                        \
                break;                                                         \
            b_ = (b_ + 1) & (t)->mask;                                         \
        }                                                                      \
    } while (0)

/* The first entry in key's home bucket with key's signature (a guess to
 * prefetch and check; FT_NONE if none). */
static inline uint32_t ft_candidate(const struct flowtable *t, uint32_t h)
{
    const struct ft_bucket *bk = ft_home(t, h);
    const uint16_t s = ft_sig(h);
    int i;

    for (i = 0; i < FT_SLOTS; i++)
        if (bk->sig[i] == s)
            return bk->idx[i];
    return FT_NONE;
}

static inline void ft_insert(struct flowtable *t, uint32_t h, uint32_t idx)
{
    uint32_t b = h & t->mask;

    for (;;) {
        struct ft_bucket *bk = &t->b[b];
        int i;

        for (i = 0; i < FT_SLOTS; i++)
            if (bk->sig[i] == 0) {
                bk->sig[i] = ft_sig(h);
                bk->idx[i] = idx;
                return;
            }
        bk->overflow++;
        b = (b + 1) & t->mask;
    }
}

static inline void ft_delete(struct flowtable *t, uint32_t h, uint32_t idx)
{
    uint32_t b = h & t->mask;

    for (;;) {
        struct ft_bucket *bk = &t->b[b];
        int i;

        for (i = 0; i < FT_SLOTS; i++)
            if (bk->sig[i] != 0 && bk->idx[i] == idx) {
                bk->sig[i] = 0;
                return;
            }
        bk->overflow--;
        b = (b + 1) & t->mask;
    }
}

#endif /* DP_FLOWTABLE_H */
