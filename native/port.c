/*
 * port.c - ethdev ports: attach (vdev or PCI, one path), configure with RSS
 * and one queue pair per worker, start/stop, link and stats.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <rte_bus.h>
#include <rte_dev.h>
#include <rte_errno.h>
#include <rte_ethdev.h>
#include <rte_mbuf.h>

#include "dp_internal.h"

rte_spinlock_t dp_port_txlock[DP_MAX_PORTS][DP_MAX_QUEUES];

static int port_valid(uint16_t port_id)
{
    if (port_id >= DP_MAX_PORTS || !rte_eth_dev_is_valid_port(port_id)) {
        dp_set_error(ENODEV, "port %u", port_id);
        return 0;
    }
    return 1;
}

/*
 * Probe a device by devargs and return its first ethdev port. A vdev name
 * ("net_null0,...") goes to the vdev bus, anything else (a PCI address) to
 * the bus that recognises it: rte_dev_probe() does that parsing for us.
 */
int dp_dev_attach(const char *devargs, uint16_t *port_id)
{
    char name[RTE_DEV_NAME_MAX_LEN];
    const char *comma = strchr(devargs, ',');
    size_t len = comma ? (size_t)(comma - devargs) : strlen(devargs);
    struct rte_dev_iterator it;
    uint16_t pid;
    int rc;

    if (len == 0 || len >= sizeof(name)) {
        dp_set_error(EINVAL, "bad device spec '%s'", devargs);
        return -EINVAL;
    }
    memcpy(name, devargs, len);
    name[len] = '\0';

    rc = rte_eth_dev_get_port_by_name(name, &pid);
    if (rc != 0) {
        rc = rte_dev_probe(devargs);
        if (rc < 0) {
            dp_set_error(-rc, "cannot attach device '%s' (unknown driver, "
                         "bad parameter, or device not bound to a DPDK "
                         "driver)", devargs);
            return rc;
        }
        rc = rte_eth_dev_get_port_by_name(name, &pid);
    }
    if (rc != 0) {
        /* PCI devices may name their port differently; walk the iterator. */
        RTE_ETH_FOREACH_MATCHING_DEV(pid, name, &it) {
            rte_eth_iterator_cleanup(&it);
            rc = 0;
            break;
        }
    }
    if (rc != 0) {
        dp_set_error(ENODEV, "device '%s' attached but has no ethdev port",
                     name);
        return -ENODEV;
    }
    if (pid >= DP_MAX_PORTS) {
        dp_set_error(ERANGE, "port id %u above the limit of %d", pid,
                     DP_MAX_PORTS);
        return -ERANGE;
    }
    *port_id = pid;
    return 0;
}

/* ---- link state change interrupts ------------------------------------------
 * Where the driver raises them (RTE_ETH_DEV_INTR_LSC), a link change is
 * counted and signalled at once on the eventfd a link monitor asked for, so
 * it need not wait for its next poll. The callback runs on EAL's interrupt
 * thread: it only counts and writes the eventfd. */
static int lsc_fd[DP_MAX_PORTS] = {[0 ... DP_MAX_PORTS - 1] = -1};
static uint64_t lsc_events[DP_MAX_PORTS];
static uint8_t lsc_on[DP_MAX_PORTS];

static int lsc_callback(uint16_t port_id, enum rte_eth_event_type type,
                        void *arg, void *ret)
{
    int fd;

    RTE_SET_USED(arg);
    RTE_SET_USED(ret);
    if (type != RTE_ETH_EVENT_INTR_LSC || port_id >= DP_MAX_PORTS)
        return 0;
    __atomic_add_fetch(&lsc_events[port_id], 1, __ATOMIC_RELEASE);
    fd = __atomic_load_n(&lsc_fd[port_id], __ATOMIC_ACQUIRE);
    if (fd >= 0) {
        uint64_t one = 1;
        ssize_t rc = write(fd, &one, sizeof(one));
        RTE_SET_USED(rc); /* a full eventfd already says "look" */
    }
    return 0;
}

int dp_port_lsc(uint16_t port_id, struct dp_lsc *out)
{
    if (port_id >= DP_MAX_PORTS)
        return -ENODEV;
    out->enabled = lsc_on[port_id];
    out->events = __atomic_load_n(&lsc_events[port_id], __ATOMIC_ACQUIRE);
    return 0;
}

/* What a driver does on a link change, for drivers that do not (tests):
 * run the callback as EAL's interrupt thread would. */
int dp_port_lsc_raise(uint16_t port_id)
{
    if (port_id >= DP_MAX_PORTS || !lsc_on[port_id]) {
        dp_set_error(ENOTSUP, "port %u has no link change interrupt", port_id);
        return -ENOTSUP;
    }
    return lsc_callback(port_id, RTE_ETH_EVENT_INTR_LSC, NULL, NULL);
}

int dp_port_lsc_notify(uint16_t port_id, int eventfd)
{
    if (port_id >= DP_MAX_PORTS)
        return -ENODEV;
    __atomic_store_n(&lsc_fd[port_id], eventfd, __ATOMIC_RELEASE);
    return 0;
}

static void lsc_release(uint16_t port_id)
{
    if (port_id < DP_MAX_PORTS && lsc_on[port_id]) {
        rte_eth_dev_callback_unregister(port_id, RTE_ETH_EVENT_INTR_LSC,
                                        lsc_callback, NULL);
        lsc_on[port_id] = 0;
        __atomic_store_n(&lsc_fd[port_id], -1, __ATOMIC_RELEASE);
    }
}

int dp_dev_detach(uint16_t port_id)
{
    struct rte_eth_dev_info info;
    struct rte_device *dev;
    int rc;

    if (!port_valid(port_id))
        return -ENODEV;
    rc = rte_eth_dev_info_get(port_id, &info);
    if (rc != 0) {
        dp_set_error(-rc, "port %u info", port_id);
        return rc;
    }
    dev = info.device;
    lsc_release(port_id);
    rte_eth_dev_stop(port_id);
    rc = rte_eth_dev_close(port_id);
    if (rc != 0) {
        dp_set_error(-rc, "close port %u", port_id);
        return rc;
    }
    rc = rte_dev_remove(dev);
    if (rc != 0) {
        dp_set_error(-rc, "remove device of port %u", port_id);
        return rc;
    }
    return 0;
}

int dp_port_info(uint16_t port_id, struct dp_port_info *out)
{
    struct rte_eth_dev_info info;
    struct rte_ether_addr mac;
    int rc;

    if (!port_valid(port_id))
        return -ENODEV;
    rc = rte_eth_dev_info_get(port_id, &info);
    if (rc != 0) {
        dp_set_error(-rc, "port %u info", port_id);
        return rc;
    }
    memset(out, 0, sizeof(*out));
    out->port_id = port_id;
    out->socket = rte_eth_dev_socket_id(port_id);
    out->max_rx_queues = RTE_MIN(info.max_rx_queues, DP_MAX_QUEUES);
    out->max_tx_queues = RTE_MIN(info.max_tx_queues, DP_MAX_QUEUES);
    out->min_mtu = info.min_mtu;
    out->max_mtu = info.max_mtu;
    rte_eth_dev_get_mtu(port_id, &out->mtu);
    if (rte_eth_macaddr_get(port_id, &mac) == 0)
        memcpy(out->mac, mac.addr_bytes, 6);
    snprintf(out->driver, sizeof(out->driver), "%s",
             info.driver_name ? info.driver_name : "");
    rte_eth_dev_get_name_by_port(port_id, out->name);
    return 0;
}

int dp_port_configure(uint16_t port_id, const struct dp_port_conf *conf,
                      struct dp_pool *pool)
{
    struct rte_eth_conf econf;
    struct rte_eth_dev_info info;
    struct rte_eth_rxconf rxconf;
    struct rte_eth_txconf txconf;
    uint16_t nb_rxd = conf->rx_desc, nb_txd = conf->tx_desc;
    int socket, rc;
    uint16_t q;

    if (!port_valid(port_id))
        return -ENODEV;
    rc = rte_eth_dev_info_get(port_id, &info);
    if (rc != 0) {
        dp_set_error(-rc, "port %u info", port_id);
        return rc;
    }
    if (conf->nb_rxq == 0 || conf->nb_rxq > info.max_rx_queues ||
        conf->nb_txq == 0 || conf->nb_txq > info.max_tx_queues ||
        conf->nb_txq > DP_MAX_QUEUES) {
        dp_set_error(EINVAL, "port %u: %u rx / %u tx queues asked, the "
                     "device has %u / %u", port_id, conf->nb_rxq,
                     conf->nb_txq, info.max_rx_queues, info.max_tx_queues);
        return -EINVAL;
    }

    memset(&econf, 0, sizeof(econf));
    if (conf->rss && conf->nb_rxq > 1) {
        uint64_t hf = (RTE_ETH_RSS_IP | RTE_ETH_RSS_TCP | RTE_ETH_RSS_UDP) &
                      info.flow_type_rss_offloads;
        if (hf != 0) {
            econf.rxmode.mq_mode = RTE_ETH_MQ_RX_RSS;
            econf.rx_adv_conf.rss_conf.rss_hf = hf;
        }
    }
    if (info.dev_flags != NULL && (*info.dev_flags & RTE_ETH_DEV_INTR_LSC))
        econf.intr_conf.lsc = 1;
    rc = rte_eth_dev_configure(port_id, conf->nb_rxq, conf->nb_txq, &econf);
    if (rc != 0) {
        dp_set_error(-rc, "configure port %u", port_id);
        return rc;
    }
    if (econf.intr_conf.lsc && !lsc_on[port_id] &&
        rte_eth_dev_callback_register(port_id, RTE_ETH_EVENT_INTR_LSC,
                                      lsc_callback, NULL) == 0)
        lsc_on[port_id] = 1;
    rc = rte_eth_dev_adjust_nb_rx_tx_desc(port_id, &nb_rxd, &nb_txd);
    if (rc != 0) {
        dp_set_error(-rc, "port %u descriptors", port_id);
        return rc;
    }
    if (conf->mtu != 0) {
        rc = rte_eth_dev_set_mtu(port_id, conf->mtu);
        if (rc != 0 && rc != -ENOTSUP) {
            dp_set_error(-rc, "port %u: MTU %u (device range %u-%u)",
                         port_id, conf->mtu, info.min_mtu, info.max_mtu);
            return rc;
        }
    }

    socket = rte_eth_dev_socket_id(port_id);
    if (socket < 0)
        socket = SOCKET_ID_ANY;
    rxconf = info.default_rxconf;
    txconf = info.default_txconf;
    for (q = 0; q < conf->nb_rxq; q++) {
        rc = rte_eth_rx_queue_setup(port_id, q, nb_rxd, socket, &rxconf,
                                    dp_pool_mempool(pool));
        if (rc != 0) {
            dp_set_error(-rc, "port %u rx queue %u", port_id, q);
            return rc;
        }
    }
    for (q = 0; q < conf->nb_txq; q++) {
        rc = rte_eth_tx_queue_setup(port_id, q, nb_txd, socket, &txconf);
        if (rc != 0) {
            dp_set_error(-rc, "port %u tx queue %u", port_id, q);
            return rc;
        }
        rte_spinlock_init(&dp_port_txlock[port_id][q]);
    }
    if (conf->promiscuous) {
        rc = rte_eth_promiscuous_enable(port_id);
        if (rc != 0 && rc != -ENOTSUP) {
            dp_set_error(-rc, "port %u promiscuous mode", port_id);
            return rc;
        }
    }
    return 0;
}

int dp_port_start(uint16_t port_id)
{
    int rc;

    if (!port_valid(port_id))
        return -ENODEV;
    rc = rte_eth_dev_start(port_id);
    if (rc != 0)
        dp_set_error(-rc, "start port %u", port_id);
    return rc;
}

int dp_port_stop(uint16_t port_id)
{
    int rc;

    if (!port_valid(port_id))
        return -ENODEV;
    rc = rte_eth_dev_stop(port_id);
    if (rc != 0)
        dp_set_error(-rc, "stop port %u", port_id);
    return rc;
}

int dp_port_link(uint16_t port_id, struct dp_link *out)
{
    struct rte_eth_link link;
    int rc;

    if (!port_valid(port_id))
        return -ENODEV;
    rc = rte_eth_link_get_nowait(port_id, &link);
    if (rc != 0) {
        dp_set_error(-rc, "port %u link", port_id);
        return rc;
    }
    out->speed_mbps = link.link_speed == RTE_ETH_SPEED_NUM_UNKNOWN
                          ? 0 : link.link_speed;
    out->up = link.link_status;
    out->full_duplex = link.link_duplex;
    out->autoneg = link.link_autoneg;
    return 0;
}

int dp_port_set_link(uint16_t port_id, int up)
{
    int rc;

    if (!port_valid(port_id))
        return -ENODEV;
    rc = up ? rte_eth_dev_set_link_up(port_id)
            : rte_eth_dev_set_link_down(port_id);
    if (rc != 0)
        dp_set_error(-rc, "set link %s on port %u", up ? "up" : "down",
                     port_id);
    return rc;
}

int dp_port_stats(uint16_t port_id, struct dp_port_stats *out)
{
    struct rte_eth_stats st;
    int rc;

    if (!port_valid(port_id))
        return -ENODEV;
    rc = rte_eth_stats_get(port_id, &st);
    if (rc != 0) {
        dp_set_error(-rc, "port %u stats", port_id);
        return rc;
    }
    out->ipackets = st.ipackets;
    out->opackets = st.opackets;
    out->ibytes = st.ibytes;
    out->obytes = st.obytes;
    out->imissed = st.imissed;
    out->ierrors = st.ierrors;
    out->oerrors = st.oerrors;
    out->rx_nombuf = st.rx_nombuf;
    return 0;
}

/* ---- fault injection: mbuf pool exhaustion (tests) ------------------------ */

struct dp_mbuf_hold {
    unsigned n;
    struct rte_mbuf *m[];
};

int dp_pool_hold(struct dp_pool *pool, unsigned max, struct dp_mbuf_hold **out)
{
    struct rte_mempool *mp = dp_pool_mempool(pool);
    struct dp_mbuf_hold *h;

    if (mp == NULL || out == NULL)
        return -EINVAL;
    h = malloc(sizeof(*h) + sizeof(h->m[0]) * (size_t)max);
    if (h == NULL) {
        dp_set_error(ENOMEM, "pool hold of %u mbufs", max);
        return -ENOMEM;
    }
    /* one at a time: a bulk get is all or nothing */
    for (h->n = 0; h->n < max; h->n++) {
        h->m[h->n] = rte_pktmbuf_alloc(mp);
        if (h->m[h->n] == NULL)
            break;
    }
    *out = h;
    return (int)h->n;
}

unsigned dp_pool_release(struct dp_mbuf_hold *h)
{
    unsigned i, n;

    if (h == NULL)
        return 0;
    n = h->n;
    for (i = 0; i < n; i++)
        rte_pktmbuf_free(h->m[i]);
    free(h);
    return n;
}
