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

#include <sys/random.h>
#include <unistd.h>

#include <rte_common.h>
#include <rte_cycles.h>
#include <rte_hash_crc.h>   /* the pre-keyed hash, kept for comparisons */
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
    uint32_t seed;            /* random per table: this table's share of the
                               * hash key (ft_hash), with ft_nh_key */
    size_t bytes;
};

/*
 * The key hash: keyed, so that nobody who knows this code can aim keys at
 * one bucket.
 *
 * It used to be rte_hash_crc(key, len, seed). CRC is affine over GF(2): for
 * keys of one length crc(s, a) ^ crc(s, b) == crc(0, a) ^ crc(0, b) whatever
 * the seed s, so a few lines of linear algebra on the bits a sender controls
 * (source address and port) give 2^16 and more keys with one hash, bucket
 * and signature under every seed (bench/hash_spread.py builds them).
 *
 * Now: NH, the universal hash of UMAC (RFC 4418, Black et al., "UMAC: Fast
 * and Secure Message Authentication", 1999): the key as 32-bit words m,
 *     NH(m) = sum over pairs ((m[2i] + k[2i]) mod 2^32) * ((m[2i+1] + k[2i+1])
 *             mod 2^32)  mod 2^64,
 * with random key words k; two distinct keys of one length collide with
 * probability <= 2^-32 over k. A 64-bit finaliser (MurmurHash3's fmix64)
 * then spreads NH's sum over the 32 bits the table uses (bucket: low bits,
 * signature: bits 16-31). Key words: the process's ft_nh_key (64 random
 * bytes from getrandom(2), drawn when the library loads) plus the table's
 * random seed, so every table has its own key and a rebuilt table (a new
 * hashsize) hashes differently. A tail shorter than 8 bytes is zero-padded
 * (keys of a table all have one length, so padding cannot make two keys
 * equal); keys longer than 64 bytes fold every 64-byte block through the
 * finaliser. The 40-byte netflow key costs 5 multiplications plus the
 * finaliser's 2: about 11 cycles a hash against CRC's 4 (throughput over
 * independent keys, as a burst hashes them; bench/hash_spread.py measures).
 *
 * NH is a universal hash, not a PRF: its guarantee is against senders who
 * cannot see hash values. Nothing the dataplane sends depends on them (the
 * cache dump is ordered by entry number, not by bucket).
 */
#define FT_NH_KEY_WORDS 16    /* 64 bytes of key per block */

static uint32_t ft_nh_key[FT_NH_KEY_WORDS];

static inline uint64_t ft_fmix64(uint64_t h)
{
    h ^= h >> 33;
    h *= UINT64_C(0xff51afd7ed558ccd);
    h ^= h >> 33;
    h *= UINT64_C(0xc4ceb9fe1a85ec53);
    h ^= h >> 33;
    return h;
}

/* Runs when the library is loaded (each file that includes this header has
 * its own key). getrandom(2) only fails before the kernel's pool is ready,
 * never on a running system; the fallback still differs per process. */
static void __attribute__((constructor, used)) ft_nh_key_init(void)
{
    uint64_t x;
    unsigned i;

    if (getrandom(ft_nh_key, sizeof(ft_nh_key), GRND_NONBLOCK) ==
        (ssize_t)sizeof(ft_nh_key))
        return;
    x = rte_rdtsc() ^ ((uint64_t)(uintptr_t)&x << 16) ^ (uint64_t)getpid();
    for (i = 0; i < FT_NH_KEY_WORDS; i++) {
        x += UINT64_C(0x9e3779b97f4a7c15);   /* splitmix64 */
        ft_nh_key[i] = (uint32_t)ft_fmix64(x);
    }
}

static inline uint64_t ft_nh_pair(uint64_t m, uint32_t k0, uint32_t k1)
{
    return (uint64_t)((uint32_t)m + k0) * (uint32_t)((uint32_t)(m >> 32) + k1);
}

static inline uint32_t ft_hash(const struct flowtable *t, const void *key,
                               uint32_t len)
{
    const uint8_t *p = key;
    const uint32_t s = t->seed;
    uint64_t sum = len, m;
    uint32_t i = 0, k = 0;

    for (; i + 8 <= len; i += 8, k += 2) {
        if (k == FT_NH_KEY_WORDS) {      /* next 64-byte block */
            sum = ft_fmix64(sum);
            k = 0;
        }
        memcpy(&m, p + i, 8);
        sum += ft_nh_pair(m, ft_nh_key[k] + s, ft_nh_key[k + 1] + s);
    }
    if (i < len) {
        if (k == FT_NH_KEY_WORDS) {
            sum = ft_fmix64(sum);
            k = 0;
        }
        m = 0;
        memcpy(&m, p + i, len - i);
        sum += ft_nh_pair(m, ft_nh_key[k] + s, ft_nh_key[k + 1] + s);
    }
    return (uint32_t)ft_fmix64(sum ^ ((uint64_t)s << 32));
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
