"""Thin bindings over the C shim: one function per C call, sizes checked,
every return code through one ``check()``. Nothing here knows about config.
"""
from __future__ import annotations

import functools
import os
from dataclasses import dataclass

from ._native import ffi, lib
from .errors import DataplaneError, EalError, PortError, WorkerError, error_for

PORT_NONE = lib.DP_PORT_NONE
PORT_PUNT = lib.DP_PORT_PUNT
MAX_PORTS = lib.DP_MAX_PORTS
POLL_TIMEOUT = lib.DP_POLL_TIMEOUT
POLL_ATTENTION = lib.DP_POLL_ATTENTION
POLL_STOP = lib.DP_POLL_STOP


def last_error() -> str:
    return ffi.string(lib.dp_last_error()).decode(errors="replace")


def check(rc: int, what: str, cls: type[DataplaneError] = DataplaneError) -> int:
    """Raise ``cls`` for a negative return code, with the shim's message."""
    if rc < 0:
        raise error_for(rc, what, last_error(), cls)
    return rc


# ---- clock -------------------------------------------------------------------

def clock_ns() -> int:
    return lib.dp_clock_ns()


def clock_set_manual(now_ns: int) -> None:
    lib.dp_clock_set_manual(now_ns)


def clock_advance(delta_ns: int) -> None:
    lib.dp_clock_advance(delta_ns)


def clock_use_tsc() -> None:
    lib.dp_clock_use_tsc()


def tsc_hz() -> int:
    return lib.dp_tsc_hz()


# ---- EAL ---------------------------------------------------------------------

def eal_init(args: list[str]) -> None:
    keep = [ffi.new("char[]", a.encode()) for a in args]
    argv = ffi.new("char *[]", keep + [ffi.NULL])
    check(lib.dp_eal_init(len(args), argv), "EAL init " + " ".join(args), EalError)


def eal_cleanup() -> None:
    check(lib.dp_eal_cleanup(), "EAL cleanup", EalError)


def socket_count() -> int:
    return lib.dp_socket_count()


# ---- pools -------------------------------------------------------------------

def pool_create(name: str, n_mbufs: int, cache: int, data_room: int, socket: int):
    out = ffi.new("struct dp_pool **")
    check(lib.dp_pool_create(name.encode(), n_mbufs, cache, data_room, socket, out),
          f"mbuf pool {name}")
    return out[0]


def pool_free(pool) -> None:
    lib.dp_pool_free(pool)


def pool_counts(pool) -> tuple[int, int, int]:
    """(available, in use, size)"""
    return lib.dp_pool_avail(pool), lib.dp_pool_in_use(pool), lib.dp_pool_size(pool)


class MbufHold:
    """Fault injection (tests): mbufs taken out of a pool until release()."""

    def __init__(self, pool, max_mbufs: int):
        out = ffi.new("struct dp_mbuf_hold **")
        self.count = check(lib.dp_pool_hold(pool, max_mbufs, out), "pool hold")
        self._h = out[0]

    def release(self) -> int:
        """Return them to the pool; how many (0 the second time)."""
        h, self._h = self._h, None
        return lib.dp_pool_release(h) if h is not None else 0


def pool_hold(pool, max_mbufs: int) -> MbufHold:
    """Take up to max_mbufs mbufs out of the pool (from this thread: the
    workers' per-lcore caches are not reached)."""
    return MbufHold(pool, max_mbufs)


# ---- ports -------------------------------------------------------------------

@dataclass(frozen=True)
class PortInfo:
    port_id: int
    name: str
    driver: str
    socket: int
    max_rx_queues: int
    max_tx_queues: int
    min_mtu: int
    max_mtu: int
    mtu: int
    mac: str


def dev_attach(devargs: str) -> int:
    out = ffi.new("uint16_t *")
    check(lib.dp_dev_attach(devargs.encode(), out), f"attach '{devargs}'", PortError)
    return out[0]


def dev_detach(port_id: int) -> None:
    check(lib.dp_dev_detach(port_id), f"detach port {port_id}", PortError)


def port_info(port_id: int) -> PortInfo:
    info = ffi.new("struct dp_port_info *")
    check(lib.dp_port_info(port_id, info), f"port {port_id} info", PortError)
    return PortInfo(
        port_id=info.port_id,
        name=ffi.string(info.name).decode(),
        driver=ffi.string(info.driver).decode(),
        socket=info.socket,
        max_rx_queues=info.max_rx_queues,
        max_tx_queues=info.max_tx_queues,
        min_mtu=info.min_mtu,
        max_mtu=info.max_mtu,
        mtu=info.mtu,
        mac=":".join(f"{b:02x}" for b in bytes(info.mac)),
    )


def port_configure(port_id: int, *, nb_rxq: int, nb_txq: int, rx_desc: int, tx_desc: int,
                   mtu: int, promiscuous: bool, rss: bool, pool) -> None:
    conf = ffi.new("struct dp_port_conf *", {
        "nb_rxq": nb_rxq, "nb_txq": nb_txq, "rx_desc": rx_desc, "tx_desc": tx_desc,
        "mtu": mtu, "promiscuous": int(promiscuous), "rss": int(rss)})
    check(lib.dp_port_configure(port_id, conf, pool), f"configure port {port_id}", PortError)


def port_start(port_id: int) -> None:
    check(lib.dp_port_start(port_id), f"start port {port_id}", PortError)


def port_stop(port_id: int) -> None:
    check(lib.dp_port_stop(port_id), f"stop port {port_id}", PortError)


def port_link(port_id: int) -> dict:
    link = ffi.new("struct dp_link *")
    check(lib.dp_port_link(port_id, link), f"port {port_id} link", PortError)
    return {"up": bool(link.up), "speed_mbps": link.speed_mbps,
            "full_duplex": bool(link.full_duplex), "autoneg": bool(link.autoneg)}


def port_lsc(port_id: int) -> dict:
    """Link state change interrupts: whether the port has them, and how many came."""
    out = ffi.new("struct dp_lsc *")
    check(lib.dp_port_lsc(port_id, out), f"port {port_id} lsc", PortError)
    return {"enabled": bool(out.enabled), "events": out.events}


def port_lsc_notify(port_id: int, eventfd: int) -> None:
    """Write 1 to `eventfd` on each link change of the port (-1: stop)."""
    check(lib.dp_port_lsc_notify(port_id, eventfd), f"port {port_id} lsc", PortError)


def port_lsc_raise(port_id: int) -> None:
    """Test hook: a link-change interrupt, as the port's driver would raise it."""
    check(lib.dp_port_lsc_raise(port_id), f"port {port_id} lsc", PortError)


def port_set_link(port_id: int, up: bool) -> None:
    check(lib.dp_port_set_link(port_id, int(up)), f"port {port_id} link", PortError)


PORT_STATS_FIELDS = ("ipackets", "opackets", "ibytes", "obytes", "imissed", "ierrors",
                     "oerrors", "rx_nombuf")


def port_stats(port_id: int) -> dict[str, int]:
    st = ffi.new("struct dp_port_stats *")
    check(lib.dp_port_stats(port_id, st), f"port {port_id} stats", PortError)
    return {f: getattr(st, f) for f in PORT_STATS_FIELDS}


# ---- pcap files ----------------------------------------------------------------

PCAPFILE_STATS_FIELDS = ("packets", "bytes", "passes", "nombuf", "bad_tail", "done")


def pcapfile_open(port_id: int, path: str, loop: bool, pool):
    """Read the pcap file at path into port_id (configured, a no-rx net_null)."""
    out = ffi.new("struct dp_pcapfile **")
    check(lib.dp_pcapfile_open(port_id, os.fsencode(path), int(loop), pool, out),
          f"pcap file {path}", PortError)
    return out[0]


def pcapfile_close(f) -> None:
    lib.dp_pcapfile_close(f)


def pcapfile_stats(f) -> dict[str, int]:
    st = ffi.new("struct dp_pcapfile_stats *")
    lib.dp_pcapfile_stats(f, st)
    return {k: getattr(st, k) for k in PCAPFILE_STATS_FIELDS}


# ---- workers -----------------------------------------------------------------

def drop_reasons() -> list[str]:
    return [ffi.string(lib.dp_drop_reason_name(i)).decode()
            for i in range(lib.dp_drop_reason_count())]


def worker_create(worker_id: int, socket: int, pool):
    out = ffi.new("struct dp_worker **")
    check(lib.dp_worker_create(worker_id, socket, pool, out), f"worker {worker_id}", WorkerError)
    return out[0]


def worker_destroy(w) -> None:
    lib.dp_worker_destroy(w)


def worker_add_rxq(w, port_id: int, queue: int) -> None:
    check(lib.dp_worker_add_rxq(w, port_id, queue), "add rx queue", WorkerError)


def worker_set_txq(w, port_id: int, queue: int, shared: bool) -> None:
    check(lib.dp_worker_set_txq(w, port_id, queue, int(shared)), "set tx queue", WorkerError)


def worker_set_port_via(w, port_id: int, st) -> None:
    """Packets sent to logical port `port_id` go to stage `st` (a bundle)."""
    check(lib.dp_worker_set_port_via(w, port_id, st), "logical port", WorkerError)


def worker_add_stage(w, kind: str):
    out = ffi.new("struct dp_stage **")
    check(lib.dp_worker_add_stage(w, kind.encode(), out), f"add stage {kind}", WorkerError)
    return out[0]


def worker_thread_init(w, cpu: int) -> None:
    check(lib.dp_worker_thread_init(w, cpu), "worker thread init", WorkerError)


def worker_thread_fini(w) -> None:
    lib.dp_worker_thread_fini(w)


def worker_poll(w, budget_us: int) -> int:
    """Runs the C burst loop; cffi releases the GIL for the call."""
    return lib.dp_worker_poll(w, budget_us)


def worker_notify(w) -> None:
    lib.dp_worker_notify(w)


def worker_set_cycle_sampling(w, shift: int) -> None:
    lib.dp_worker_set_cycle_sampling(w, shift)


def worker_set_idle_rx_skip(w, loops: int) -> None:
    lib.dp_worker_set_idle_rx_skip(w, loops)


def request_stop() -> None:
    lib.dp_request_stop()


def clear_stop() -> None:
    lib.dp_clear_stop()


def stop_requested() -> bool:
    return bool(lib.dp_stop_requested())


WORKER_STATS_FIELDS = ("loops", "rx_bursts", "empty_polls", "rx", "injected", "tx", "punted",
                       "dropped", "rx_cycles", "tx_cycles", "sampled_rx", "busy_cycles", "total_cycles",
                       "tick_cycles", "polls", "max_gap_cycles", "last_gap_cycles", "commands",
                       "max_command_cycles")
STAGE_STATS_FIELDS = ("calls", "packets", "passed", "cycles", "sampled_packets", "dropped")


def _drops(arr, names: list[str]) -> dict[str, int]:
    return {name: arr[i] for i, name in enumerate(names)}


@functools.cache
def punt_reason_names() -> tuple[str, ...]:
    names = []
    while (p := lib.dp_punt_reason_name(len(names))) != ffi.NULL:
        names.append(ffi.string(p).decode())
    return tuple(names)


def worker_stats(w, reasons: list[str]) -> dict:
    st = ffi.new("struct dp_worker_stats *")
    lib.dp_worker_stats(w, st)
    out = {f: getattr(st, f) for f in WORKER_STATS_FIELDS}
    out["drops"] = _drops(st.drops, reasons)
    punts = punt_reason_names()
    out["punts"] = _drops(st.punts, punts)
    out["punt_policed"] = _drops(st.punt_policed, punts)
    return out


def worker_port_stats(w, port_id: int) -> dict[str, int]:
    st = ffi.new("struct dp_worker_port_stats *")
    check(lib.dp_worker_port_stats(w, port_id, st), "worker port stats", WorkerError)
    return {"rx": st.rx, "tx": st.tx, "tx_dropped": st.tx_dropped}


def worker_lcore(w) -> int:
    return lib.dp_worker_lcore(w)


def worker_stages(w) -> list:
    return [lib.dp_worker_stage(w, i) for i in range(lib.dp_worker_stage_count(w))]


def stage_kind(st) -> str:
    return ffi.string(lib.dp_stage_kind(st)).decode()


def stage_stats(st, reasons: list[str]) -> dict:
    s = ffi.new("struct dp_stage_stats *")
    lib.dp_stage_stats(st, s)
    out = {f: getattr(s, f) for f in STAGE_STATS_FIELDS}
    out["drops"] = _drops(s.drops, reasons)
    return out


def worker_inject(w, port_id: int, data: bytes) -> None:
    check(lib.dp_worker_inject(w, port_id, data, len(data)), "inject", WorkerError)


def worker_set_punt_policer(w, reason: int, rate: float, burst: int, source_share: float = 1.0) -> None:
    check(lib.dp_worker_set_punt_policer(w, reason, rate, burst, source_share), "punt policer",
          WorkerError)


def punt_wait(workers, timeout_us: int) -> int:
    """Wait (GIL released) until a punt ring of ``workers`` (a cffi array of
    worker pointers, see punt_wait_set) holds a packet; how many they hold."""
    return lib.dp_punt_wait(workers, len(workers), timeout_us)


CMD_DUMP_NETFLOW = lib.DP_CMD_DUMP_NETFLOW
CMD_DUMP_IP6FLOW = lib.DP_CMD_DUMP_IP6FLOW
CMD_NETFLOW_TIMEOUTS = lib.DP_CMD_NETFLOW_TIMEOUTS
CMD_NETFLOW_SETCONFIG = lib.DP_CMD_NETFLOW_SETCONFIG
CMD_NETFLOW_IFINDEX = lib.DP_CMD_NETFLOW_IFINDEX
CMD_ONE2MANY_STATS = lib.DP_CMD_ONE2MANY_STATS
CMD_IP6FLOW_CONFIGURE = lib.DP_CMD_IP6FLOW_CONFIGURE
CMD_IP6FLOW_INVALIDATE = lib.DP_CMD_IP6FLOW_INVALIDATE
CMD_XCONNECT_SET = lib.DP_CMD_XCONNECT_SET
CMD_TIMEOUT_US = 2_000_000


def worker_exec(w, st, kind: int, a0: int = 0, a1: int = 0, p=ffi.NULL, max_records: int = 0,
                cursor: int = 0, what: str = "worker command",
                timeout_us: int = CMD_TIMEOUT_US) -> tuple[int, int]:
    """Run C command ``kind`` (DP_CMD_*) on worker ``w``'s stage ``st`` inside
    its loop, waiting with the GIL released. -> (its return code, the cursor
    after it: dumps only)"""
    cmd = ffi.new("struct dp_cmd *", {"kind": kind, "st": st, "a0": a0, "a1": a1, "p": p,
                                      "max": max_records, "cursor": cursor})
    rc = check(lib.dp_worker_exec(w, cmd, timeout_us), what)
    return rc, cmd.cursor


def worker_drain_inject(w) -> int:
    return check(lib.dp_worker_drain_inject(w), "drain inject", WorkerError)


def worker_punt_pending(w) -> int:
    return lib.dp_worker_punt_pending(w)


def punt_wait_set(handles: list):
    return ffi.new("struct dp_worker *[]", handles)


PUNT_CAP = 16384


class PuntReader:
    """Drains one worker's punt ring into a buffer allocated once."""

    def __init__(self, w):
        self._w = w
        self._buf = ffi.new("uint8_t[]", PUNT_CAP)
        self._port = ffi.new("uint16_t *")
        self._len = ffi.new("uint32_t *")
        self._reason = ffi.new("uint32_t *")

    def recv(self) -> tuple[int, bytes, int] | None:
        """(rx port, frame, DP_PUNT_* reason) or None when the ring is empty."""
        if lib.dp_worker_punt_recv(self._w, self._buf, PUNT_CAP, self._port, self._len,
                                   self._reason) == 0:
            return None
        return self._port[0], bytes(ffi.buffer(self._buf, self._len[0])), self._reason[0]


# ---- stages ------------------------------------------------------------------

def xconnect_set(st, in_port: int, out_port: int) -> None:
    check(lib.dp_xconnect_set(st, in_port, out_port), "xconnect", WorkerError)


# ---- netflow -------------------------------------------------------------------

NF_INFO_FIELDS = ("packets", "bytes", "flows_used", "flows_created", "alloc_failed",
                  "export_failed", "exported", "act_exp", "inact_exp", "scanned", "clock_ms",
                  "scanned_to_ms", "unmetered", "skipped",
                  "max_flows", "active_timeout", "inactive_timeout", "lowat")
FLOW_RECORD_SIZE = ffi.sizeof("struct dp_flow_record")


def netflow_skip_reasons() -> list[str]:
    out, i = [], 0
    while (name := lib.dp_netflow_skip_reason_name(i)) != ffi.NULL:
        out.append(ffi.string(name).decode())
        i += 1
    return out


def netflow_configure(st, *, max_flows: int, active_timeout: int, inactive_timeout: int,
                      lowat: int, export_ring: int, scan_budget: int) -> None:
    c = ffi.new("struct dp_netflow_conf *", {
        "max_flows": max_flows, "active_timeout": active_timeout,
        "inactive_timeout": inactive_timeout, "lowat": lowat, "export_ring": export_ring,
        "scan_budget": scan_budget})
    check(lib.dp_netflow_configure(st, c), "netflow cache", WorkerError)


def netflow_set_ifindex(st, port_id: int, ifindex: int) -> None:
    check(lib.dp_netflow_set_ifindex(st, port_id, ifindex), "netflow ifindex")


def netflow_conf(ingress: bool) -> int:
    return lib.DP_NF_CONF_INGRESS if ingress else 0


def netflow_info(st, reasons: list[str]) -> dict:
    info = ffi.new("struct dp_netflow_info *")
    check(lib.dp_netflow_info(st, info), "netflow info")
    out = {f: getattr(info, f) for f in NF_INFO_FIELDS}
    out["skips"] = {name: info.skips[i] for i, name in enumerate(reasons)}
    return out


def flow_records(n: int):
    return ffi.new("struct dp_flow_record[]", n)


def netflow_export_drain(st, records, max_records: int) -> int:
    return lib.dp_netflow_export_drain(st, records, max_records)


def netflow_export_pending(st) -> int:
    return lib.dp_netflow_export_pending(st)


def netflow_flush(st, records, max_records: int) -> int:
    """The stop's flush: up to max_records cached flows expired into records;
    -> how many (0: the cache is empty)."""
    return check(lib.dp_netflow_flush(st, records, max_records), "netflow flush")


FT_SPREAD_FIELDS = ("buckets", "keys", "max_home_load", "max_displacement", "displaced",
                    "max_overflow", "max_compares", "probe_sum", "compare_sum")
FT_HASH_CRC = lib.DP_FT_HASH_CRC
FT_HASH_KEYED = lib.DP_FT_HASH_KEYED


def netflow_table_spread(st) -> dict[str, float]:
    """How the cache's keys spread over its hash table (worker thread). Adds
    the means per key: probes (buckets read) and compares per lookup."""
    out = ffi.new("struct dp_ft_spread *")
    check(lib.dp_netflow_table_spread(st, out), "netflow table spread")
    d = {f: getattr(out, f) for f in FT_SPREAD_FIELDS}
    d["probes_per_lookup"] = d["probe_sum"] / d["keys"] if d["keys"] else 0.0
    d["compares_per_lookup"] = d["compare_sum"] / d["keys"] if d["keys"] else 0.0
    return d


def ft_hash_keys(kind: int, keys: bytes, key_len: int) -> tuple[list[int], int]:
    """The flow tables' hash (FT_HASH_KEYED) or the one before it (FT_HASH_CRC)
    of packed keys, with a fresh random table key: (hashes, TSC cycles)."""
    n = len(keys) // key_len
    out = ffi.new("uint32_t[]", max(n, 1))
    cycles = check(lib.dp_ft_hash_keys(kind, keys, key_len, n, out), "ft hash")
    return list(out[0:n]), cycles


def nf_template(fmt: int, ipver: int) -> list[tuple[int, int]]:
    ids = ffi.new("uint16_t[]", 64)
    lens = ffi.new("uint16_t[]", 64)
    n = check(lib.dp_nf_template(fmt, ipver, ids, lens, 64), "netflow template")
    return [(ids[i], lens[i]) for i in range(n)]


def nf_record_size(fmt: int, ipver: int) -> int:
    return check(lib.dp_nf_record_size(fmt, ipver), "netflow record size")


def nf_encode(fmt: int, ipver: int, records, n: int, uptime_base_ms: int,
              epoch_offset_ms: int, buf) -> int:
    """Encode the ipver records among records[0:n] into buf; -> bytes written."""
    size = lib.dp_nf_record_size(fmt, ipver)
    count = check(lib.dp_nf_encode(fmt, ipver, records, n, uptime_base_ms, epoch_offset_ms,
                                   buf, len(buf)), "netflow encode")
    return count * size


def udp_send_batch(fd: int, buf: bytearray, lens: list[int], gso) -> tuple[int, list[int]]:
    """Send len(lens) datagrams packed back to back in buf on a connected
    non-blocking UDP socket: (how many went, errno per datagram, 0 if sent).
    gso: an int * (udp_gso_flag()), 1 while UDP GSO is to be tried."""
    n = len(lens)
    errs = ffi.new("int[]", n)
    sent = lib.dp_udp_send_batch(fd, ffi.from_buffer(buf), ffi.new("uint32_t[]", lens), n, errs, gso)
    return sent, (list(errs) if sent != n else [])


def udp_gso_flag():
    """A collector's 'try UDP GSO' flag for udp_send_batch (the C side clears it)."""
    return ffi.new("int *", 1)


def record_dict(r) -> dict:
    """One dp_flow_record as plain Python values (control 'show' and tests)."""
    import ipaddress
    alen = 4 if r.ipver == 4 else 16
    cls = ipaddress.IPv4Address if r.ipver == 4 else ipaddress.IPv6Address
    return {
        "src": str(cls(bytes(r.src)[:alen])), "dst": str(cls(bytes(r.dst)[:alen])),
        "sport": int.from_bytes(ffi.buffer(ffi.addressof(r, "sport"), 2), "big"),
        "dport": int.from_bytes(ffi.buffer(ffi.addressof(r, "dport"), 2), "big"),
        "proto": r.proto, "tos": r.tos, "tcp_flags": r.tcp_flags, "ipver": r.ipver,
        "packets": r.packets, "bytes": r.bytes, "first_ms": r.first_ms, "last_ms": r.last_ms,
        "in_ifx": r.in_ifx, "out_ifx": r.out_ifx, "end_reason": r.end_reason,
        "src_mask": r.src_mask, "dst_mask": r.dst_mask,
        "nexthop": str(cls(bytes(r.nexthop)[:alen])),
    }


# ---- one2many ------------------------------------------------------------------

O2M_ONE_LINK = lib.DP_O2M_ONE_LINK
O2M_XMIT = {"roundrobin": lib.DP_O2M_XMIT_ROUNDROBIN, "all": lib.DP_O2M_XMIT_ALL,
            "failover": lib.DP_O2M_XMIT_FAILOVER, "hash": lib.DP_O2M_XMIT_HASH}
O2M_STATS_FIELDS = ("rx_packets", "rx_octets", "tx_packets", "tx_octets", "memory_failures")


def o2m_create(one_port: int, many_ports: list[int]):
    out = ffi.new("struct dp_o2m **")
    ports = ffi.new("uint16_t[]", many_ports)
    check(lib.dp_o2m_create(one_port, ports, len(many_ports), out), "one2many bundle")
    return out[0]


def o2m_set_one_logical(b, logical: bool) -> None:
    lib.dp_o2m_set_one_logical(b, int(logical))


def o2m_free(b) -> None:
    lib.dp_o2m_free(b)


def o2m_set_xmit(b, alg: str) -> None:
    check(lib.dp_o2m_set_xmit(b, O2M_XMIT[alg]), "one2many xmit")


def o2m_set_enabled(b, mask: int) -> None:
    lib.dp_o2m_set_enabled(b, mask)


def o2m_enabled(b) -> int:
    return lib.dp_o2m_enabled(b)


def one2many_attach(st, b) -> None:
    check(lib.dp_one2many_attach(st, b), "one2many attach")


def one2many_stats(st, link: int, clear: bool = False) -> dict[str, int]:
    s = ffi.new("struct dp_o2m_link_stats *")
    check(lib.dp_one2many_stats(st, link, s, int(clear)), "one2many stats")
    return o2m_stats_dict(s)


def o2m_link_stats():
    return ffi.new("struct dp_o2m_link_stats *")


def o2m_stats_dict(s) -> dict[str, int]:
    return {f: getattr(s, f) for f in O2M_STATS_FIELDS}


# ---- router and ip6flow -------------------------------------------------------------

NH_KINDS = {"none": lib.DP_NH_NONE, "forward": lib.DP_NH_FORWARD,
            "resolve": lib.DP_NH_RESOLVE, "local": lib.DP_NH_LOCAL,
            "blackhole": lib.DP_NH_BLACKHOLE, "reject": lib.DP_NH_REJECT}
NH_KIND_NAMES = {v: k for k, v in NH_KINDS.items()}
FF_STATS_FIELDS = ("fastforward", "forward", "flows", "created", "refreshed",
                   "reaped_invalid", "reaped_lru", "expired", "invalidated", "uses",
                   "maxflows", "hashsize")


def router_create(max_nexthops: int, v4_max_routes: int, v4_tbl8: int,
                  v6_max_routes: int, v6_tbl8: int, socket: int = -1):
    conf = ffi.new("struct dp_router_conf *", {
        "max_nexthops": max_nexthops, "v4_max_routes": v4_max_routes, "v4_tbl8": v4_tbl8,
        "v6_max_routes": v6_max_routes, "v6_tbl8": v6_tbl8})
    out = ffi.new("struct dp_router **")
    check(lib.dp_router_create(conf, socket, out), "router")
    return out[0]


def router_free(r) -> None:
    lib.dp_router_free(r)


def _mac_bytes(mac: str | None) -> bytes:
    return bytes.fromhex(mac.replace(":", "")) if mac else bytes(6)


def router_nh_set(r, nh_id: int, kind: str, family: int, port: int = 0, mtu: int = 0,
                  dst_mac: str | None = None, src_mac: str | None = None,
                  gateway: bytes = b"", plen: int = 0) -> None:
    nh = ffi.new("struct dp_nexthop *")
    nh.kind = NH_KINDS[kind]
    nh.family = family
    nh.plen = plen
    nh.port = port
    nh.mtu = mtu
    ffi.memmove(nh.dst_mac, _mac_bytes(dst_mac), 6)
    ffi.memmove(nh.src_mac, _mac_bytes(src_mac), 6)
    ffi.memmove(nh.gateway, gateway.ljust(16, b"\0"), 16)
    check(lib.dp_router_nh_set(r, nh_id, nh), f"next hop {nh_id}")


def router_route_add(r, family: int, prefix: bytes, plen: int, nh_id: int) -> None:
    check(lib.dp_router_route_add(r, family, prefix, plen, nh_id), "route add")


def router_route_del(r, family: int, prefix: bytes, plen: int) -> None:
    check(lib.dp_router_route_del(r, family, prefix, plen), "route delete")


def router_commit(r) -> int:
    return check(lib.dp_router_commit(r), "route commit")


def router_invalidate(r) -> None:
    lib.dp_router_invalidate(r)


def router_lookup(r, family: int, addr: bytes) -> int:
    out = ffi.new("uint32_t *")
    check(lib.dp_router_lookup(r, family, addr, out), "route lookup")
    return out[0]


def router_nh_get(r, nh_id: int) -> dict:
    nh = ffi.new("struct dp_nexthop *")
    check(lib.dp_router_nh_get(r, nh_id, nh), "next hop")
    return {"kind": NH_KIND_NAMES.get(nh.kind, str(nh.kind)), "family": nh.family,
            "plen": nh.plen, "port": nh.port, "mtu": nh.mtu,
            "dst_mac": bytes(nh.dst_mac).hex(":"), "src_mac": bytes(nh.src_mac).hex(":"),
            "gateway": bytes(nh.gateway)}


def router_set_port(r, port: int, mac: str | None, up: bool) -> None:
    check(lib.dp_router_set_port(r, port, _mac_bytes(mac) if mac else ffi.NULL, int(up)),
          "router port")


def router_generation(r) -> int:
    return lib.dp_router_generation(r)


def netflow_attach_router(st, r) -> None:
    check(lib.dp_netflow_attach_router(st, r), "netflow route data")


def ip6flow_attach(st, r) -> None:
    check(lib.dp_ip6flow_attach(st, r), "ip6flow attach")


def ip6flow_conf(maxflows: int, hashsize: int, maxflows4: int, hashsize4: int,
                 idle_timeout_ms: int, ipv4: bool):
    return ffi.new("struct dp_ip6flow_conf *", {
        "maxflows": maxflows, "hashsize": hashsize, "maxflows4": maxflows4,
        "hashsize4": hashsize4, "idle_timeout_ms": idle_timeout_ms, "ipv4": int(ipv4)})


def ip6flow_configure(st, conf) -> None:
    """Before the worker runs (after: CMD_IP6FLOW_CONFIGURE); conf from ip6flow_conf()."""
    check(lib.dp_ip6flow_configure(st, conf), "ip6flow configure")


def ip6flow_stats(st, family: int) -> dict:
    s = ffi.new("struct dp_ip6flow_stats *")
    check(lib.dp_ip6flow_stats(st, family, s), "ip6flow stats")
    out = {f: getattr(s, f) for f in FF_STATS_FIELDS}
    out["punts"] = {name: s.punts[i] for i, name in enumerate(punt_reason_names())}
    return out


def ip6flow_entries(n: int):
    return ffi.new("struct dp_ip6flow_entry[]", n)


def ip6flow_entry_dict(e) -> dict:
    """One dp_ip6flow_entry as plain Python values."""
    import ipaddress
    cls, alen = (ipaddress.IPv6Address, 16) if e.family == 6 else (ipaddress.IPv4Address, 4)
    return {"src": str(cls(bytes(e.src)[:alen])), "dst": str(cls(bytes(e.dst)[:alen])),
            "flow": e.flow, "nh": e.nh, "gen": e.gen, "uses": e.uses,
            "dropped": e.dropped, "idle_ms": e.idle_ms, "valid": bool(e.valid)}
