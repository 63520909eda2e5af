/*
 * pcapfile.c - a pcap file as a packet source: the file is mapped and its
 * records are copied into mbufs in bursts, on the worker that polls the port.
 *
 * Why not net_pcap: it asks libpcap for one packet at a time (two buffered
 * reads and a copy in libpcap, then an mbuf allocated and filled on its own),
 * 70 ns a packet in libpcap alone on the bench host, twice what the netflow
 * stage spends metering the packet. Here a burst is one bulk allocation and a
 * copy per packet straight from the mapping.
 *
 * The port itself is a receive-only net_null (no-rx=1): this reader is an rx
 * callback on its queue 0, so the worker polls it like any device and every
 * stage sees an ordinary port. Packets are timestamped by the dataplane's
 * clock when they are read, not by the file: a replay, not a re-enactment.
 */
#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <rte_byteorder.h>
#include <rte_errno.h>
#include <rte_ethdev.h>
#include <rte_malloc.h>
#include <rte_mbuf.h>
#include <rte_memcpy.h>

#include "dp_internal.h"

#define PCAP_MAGIC_US    0xa1b2c3d4u
#define PCAP_MAGIC_NS    0xa1b23c4du
#define PCAPNG_MAGIC     0x0a0d0d0au
#define PCAP_LINKTYPE_ETHERNET 1
#define PCAP_FILE_HDR    24
#define PCAP_REC_HDR     16
#define PCAP_MAX_CAPLEN  (256u * 1024) /* beyond this a record is corrupt */
#define POPULATE_CHUNK   (2u << 20)     /* page tables filled ahead of the reader */
#ifndef MADV_POPULATE_READ
#define MADV_POPULATE_READ 22
#endif

struct dp_pcapfile {
    const uint8_t *map;
    size_t size;                 /* of the mapping */
    size_t end;                  /* of the records read (before a bad tail) */
    size_t off;                  /* next record */
    size_t mapped;               /* page tables filled up to here */
    int populate;                /* MADV_POPULATE_READ works here */
    int swap;                    /* the file was written on the other endianness */
    int loop;
    uint16_t port;
    struct rte_mempool *mp;
    const struct rte_eth_rxtx_callback *cb;
    struct dp_pcapfile_stats st;
};

static inline uint32_t rd32(const struct dp_pcapfile *f, const uint8_t *p)
{
    uint32_t v;

    memcpy(&v, p, 4);
    return f->swap ? rte_bswap32(v) : v;
}

/* Copy one record's bytes into m, chaining segments for what does not fit.
 * Returns 0, or -1 when the pool has no segment left (m is left as it was
 * allocated, for the caller to free). */
static int fill_mbuf(struct dp_pcapfile *f, struct rte_mbuf *m,
                     const uint8_t *data, uint32_t len)
{
    struct rte_mbuf *seg = m;
    uint32_t left = len;

    m->port = f->port;
    m->pkt_len = len;
    if (likely(len <= rte_pktmbuf_tailroom(m))) {
        rte_memcpy(rte_pktmbuf_mtod(m, void *), data, len);
        m->data_len = (uint16_t)len;
        return 0;
    }
    for (;;) {
        uint16_t k = (uint16_t)RTE_MIN(left, (uint32_t)rte_pktmbuf_tailroom(seg));
        struct rte_mbuf *next;

        rte_memcpy(rte_pktmbuf_mtod(seg, void *), data, k);
        seg->data_len = k;
        data += k;
        left -= k;
        if (left == 0)
            return 0;
        next = rte_pktmbuf_alloc(f->mp);
        if (next == NULL) {
            rte_pktmbuf_free(m->next);
            m->next = NULL;
            m->nb_segs = 1;
            m->data_len = 0;
            m->pkt_len = 0;
            return -1;
        }
        seg->next = next;
        m->nb_segs++;
        seg = next;
    }
}

/*
 * The mapping's page tables, a chunk ahead of the reader: one madvise per
 * 2 MiB instead of a page fault per 64 KiB (fault-around). The work stays on
 * the worker, where the reading is; it is just done in bigger pieces.
 */
static inline void map_ahead(struct dp_pcapfile *f)
{
    size_t want = f->off + PCAP_MAX_CAPLEN + PCAP_REC_HDR;

    while (f->populate && f->mapped < f->size && f->mapped < want) {
        size_t len = RTE_MIN((size_t)POPULATE_CHUNK, f->size - f->mapped);

        if (madvise((void *)(uintptr_t)(f->map + f->mapped), len,
                    MADV_POPULATE_READ) != 0)
            f->populate = 0;  /* before Linux 5.14: page faults do it */
        f->mapped += len;
    }
}

static uint16_t pcapfile_rx(uint16_t port, uint16_t queue,
                            struct rte_mbuf **pkts, uint16_t nb_pkts,
                            uint16_t max_pkts, void *arg)
{
    struct dp_pcapfile *f = arg;
    const uint16_t want = max_pkts - nb_pkts;
    uint16_t got = 0;
    uint64_t bytes = 0;

    RTE_SET_USED(port);
    RTE_SET_USED(queue);
    if (want == 0)
        return nb_pkts;
    if (f->off >= f->end) {
        if (!f->loop || f->end == PCAP_FILE_HDR)
            return nb_pkts;
        f->off = PCAP_FILE_HDR;
        f->st.passes++;
    }
    if (unlikely(f->off + PCAP_MAX_CAPLEN > f->mapped))
        map_ahead(f);
    if (rte_pktmbuf_alloc_bulk(f->mp, &pkts[nb_pkts], want) != 0) {
        f->st.nombuf++;
        return nb_pkts;
    }
    while (got < want) {
        const uint8_t *rec = f->map + f->off;
        uint32_t caplen;

        if (f->off >= f->end) {
            if (!f->loop || f->end == PCAP_FILE_HDR)
                break;
            f->off = PCAP_FILE_HDR;
            f->st.passes++;
            continue;
        }
        if (f->end - f->off < PCAP_REC_HDR ||
            (caplen = rd32(f, rec + 8)) > PCAP_MAX_CAPLEN ||
            f->end - f->off - PCAP_REC_HDR < caplen) {
            /* A cut-off or corrupt record: the file ends here. */
            f->st.bad_tail = 1;
            f->end = f->off;
            continue;
        }
        if (unlikely(fill_mbuf(f, pkts[nb_pkts + got], rec + PCAP_REC_HDR,
                               caplen) < 0)) {
            f->st.nombuf++;     /* this record is read again next time */
            break;
        }
        f->off += PCAP_REC_HDR + caplen;
        bytes += caplen;
        got++;
    }
    if (got < want)
        rte_pktmbuf_free_bulk(&pkts[nb_pkts + got], want - got);
    f->st.packets += got;
    f->st.bytes += bytes;
    return nb_pkts + got;
}

static int check_header(struct dp_pcapfile *f, const char *path)
{
    uint32_t magic, linktype;

    if (f->size < PCAP_FILE_HDR) {
        dp_set_error(EINVAL, "%s: %zu bytes, shorter than a pcap file header",
                     path, f->size);
        return -EINVAL;
    }
    memcpy(&magic, f->map, 4);
    if (magic == PCAP_MAGIC_US || magic == PCAP_MAGIC_NS) {
        f->swap = 0;
    } else if (magic == rte_bswap32(PCAP_MAGIC_US) ||
               magic == rte_bswap32(PCAP_MAGIC_NS)) {
        f->swap = 1;
    } else if (magic == PCAPNG_MAGIC) {
        dp_set_error(EINVAL, "%s is pcapng; this reader takes pcap (convert it: "
                     "editcap -F pcap IN OUT)", path);
        return -EINVAL;
    } else {
        dp_set_error(EINVAL, "%s is not a pcap file (magic 0x%08x)", path, magic);
        return -EINVAL;
    }
    linktype = rd32(f, f->map + 20) & 0x0fffffff; /* upper bits: FCS info */
    if (linktype != PCAP_LINKTYPE_ETHERNET) {
        dp_set_error(EINVAL, "%s: link type %u, not Ethernet (1)", path, linktype);
        return -EINVAL;
    }
    return 0;
}

int dp_pcapfile_open(uint16_t port_id, const char *path, int loop,
                     struct dp_pool *pool, struct dp_pcapfile **out)
{
    struct dp_pcapfile *f;
    struct stat sb;
    int fd, rc;

    f = rte_zmalloc("dp_pcapfile", sizeof(*f), RTE_CACHE_LINE_SIZE);
    if (f == NULL) {
        dp_set_error(ENOMEM, "pcap file %s", path);
        return -ENOMEM;
    }
    fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0 || fstat(fd, &sb) != 0) {
        rc = -errno;
        dp_set_error(errno, "%s: %s", path, strerror(errno));
        goto fail;
    }
    if (!S_ISREG(sb.st_mode)) {
        rc = -EINVAL;
        dp_set_error(EINVAL, "%s is not a regular file", path);
        goto fail;
    }
    f->size = (size_t)sb.st_size;
    f->map = f->size ? mmap(NULL, f->size, PROT_READ, MAP_PRIVATE, fd, 0) : NULL;
    if (f->map == MAP_FAILED) {
        rc = -errno;
        f->map = NULL;
        dp_set_error(errno, "map %s: %s", path, strerror(errno));
        goto fail;
    }
    close(fd);
    fd = -1;
    if ((rc = check_header(f, path)) < 0)
        goto fail;
    madvise((void *)(uintptr_t)f->map, f->size, MADV_SEQUENTIAL);
    f->off = PCAP_FILE_HDR;
    f->end = f->size;
    f->populate = 1;
    f->loop = loop != 0;
    f->port = port_id;
    f->mp = dp_pool_mempool(pool);
    f->cb = rte_eth_add_rx_callback(port_id, 0, pcapfile_rx, f);
    if (f->cb == NULL) {
        rc = -rte_errno;
        dp_set_error(rte_errno, "port %u: rx callback for %s", port_id, path);
        goto fail;
    }
    *out = f;
    return 0;
fail:
    if (fd >= 0)
        close(fd);
    if (f->map != NULL)
        munmap((void *)(uintptr_t)f->map, f->size);
    rte_free(f);
    return rc;
}

/* After the workers stopped: nobody runs the callback any more. */
void dp_pcapfile_close(struct dp_pcapfile *f)
{
    if (f == NULL)
        return;
    if (rte_eth_remove_rx_callback(f->port, 0, f->cb) == 0)
        rte_free((void *)(uintptr_t)f->cb);
    if (f->map != NULL)
        munmap((void *)(uintptr_t)f->map, f->size);
    rte_free(f);
}

void dp_pcapfile_stats(const struct dp_pcapfile *f,
                       struct dp_pcapfile_stats *out)
{
    memcpy(out, &f->st, sizeof(*out));
    out->done = !f->loop && f->off >= f->end;
}
