/*
 * ip6flow.c - NetBSD's ip6_flow.c (and its IPv4 twin ip_flow.c) as a burst
 * stage: a per-worker cache of flows the route path forwarded, so that the
 * next packet of a flow skips the route lookup.
 *
 * Kept from the seed:
 *  - the key: source, destination and the first 32-bit word of the IPv6
 *    header (version, traffic class, flow label); IPv4: source, destination,
 *    ToS;
 *  - a flow is created only after the route path forwarded a packet, never
 *    for ICMPv6 (ICMP);
 *  - on a hit: hop-by-hop header, link-layer multicast/broadcast, a stale
 *    route, a down egress, a packet over the egress MTU or hop limit <= 1
 *    leave the fast path; otherwise hop limit - 1 and out on the cached
 *    next hop;
 *  - maxflows (0: no cache; lowering it reaps at once) and hashsize (a power
 *    of two; changing it flushes); a full cache reaps an entry whose route
 *    is no longer valid first, else the least recently used one; a slow
 *    timer frees idle flows and flows with an invalid route;
 *  - per-flow uses/dropped, folded into the stage counters when freed.
 *
 * Different, and why:
 *  - "route still valid" is a generation number (dp_router), not a walk:
 *    a route change makes every cached flow stale at once; a stale flow's
 *    next packet takes the route path, which re-points the flow.
 *  - LRU without a walk: two lists, `fresh` (flows of the current
 *    generation, most recently used first) and `stale` (everything cached
 *    before the last generation change, spliced over in O(1)). Reaping takes
 *    stale's tail, else fresh's tail. A hit moves its flow to the front at
 *    most once per lru_res_ms, like the seed's timer resolution, so hits do
 *    not write to neighbouring entries on every packet.
 *  - The cache is per worker (RSS keeps a flow on one worker): no lock.
 *  - What the seed leaves to ip6_input/ip6_forward (route lookup,
 *    neighbour, hop-limit and MTU errors) is the route path below; what
 *    needs a protocol (NDP, ARP, ICMP errors) is punted to Python with a
 *    reason.
 */
#include <errno.h>

#include <rte_ether.h>
#include <rte_ip.h>
#include <rte_malloc.h>

#include "flowtable.h"
#include "router.h"

#define FF_NONE UINT32_MAX
#define FF_SCAN_BUDGET 256   /* idle flows the 1 ms tick may free per cache */
#define FF_SLOWTIMO_MS 500   /* the seed's slow timer: PR_SLOWHZ = 2 */
#define FF_SWEEP_BUDGET 8192 /* stale flows one slow tick may free per cache */

struct ffkey {
    uint8_t src[16];
    uint8_t dst[16];
    uint32_t flow;           /* as on the wire */
};
_Static_assert(sizeof(struct ffkey) == 36, "packed key");

struct ffentry {
    struct ffkey key;
    uint32_t gen;            /* route generation the flow was made under */
    uint16_t nh;
    uint8_t live;
    uint8_t pad;
    uint32_t prev, next;     /* LRU list (or free list: next) */
    uint32_t touched_ms;     /* last moved to the front of its list */
    uint32_t uses;
    uint32_t dropped;
};
_Static_assert(sizeof(struct ffentry) == 64, "one cache line per flow");

struct fflist {
    uint32_t head, tail;     /* head: most recently used */
};

struct ffcache {
    struct flowtable table;
    struct ffentry *e;
    uint32_t alloc;          /* entries allocated */
    uint32_t maxflows;       /* entries allowed (<= alloc) */
    uint32_t hashsize;
    uint32_t used;
    uint32_t free_head;
    uint32_t list_gen;       /* generation of the `fresh` list */
    struct fflist fresh, stale;
    struct dp_ip6flow_stats st;
};

struct ip6flow {
    struct dp_router *r;
    struct ffcache c6, c4;
    uint32_t idle_ms;
    uint32_t lru_res_ms;
    uint32_t next_slowtimo_ms;
    uint8_t slowtimo_armed;
    uint8_t ipv4;
};

/* ---- the cache -------------------------------------------------------------- */

static inline int ff_eq(const struct ffcache *c, uint32_t i,
                        const struct ffkey *k)
{
    return c->e[i].live && memcmp(&c->e[i].key, k, sizeof(*k)) == 0;
}
#define FF_EQ(c, i, k) ff_eq((c), (i), (k))

static inline struct fflist *list_of(struct ffcache *c, const struct ffentry *f)
{
    return f->gen == c->list_gen ? &c->fresh : &c->stale;
}

static inline void list_unlink(struct ffcache *c, struct fflist *l, uint32_t i)
{
    struct ffentry *f = &c->e[i];

    if (f->prev != FF_NONE)
        c->e[f->prev].next = f->next;
    else
        l->head = f->next;
    if (f->next != FF_NONE)
        c->e[f->next].prev = f->prev;
    else
        l->tail = f->prev;
}

static inline void list_push(struct ffcache *c, struct fflist *l, uint32_t i)
{
    struct ffentry *f = &c->e[i];

    f->prev = FF_NONE;
    f->next = l->head;
    if (l->head != FF_NONE)
        c->e[l->head].prev = i;
    else
        l->tail = i;
    l->head = i;
}

/* The route generation moved: every cached flow is now stale. O(1). */
static inline void ff_sync_gen(struct ffcache *c, uint32_t gen)
{
    if (likely(c->list_gen == gen))
        return;
    if (c->fresh.head != FF_NONE) {
        if (c->stale.head == FF_NONE) {
            c->stale = c->fresh;
        } else {
            c->e[c->fresh.tail].next = c->stale.head;
            c->e[c->stale.head].prev = c->fresh.tail;
            c->stale.head = c->fresh.head;
        }
        c->fresh.head = c->fresh.tail = FF_NONE;
    }
    c->list_gen = gen;
}

static inline uint32_t ff_hash(const struct ffcache *c, const struct ffkey *k)
{
    return ft_hash(&c->table, k, sizeof(*k));
}

static void ff_free(struct ffcache *c, uint32_t i)
{
    struct ffentry *f = &c->e[i];

    list_unlink(c, list_of(c, f), i);
    ft_delete(&c->table, ff_hash(c, &f->key), i);
    c->st.uses += f->uses;
    f->live = 0;
    f->next = c->free_head;
    c->free_head = i;
    c->used--;
}

/* The seed's ip6flow_reap(just_one): an entry whose route is no longer
 * valid first, else the least recently used one. 0 if the cache is empty. */
static int ff_reap_one(struct ffcache *c)
{
    if (c->stale.tail != FF_NONE) {
        ff_free(c, c->stale.tail);
        c->st.reaped_invalid++;
    } else if (c->fresh.tail != FF_NONE) {
        ff_free(c, c->fresh.tail);
        c->st.reaped_lru++;
    } else {
        return 0;
    }
    return 1;
}

/* Room for one more flow: a free entry, else reap one. */
static uint32_t ff_alloc(struct ffcache *c)
{
    uint32_t i;

    if (c->used >= c->maxflows && !ff_reap_one(c))
        return FF_NONE; /* maxflows 0 */
    i = c->free_head;
    c->free_head = c->e[i].next;
    c->used++;
    return i;
}

static void ff_reset(struct ffcache *c)
{
    uint32_t i;

    c->used = 0;
    c->fresh.head = c->fresh.tail = FF_NONE;
    c->stale.head = c->stale.tail = FF_NONE;
    c->free_head = c->alloc ? 0 : FF_NONE;
    for (i = 0; i < c->alloc; i++) {
        c->e[i].live = 0;
        c->e[i].next = i + 1 < c->alloc ? i + 1 : FF_NONE;
    }
    if (c->table.b)
        memset(c->table.b, 0, c->table.bytes);
}

static void ff_release(struct ffcache *c)
{
    dp_table_free(c->table.b, c->table.bytes);
    dp_table_free(c->e, sizeof(*c->e) * (size_t)c->alloc);
    c->table.b = NULL;
    c->e = NULL;
    c->alloc = 0;
    c->used = 0;
}

/* Free every flow; returns how many. */
static uint32_t ff_flush(struct ffcache *c)
{
    uint32_t n = 0, i;

    for (i = 0; i < c->alloc; i++)
        if (c->e[i].live) {
            ff_free(c, i);
            n++;
        }
    c->st.invalidated += n;
    return n;
}

static int ff_configure(struct ffcache *c, uint32_t maxflows,
                        uint32_t hashsize, int socket, const char *what)
{
    struct flowtable table;
    struct ffentry *e;
    uint32_t buckets;

    if (!rte_is_power_of_2(hashsize) || hashsize < FT_SLOTS * 2) {
        dp_set_error(EINVAL, "%s: hashsize %u is not a power of two >= 16",
                     what, hashsize);
        return -EINVAL;
    }
    if (maxflows > (1u << 26)) {
        dp_set_error(ERANGE, "%s: maxflows %u is above 2^26", what, maxflows);
        return -ERANGE;
    }
    if (hashsize == c->hashsize && maxflows <= c->alloc) {
        /* Lowering maxflows reaps at once (the seed's ip6flow_reap). */
        c->maxflows = maxflows;
        while (c->used > c->maxflows && ff_reap_one(c))
            ;
        c->st.maxflows = maxflows;
        return 0;
    }
    /* A new hash size (or a bigger cache than allocated) flushes. The new
     * table is allocated first: if that fails the cache stays as it was. */
    buckets = RTE_MAX(hashsize / FT_SLOTS, ft_buckets_for(RTE_MAX(maxflows, 1)));
    table.mask = buckets - 1;
    table.bytes = sizeof(struct ft_bucket) * (size_t)buckets;
    table.seed = (uint32_t)rte_rand();
    table.b = dp_table_alloc(table.bytes, socket);
    e = maxflows ? dp_table_alloc(sizeof(*e) * (size_t)maxflows, socket) : NULL;
    if (table.b == NULL || (maxflows && e == NULL)) {
        dp_table_free(table.b, table.bytes);
        dp_table_free(e, sizeof(*e) * (size_t)maxflows);
        dp_set_error(ENOMEM, "%s: no memory for %u flows", what, maxflows);
        return -ENOMEM;
    }
    ff_flush(c);            /* folds every flow's uses into the counters */
    ff_release(c);
    c->table = table;
    c->e = e;
    c->alloc = maxflows;
    c->maxflows = maxflows;
    c->hashsize = hashsize;
    c->st.maxflows = maxflows;
    c->st.hashsize = hashsize;
    c->st.flows = 0;
    ff_reset(c);
    return 0;
}

/* The seed's slow timer (2 Hz): flows whose route is no longer valid go. */
static void ff_sweep_stale(struct ffcache *c)
{
    unsigned budget = FF_SWEEP_BUDGET;

    while (budget-- && c->stale.tail != FF_NONE) {
        ff_free(c, c->stale.tail);
        c->st.invalidated++;
    }
}

/* Every tick: free flows idle past the timeout, oldest first. */
static void ff_scan(struct ffcache *c, uint32_t now, uint32_t idle_ms)
{
    unsigned budget = FF_SCAN_BUDGET;

    while (budget && c->fresh.tail != FF_NONE &&
           now - c->e[c->fresh.tail].touched_ms >= idle_ms) {
        ff_free(c, c->fresh.tail);
        c->st.expired++;
        budget--;
    }
}

/* ---- packets ------------------------------------------------------------------ */

enum { CLS_DONE = 0, CLS_V6, CLS_V4 };

static inline int mac_eq(const uint8_t *a, const uint8_t *b)
{
    uint32_t a0, b0;
    uint16_t a1, b1;

    memcpy(&a0, a, 4);
    memcpy(&b0, b, 4);
    memcpy(&a1, a + 4, 2);
    memcpy(&b1, b + 4, 2);
    return a0 == b0 && a1 == b1;
}

/* A burst's forwarded packets, sent together at its end (see ff_flush_out). */
struct ffout {
    uint16_t n;
    uint16_t port[DP_BURST];
    struct rte_mbuf *m[DP_BURST];
};

/* Rewrite the Ethernet addresses and queue for the egress port. */
static inline void ff_send(struct ffout *o, struct rte_mbuf *m,
                           const struct dp_nexthop *nh)
{
    memcpy(rte_pktmbuf_mtod(m, uint8_t *), nh->dst_mac, 12);
    o->port[o->n] = nh->port;
    o->m[o->n++] = m;
}

/* Hand each run of packets for one port to the port as a whole: a burst
 * that all goes one way (the common case) leaves in one tx call. */
static inline void ff_flush_out(struct dp_worker *w, struct ffout *o)
{
    uint16_t i = 0;

    while (i < o->n) {
        uint16_t j = i + 1;

        while (j < o->n && o->port[j] == o->port[i])
            j++;
        dp_emit_bulk(w, o->port[i], &o->m[i], j - i);
        i = j;
    }
    o->n = 0;
}

static inline void ip4_dec_ttl(struct rte_ipv4_hdr *ip)
{
    /* RFC 1624 incremental update: TTL is the high byte of its 16-bit
     * word, so the sum changes by 0x0100. */
    uint32_t sum = ip->hdr_checksum;

    sum += rte_cpu_to_be_16(0x0100);
    ip->hdr_checksum = (uint16_t)(sum + (sum >= 0xffff));
    ip->time_to_live--;
}

static inline void ff_punt(struct dp_stage *st, struct ffcache *c,
                           struct rte_mbuf *m, unsigned reason)
{
    c->st.punts[reason]++;
    dp_punt_why(st, m, reason);
}

/* Sources no router forwards from: multicast, unspecified, loopback
 * (RFC 4291 2.5.2/2.5.3, 2.7). */
static inline int ip6_bad_src(const uint8_t *a)
{
    uint64_t hi, lo;

    if (a[0] == 0xff)
        return 1;
    memcpy(&hi, a, 8);
    memcpy(&lo, a + 8, 8);
    return hi == 0 && (lo & ~RTE_BE64(1)) == 0;
}

/* RFC 1812 5.3.7 martians: 0/8, 127/8, multicast and class E (224/3). */
static inline int ip4_bad_src(rte_be32_t a)
{
    uint8_t first = (uint8_t)(rte_be_to_cpu_32(a) >> 24);

    return first == 0 || first == 127 || first >= 224;
}

/* Classify one frame; a frame the stage finishes here (drop/punt) returns
 * CLS_DONE, one for the cache fills its key. */
static inline int ff_classify(struct dp_stage *st, struct ip6flow *ff,
                              struct rte_mbuf *m, struct ffkey *k)
{
    const struct rt_port *rxp = &ff->r->port[m->port];
    const uint32_t dlen = rte_pktmbuf_data_len(m);
    const uint32_t plen = rte_pktmbuf_pkt_len(m);
    const struct rte_ether_hdr *eth;
    int l2_mcast;

    if (unlikely(dlen < sizeof(*eth))) {
        dp_drop(st, m, DP_DROP_L2_TRUNCATED);
        return CLS_DONE;
    }
    eth = rte_pktmbuf_mtod(m, const struct rte_ether_hdr *);
    l2_mcast = eth->dst_addr.addr_bytes[0] & 1;
    if (!l2_mcast && unlikely(!mac_eq(eth->dst_addr.addr_bytes, rxp->mac))) {
        dp_drop(st, m, DP_DROP_L2_OTHER_HOST);
        return CLS_DONE;
    }

    if (likely(eth->ether_type == RTE_BE16(RTE_ETHER_TYPE_IPV6))) {
        const struct rte_ipv6_hdr *ip6 = (const void *)(eth + 1);

        if (unlikely(dlen < sizeof(*eth) + sizeof(*ip6))) {
            dp_drop(st, m, DP_DROP_IP6_TRUNCATED);
            return CLS_DONE;
        }
        if (unlikely((ip6->vtc_flow & RTE_BE32(0xf0000000)) !=
                     RTE_BE32(0x60000000))) {
            dp_drop(st, m, DP_DROP_IP6_BAD_VERSION);
            return CLS_DONE;
        }
        if (unlikely(sizeof(*eth) + sizeof(*ip6) +
                     rte_be_to_cpu_16(ip6->payload_len) > plen)) {
            dp_drop(st, m, DP_DROP_IP6_BAD_LENGTH);
            return CLS_DONE;
        }
        if (unlikely(ip6->dst_addr[0] == 0xff)) {
            ff_punt(st, &ff->c6, m, DP_PUNT_MULTICAST);
            return CLS_DONE;
        }
        if (unlikely(l2_mcast)) {
            ff_punt(st, &ff->c6, m, DP_PUNT_L2_MULTICAST);
            return CLS_DONE;
        }
        if (unlikely(ip6_bad_src(ip6->src_addr))) {
            dp_drop(st, m, DP_DROP_IP6_BAD_SRC);
            return CLS_DONE;
        }
        if (unlikely(ip6->proto == 0)) {
            ff_punt(st, &ff->c6, m, DP_PUNT_HBH);
            return CLS_DONE;
        }
        memcpy(k->src, ip6->src_addr, 16);
        memcpy(k->dst, ip6->dst_addr, 16);
        k->flow = ip6->vtc_flow;
        return CLS_V6;
    }

    if (eth->ether_type == RTE_BE16(RTE_ETHER_TYPE_IPV4)) {
        const struct rte_ipv4_hdr *ip = (const void *)(eth + 1);
        uint32_t hlen, tlen;

        if (unlikely(!ff->ipv4)) {
            dp_drop(st, m, DP_DROP_IP4_DISABLED);
            return CLS_DONE;
        }
        if (unlikely(dlen < sizeof(*eth) + sizeof(*ip))) {
            dp_drop(st, m, DP_DROP_IP4_TRUNCATED);
            return CLS_DONE;
        }
        if (unlikely((ip->version_ihl >> 4) != 4)) {
            dp_drop(st, m, DP_DROP_IP4_BAD_VERSION);
            return CLS_DONE;
        }
        hlen = (ip->version_ihl & 0xf) * 4u;
        if (unlikely(hlen < sizeof(*ip))) {
            dp_drop(st, m, DP_DROP_IP4_BAD_IHL);
            return CLS_DONE;
        }
        if (unlikely(dlen < sizeof(*eth) + hlen)) {
            dp_drop(st, m, DP_DROP_IP4_TRUNCATED);
            return CLS_DONE;
        }
        tlen = rte_be_to_cpu_16(ip->total_length);
        if (unlikely(tlen < hlen || sizeof(*eth) + tlen > plen)) {
            dp_drop(st, m, DP_DROP_IP4_BAD_LENGTH);
            return CLS_DONE;
        }
        /* ip_input drops a bad header checksum; trust the NIC if it says. */
        if ((m->ol_flags & RTE_MBUF_F_RX_IP_CKSUM_MASK) ==
                RTE_MBUF_F_RX_IP_CKSUM_BAD ||
            ((m->ol_flags & RTE_MBUF_F_RX_IP_CKSUM_MASK) !=
                 RTE_MBUF_F_RX_IP_CKSUM_GOOD &&
             unlikely(rte_raw_cksum(ip, hlen) != 0xffff))) {
            dp_drop(st, m, DP_DROP_IP4_BAD_CHECKSUM);
            return CLS_DONE;
        }
        if (unlikely((ip->dst_addr & RTE_BE32(0xf0000000)) ==
                         RTE_BE32(0xe0000000) ||
                     ip->dst_addr == RTE_BE32(0xffffffff))) {
            ff_punt(st, &ff->c4, m, DP_PUNT_MULTICAST);
            return CLS_DONE;
        }
        if (unlikely(l2_mcast)) {
            ff_punt(st, &ff->c4, m, DP_PUNT_L2_MULTICAST);
            return CLS_DONE;
        }
        if (unlikely(ip4_bad_src(ip->src_addr))) {
            dp_drop(st, m, DP_DROP_IP4_BAD_SRC);
            return CLS_DONE;
        }
        if (unlikely(hlen != sizeof(*ip))) {
            ff_punt(st, &ff->c4, m, DP_PUNT_IP4_OPTIONS);
            return CLS_DONE;
        }
        memset(k, 0, sizeof(*k));
        memcpy(k->src, &ip->src_addr, 4);
        memcpy(k->dst, &ip->dst_addr, 4);
        k->flow = ip->type_of_service;
        return CLS_V4;
    }

    if (eth->ether_type == RTE_BE16(RTE_ETHER_TYPE_ARP)) {
        ff_punt(st, &ff->c4, m, DP_PUNT_ARP);
        return CLS_DONE;
    }
    dp_drop(st, m, DP_DROP_L2_UNSUPPORTED);
    return CLS_DONE;
}

/* Hop limit, IP size and protocol of a classified packet. */
struct ffpkt {
    uint8_t *ttl;
    uint32_t size;
    uint8_t proto;
};

static inline void ff_pkt(struct rte_mbuf *m, int cls, struct ffpkt *p)
{
    uint8_t *l3 = rte_pktmbuf_mtod_offset(m, uint8_t *,
                                          sizeof(struct rte_ether_hdr));

    if (cls == CLS_V6) {
        struct rte_ipv6_hdr *ip6 = (void *)l3;
        p->ttl = &ip6->hop_limits;
        p->size = sizeof(*ip6) + rte_be_to_cpu_16(ip6->payload_len);
        p->proto = ip6->proto;
    } else {
        struct rte_ipv4_hdr *ip = (void *)l3;
        p->ttl = &ip->time_to_live;
        p->size = rte_be_to_cpu_16(ip->total_length);
        p->proto = ip->next_proto_id;
    }
}

static inline uint8_t ff_hop_limit(const struct rte_mbuf *m, int cls)
{
    const uint8_t *l3 = rte_pktmbuf_mtod_offset(m, const uint8_t *,
                                                sizeof(struct rte_ether_hdr));

    return cls == CLS_V6 ? l3[offsetof(struct rte_ipv6_hdr, hop_limits)]
                         : l3[offsetof(struct rte_ipv4_hdr, time_to_live)];
}

static inline void ff_dec_ttl(struct rte_mbuf *m, int cls, struct ffpkt *p)
{
    if (cls == CLS_V6)
        (*p->ttl)--;
    else
        ip4_dec_ttl(rte_pktmbuf_mtod_offset(m, struct rte_ipv4_hdr *,
                                            sizeof(struct rte_ether_hdr)));
}

/* What ip6_forward does for a packet the cache could not take: look the
 * route up, forward, and (the seed's ip6flow_create) cache the flow. */
static void ff_route(struct dp_stage *st, struct ip6flow *ff, struct ffout *o,
                     struct ffcache *c, const struct rt_copy *rt, uint32_t gen,
                     uint32_t now, struct rte_mbuf *m, int cls,
                     const struct ffkey *k, uint32_t h, uint32_t idx)
{
    const uint32_t nh_id = rt_lookup(rt, cls == CLS_V6 ? 6 : 4, k->dst);
    const struct dp_nexthop *nh = &rt->nh[nh_id];
    struct ffpkt p;
    struct ffentry *f;

    ff_pkt(m, cls, &p);

    if (nh->kind == DP_NH_LOCAL) {
        ff_punt(st, c, m, DP_PUNT_LOCAL);
        return;
    }
    /* A link-local source must not leave its link (RFC 4291 2.5.6): the
     * slow path answers "beyond scope of source address". */
    if (cls == CLS_V6 && k->src[0] == 0xfe && (k->src[1] & 0xc0) == 0x80) {
        ff_punt(st, c, m, DP_PUNT_SCOPE);
        return;
    }
    if (*p.ttl <= 1) {
        ff_punt(st, c, m, DP_PUNT_HOP_LIMIT);
        return;
    }
    switch (nh->kind) {
    case DP_NH_FORWARD:
        break;
    case DP_NH_RESOLVE:
        ff_punt(st, c, m, DP_PUNT_RESOLVE);
        return;
    case DP_NH_BLACKHOLE:
        dp_drop(st, m, DP_DROP_BLACKHOLE);
        return;
    default: /* none, reject */
        ff_punt(st, c, m, DP_PUNT_NO_ROUTE);
        return;
    }
    if (unlikely(!ff->r->port[nh->port].up)) {
        dp_drop(st, m, DP_DROP_EGRESS_DOWN);
        return;
    }
    if (p.size > nh->mtu) {
        ff_punt(st, c, m, DP_PUNT_TOO_BIG);
        return;
    }
    ff_dec_ttl(m, cls, &p);
    ff_send(o, m, nh);
    c->st.forward++;

    /* The seed's ip6flow_create: never for ICMP, never with the cache off. */
    if (p.proto == (cls == CLS_V6 ? IPPROTO_ICMPV6 : IPPROTO_ICMP) ||
        c->maxflows == 0)
        return;
    if (idx != FF_NONE) {
        /* Re-point an existing (stale) flow; its counts fold into the
         * stage's as the seed does. */
        f = &c->e[idx];
        list_unlink(c, list_of(c, f), idx);
        c->st.uses += f->uses;
        c->st.refreshed++;
    } else {
        idx = ff_alloc(c);
        if (idx == FF_NONE)
            return;
        f = &c->e[idx];
        f->key = *k;
        f->live = 1;
        ft_insert(&c->table, h, idx);
        c->st.created++;
    }
    f->nh = (uint16_t)nh_id;
    f->gen = gen;
    f->uses = 0;
    f->dropped = 0;
    f->touched_ms = now;
    list_push(c, &c->fresh, idx);
}

static uint16_t ip6flow_process(struct dp_stage *st, struct rte_mbuf **pkts,
                                uint16_t n)
{
    struct ip6flow *ff = st->priv;
    struct dp_worker *w = st->w;
    struct ffkey keys[DP_BURST];
    struct ffout out;
    uint32_t hash[DP_BURST], cand[DP_BURST];
    uint8_t cls[DP_BURST], probe[DP_BURST];
    const struct rt_copy *rt;
    uint32_t gen, now;
    uint16_t i;

    if (unlikely(ff->r == NULL)) {
        for (i = 0; i < n; i++)
            dp_drop(st, pkts[i], DP_DROP_NO_EGRESS);
        return 0;
    }
    rt = rt_view(ff->r, &gen);
    out.n = 0;
    now = (uint32_t)(dp_clock_ns() / 1000000);
    ff_sync_gen(&ff->c6, gen);
    ff_sync_gen(&ff->c4, gen);

    /* Pass 1: parse, hash, prefetch the home buckets. */
    for (i = 0; i < n; i++) {
        struct ffcache *c;

        cls[i] = ff_classify(st, ff, pkts[i], &keys[i]);
        if (cls[i] == CLS_DONE)
            continue;
        c = cls[i] == CLS_V6 ? &ff->c6 : &ff->c4;
        /* A packet that dies here (hop limit <= 1: a traceroute, a loop, a
         * storm) is never forwarded from the cache: straight to the route
         * path, without hashing or probing the table. */
        probe[i] = c->maxflows != 0 && ff_hop_limit(pkts[i], cls[i]) > 1;
        if (!probe[i])
            continue;
        hash[i] = ff_hash(c, &keys[i]);
        rte_prefetch0(ft_home(&c->table, hash[i]));
    }
    /* Pass 2: prefetch the likely entries. */
    for (i = 0; i < n; i++) {
        struct ffcache *c = cls[i] == CLS_V6 ? &ff->c6 : &ff->c4;

        cand[i] = FF_NONE;
        if (cls[i] == CLS_DONE || !probe[i])
            continue;
        cand[i] = ft_candidate(&c->table, hash[i]);
        if (cand[i] != FF_NONE)
            rte_prefetch0(&c->e[cand[i]]);
    }
    /* Pass 3: the seed's ip6flow_fastforward, else the route path. */
    for (i = 0; i < n; i++) {
        struct rte_mbuf *m = pkts[i];
        struct ffcache *c;
        uint32_t idx = FF_NONE;
        struct ffentry *f;

        if (cls[i] == CLS_DONE)
            continue;
        c = cls[i] == CLS_V6 ? &ff->c6 : &ff->c4;
        if (probe[i]) {
            idx = cand[i];
            if (idx == FF_NONE || !ff_eq(c, idx, &keys[i]))
                FT_LOOKUP(&c->table, hash[i], &keys[i], FF_EQ, c, idx);
        }
        if (idx != FF_NONE) {
            f = &c->e[idx];
            if (likely(f->gen == gen)) {
                const struct dp_nexthop *nh = &rt->nh[f->nh];
                struct ffpkt p;

                ff_pkt(m, cls[i], &p);
                if (likely(nh->kind == DP_NH_FORWARD &&
                           ff->r->port[nh->port].up && p.size <= nh->mtu &&
                           *p.ttl > 1)) {
                    ff_dec_ttl(m, cls[i], &p);
                    ff_send(&out, m, nh);
                    f->uses++;
                    c->st.fastforward++;
                    if (now - f->touched_ms >= ff->lru_res_ms) {
                        list_unlink(c, &c->fresh, idx);
                        list_push(c, &c->fresh, idx);
                        f->touched_ms = now;
                    }
                    continue;
                }
            }
        }
        ff_route(st, ff, &out, c, rt, gen, now, m, cls[i], &keys[i],
                 probe[i] ? hash[i] : 0, idx);
    }
    ff_flush_out(w, &out);
    return 0;
}

static void ip6flow_tick(struct dp_stage *st, uint64_t now_ns)
{
    struct ip6flow *ff = st->priv;
    uint32_t now = (uint32_t)(now_ns / 1000000), gen;

    if (ff->r == NULL)
        return;
    gen = dp_router_generation(ff->r);
    /* An idle flow may have been used up to lru_res_ms after it was last
     * moved to the front: wait that much longer before calling it idle. */
    ff_sync_gen(&ff->c6, gen);
    ff_sync_gen(&ff->c4, gen);
    ff_scan(&ff->c6, now, ff->idle_ms + ff->lru_res_ms);
    ff_scan(&ff->c4, now, ff->idle_ms + ff->lru_res_ms);
    if (!ff->slowtimo_armed || (int32_t)(now - ff->next_slowtimo_ms) >= 0) {
        ff->slowtimo_armed = 1;
        ff->next_slowtimo_ms = now + FF_SLOWTIMO_MS;
        ff_sweep_stale(&ff->c6);
        ff_sweep_stale(&ff->c4);
    }
    ff->c6.st.flows = ff->c6.used;
    ff->c4.st.flows = ff->c4.used;
}

static int ip6flow_init(struct dp_stage *st)
{
    struct ip6flow *ff = st->priv;

    ff->idle_ms = 5000;
    ff->lru_res_ms = 500;
    ff->ipv4 = 1;
    ff->c6.free_head = ff->c4.free_head = FF_NONE;
    ff->c6.fresh.head = ff->c6.fresh.tail = FF_NONE;
    ff->c6.stale.head = ff->c6.stale.tail = FF_NONE;
    ff->c4.fresh = ff->c6.fresh;
    ff->c4.stale = ff->c6.stale;
    return 0;
}

static void ip6flow_fini(struct dp_stage *st)
{
    struct ip6flow *ff = st->priv;

    ff_release(&ff->c6);
    ff_release(&ff->c4);
}

static struct ip6flow *ip6flow_of(const struct dp_stage *st);

int dp_ip6flow_attach(struct dp_stage *st, struct dp_router *r)
{
    struct ip6flow *ff = ip6flow_of(st);

    if (ff == NULL)
        return -EINVAL;
    ff->r = r;
    return 0;
}

int dp_ip6flow_configure(struct dp_stage *st, const struct dp_ip6flow_conf *c)
{
    struct ip6flow *ff = ip6flow_of(st);
    int socket, rc;

    if (ff == NULL)
        return -EINVAL;
    if (c->idle_timeout_ms == 0) {
        dp_set_error(EINVAL, "ip6flow: idle timeout must be > 0");
        return -EINVAL;
    }
    socket = st->w->pool->socket_id;
    rc = ff_configure(&ff->c6, c->maxflows, c->hashsize, socket, "ip6flow");
    if (rc < 0)
        return rc;
    rc = ff_configure(&ff->c4, c->maxflows4, c->hashsize4, socket, "ipflow");
    if (rc < 0)
        return rc;
    ff->idle_ms = c->idle_timeout_ms;
    /* The LRU order's resolution: the seed's timer ticks at 2 Hz. */
    ff->lru_res_ms = RTE_MIN(500u, c->idle_timeout_ms / 4);
    ff->ipv4 = c->ipv4;
    ff->c6.st.flows = ff->c6.used;
    ff->c4.st.flows = ff->c4.used;
    return 0;
}

int dp_ip6flow_stats(const struct dp_stage *st, int family,
                     struct dp_ip6flow_stats *out)
{
    struct ip6flow *ff = ip6flow_of(st);

    if (ff == NULL)
        return -EINVAL;
    if (family != 4 && family != 6) {
        dp_set_error(EINVAL, "ip6flow: family %d", family);
        return -EINVAL;
    }
    memcpy(out, family == 6 ? &ff->c6.st : &ff->c4.st, sizeof(*out));
    return 0;
}

int dp_ip6flow_invalidate_all(struct dp_stage *st)
{
    struct ip6flow *ff = ip6flow_of(st);
    uint32_t n;

    if (ff == NULL)
        return -EINVAL;
    n = ff_flush(&ff->c6) + ff_flush(&ff->c4);
    ff->c6.st.flows = ff->c6.used;
    ff->c4.st.flows = ff->c4.used;
    return (int)n;
}

int dp_ip6flow_show(struct dp_stage *st, int family, uint32_t *cursor,
                    struct dp_ip6flow_entry *out, unsigned max)
{
    struct ip6flow *ff = ip6flow_of(st);
    const struct ffcache *c;
    uint32_t now, gen, i, end;
    unsigned n = 0;

    if (ff == NULL)
        return -EINVAL;
    c = family == 6 ? &ff->c6 : &ff->c4;
    now = (uint32_t)(dp_clock_ns() / 1000000);
    gen = ff->r ? dp_router_generation(ff->r) : 0;
    end = RTE_MIN(c->alloc, *cursor + DP_DUMP_SCAN_SLOTS);
    for (i = *cursor; i < end && n < max; i++) {
        const struct ffentry *f = &c->e[i];
        struct dp_ip6flow_entry *o;

        if (!f->live)
            continue;
        o = &out[n++];
        memcpy(o->src, f->key.src, 16);
        memcpy(o->dst, f->key.dst, 16);
        o->flow = rte_be_to_cpu_32(f->key.flow);
        o->nh = f->nh;
        o->gen = f->gen;
        o->uses = f->uses;
        o->dropped = f->dropped;
        o->idle_ms = now - f->touched_ms;
        o->family = (uint8_t)family;
        o->valid = f->gen == gen;
    }
    *cursor = i < c->alloc ? i : 0;
    return (int)n;
}

const struct dp_stage_ops dp_ip6flow_ops = {
    .kind = "ip6flow",
    .priv_size = sizeof(struct ip6flow),
    .init = ip6flow_init,
    .fini = ip6flow_fini,
    .process = ip6flow_process,
    .tick = ip6flow_tick,
};

static struct ip6flow *ip6flow_of(const struct dp_stage *st)
{
    if (st->ops != &dp_ip6flow_ops) {
        dp_set_error(EINVAL, "stage is a %s, not an ip6flow", st->ops->kind);
        return NULL;
    }
    return st->priv;
}
