/*
 * one2many.c - FreeBSD ng_one2many as a burst stage.
 *
 * Packets arriving on the "one" port go out on the "many" links by the
 * transmit algorithm: round-robin over the active links, all of them (xmit-
 * all), or the lowest-numbered active one (failover); beyond the seed, a
 * flow hash keeps each flow on one link and in order. Packets arriving on
 * any many link go to the one port. With no active link the packet is
 * dropped (no_active_link). Other ports' packets pass to the next stage.
 *
 * The bundle's enabled-link mask and transmit algorithm are single atomic
 * words that the control side (setconfig, the link monitor) writes and the
 * workers read once per burst; a worker rebuilds its list of active links
 * when the mask changes. Statistics are per worker, summed by Python.
 * xmit-all sends one mbuf to every link by raising its reference count: the
 * packet is not modified, so nothing is copied.
 *
 * The one side may be a logical port (a bundle) instead of a device: then
 * what arrives on a link continues down the pipeline as if it had arrived
 * on the bundle (its port rewritten), and what the pipeline or the slow path
 * sends to the bundle comes to one2many_transmit, so a router or netflow
 * stage sees one interface whatever the links.
 */
#include <errno.h>
#include <string.h>

#include <rte_hash_crc.h>
#include <rte_ether.h>
#include <rte_ip.h>
#include <rte_malloc.h>

#include "dp_internal.h"

struct dp_o2m {
    uint64_t enabled;            /* atomic: bit n = link n enabled */
    uint32_t xmit;               /* atomic: DP_O2M_XMIT_* */
    uint16_t one_port;
    uint16_t n_many;
    uint8_t one_logical;         /* the one side is a bundle, not a device */
    uint16_t many_port[DP_O2M_MAX_LINKS];
    uint8_t link_of_port[DP_MAX_PORTS]; /* 0xff: not a many link */
};

struct one2many {
    const struct dp_o2m *b;
    uint64_t mask;               /* the mask active[] was built from */
    uint16_t n_active;
    uint16_t next;               /* round-robin position in active[] */
    uint8_t active[DP_O2M_MAX_LINKS];
    struct dp_o2m_link_stats one;
    struct dp_o2m_link_stats many[DP_O2M_MAX_LINKS];
};

int dp_o2m_create(uint16_t one_port, const uint16_t *many_ports,
                  unsigned n_many, struct dp_o2m **out)
{
    struct dp_o2m *b;
    unsigned i;

    if (n_many == 0 || n_many > DP_O2M_MAX_LINKS || one_port >= DP_MAX_PORTS) {
        dp_set_error(EINVAL, "one2many: 1 to %d links and a valid one port",
                     DP_O2M_MAX_LINKS);
        return -EINVAL;
    }
    b = rte_zmalloc("dp_o2m", sizeof(*b), RTE_CACHE_LINE_SIZE);
    if (b == NULL) {
        dp_set_error(ENOMEM, "one2many bundle");
        return -ENOMEM;
    }
    memset(b->link_of_port, 0xff, sizeof(b->link_of_port));
    b->one_port = one_port;
    b->n_many = n_many;
    for (i = 0; i < n_many; i++) {
        if (many_ports[i] >= DP_MAX_PORTS || many_ports[i] == one_port ||
            b->link_of_port[many_ports[i]] != 0xff) {
            rte_free(b);
            dp_set_error(EINVAL, "one2many: link %u port %u is invalid, the "
                         "one port, or a repeat", i, many_ports[i]);
            return -EINVAL;
        }
        b->many_port[i] = many_ports[i];
        b->link_of_port[many_ports[i]] = i;
    }
    b->xmit = DP_O2M_XMIT_ROUNDROBIN;
    *out = b;
    return 0;
}

void dp_o2m_free(struct dp_o2m *b)
{
    rte_free(b);
}

void dp_o2m_set_one_logical(struct dp_o2m *b, int logical)
{
    b->one_logical = logical != 0;
}

int dp_o2m_set_xmit(struct dp_o2m *b, int alg)
{
    if (alg < DP_O2M_XMIT_ROUNDROBIN || alg > DP_O2M_XMIT_HASH) {
        dp_set_error(EINVAL, "one2many: unknown transmit algorithm %d", alg);
        return -EINVAL;
    }
    __atomic_store_n(&b->xmit, (uint32_t)alg, __ATOMIC_RELEASE);
    return 0;
}

void dp_o2m_set_enabled(struct dp_o2m *b, uint64_t mask)
{
    uint64_t links = b->n_many == 64 ? UINT64_MAX : (1ull << b->n_many) - 1;
    __atomic_store_n(&b->enabled, mask & links, __ATOMIC_RELEASE);
}

uint64_t dp_o2m_enabled(const struct dp_o2m *b)
{
    return __atomic_load_n(&b->enabled, __ATOMIC_ACQUIRE);
}

int dp_o2m_xmit(const struct dp_o2m *b)
{
    return (int)__atomic_load_n(&b->xmit, __ATOMIC_ACQUIRE);
}

static uint16_t one2many_process(struct dp_stage *st, struct rte_mbuf **pkts,
                                 uint16_t n);

static struct one2many *o2m_of(struct dp_stage *st)
{
    if (st->ops->process != one2many_process) {
        dp_set_error(EINVAL, "stage is a %s, not one2many", st->ops->kind);
        return NULL;
    }
    return st->priv;
}

int dp_one2many_attach(struct dp_stage *st, struct dp_o2m *b)
{
    struct one2many *o = o2m_of(st);

    if (o == NULL)
        return -EINVAL;
    o->b = b;
    o->mask = 0;
    o->n_active = 0;
    return 0;
}

int dp_one2many_stats(struct dp_stage *st, int link,
                      struct dp_o2m_link_stats *out, int clear)
{
    struct one2many *o = o2m_of(st);
    struct dp_o2m_link_stats *s;

    if (o == NULL)
        return -EINVAL;
    if (link == DP_O2M_ONE_LINK)
        s = &o->one;
    else if (link >= 0 && o->b != NULL && link < o->b->n_many)
        s = &o->many[link];
    else {
        dp_set_error(EINVAL, "one2many: no link %d", link);
        return -EINVAL;
    }
    memcpy(out, s, sizeof(*out));
    if (clear)
        memset(s, 0, sizeof(*s));
    return 0;
}

/* ng_one2many_update_many(): the active links, in link order. */
static void rebuild_active(struct one2many *o, uint64_t mask)
{
    uint16_t n = 0;
    unsigned i;

    for (i = 0; i < o->b->n_many; i++)
        if (mask & (1ull << i))
            o->active[n++] = i;
    o->n_active = n;
    o->mask = mask;
    if (n)
        o->next %= n;
}

/* A flow's link: hash of addresses and ports (IPv6: addresses and flow
 * label), so one flow stays on one link and in order. */
static inline uint32_t flow_hash(const struct rte_mbuf *m)
{
    const uint8_t *d = rte_pktmbuf_mtod(m, const uint8_t *);
    uint32_t len = rte_pktmbuf_data_len(m), off = 14, h = 0;
    uint16_t et;

    if (len < 14)
        return 0;
    et = (uint16_t)d[12] << 8 | d[13];
    if (et == RTE_ETHER_TYPE_VLAN && len >= 18) {
        et = (uint16_t)d[16] << 8 | d[17];
        off = 18;
    }
    if (et == RTE_ETHER_TYPE_IPV4 && len >= off + 20) {
        const struct rte_ipv4_hdr *ip = (const void *)(d + off);
        uint32_t hl = (ip->version_ihl & 0xf) * 4u;
        h = rte_hash_crc_8byte((uint64_t)ip->src_addr << 32 | ip->dst_addr,
                               ip->next_proto_id);
        if ((ip->next_proto_id == IPPROTO_TCP ||
             ip->next_proto_id == IPPROTO_UDP) &&
            !(ip->fragment_offset &
              rte_cpu_to_be_16(RTE_IPV4_HDR_OFFSET_MASK | RTE_IPV4_HDR_MF_FLAG)) &&
            len >= off + hl + 4)
            h = rte_hash_crc_4byte(*(const uint32_t *)(d + off + hl), h);
    } else if (et == RTE_ETHER_TYPE_IPV6 && len >= off + 40) {
        const struct rte_ipv6_hdr *ip6 = (const void *)(d + off);
        h = rte_hash_crc(ip6->src_addr, 32,
                         rte_be_to_cpu_32(ip6->vtc_flow) & 0xfffff);
    }
    return h;
}

static inline void link_tx(struct dp_o2m_link_stats *s, uint64_t packets,
                           uint64_t octets)
{
    s->tx_packets += packets;
    s->tx_octets += octets;
}

/* Send each link its share of the burst: pkts[i] goes to link[i]. A
 * counting sort keeps the burst's order within a link, then one bulk emit
 * per link. Returns the burst's octets. */
static inline uint64_t emit_by_link(struct one2many *o, struct dp_worker *w,
                                struct rte_mbuf **pkts, const uint8_t *link,
                                uint16_t n)
{
    const struct dp_o2m *b = o->b;
    struct rte_mbuf *sorted[DP_BURST];
    uint16_t count[DP_O2M_MAX_LINKS] = {0}, start[DP_O2M_MAX_LINKS];
    uint64_t octets[DP_O2M_MAX_LINKS] = {0};
    uint16_t i, j, pos = 0;
    uint64_t total = 0;

    for (i = 0; i < n; i++) {
        count[link[i]]++;
        octets[link[i]] += rte_pktmbuf_pkt_len(pkts[i]);
    }
    for (j = 0; j < o->n_active; j++) {
        start[o->active[j]] = pos;
        pos += count[o->active[j]];
    }
    for (i = 0; i < n; i++)
        sorted[start[link[i]]++] = pkts[i];
    for (j = 0, pos = 0; j < o->n_active; j++) {
        uint8_t l = o->active[j];

        if (count[l] == 0)
            continue;
        link_tx(&o->many[l], count[l], octets[l]);
        dp_emit_bulk(w, b->many_port[l], &sorted[pos], count[l]);
        pos += count[l];
        total += octets[l];
    }
    return total;
}

/*
 * Reading the mbufs: a stage that only forwards never looks at a packet, so
 * the octet counters (ng_one2many's per-link stats) are the one place this
 * stage touches an mbuf, and that load is most of its cost: without
 * hugepages DPDK puts every mbuf at the same offset of its own 4 KiB page,
 * so all their first cache lines compete for one L1 set (8 ways) and the
 * line rx just wrote is rarely still there. The reads run from the burst's
 * last packet to its first (the last ones rx wrote may still be cached, and
 * the first ones tx will free are left cached); on the bench host that
 * measured neutral, the miss itself is the cost.
 */
static inline uint64_t burst_octets(struct rte_mbuf **pkts, uint16_t n)
{
    uint64_t a = 0, b = 0, c = 0, d = 0;

    /* four sums: four loads in flight, a quarter of the loop overhead */
    for (; n >= 4; n -= 4) {
        a += rte_pktmbuf_pkt_len(pkts[n - 1]);
        b += rte_pktmbuf_pkt_len(pkts[n - 2]);
        c += rte_pktmbuf_pkt_len(pkts[n - 3]);
        d += rte_pktmbuf_pkt_len(pkts[n - 4]);
    }
    while (n)
        a += rte_pktmbuf_pkt_len(pkts[--n]);
    return a + b + c + d;
}

static uint16_t one2many_process(struct dp_stage *st, struct rte_mbuf **pkts,
                                 uint16_t n)
{
    struct one2many *o = st->priv;
    const struct dp_o2m *b = o->b;
    struct dp_worker *w = st->w;
    uint16_t port = w->rx_port, i, j;
    uint8_t link, links[DP_BURST];
    uint64_t mask, octets;

    if (unlikely(b == NULL))
        return n;
    if (port != b->one_port) {
        link = b->link_of_port[port];
        if (link == 0xff)
            return n; /* not ours: the next stage decides */
        /* many -> one */
        octets = burst_octets(pkts, n);
        o->many[link].rx_packets += n;
        o->many[link].rx_octets += octets;
        link_tx(&o->one, n, octets);
        if (b->one_logical) {
            /* into the bundle: the next stages see its port */
            for (i = 0; i < n; i++)
                pkts[i]->port = b->one_port;
            w->rx_port = b->one_port;
            return n;
        }
        dp_emit_bulk(w, b->one_port, pkts, n);
        return 0;
    }

    /* one -> many */
    mask = __atomic_load_n(&b->enabled, __ATOMIC_ACQUIRE);
    if (unlikely(mask != o->mask))
        rebuild_active(o, mask);
    o->one.rx_packets += n;
    if (unlikely(o->n_active == 0)) {
        o->one.rx_octets += burst_octets(pkts, n);
        for (i = 0; i < n; i++)
            dp_drop(st, pkts[i], DP_DROP_NO_ACTIVE_LINK);
        return 0;
    }
    switch (__atomic_load_n(&b->xmit, __ATOMIC_RELAXED)) {
    case DP_O2M_XMIT_FAILOVER:
        octets = burst_octets(pkts, n);
        o->one.rx_octets += octets;
        link = o->active[0];
        link_tx(&o->many[link], n, octets);
        dp_emit_bulk(w, b->many_port[link], pkts, n);
        break;
    case DP_O2M_XMIT_ALL: {
        /* One mbuf for every link: the packet is not modified, so its
         * reference count goes up instead of copies being made; the same
         * pass (last packet first, see burst_octets) reads its length. */
        const uint16_t extra = o->n_active - 1;

        octets = 0;
        if (extra) {
            i = n;
            while (i) {
                struct rte_mbuf *m = pkts[--i];

                octets += rte_pktmbuf_pkt_len(m);
                rte_pktmbuf_refcnt_update(m, extra);
            }
        } else {
            octets = burst_octets(pkts, n);
        }
        o->one.rx_octets += octets;
        for (j = 0; j < o->n_active; j++) {
            link = o->active[j];
            link_tx(&o->many[link], n, octets);
            dp_emit_bulk(w, b->many_port[link], pkts, n);
        }
        break;
    }
    case DP_O2M_XMIT_HASH:
        for (i = 0; i < n; i++)
            links[i] = o->active[flow_hash(pkts[i]) % o->n_active];
        o->one.rx_octets += emit_by_link(o, w, pkts, links, n);
        break;
    default: { /* round-robin, packet by packet as the seed does */
        /* Packet i goes to active[(next + i) % n_active], so the packets
         * from offset s on, every n_active-th, share one link: each link's
         * share is gathered (last packet first, see burst_octets) and
         * handed on in one piece. */
        struct rte_mbuf *share[DP_BURST];
        const uint16_t na = o->n_active, q = n / na, r = n % na;
        uint16_t slot = o->next;
        uint64_t total = 0;

        for (j = 0; j < na && j < n; j++) {
            const uint16_t k = q + (j < r); /* packets j, j + na, ... */
            uint16_t c = k;

            octets = 0;
            for (i = (uint16_t)(j + (k - 1) * na); c; i -= na) {
                share[--c] = pkts[i];
                octets += rte_pktmbuf_pkt_len(pkts[i]);
            }
            link = o->active[slot];
            if (++slot == na)
                slot = 0;
            link_tx(&o->many[link], k, octets);
            total += octets;
            dp_emit_bulk(w, b->many_port[link], share, k);
        }
        o->one.rx_octets += total;
        /* next = (next + n) % na, as next < na and r < na */
        o->next = (uint16_t)(o->next + r >= na ? o->next + r - na : o->next + r);
        break;
    }
    }
    return 0;
}

/* Sent to the bundle (a logical one port): the one -> many half of the
 * stage, as if the packets had arrived on the one side. */
static void one2many_transmit(struct dp_stage *st, struct rte_mbuf **pkts,
                              uint16_t n)
{
    struct one2many *o = st->priv;
    struct dp_worker *w = st->w;
    const uint16_t rx_port = w->rx_port;

    if (unlikely(o->b == NULL || !o->b->one_logical)) {
        uint16_t i;

        for (i = 0; i < n; i++)
            dp_drop(st, pkts[i], DP_DROP_BAD_EGRESS);
        return;
    }
    w->rx_port = o->b->one_port;
    while (n) {
        uint16_t k = RTE_MIN(n, (uint16_t)DP_BURST);

        one2many_process(st, pkts, k);
        pkts += k;
        n -= k;
    }
    w->rx_port = rx_port;
}

const struct dp_stage_ops dp_one2many_ops = {
    .kind = "one2many",
    .priv_size = sizeof(struct one2many),
    .process = one2many_process,
    .transmit = one2many_transmit,
};
