"""The netflow stage's Python side: control of the per-worker caches and the
exporter that turns expired-flow records into NetFlow v5 / v9 / IPFIX
datagrams.

Records leave each worker on its own ring; one exporter thread drains them,
has C encode the record bodies (per-record work), and adds what is per
datagram: headers, templates, sequence numbers. Sending never blocks: a send
error is counted and the sequence numbers advance anyway, as they do for
records a full ring lost, so collectors see every gap.
"""
from __future__ import annotations

import errno
import logging
import socket
import struct
import threading
import time
from dataclasses import dataclass, field

from . import native
from .config import NetflowExport, NetflowStage, parse_hostport
from .engine import DUMP_PAGE

log = logging.getLogger(__name__)


V5, V9, IPFIX = native.lib.DP_NF_FMT_V5, native.lib.DP_NF_FMT_V9, native.lib.DP_NF_FMT_IPFIX
V5_MAX_RECORDS = 30           # ng_netflow's NETFLOW_V5_MAX_RECORDS
# Header sizes: native/nfexport.c (dp_nf_frame) writes the headers.
V5_HEADER_BYTES, V9_HEADER_BYTES = 24, 20
SET_HEADER = struct.Struct("!HH")
TEMPLATE_IDS = {4: 256, 6: 257}
DRAIN_BATCH = 4096
SEND_CHUNK = 64                # datagrams framed and sent per sendmmsg


@dataclass
class Collector:
    host: str
    port: int
    sock: socket.socket
    addr: tuple
    datagrams: int = 0
    bytes: int = 0
    errors: int = 0
    error_records: int = 0     # flow records in the datagrams whose send failed
    last_error: str = ""
    _gso: object = field(default_factory=native.udp_gso_flag, repr=False)

    @property
    def gso(self) -> bool:
        """Whether runs of datagrams still go as UDP GSO sends (the kernel took them)."""
        return bool(self._gso[0])

    @classmethod
    def open(cls, spec: str) -> "Collector":
        host, port = parse_hostport(spec)
        family, _, _, _, addr = socket.getaddrinfo(host, port, type=socket.SOCK_DGRAM)[0]
        sock = socket.socket(family, socket.SOCK_DGRAM)
        sock.setblocking(False)  # a slow or gone collector never stalls export
        # Connected, so ICMP "port unreachable" comes back as ECONNREFUSED on
        # a later send: a collector that is gone shows up in the counters.
        sock.connect(addr)
        return cls(host, port, sock, addr)

    def send_batch(self, buf: bytearray, lens: list[int], records: list[int]) -> None:
        """Send the datagrams packed in buf (lengths in lens, flow records in
        each in records); a datagram that fails is counted, never retried."""
        sent, errs = native.udp_send_batch(self.sock.fileno(), buf, lens, self._gso)
        self.datagrams += sent
        if sent == len(lens):
            self.bytes += sum(lens)
            return
        for i, err in enumerate(errs):  # ENOBUFS, EAGAIN, ECONNREFUSED from an earlier send...
            if err:
                self.errors += 1
                self.error_records += records[i]
                self.last_error = errno.errorcode.get(err, str(err))
            else:
                self.bytes += lens[i]


@dataclass
class _Pending:
    """Encoded record bodies waiting for a datagram, per IP version."""
    data: bytearray = field(default_factory=bytearray)
    count: int = 0
    since: float = 0.0


class Exporter:
    """Builds datagrams in one NetFlow format and sends them to every collector."""

    def __init__(self, cfg: NetflowExport, boot_ms: int, epoch_offset_ms: int):
        self.cfg = cfg
        self.fmt = cfg.version
        self.boot_ms = boot_ms
        self.epoch_offset_ms = epoch_offset_ms
        self.collectors = [Collector.open(c) for c in cfg.collectors]
        self.pending = {4: _Pending(), 6: _Pending()}
        # Sequence numbers, datagram count and template timing live in the C
        # framer (dp_nf_frame advances them); see the properties below.
        self._framer = native.ffi.new("struct dp_nf_framer *")
        self._framer.fmt = self.fmt
        self._framer.source_id = cfg.source_id
        self._framer.engine_type, self._framer.engine_id = cfg.engine_type, cfg.engine_id
        self._framer.refresh_packets = cfg.template_refresh_packets
        self.v5_skipped_ipv6 = 0
        self.lost_records = 0
        self._last_template_time = -1e18
        self.rec_size = {v: native.nf_record_size(self.fmt, v) for v in (4, 6)
                         if self.fmt != V5 or v == 4}
        if self.fmt != V5:
            self.templates = {v: native.nf_template(self.fmt, v) for v in (4, 6)}
            self._template_set_bytes = self._template_set()
        # Records a datagram holds, by IP version: without templates, and with
        # them (v9/IPFIX: room for the template set is kept only in datagrams
        # that carry it, every template_refresh_packets-th or so).
        self.per_datagram = {v: self._records_that_fit(v, False) for v in self.rec_size}
        self.per_datagram_templated = {v: self._records_that_fit(v, True) for v in self.rec_size}
        self._out = bytearray(SEND_CHUNK * max(cfg.max_datagram, V5_HEADER_BYTES + V5_MAX_RECORDS * 48))
        self._cout = native.ffi.from_buffer(self._out)
        self._lens = native.ffi.new("uint32_t[]", SEND_CHUNK)
        self._recs = native.ffi.new("uint32_t[]", SEND_CHUNK)
        self._n_dgrams = native.ffi.new("uint32_t *")

    # ---- sequence state (in the framer) ------------------------------------

    @property
    def flow_seq(self) -> int:
        """v5: flows; IPFIX: data records (exported or lost)."""
        return self._framer.flow_seq

    @flow_seq.setter
    def flow_seq(self, v: int) -> None:
        self._framer.flow_seq = v

    @property
    def packet_seq(self) -> int:
        """v9: datagrams (sent or lost)."""
        return self._framer.packet_seq

    @packet_seq.setter
    def packet_seq(self, v: int) -> None:
        self._framer.packet_seq = v

    @property
    def datagrams(self) -> int:
        return self._framer.datagrams

    # ---- clock -----------------------------------------------------------

    def _now_ms(self) -> int:
        return native.clock_ns() // 1_000_000

    def _unix_ms(self, now_ms: int) -> int:
        return now_ms + self.epoch_offset_ms

    # ---- intake ----------------------------------------------------------

    def add(self, records, n: int) -> None:
        """Encode records[0:n] straight onto the end of their IP version's
        queue (room for all that are left, trimmed to what was written)."""
        now = time.monotonic()
        left = n
        for ipver, pend in self.pending.items():
            if ipver not in self.rec_size or not left:
                continue
            start = len(pend.data)
            pend.data += bytes(left * self.rec_size[ipver])
            room = memoryview(pend.data)[start:]
            try:
                with native.ffi.from_buffer(room) as buf:
                    size = native.nf_encode(self.fmt, ipver, records, n, self.boot_ms,
                                            self.epoch_offset_ms, buf)
            finally:
                room.release()
            del pend.data[start + size:]
            count = size // self.rec_size[ipver]
            left -= count
            if count:
                if not pend.count:
                    pend.since = now
                pend.count += count
        if self.fmt == V5:  # v5 has no IPv6 record: what was not encoded was IPv6
            self.v5_skipped_ipv6 += left

    def records_lost(self, n: int) -> None:
        """Records a full ring dropped: advance the sequence so collectors see them."""
        self.lost_records += n
        if self.fmt == V9:
            self.packet_seq += -(-n // self.per_datagram[4])
        else:
            self.flow_seq += n

    # ---- output ----------------------------------------------------------

    def _records_that_fit(self, ipver: int, templates: bool) -> int:
        if self.fmt == V5:
            return V5_MAX_RECORDS
        room = self.cfg.max_datagram - V9_HEADER_BYTES - SET_HEADER.size
        if templates:
            room -= len(self._template_set_bytes)
        rec = self.rec_size[ipver]
        k = room // rec
        while k > 1 and -(-k * rec // 4) * 4 > room:  # the data set is padded to 4 bytes
            k -= 1
        return max(1, k)

    def _template_set(self) -> bytes:
        """Every template, one set (the same bytes each time they are due)."""
        body = b""
        for ipver, fields in self.templates.items():
            body += struct.pack("!HH", TEMPLATE_IDS[ipver], len(fields))
            body += b"".join(struct.pack("!HH", i, ln) for i, ln in fields)
        set_id = 0 if self.fmt == V9 else 2
        return SET_HEADER.pack(set_id, SET_HEADER.size + len(body)) + body

    def pump(self, force: bool = False) -> None:
        """Send every full datagram; partial ones too when old or forced.
        C frames up to SEND_CHUNK datagrams at a time into one buffer
        (dp_nf_frame), and each collector gets them in one sendmmsg."""
        now = time.monotonic()
        now_ms = self._now_ms()
        unix_ms = self._unix_ms(now_ms)
        uptime = (now_ms - self.boot_ms) & 0xFFFFFFFF
        f = self._framer
        if self.fmt != V5 and now - self._last_template_time >= self.cfg.template_refresh_s:
            f.templates_due = 1
        tmpl = b"" if self.fmt == V5 else self._template_set_bytes
        for ipver, pend in self.pending.items():
            if not pend.count:
                continue
            partial_ok = force or now - pend.since >= self.cfg.flush_interval_s
            size = self.rec_size[ipver]
            framed_all = 0
            with native.ffi.from_buffer(pend.data) as body:
                while framed_all < pend.count:
                    f.templates_sent = 0
                    framed = native.lib.dp_nf_frame(
                        f, TEMPLATE_IDS[ipver], body + framed_all * size, pend.count - framed_all,
                        size, self.per_datagram[ipver], self.per_datagram_templated[ipver],
                        int(partial_ok), tmpl, len(tmpl), len(self.templates) if tmpl else 0,
                        uptime, unix_ms // 1000, (unix_ms % 1000) * 1_000_000,
                        self._cout, len(self._out), self._lens, self._recs, SEND_CHUNK, self._n_dgrams)
                    if f.templates_sent:
                        self._last_template_time = now
                    n = self._n_dgrams[0]
                    if n:
                        lens, recs = list(self._lens[0:n]), list(self._recs[0:n])
                        for c in self.collectors:
                            c.send_batch(self._out, lens, recs)
                    if framed == 0:
                        break
                    framed_all += framed
            if framed_all:
                del pend.data[:framed_all * size]
                pend.count -= framed_all
                pend.since = now

    def close(self) -> None:
        for c in self.collectors:
            c.sock.close()

    def info(self) -> dict:
        return {"version": self.fmt, "datagrams": self.datagrams, "lost_records": self.lost_records,
                "v5_skipped_ipv6": self.v5_skipped_ipv6,
                "pending": sum(p.count for p in self.pending.values()),
                "collectors": [{"collector": f"{c.host}:{c.port}", "datagrams": c.datagrams,
                                "bytes": c.bytes, "errors": c.errors,
                                "error_records": c.error_records, "last_error": c.last_error,
                                "udp_gso": c.gso}
                               for c in self.collectors]}


class NetflowController:
    """One [[pipeline]] netflow table: its per-worker caches and its exporter."""

    kind = "netflow"

    def __init__(self, dp, cfg: NetflowStage, index: int):
        self.dp = dp
        self.cfg = cfg
        self.index = index
        self.stages: list = []   # one C stage per worker
        self.skip_reasons = native.netflow_skip_reasons()
        self._records = native.flow_records(DRAIN_BATCH)
        self._lost_seen = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()  # one drainer at a time: the rings are single-consumer
        # CPU time (of whichever thread did it) spent taking records off the
        # rings and building and sending datagrams, plus the shutdown flush:
        # the export half of a flow's cost, the workers' busy cycles the other.
        self.export_cpu_s = 0.0
        self.exporter: Exporter | None = None
        self._shut = False

    def add_worker_stage(self, st, n_workers: int, ports) -> None:
        c = self.cfg
        native.netflow_configure(st, max_flows=max(8, c.max_flows // n_workers),
                                 active_timeout=c.active_timeout,
                                 inactive_timeout=c.inactive_timeout,
                                 lowat=c.lowat // n_workers, export_ring=c.export_ring,
                                 scan_budget=c.scan_budget)
        for p in ports:
            native.netflow_set_ifindex(st, p.port_id, p.cfg.ifindex or p.index + 1)
        self.stages.append(st)

    def start(self) -> None:
        now_ms = native.clock_ns() // 1_000_000
        epoch_offset = int(time.time() * 1000) - now_ms
        self.exporter = Exporter(self.cfg.export, now_ms, epoch_offset)
        self._thread = threading.Thread(target=self._run, name=f"dp-netflow-{self.index}",
                                        daemon=True)
        self._thread.start()

    # ---- export ----------------------------------------------------------

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                moved = self.drain()
            except Exception:  # noqa: BLE001 - keep exporting; the error is logged
                log.exception("netflow exporter")
                moved = 0
            if not moved:
                self._stop.wait(0.005)

    def drain(self, force: bool = False) -> int:
        """Move records from the workers' rings to the collectors."""
        moved = 0
        t0 = time.thread_time()
        with self._lock:
            for st in self.stages:
                while (n := native.netflow_export_drain(st, self._records, DRAIN_BATCH)):
                    self.exporter.add(self._records, n)
                    moved += n
                    if n < DRAIN_BATCH:
                        break
            lost = sum(native.netflow_info(st, self.skip_reasons)["export_failed"]
                       for st in self.stages)
            if lost > self._lost_seen:
                self.exporter.records_lost(lost - self._lost_seen)
                self._lost_seen = lost
            self.exporter.pump(force)
            self.export_cpu_s += time.thread_time() - t0
        return moved

    def shutdown(self) -> None:
        """With the workers stopped: expire every cached flow (billable data,
        says the seed), export it, partial datagrams included."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        if self.exporter is None or self._shut:
            return
        self._shut = True
        self.drain()  # what the rings hold goes first
        with self._lock:
            for st in self.stages:
                t0 = time.thread_time()
                while n := native.netflow_flush(st, self._records, DRAIN_BATCH):
                    self.exporter.add(self._records, n)
                    self.exporter.pump()
                self.export_cpu_s += time.thread_time() - t0
        self.drain(force=True)
        self.exporter.close()

    # ---- control (ng_netflow messages) -------------------------------------

    def info(self) -> dict:
        """NGM_NETFLOW_INFO, summed over the workers, plus the exporter's counters."""
        per = [native.netflow_info(st, self.skip_reasons) for st in self.stages]
        out = {k: sum(p[k] for p in per) for k in native.NF_INFO_FIELDS
               if k not in ("active_timeout", "inactive_timeout", "clock_ms", "scanned_to_ms")}
        out["skips"] = {r: sum(p["skips"][r] for p in per) for r in self.skip_reasons}
        if per:
            out["active_timeout"] = per[0]["active_timeout"]
            out["inactive_timeout"] = per[0]["inactive_timeout"]
            # how far every worker's scan has got (ms since the caches started)
            out["clock_ms"] = min(p["clock_ms"] for p in per)
            out["scanned_to_ms"] = min(p["scanned_to_ms"] for p in per)
        out["export"] = self.exporter.info() if self.exporter else {}
        if out["export"]:
            out["export"]["cpu_s"] = round(self.export_cpu_s, 6)
        return out

    def settimeouts(self, active: int, inactive: int) -> None:
        """NGM_NETFLOW_SETTIMEOUTS, applied by each worker between polls."""
        self.dp.stage_command(self.index, native.CMD_NETFLOW_TIMEOUTS, active, inactive,
                              what="netflow timeouts")

    def reconfigure_export(self, export: NetflowExport) -> None:
        """Reload: a new exporter (collectors, version, ...). What the old one
        still held goes out first; sequence numbers continue when the
        version stays."""
        with self._lock:
            old = self.exporter
            old.pump(force=True)
            new = Exporter(export, old.boot_ms, old.epoch_offset_ms)
            if export.version == old.fmt:
                new.flow_seq, new.packet_seq = old.flow_seq, old.packet_seq
            self.exporter = new
            self.cfg = self.cfg.model_copy(update={"export": export})
            old.close()

    def setconfig(self, port: str, ingress: bool) -> None:
        """NGM_NETFLOW_SETCONFIG: meter a port's ingress traffic or not."""
        pid = self.dp.port(port).port_id
        self.dp.stage_command(self.index, native.CMD_NETFLOW_SETCONFIG, pid, native.netflow_conf(ingress),
                              what="netflow setconfig")

    def setifindex(self, port: str, ifindex: int) -> None:
        """NGM_NETFLOW_SETIFINDEX: the ifIndex a port has in flow records."""
        pid = self.dp.port(port).port_id
        self.dp.stage_command(self.index, native.CMD_NETFLOW_IFINDEX, pid, ifindex, what="netflow ifindex")

    def show(self, limit: int = 1000) -> list[dict]:
        """NGM_NETFLOW_SHOW: up to ``limit`` cached flows (see page)."""
        return self.page(limit)[0]

    def page(self, limit: int, after: tuple[int, int] = (0, 0)) -> tuple[list[dict], tuple[int, int] | None]:
        """Up to ``limit`` cached flows from ``after`` (worker, slot), and where
        to go on from (NGM_NETFLOW_SHOW's `last`), None at the end. Each
        worker reads its own pages inside its C loop: forwarding goes on."""
        return self.dp.read_pages(self.index, native.CMD_DUMP_NETFLOW, 0, native.flow_records(DUMP_PAGE),
                                  native.record_dict, limit, after)

