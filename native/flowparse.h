/*
 * flowparse.h - parse a frame into a flow key, counting what cannot be
 * parsed under a reason. Bounds-checked against the first segment; it never
 * reads past the data the mbuf holds.
 */
#ifndef DP_FLOWPARSE_H
#define DP_FLOWPARSE_H

#include <stdint.h>
#include <string.h>
#include <netinet/in.h>

#include <rte_byteorder.h>
#include <rte_ether.h>
#include <rte_ip.h>
#include <rte_mbuf.h>
#include <rte_tcp.h>
#include <rte_udp.h>

/* Why a packet was not metered (it is still forwarded). */
#define NF_SKIP_REASONS(_)                                                 \
    _(NOT_IP, "not_ip")                /* ARP, LLDP, ... */                 \
    _(TRUNC_L2, "truncated_l2")        /* Ethernet or VLAN header cut */   \
    _(TRUNC_IP, "truncated_ip")        /* shorter than its IP header */    \
    _(BAD_VERSION, "bad_ip_version")   /* ethertype and version disagree */\
    _(BAD_IHL, "bad_ihl")              /* IPv4 IHL < 5 */                   \
    _(BAD_LENGTH, "bad_ip_length")     /* IP length beyond the frame */    \
    _(TRUNC_L4, "truncated_l4")        /* TCP/UDP header cut */            \
    _(EXT_CHAIN, "bad_ext_chain")      /* IPv6 extension chain cut/long */

enum nf_skip_reason {
#define NF_SKIP_ENUM(sym, name) NF_SKIP_##sym,
    NF_SKIP_REASONS(NF_SKIP_ENUM)
#undef NF_SKIP_ENUM
    NF_SKIP__COUNT
};

/* The ng_netflow key, widened for IPv6. 40 bytes, no padding holes, so it
 * can be hashed and compared as bytes. IPv4 addresses sit in the first four
 * bytes of src/dst, the rest zero. Ports and addresses in network order. */
struct nf_key {
    uint8_t src[16];
    uint8_t dst[16];
    uint16_t sport;
    uint16_t dport;
    uint16_t in_ifx;
    uint8_t proto;
    uint8_t tos;
};
_Static_assert(sizeof(struct nf_key) == 40, "flow key must stay 40 bytes");

struct nf_pkt {
    struct nf_key key;
    uint32_t plen;      /* IP total length: the bytes a flow counts */
    uint8_t tcp_flags;
    uint8_t ipver;
};

#define NF_MAX_EXT_HEADERS 8

static inline const uint8_t *nf_ptr(const uint8_t *base, uint32_t len,
                                    uint32_t off, uint32_t need)
{
    return (off <= len && need <= len - off) ? base + off : NULL;
}

/* Returns -1 on success, else the skip reason. */
static inline int nf_parse(const struct rte_mbuf *m, uint16_t in_ifx,
                           struct nf_pkt *p)
{
    /* Headers are read from the first segment (len); IP lengths are checked
     * against the whole packet (pkt). */
    const uint8_t *d = rte_pktmbuf_mtod(m, const uint8_t *);
    const uint32_t len = rte_pktmbuf_data_len(m);
    const uint32_t pkt = rte_pktmbuf_pkt_len(m);
    const struct rte_ether_hdr *eth;
    uint32_t off = sizeof(struct rte_ether_hdr), l4off, iplen;
    uint16_t etype;
    uint8_t proto;
    int first_fragment = 1;
    int vlans = 0;

    eth = (const void *)nf_ptr(d, len, 0, sizeof(*eth));
    if (eth == NULL)
        return NF_SKIP_TRUNC_L2;
    etype = eth->ether_type;
    while (etype == rte_cpu_to_be_16(RTE_ETHER_TYPE_VLAN) ||
           etype == rte_cpu_to_be_16(RTE_ETHER_TYPE_QINQ)) {
        const struct rte_vlan_hdr *vh = (const void *)nf_ptr(
            d, len, off, sizeof(*vh));
        if (vh == NULL || ++vlans > 4)
            return NF_SKIP_TRUNC_L2;
        etype = vh->eth_proto;
        off += sizeof(*vh);
    }

    memset(&p->key, 0, sizeof(p->key));
    p->key.in_ifx = in_ifx;
    p->tcp_flags = 0;

    if (etype == rte_cpu_to_be_16(RTE_ETHER_TYPE_IPV4)) {
        const struct rte_ipv4_hdr *ip = (const void *)nf_ptr(d, len, off, 20);
        uint32_t hlen;

        if (ip == NULL)
            return NF_SKIP_TRUNC_IP;
        if ((ip->version_ihl >> 4) != 4)
            return NF_SKIP_BAD_VERSION;
        hlen = (ip->version_ihl & 0xf) * 4u;
        if (hlen < 20)
            return NF_SKIP_BAD_IHL;
        if (off + hlen > len)
            return NF_SKIP_TRUNC_IP;
        iplen = rte_be_to_cpu_16(ip->total_length);
        if (iplen < hlen || off + iplen > pkt)
            return NF_SKIP_BAD_LENGTH;
        memcpy(p->key.src, &ip->src_addr, 4);
        memcpy(p->key.dst, &ip->dst_addr, 4);
        p->key.tos = ip->type_of_service;
        proto = ip->next_proto_id;
        p->plen = iplen;
        p->ipver = 4;
        /* Only the first fragment carries ports (the seed's rule). */
        if (ip->fragment_offset & rte_cpu_to_be_16(RTE_IPV4_HDR_OFFSET_MASK))
            first_fragment = 0;
        l4off = off + hlen;
    } else if (etype == rte_cpu_to_be_16(RTE_ETHER_TYPE_IPV6)) {
        const struct rte_ipv6_hdr *ip6 = (const void *)nf_ptr(
            d, len, off, sizeof(struct rte_ipv6_hdr));
        uint32_t vtc, end;
        int n;

        if (ip6 == NULL)
            return NF_SKIP_TRUNC_IP;
        vtc = rte_be_to_cpu_32(ip6->vtc_flow);
        if ((vtc >> 28) != 6)
            return NF_SKIP_BAD_VERSION;
        iplen = rte_be_to_cpu_16(ip6->payload_len) + 40u;
        if (off + iplen > pkt)
            return NF_SKIP_BAD_LENGTH;
        memcpy(p->key.src, ip6->src_addr, 16);
        memcpy(p->key.dst, ip6->dst_addr, 16);
        p->key.tos = (vtc >> 20) & 0xff;
        p->plen = iplen;
        p->ipver = 6;
        proto = ip6->proto;
        l4off = off + 40;
        end = RTE_MIN(off + iplen, len);
        /* Walk extension headers to the transport header. */
        for (n = 0;; n++) {
            const uint8_t *eh;

            if (proto != IPPROTO_HOPOPTS && proto != IPPROTO_ROUTING &&
                proto != IPPROTO_DSTOPTS && proto != IPPROTO_FRAGMENT &&
                proto != IPPROTO_AH)
                break;
            if (n >= NF_MAX_EXT_HEADERS)
                return NF_SKIP_EXT_CHAIN;
            eh = nf_ptr(d, end, l4off, 8);
            if (eh == NULL)
                return NF_SKIP_EXT_CHAIN;
            if (proto == IPPROTO_FRAGMENT) {
                if ((((uint16_t)eh[2] << 8 | eh[3]) & 0xfff8) != 0)
                    first_fragment = 0;
                proto = eh[0];
                l4off += 8;
                if (!first_fragment)
                    break;
            } else {
                uint32_t elen = proto == IPPROTO_AH ? (eh[1] + 2u) * 4u
                                                    : (eh[1] + 1u) * 8u;
                proto = eh[0];
                l4off += elen;
            }
        }
    } else {
        return NF_SKIP_NOT_IP;
    }

    p->key.proto = proto;
    if (!first_fragment)
        return -1;
    if (proto == IPPROTO_TCP) {
        const struct rte_tcp_hdr *th = (const void *)nf_ptr(
            d, RTE_MIN(off + iplen, len), l4off, sizeof(*th));
        if (th == NULL)
            return NF_SKIP_TRUNC_L4;
        p->key.sport = th->src_port;
        p->key.dport = th->dst_port;
        p->tcp_flags = th->tcp_flags;
    } else if (proto == IPPROTO_UDP) {
        const struct rte_udp_hdr *uh = (const void *)nf_ptr(
            d, RTE_MIN(off + iplen, len), l4off, sizeof(*uh));
        if (uh == NULL)
            return NF_SKIP_TRUNC_L4;
        p->key.sport = uh->src_port;
        p->key.dport = uh->dst_port;
    }
    return -1;
}

#endif /* DP_FLOWPARSE_H */
