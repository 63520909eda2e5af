/*
 * dp.h - the C API of the dataplane shim, as Python sees it through cffi.
 *
 * This header is also the cffi cdef (cffi_build/build_ffi.py strips the
 * preprocessor guard lines), so it includes no DPDK header and uses only
 * fixed-width types, opaque structs and plain #define constants.
 *
 * Contract: every function returning int returns >= 0 on success or -errno;
 * dp_last_error() then holds a message for a person (thread-local).
 */
#ifndef DP_H
#define DP_H
#include <stdint.h>
#include <stddef.h>

#define DP_MAX_PORTS 64
#define DP_MAX_QUEUES 64
#define DP_MAX_STAGES 16
#define DP_MAX_DROP_REASONS 32
#define DP_PORT_NONE 65535
#define DP_PORT_PUNT 65534

/* Why dp_worker_poll() returned to Python (bit set). */
#define DP_POLL_TIMEOUT 1
#define DP_POLL_ATTENTION 2
#define DP_POLL_STOP 4

/* ---- errors ------------------------------------------------------------ */
const char *dp_last_error(void);

/* ---- clock: TSC in production, manual in tests ------------------------- */
uint64_t dp_clock_ns(void);
void dp_clock_set_manual(uint64_t now_ns);
void dp_clock_advance(uint64_t delta_ns);
void dp_clock_use_tsc(void);
int dp_clock_is_manual(void);
uint64_t dp_tsc_hz(void);

/* ---- EAL --------------------------------------------------------------- */
int dp_eal_init(int argc, char **argv);
int dp_eal_cleanup(void);
unsigned dp_socket_count(void);
int dp_lcore_to_cpu(unsigned lcore);

/* ---- mbuf pools ---------------------------------------------------------- */
struct dp_pool;
int dp_pool_create(const char *name, unsigned n_mbufs, unsigned cache,
                   unsigned data_room, int socket, struct dp_pool **out);
void dp_pool_free(struct dp_pool *pool);
unsigned dp_pool_avail(const struct dp_pool *pool);
unsigned dp_pool_in_use(const struct dp_pool *pool);
unsigned dp_pool_size(const struct dp_pool *pool);

/* Fault injection (tests): take up to max mbufs out of the pool and hold
 * them until dp_pool_release (from the calling thread: the pool's per-lcore
 * caches are not reached). Returns how many were taken. */
struct dp_mbuf_hold;
int dp_pool_hold(struct dp_pool *pool, unsigned max, struct dp_mbuf_hold **out);
/* Give them back; returns how many. */
unsigned dp_pool_release(struct dp_mbuf_hold *hold);

/* ---- ports --------------------------------------------------------------- */
struct dp_port_info {
    uint16_t port_id;
    int32_t socket;
    uint16_t max_rx_queues;
    uint16_t max_tx_queues;
    uint16_t min_mtu;
    uint16_t max_mtu;
    uint16_t mtu;
    uint8_t mac[6];
    char driver[64];
    char name[128];
};

struct dp_port_conf {
    uint16_t nb_rxq;
    uint16_t nb_txq;
    uint16_t rx_desc;
    uint16_t tx_desc;
    uint16_t mtu;          /* 0: leave the device default */
    uint8_t promiscuous;
    uint8_t rss;
};

struct dp_link {
    uint32_t speed_mbps;
    uint8_t up;
    uint8_t full_duplex;
    uint8_t autoneg;
};

struct dp_port_stats {
    uint64_t ipackets;
    uint64_t opackets;
    uint64_t ibytes;
    uint64_t obytes;
    uint64_t imissed;
    uint64_t ierrors;
    uint64_t oerrors;
    uint64_t rx_nombuf;
};

/* Attach a device after EAL init: a vdev spec ("net_pcap0,rx_pcap=x") or a
 * PCI address. The same path for virtual and real NICs. */
int dp_dev_attach(const char *devargs, uint16_t *port_id);
int dp_dev_detach(uint16_t port_id);
int dp_port_info(uint16_t port_id, struct dp_port_info *out);
int dp_port_configure(uint16_t port_id, const struct dp_port_conf *conf,
                      struct dp_pool *pool);
int dp_port_start(uint16_t port_id);
int dp_port_stop(uint16_t port_id);
int dp_port_link(uint16_t port_id, struct dp_link *out);
/* Link state change interrupts: enabled where the driver has them; every
 * change is counted, and written (as 1) to the eventfd given, if any (-1:
 * none), so a link monitor wakes at once instead of at its next poll. */
struct dp_lsc {
    int enabled;
    uint64_t events;
};
int dp_port_lsc(uint16_t port_id, struct dp_lsc *out);
int dp_port_lsc_notify(uint16_t port_id, int eventfd);
/* Test hook: signal a link change on a port that has the interrupt, as its
 * driver would (net_tap has it but never raises it in DPDK 22.11). */
int dp_port_lsc_raise(uint16_t port_id);
int dp_port_set_link(uint16_t port_id, int up);
int dp_port_stats(uint16_t port_id, struct dp_port_stats *out);

/* ---- pcap files: an offline source (native/pcapfile.c) ---------------------- */
/* A pcap file read into a receive-only port (a net_null with no-rx=1) by an
 * rx callback on its queue 0; loop: start over at the end. */
struct dp_pcapfile;

struct dp_pcapfile_stats {
    uint64_t packets;          /* records read into mbufs */
    uint64_t bytes;            /* their captured bytes */
    uint64_t passes;           /* loop: times the file started over */
    uint64_t nombuf;           /* bursts cut short by an empty pool (nothing lost) */
    uint32_t bad_tail;         /* the file ended in a cut-off or corrupt record */
    uint32_t done;             /* read once, to the end */
};

int dp_pcapfile_open(uint16_t port_id, const char *path, int loop,
                     struct dp_pool *pool, struct dp_pcapfile **out);
void dp_pcapfile_close(struct dp_pcapfile *f);
void dp_pcapfile_stats(const struct dp_pcapfile *f,
                       struct dp_pcapfile_stats *out);

/* ---- punts: packets for the slow path ---------------------------------------- */
/*
 * A stage that cannot finish a packet punts it with why (dp_worker_punt_recv
 * returns it). Each worker polices its punts per reason with a token bucket
 * before its punt ring: a storm costs the fast path a counter increment.
 */
#define DP_PUNT_OTHER 0        /* punted by a stage without a reason */
#define DP_PUNT_LOCAL 1        /* addressed to one of our addresses */
#define DP_PUNT_RESOLVE 2      /* next hop has no MAC yet */
#define DP_PUNT_NO_ROUTE 3     /* no route (or a reject route) */
#define DP_PUNT_HOP_LIMIT 4    /* hop limit / TTL <= 1: time exceeded */
#define DP_PUNT_TOO_BIG 5      /* larger than the egress MTU */
#define DP_PUNT_HBH 6          /* IPv6 hop-by-hop options header */
#define DP_PUNT_IP4_OPTIONS 7  /* IPv4 header with options */
#define DP_PUNT_L2_MULTICAST 8 /* link-layer multicast/broadcast */
#define DP_PUNT_MULTICAST 9    /* IP multicast destination (NDP...) */
#define DP_PUNT_ARP 10         /* ARP */
#define DP_PUNT_SCOPE 11       /* link-local source to be routed off-link */
#define DP_MAX_PUNT_REASONS 16

const char *dp_punt_reason_name(unsigned reason);   /* NULL past the end */

/* ---- workers -------------------------------------------------------------- */
struct dp_worker;
struct dp_stage;

struct dp_worker_stats {
    uint64_t loops;            /* iterations of the burst loop */
    uint64_t rx_bursts;        /* non-empty rx bursts */
    uint64_t empty_polls;
    uint64_t rx;               /* packets received from ports */
    uint64_t injected;         /* packets taken from the inject ring */
    uint64_t tx;               /* packets accepted by ports */
    uint64_t punted;           /* packets handed to the slow path */
    uint64_t dropped;          /* sum of drops[] */
    uint64_t drops[DP_MAX_DROP_REASONS];
    uint64_t rx_cycles;        /* in sampled loops only (see cycle sampling) */
    uint64_t tx_cycles;
    uint64_t sampled_rx;       /* packets received in sampled loops */
    uint64_t busy_cycles;      /* cycles in loops that moved packets */
    uint64_t total_cycles;     /* cycles inside dp_worker_poll */
    uint64_t tick_cycles;      /* of them in stage timers (expiry scans...) */
    uint64_t polls;            /* calls of dp_worker_poll */
    uint64_t max_gap_cycles;   /* longest time spent outside the C loop */
    uint64_t last_gap_cycles;
    uint64_t commands;         /* dp_worker_exec commands run inside the loop */
    uint64_t max_command_cycles; /* the longest of them (a dump: one page) */
    uint64_t punts[DP_MAX_PUNT_REASONS];        /* handed to the punt ring */
    uint64_t punt_policed[DP_MAX_PUNT_REASONS]; /* over the reason's rate: dropped */
};

struct dp_worker_port_stats {
    uint64_t rx;
    uint64_t tx;
    uint64_t tx_dropped;
};

struct dp_stage_stats {
    uint64_t calls;
    uint64_t packets;          /* packets handed to the stage */
    uint64_t passed;           /* packets handed on to the next stage */
    uint64_t cycles;           /* in sampled calls only */
    uint64_t sampled_packets;  /* packets of the sampled calls */
    uint64_t dropped;
    uint64_t drops[DP_MAX_DROP_REASONS];
};

const char *dp_drop_reason_name(unsigned reason);   /* NULL past the end */
unsigned dp_drop_reason_count(void);

int dp_worker_create(unsigned id, int socket, struct dp_pool *pool,
                     struct dp_worker **out);
void dp_worker_destroy(struct dp_worker *w);
int dp_worker_add_rxq(struct dp_worker *w, uint16_t port_id, uint16_t queue);
int dp_worker_set_txq(struct dp_worker *w, uint16_t port_id, uint16_t queue,
                      int shared);
int dp_worker_add_stage(struct dp_worker *w, const char *kind,
                        struct dp_stage **out);
/* Packets sent to port_id (a logical port: no tx queue) go to stage st's
 * transmit (st must be one of w's stages that owns such a port). */
int dp_worker_set_port_via(struct dp_worker *w, uint16_t port_id,
                           struct dp_stage *st);
/* Called on the worker's own thread: registers it with EAL, pins it. */
int dp_worker_thread_init(struct dp_worker *w, int cpu);
void dp_worker_thread_fini(struct dp_worker *w);
/* Runs the burst loop with the GIL released for up to budget_us (0: until
 * stop or a command): punted packets never bring it back, the slow path's
 * own thread takes them (dp_punt_wait). Returns DP_POLL_* bits saying why. */
int dp_worker_poll(struct dp_worker *w, uint64_t budget_us);
void dp_worker_notify(struct dp_worker *w);
/* Per-stage cycle accounting costs two TSC reads per burst (~26 cycles
 * each): measure one loop in 2^shift (0 = every loop). Counts stay exact. */
void dp_worker_set_cycle_sampling(struct dp_worker *w, unsigned shift);
/* A receive queue empty 16 polls in a row is then polled once every
 * loops + 1 loops until it has packets again (0: every loop). */
void dp_worker_set_idle_rx_skip(struct dp_worker *w, unsigned loops);
void dp_request_stop(void);
void dp_clear_stop(void);
int dp_stop_requested(void);
void dp_worker_stats(const struct dp_worker *w, struct dp_worker_stats *out);
int dp_worker_port_stats(const struct dp_worker *w, uint16_t port_id,
                         struct dp_worker_port_stats *out);
unsigned dp_worker_lcore(const struct dp_worker *w);
unsigned dp_worker_stage_count(const struct dp_worker *w);
struct dp_stage *dp_worker_stage(struct dp_worker *w, unsigned index);
const char *dp_stage_kind(const struct dp_stage *st);
void dp_stage_stats(const struct dp_stage *st, struct dp_stage_stats *out);

/* ---- commands a worker runs inside its loop (no Python, no GIL) ------------- */
/*
 * Control changes to a worker's own tables run on that worker, between two
 * bursts, without it leaving its C loop: the caller fills a dp_cmd, and
 * dp_worker_exec posts it in the worker's request slot and waits in C (GIL
 * released) up to timeout_us (-ETIMEDOUT, the command withdrawn). A worker
 * that is not running has it run on the caller's thread. Returns the
 * command's own return code (its error message comes back with it).
 */
#define DP_CMD_DUMP_NETFLOW 1       /* dp_netflow_show page: p records, max, cursor */
#define DP_CMD_DUMP_IP6FLOW 2       /* dp_ip6flow_show page, a0 family */
#define DP_CMD_NETFLOW_TIMEOUTS 3   /* a0 active s, a1 inactive s */
#define DP_CMD_NETFLOW_SETCONFIG 4  /* a0 port, a1 DP_NF_CONF_* */
#define DP_CMD_NETFLOW_IFINDEX 5    /* a0 port, a1 ifIndex */
#define DP_CMD_ONE2MANY_STATS 6     /* a0 link, a1 clear, p struct dp_o2m_link_stats */
#define DP_CMD_IP6FLOW_CONFIGURE 7  /* p struct dp_ip6flow_conf */
#define DP_CMD_IP6FLOW_INVALIDATE 8
#define DP_CMD_XCONNECT_SET 9       /* a0 in port, a1 out port */
/* A dump page scans at most this many table slots, and is read in steps for
 * at most ~50 us: a sparse or slow table returns short pages, with a cursor
 * to go on from. */
#define DP_DUMP_SCAN_SLOTS 4096

struct dp_cmd {
    int kind;                   /* DP_CMD_* */
    struct dp_stage *st;        /* one of the worker's stages */
    int64_t a0;
    int64_t a1;
    void *p;
    unsigned max;               /* dumps: records room at p */
    uint32_t cursor;            /* dumps: from, then where to go on (0: done) */
};

int dp_worker_exec(struct dp_worker *w, struct dp_cmd *cmd, uint32_t timeout_us);

/* Slow path rings: packets to Python (punt) and from Python (inject). */
/* Police punts of one reason on this worker: rate packets per second, burst
 * at once (rate 0: no limit); one source (by address) gets at most
 * source_share of both (1: no per-source limit). Any thread; takes effect
 * with the next punt, every bucket full. */
int dp_worker_set_punt_policer(struct dp_worker *w, unsigned reason,
                               double rate, uint32_t burst, double source_share);
/* The slow path's wait, GIL released: returns as soon as one of the n
 * workers' punt rings holds a packet (how many they hold), or 0 after
 * timeout_us. Sleeps between looks; never touches a worker's loop. */
unsigned dp_punt_wait(struct dp_worker *const *ws, unsigned n,
                      uint32_t timeout_us);
int dp_worker_inject(struct dp_worker *w, uint16_t port_id,
                     const uint8_t *data, uint32_t len);
/* After the worker's thread stopped: send what the slow path injected last
 * (its answers to the last punts). How many; -EBUSY while it runs. */
int dp_worker_drain_inject(struct dp_worker *w);
/* reason: the DP_PUNT_* the stage gave (DP_PUNT_OTHER if none). */
int dp_worker_punt_recv(struct dp_worker *w, uint8_t *buf, uint32_t cap,
                        uint16_t *port_id, uint32_t *len, uint32_t *reason);
unsigned dp_worker_punt_pending(const struct dp_worker *w);

/* ---- stage: xconnect (port cross-connect) ------------------------------- */
/* in_port -> out_port; DP_PORT_NONE removes the mapping (packets then drop
 * as no_egress), DP_PORT_PUNT sends them to the slow path. */
int dp_xconnect_set(struct dp_stage *st, uint16_t in_port, uint16_t out_port);

/* ---- stage: netflow (FreeBSD ng_netflow flow cache) --------------------- */
#define DP_NF_MAX_SKIP_REASONS 16

/* IPFIX flowEndReason values (RFC 7011 / IANA). */
#define DP_NF_END_IDLE 1
#define DP_NF_END_ACTIVE 2
#define DP_NF_END_EOF 3
#define DP_NF_END_FORCED 4
#define DP_NF_END_RESOURCES 5

/* An expired flow as it travels from a worker to the exporter. Host order,
 * except addresses and ports, which stay in network order as on the wire. */
struct dp_flow_record {
    uint8_t src[16];
    uint8_t dst[16];
    uint8_t nexthop[16];
    uint64_t packets;
    uint64_t bytes;
    uint64_t first_ms;     /* dp_clock_ns() / 1e6 at the first packet */
    uint64_t last_ms;
    uint16_t sport;        /* network order */
    uint16_t dport;        /* network order */
    uint16_t in_ifx;
    uint16_t out_ifx;
    uint8_t proto;
    uint8_t tos;
    uint8_t tcp_flags;
    uint8_t ipver;
    uint8_t src_mask;
    uint8_t dst_mask;
    uint8_t end_reason;    /* DP_NF_END_* */
    uint8_t pad;
};

struct dp_netflow_conf {
    uint32_t max_flows;        /* this worker's cache size */
    uint32_t active_timeout;   /* seconds */
    uint32_t inactive_timeout; /* seconds */
    uint32_t lowat;            /* 0: 3/4 of max_flows */
    uint32_t export_ring;      /* records the export ring holds (2^n) */
    uint32_t scan_budget;      /* flows the expiry scan visits per tick */
};

struct dp_netflow_info {
    uint64_t packets;          /* metered packets */
    uint64_t bytes;            /* metered bytes (IP length) */
    uint64_t flows_used;
    uint64_t flows_created;
    uint64_t alloc_failed;     /* packets not accounted: cache full */
    uint64_t export_failed;    /* records lost: export ring full */
    uint64_t exported;         /* records put on the export ring */
    uint64_t act_exp;          /* FIN/RST, active timeout, counter overflow */
    uint64_t inact_exp;        /* expired by the scan */
    uint64_t scanned;          /* flows the scan visited */
    uint64_t clock_ms;         /* the stage's clock at its last tick */
    uint64_t scanned_to_ms;    /* the scan has decided every flow due before */
    uint64_t unmetered;        /* packets from ports with metering off */
    uint64_t skipped;          /* packets not metered (sum of the below) */
    uint64_t skips[DP_NF_MAX_SKIP_REASONS];
    uint32_t max_flows;
    uint32_t active_timeout;
    uint32_t inactive_timeout;
    uint32_t lowat;
};

const char *dp_netflow_skip_reason_name(unsigned reason);
int dp_netflow_configure(struct dp_stage *st, const struct dp_netflow_conf *c);
struct dp_router;
/* Route data for new flows (output ifIndex, next hop, source/destination
 * prefix lengths) from the ip6flow stage's route table, as ng_netflow takes
 * them from the kernel's. Without a router they stay 0. */
int dp_netflow_attach_router(struct dp_stage *st, struct dp_router *r);
int dp_netflow_set_ifindex(struct dp_stage *st, uint16_t port_id,
                           uint16_t ifindex);
/* ng_netflow's SETCONFIG for one port: meter what arrives on it (ingress)
 * or let it pass unmetered. */
#define DP_NF_CONF_INGRESS 1
int dp_netflow_setconfig(struct dp_stage *st, uint16_t port_id, uint32_t conf);
int dp_netflow_set_timeouts(struct dp_stage *st, uint32_t active,
                            uint32_t inactive);
int dp_netflow_info(const struct dp_stage *st, struct dp_netflow_info *out);
/* Exporter side (one consumer thread): take up to max records. */
unsigned dp_netflow_export_drain(struct dp_stage *st,
                                 struct dp_flow_record *out, unsigned max);
unsigned dp_netflow_export_pending(const struct dp_stage *st);
/* The stop's flush: expire up to max cached flows (forced end) into out
 * (not through the export ring). Returns the records written; call until it
 * returns 0, and do not poll the worker in between (the cache's indexes are
 * emptied whole at the end). */
int dp_netflow_flush(struct dp_stage *st, struct dp_flow_record *out,
                     unsigned max);
/* Paged dump of the cache (on the worker's thread, or DP_CMD_DUMP_*): from
 * *cursor, up to max records, scanning at most DP_DUMP_SCAN_SLOTS slots;
 * *cursor is 0 when the walk is complete. */
int dp_netflow_show(struct dp_stage *st, uint32_t *cursor,
                    struct dp_flow_record *out, unsigned max);

/* How the cache's keys spread over its hash table (flowtable.h): on the
 * worker's thread or while it is not polling. A lookup for a key reads the
 * buckets from its home to where it lives and compares the key of every slot
 * with its signature on the way (compares include its own). */
struct dp_ft_spread {
    uint32_t buckets;
    uint32_t keys;             /* cached flows */
    uint32_t max_home_load;    /* most keys hashed to one bucket */
    uint32_t max_displacement; /* most buckets a key lives past its home */
    uint32_t displaced;        /* keys not in their home bucket */
    uint32_t max_overflow;     /* largest overflow count of a bucket */
    uint32_t max_compares;     /* most key compares one lookup makes */
    uint32_t pad;
    uint64_t probe_sum;        /* sum over keys of buckets a lookup reads */
    uint64_t compare_sum;      /* sum over keys of key compares a lookup makes */
};
int dp_netflow_table_spread(const struct dp_stage *st, struct dp_ft_spread *out);

/* The flow tables' key hash, for bench/hash_spread.py: n packed keys of
 * key_len bytes hashed with a fresh random table key (as a new table gets);
 * the hashes go to out. Returns the TSC cycles the loop took, or -errno. */
#define DP_FT_HASH_CRC 0       /* rte_hash_crc(key, len, seed): before issue 7 */
#define DP_FT_HASH_KEYED 1     /* ft_hash: NH + a 64-bit finaliser, keyed */
int64_t dp_ft_hash_keys(int kind, const uint8_t *keys, uint32_t key_len,
                        uint32_t n, uint32_t *out);

/* Wire encoders. Each writes one record body per flow, in network order:
 * v5: 48 bytes; v9/IPFIX: the IPv4 or IPv6 data-record layout of our
 * templates (dp_nf_record_size). uptime_base_ms is what first/last are
 * measured from (v5/v9 sysUptime); epoch_offset_ms turns clock ms into UNIX
 * ms (IPFIX). Records of the other IP version are not written. Returns the
 * number of records written (<= n) or -ENOSPC. */
#define DP_NF_FMT_V5 5
#define DP_NF_FMT_V9 9
#define DP_NF_FMT_IPFIX 10
int dp_nf_record_size(int format, int ipver);
/* The v9/IPFIX template behind dp_nf_encode: element ids and lengths, so the
 * exporter's template sets and the encoder share one definition. Returns the
 * number of elements (<= max). */
int dp_nf_template(int format, int ipver, uint16_t *ids, uint16_t *lens,
                   unsigned max);
int dp_nf_encode(int format, int ipver, const struct dp_flow_record *r,
                 unsigned n, uint64_t uptime_base_ms, int64_t epoch_offset_ms,
                 uint8_t *buf, size_t cap);
/* The exporter's datagram state: set up by Python, advanced by dp_nf_frame. */
struct dp_nf_framer {
    int32_t fmt;               /* DP_NF_FMT_* */
    uint32_t source_id;        /* v9 source id / IPFIX observation domain */
    uint32_t engine_type;      /* v5 */
    uint32_t engine_id;        /* v5 */
    uint32_t refresh_packets;  /* templates at least every this many datagrams */
    uint32_t since_template;   /* datagrams since the last with templates (1: it) */
    uint32_t templates_due;    /* the caller's clock says so; cleared when sent */
    uint32_t templates_sent;   /* datagrams that carried them (the caller clears) */
    uint64_t flow_seq;         /* v5: flows; IPFIX: data records */
    uint64_t packet_seq;       /* v9: datagrams */
    uint64_t datagrams;
};
/* Frame datagrams around n record bodies of rec_size bytes (one IP version,
 * data set set_id): a full one holds `per` records, `per_templated` when the
 * templates (tmpl, n_templates of them) travel in it; what is left makes a
 * partial one only if partial_ok. Stops at max_dgrams or when out (cap
 * bytes) is full. Datagram lengths go to lens, record counts to recs, their
 * number to *n_dgrams. Returns the records framed. */
int dp_nf_frame(struct dp_nf_framer *f, uint16_t set_id, const uint8_t *body,
                uint32_t n, uint32_t rec_size, uint32_t per,
                uint32_t per_templated, int partial_ok, const uint8_t *tmpl,
                uint32_t tmpl_len, uint32_t n_templates, uint32_t uptime_ms,
                uint32_t unix_secs, uint32_t unix_nsecs, uint8_t *out,
                uint32_t cap, uint32_t *lens, uint32_t *recs,
                uint32_t max_dgrams, uint32_t *n_dgrams);
/* Send n datagrams, packed back to back in buf (lengths in lens), on a
 * connected non-blocking UDP socket: sendmmsg, never waiting; with *gso set,
 * runs of equal-length datagrams as UDP GSO sends (*gso drops to 0 for good
 * where refused). errs[i] gets 0 or the errno datagram i met (it is not
 * retried). Returns how many went. */
int dp_udp_send_batch(int fd, const uint8_t *buf, const uint32_t *lens,
                      unsigned n, int *errs, int *gso);

/* ---- stage: one2many (FreeBSD ng_one2many) -------------------------------- */
#define DP_O2M_MAX_LINKS 64
#define DP_O2M_ONE_LINK -1
#define DP_O2M_XMIT_ROUNDROBIN 1   /* the seed's numbering */
#define DP_O2M_XMIT_ALL 2
#define DP_O2M_XMIT_FAILOVER 3
#define DP_O2M_XMIT_HASH 4         /* beyond the seed: flow-preserving */

struct dp_o2m;   /* a bundle: shared by the workers' one2many stages */

struct dp_o2m_link_stats {
    uint64_t rx_packets;
    uint64_t rx_octets;
    uint64_t tx_packets;
    uint64_t tx_octets;
    uint64_t memory_failures;
};

int dp_o2m_create(uint16_t one_port, const uint16_t *many_ports,
                  unsigned n_many, struct dp_o2m **out);
void dp_o2m_free(struct dp_o2m *b);
/* Atomic words the workers read each burst: safe from any thread. */
int dp_o2m_set_xmit(struct dp_o2m *b, int alg);
/* The one side is a logical port (a bundle): link traffic continues down the
 * pipeline as the bundle's, and what is sent to it goes out on the links
 * (set the workers' port via with dp_worker_set_port_via). */
void dp_o2m_set_one_logical(struct dp_o2m *b, int logical);
void dp_o2m_set_enabled(struct dp_o2m *b, uint64_t mask);
uint64_t dp_o2m_enabled(const struct dp_o2m *b);
int dp_o2m_xmit(const struct dp_o2m *b);
int dp_one2many_attach(struct dp_stage *st, struct dp_o2m *b);
/* A worker's stats for link (DP_O2M_ONE_LINK for the one side); clear zeroes
 * them after reading (run it on the worker's thread for get-and-clear). */
int dp_one2many_stats(struct dp_stage *st, int link,
                      struct dp_o2m_link_stats *out, int clear);

/* ---- router: the route table and next hops the ip6flow stages use ------- */
/*
 * One router is shared by every worker's ip6flow stage. Its FIBs (rte_fib for
 * IPv4, rte_fib6 for IPv6) map a prefix to a next-hop id; the next-hop table
 * says what to do with the packet. Changes are staged (route_add/route_del/
 * nh_set) and published by dp_router_commit: the tables are double-buffered,
 * so workers never read a half-updated one; commit swaps them, waits until
 * every worker has passed a quiescent point, then replays the changes onto
 * the other copy. A commit that changes prefixes bumps the generation, which
 * invalidates every cached flow (NetBSD's rtcache generation), so no packet
 * takes a stale route; next-hop contents (a neighbour's MAC) are read live
 * and need no invalidation.
 * Only one thread (the control side) may change a router.
 */
#define DP_NH_NONE 0       /* unused id / no route */
#define DP_NH_FORWARD 1    /* resolved neighbour: rewrite and send */
#define DP_NH_RESOLVE 2    /* neighbour without a MAC yet: punt (resolution) */
#define DP_NH_LOCAL 3      /* one of our addresses: punt */
#define DP_NH_BLACKHOLE 4  /* drop silently */
#define DP_NH_REJECT 5     /* punt: the slow path answers ICMP unreachable */

struct dp_nexthop {
    uint8_t kind;          /* DP_NH_* */
    uint8_t family;        /* 4 or 6 */
    uint8_t plen;          /* prefix length of the route using it (flow masks) */
    uint8_t pad;
    uint16_t port;         /* egress port */
    uint16_t mtu;          /* egress IP MTU */
    uint8_t dst_mac[6];    /* neighbour's MAC (FORWARD) */
    uint8_t src_mac[6];    /* egress port's MAC */
    uint8_t gateway[16];   /* neighbour address (IPv4: first 4 bytes) */
};

struct dp_router_conf {
    uint32_t max_nexthops;     /* ids 1..max_nexthops-1; <= 32767 */
    uint32_t v4_max_routes;
    uint32_t v4_tbl8;          /* IPv4 FIB groups for prefixes longer than /24 */
    uint32_t v6_max_routes;
    uint32_t v6_tbl8;          /* IPv6 FIB trie groups */
};

struct dp_router;
/* EAL memory one table copy needs (there are two). */
size_t dp_router_copy_bytes(const struct dp_router_conf *c);
int dp_router_create(const struct dp_router_conf *c, int socket,
                     struct dp_router **out);
void dp_router_free(struct dp_router *r);
/* Staged until commit. family is 4 or 6; addresses in network order. */
int dp_router_nh_set(struct dp_router *r, uint32_t id,
                     const struct dp_nexthop *nh);
int dp_router_route_add(struct dp_router *r, int family, const uint8_t *prefix,
                        uint8_t plen, uint32_t nh_id);
int dp_router_route_del(struct dp_router *r, int family, const uint8_t *prefix,
                        uint8_t plen);
/* Publish staged changes; returns the generation. */
int dp_router_commit(struct dp_router *r);
/* The next commit bumps the generation (every cached flow revalidates) even
 * if no staged change needs it: next-hop ids held back since can be reused. */
void dp_router_invalidate(struct dp_router *r);
/* Longest-prefix match in the published table: the next-hop id (0: none). */
int dp_router_lookup(struct dp_router *r, int family, const uint8_t *addr,
                     uint32_t *nh_id);
int dp_router_nh_get(struct dp_router *r, uint32_t id, struct dp_nexthop *out);
/* A port the router uses: its MAC (frames to other unicast MACs are not
 * routed) and link state (the fast path checks it for every packet). mac
 * may be NULL to change only the state. */
int dp_router_set_port(struct dp_router *r, uint16_t port, const uint8_t *mac,
                       int up);
uint32_t dp_router_generation(const struct dp_router *r);

/* ---- stage: ip6flow (NetBSD ip6_flow.c + ip_flow.c fast-forward cache) ---- */

struct dp_ip6flow_conf {
    uint32_t maxflows;          /* IPv6 cache (0: off); per worker */
    uint32_t hashsize;          /* IPv6 hash buckets, a power of two */
    uint32_t maxflows4;         /* IPv4 cache (0: off) */
    uint32_t hashsize4;
    uint32_t idle_timeout_ms;   /* a flow unused this long is freed */
    uint8_t ipv4;               /* route IPv4 (else IPv4 drops as not_ip6) */
};

/* One cache's counters (ip6flow's or ipflow's), one worker. */
struct dp_ip6flow_stats {
    uint64_t fastforward;   /* packets forwarded from the cache */
    uint64_t forward;       /* packets forwarded by the route lookup path */
    uint64_t flows;         /* flows in use */
    uint64_t created;
    uint64_t refreshed;     /* existing flow re-pointed after revalidation */
    uint64_t reaped_invalid;/* reaped to make room: route no longer valid */
    uint64_t reaped_lru;    /* reaped to make room: least recently used */
    uint64_t expired;       /* idle timeout */
    uint64_t invalidated;   /* freed by invalidate/maxflows/timer on a stale route */
    uint64_t uses;          /* folded per-flow uses of freed flows */
    uint64_t punts[DP_MAX_PUNT_REASONS];
    uint32_t maxflows;
    uint32_t hashsize;
};

struct dp_ip6flow_entry {
    uint8_t src[16];
    uint8_t dst[16];
    uint32_t flow;          /* IPv6: first header word (host order); IPv4: ToS */
    uint32_t nh;
    uint32_t gen;
    uint32_t uses;
    uint32_t dropped;
    uint32_t idle_ms;       /* since last relinked (LRU resolution) */
    uint8_t family;
    uint8_t valid;          /* generation current */
};

int dp_ip6flow_attach(struct dp_stage *st, struct dp_router *r);
/* On the worker's thread (or before it runs): family 4 or 6. Lowering
 * maxflows reaps at once; a new hashsize flushes the cache. */
int dp_ip6flow_configure(struct dp_stage *st, const struct dp_ip6flow_conf *c);
int dp_ip6flow_stats(const struct dp_stage *st, int family,
                     struct dp_ip6flow_stats *out);
/* Free every cached flow (both families); returns how many. Worker thread. */
int dp_ip6flow_invalidate_all(struct dp_stage *st);
/* Paged dump on the worker's thread, as dp_netflow_show. */
int dp_ip6flow_show(struct dp_stage *st, int family, uint32_t *cursor,
                    struct dp_ip6flow_entry *out, unsigned max);

#endif /* DP_H */
