/*
 * fuzz_netflow_parse.c - nf_parse() (native/flowparse.h): a frame into a
 * netflow key. No EAL: the mbuf is a struct on the stack whose buffer is
 * the fuzzer's input itself (a malloc block of exactly the input's size),
 * so any read past the frame is a heap-buffer-overflow.
 *
 * The input is the raw frame. It is parsed twice: as a one-segment packet
 * (pkt_len == data_len) and as the first segment of a longer packet
 * (pkt_len 4 KiB more), the case where IP lengths are checked against the
 * packet but headers must still come from the first segment.
 *
 * Checked besides memory safety: a reason is a known skip reason; a parsed
 * packet has IP version 4 or 6 (with its ethertype and version nibble),
 * the input port, an IP length that fits the packet, zero padding in IPv4
 * keys, and ports only for TCP/UDP.
 */
#include <stdio.h>
#include <stdlib.h>

#include "dp_internal.h"
#include "flowparse.h"

static void check(const uint8_t *data, uint32_t len, uint32_t pkt, int r,
                  const struct nf_pkt *p)
{
    static const uint8_t zero[12];

    if (r >= 0) {
        if (r >= NF_SKIP__COUNT) {
            fprintf(stderr, "nf_parse: reason %d\n", r);
            abort();
        }
        return;
    }
    if ((p->ipver != 4 && p->ipver != 6) || p->key.in_ifx != 7 ||
        p->plen > pkt || p->plen < (p->ipver == 4 ? 20u : 40u)) {
        fprintf(stderr, "nf_parse: ipver %u in_ifx %u plen %u of %u\n",
                p->ipver, p->key.in_ifx, p->plen, pkt);
        abort();
    }
    if (p->ipver == 4 && (memcmp(p->key.src + 4, zero, 12) != 0 ||
                          memcmp(p->key.dst + 4, zero, 12) != 0)) {
        fprintf(stderr, "nf_parse: IPv4 key with garbage past the address\n");
        abort();
    }
    if (p->key.proto != IPPROTO_TCP && p->key.proto != IPPROTO_UDP &&
        (p->key.sport || p->key.dport || p->tcp_flags)) {
        fprintf(stderr, "nf_parse: ports for protocol %u\n", p->key.proto);
        abort();
    }
    (void)data;
    (void)len;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct rte_mbuf m;
    struct nf_pkt p;
    int r;

    if (size > UINT16_MAX)
        return 0;
    memset(&m, 0, sizeof(m));
    m.buf_addr = (void *)(uintptr_t)data;
    m.buf_len = (uint16_t)size;
    m.data_off = 0;
    m.data_len = (uint16_t)size;
    m.pkt_len = (uint32_t)size;
    m.nb_segs = 1;

    memset(&p, 0xa5, sizeof(p));
    r = nf_parse(&m, 7, &p);
    check(data, (uint32_t)size, m.pkt_len, r, &p);

    m.pkt_len = (uint32_t)size + 4096;
    m.nb_segs = 2;
    memset(&p, 0x5a, sizeof(p));
    r = nf_parse(&m, 7, &p);
    check(data, (uint32_t)size, m.pkt_len, r, &p);
    return 0;
}
