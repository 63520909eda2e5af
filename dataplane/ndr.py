"""NDR/PDR search: the highest rate a dataplane forwards without loss (NDR)
and with at most a given loss ratio (PDR): RFC 2544 throughput (section 26.1)
found by the usual binary search over fixed-rate trials.

Three parts, kept apart:

- the search (`search`): picks the next trial rate from the trials so far; it
  knows nothing about packets;
- traffic sources (`TrafficSource`): run one trial at a rate and say how many
  packets they offered and how many came back. `TrexSource` drives TRex
  through its stateless Python API (a lab with NICs); `AfPacketSource` is a
  paced sender on a veth pair, so the search runs on virtual devices too;
- the DUT's own counters (`DutCounters`): read over its control socket before
  and after every trial, so each lost packet is attributed to where the
  dataplane lost it (`attribute`): the NIC (imissed, ierrors; for a veth, the
  kernel's socket ring), a ring (tx_full, punt_full), a stage's drop reason,
  the slow path, another port, or the way back to the source.

`dataplane ndr` is the command line; deploy/trex/README.md says how to run it.
"""
from __future__ import annotations

import errno
import json
import math
import os
import socket
import struct
import time
from dataclasses import asdict, dataclass, field
from ipaddress import IPv4Address, IPv6Address
from pathlib import Path
from typing import Callable, Iterable, Protocol, Sequence

# ---- what a source reports -------------------------------------------------------


@dataclass
class SourceCounts:
    """One trial as the traffic source saw it."""
    requested_pps: float
    duration_s: float          # time the source spent sending
    offered: int               # packets it put on the wire
    received: int              # packets it got back on its receive ports
    offered_bytes: int = 0
    # Packets it could not send at all (its own queue was full): not offered.
    not_sent: int = 0
    # Losses the source itself saw on the links, by reason (e.g. a veth's
    # backlog), counted in packets it offered.
    link: dict[str, int] = field(default_factory=dict)
    # Packets the link handed to the DUT's interface, when the source can see
    # that (a veth's peer counter); None for a NIC.
    delivered: int | None = None

    @property
    def offered_pps(self) -> float:
        return self.offered / self.duration_s if self.duration_s > 0 else 0.0


class TrafficSource(Protocol):
    """Runs one trial: ``rate_pps`` for ``duration_s`` seconds, then waits
    until what is in flight has arrived, and returns the counts.

    A source may also have ``recount(counts) -> SourceCounts``: the search
    calls it once the DUT is idle, so what the DUT forwarded after the source
    stopped waiting still counts for the trial it belongs to."""

    def start(self, rate_pps: float, duration_s: float) -> SourceCounts: ...

    def close(self) -> None: ...


# ---- the DUT's counters ----------------------------------------------------------------


class DutCounters:
    """The DUT dataplane's counters over its control socket (`stats`: what
    `dataplane ctl stats --json` prints)."""

    def __init__(self, socket_path: str | os.PathLike, timeout: float = 10.0):
        self.path = Path(socket_path)
        self.timeout = timeout

    def read(self) -> dict:
        from .control import request
        return request(self.path, "stats", timeout=self.timeout)

    def settled(self, quiet_s: float = 0.1, max_wait_s: float = 5.0) -> dict:
        """Counters once the DUT is idle: for ``quiet_s`` it moved no packet
        while every worker kept polling (its loop count went on: a worker
        the OS did not run may still hold a burst, or packets in its RX
        ring)."""
        deadline = time.monotonic() + max_wait_s
        prev = self.read()
        while True:
            time.sleep(quiet_s)
            cur = self.read()
            polled = all(a.get("loops") != b.get("loops")
                         for a, b in zip(prev.get("workers", []), cur.get("workers", [])))
            if (_activity(cur) == _activity(prev) and polled) or time.monotonic() > deadline:
                return cur
            prev = cur


def _activity(stats: dict) -> tuple:
    t = stats.get("totals", {})
    ports = stats.get("ports", {})
    return (t.get("rx"), t.get("tx"), t.get("dropped"), t.get("punted"), t.get("injected"),
            tuple(sorted((n, p.get("eth", {}).get("ipackets"), p.get("eth", {}).get("imissed"))
                         for n, p in ports.items())))


# ---- attribution -------------------------------------------------------------------------


def _d(before: dict, after: dict, *path: str) -> int:
    """after[path] - before[path]; a missing counter counts 0."""
    def get(d):
        for k in path:
            if not isinstance(d, dict):
                return 0
            d = d.get(k, 0)
        return d if isinstance(d, (int, float)) else 0
    return int(get(after) - get(before))


@dataclass
class Attribution:
    expected: int              # offered x fanout
    received: int
    lost: int                  # expected - received (negative: more came back)
    reasons: dict[str, int]    # where the DUT (or the links) lost them
    unattributed: int          # lost - sum(reasons)
    dut: dict                  # the DUT's deltas: rx, tx, injected, punted, dropped, conserved
    nic: dict                  # NIC counters of the ingress ports (rx_nombuf is here)


def attribute(counts: SourceCounts, before: dict | None, after: dict | None, *,
              in_ports: Sequence[str] = (), out_ports: Sequence[str] = (), fanout: int = 1,
              count_at: str = "source") -> Attribution:
    """Split a trial's loss by where it happened.

    With fanout f (each offered packet should come back f times: xmit-all to f
    links) and the DUT's in and out ports::

        lost = f*offered - received
             = f*(offered - rx_in)        before the pipeline: the links, the NIC
             + (f*rx_in - tx_out)         inside the DUT: drops by reason, the slow
                                          path, other ports
             + (tx_out - received)        on the way back

    rx_in/tx_out are the workers' per-port counters. Inside the DUT the
    conservation rx + injected = tx + punted + dropped gives, for f = 1,
    rx_in - tx_out = dropped + (punted - injected) + tx_other - rx_other,
    each term a reason. What the counters cannot explain (packets still in a
    ring when the DUT was read, a loss on a wire) is `unattributed`.
    With ``count_at="dut"`` (a flow probe: nothing comes back) the received
    count is the DUT's transmissions on the out ports.
    """
    f = max(1, int(fanout))
    reasons: dict[str, int] = {}

    def add(name: str, n: int) -> None:
        if n:
            reasons[name] = reasons.get(name, 0) + int(n)

    for k, v in counts.link.items():
        add(f"link:{k}", f * v)
    received = counts.received
    dut = {}
    nic = {}
    if before is not None and after is not None:
        ports = after.get("ports", {})
        ins = [p for p in in_ports if p in ports]
        outs = [p for p in out_ports if p in ports]
        for key in ("ipackets", "imissed", "ierrors", "rx_nombuf"):
            nic[key] = sum(_d(before, after, "ports", p, "eth", key) for p in ins)
        rx_in = sum(_d(before, after, "ports", p, "rx") for p in ins)
        tx_out = sum(_d(before, after, "ports", p, "tx") for p in outs)
        if count_at == "dut":
            received = tx_out
        # before the pipeline
        if counts.delivered is not None:
            # a veth: the kernel handed `delivered` to the DUT's interface; what the
            # PMD did not get overflowed its socket ring (DPDK's af_packet PMD does
            # not report those drops, so this is the only place they show)
            add("nic_miss:socket_ring",
                f * (counts.delivered - nic["ipackets"] - nic["imissed"] - nic["ierrors"]))
        add("nic_miss:imissed", f * nic["imissed"])
        add("nic_miss:ierrors", f * nic["ierrors"])
        # inside the DUT
        for reason in sorted(after.get("totals", {}).get("drops", {})):
            n = _d(before, after, "totals", "drops", reason)
            if reason in ("tx_full", "punt_full"):
                add(f"ring_full:{reason}", n)
            else:
                add(f"stage:{reason}", n)
        add("slow_path", _d(before, after, "totals", "punted") - _d(before, after, "totals", "injected"))
        add("egress:other_ports", sum(_d(before, after, "ports", p, "tx") for p in ports if p not in outs))
        add("ingress:other_ports", -sum(_d(before, after, "ports", p, "rx") for p in ports if p not in ins))
        # on the way back
        if count_at != "dut":
            add("return_path", tx_out - received)
        t = {k: _d(before, after, "totals", k) for k in ("rx", "tx", "injected", "punted", "dropped")}
        t["rx_in"], t["tx_out"] = rx_in, tx_out
        t["conserved"] = t["rx"] + t["injected"] == t["tx"] + t["punted"] + t["dropped"]
        dut = t
    expected = f * counts.offered
    lost = expected - received
    return Attribution(expected=expected, received=received, lost=lost, reasons=reasons,
                       unattributed=lost - sum(reasons.values()), dut=dut, nic=nic)


# ---- trials and the search ---------------------------------------------------------------


@dataclass
class Trial:
    index: int
    rate_pps: float            # requested
    duration_s: float
    offered: int
    offered_pps: float         # achieved: what the DUT was really offered
    received: int
    expected: int
    lost: int
    loss_ratio: float
    lost_by_reason: dict[str, int]
    unattributed: int
    source_limited: bool       # the source fell short of the requested rate
    not_sent: int = 0
    offered_bytes: int = 0
    ndr_pass: bool = False
    pdr_pass: bool = False
    dut: dict = field(default_factory=dict)
    nic: dict = field(default_factory=dict)


@dataclass
class Bound:
    """One search (NDR or PDR): the highest rate that passed below the lowest
    that failed."""
    name: str
    tolerance: float           # loss ratio a trial may have and still pass
    rate_pps: float = 0.0      # the result: highest passing rate (0: none passed)
    offered_pps: float = 0.0   # what the source really offered in that trial
    trial: int | None = None   # which trial showed it
    fail_pps: float | None = None  # lowest failing rate (None: none failed)
    limited_by: str = ""       # "dut" (bracketed), "max_rate", "source", "trials"


@dataclass
class SearchResult:
    ndr: Bound
    pdr: Bound
    trials: list[Trial]
    params: dict

    def as_dict(self) -> dict:
        return {"ndr": asdict(self.ndr), "pdr": asdict(self.pdr),
                "trials": [asdict(t) for t in self.trials], "params": self.params}


def _rate(t: Trial) -> float:
    """The rate a trial counts for: the one asked for, unless the source fell
    short of it (then what it reached)."""
    return t.offered_pps if t.source_limited else t.rate_pps


def _bracket(trials: list[Trial], attr: str) -> tuple[float, int | None, float | None]:
    """(highest passing rate below every failure, its trial, lowest failing
    rate). Failures are trusted over passes: a pass above a failure is noise."""
    fails = [_rate(t) for t in trials if not getattr(t, attr)]
    hi = min(fails) if fails else None
    best, idx = 0.0, None
    for t in trials:
        r = _rate(t)
        if getattr(t, attr) and (hi is None or r < hi) and r > best:
            best, idx = r, t.index
    return best, idx, hi


def search(source: TrafficSource, dut: DutCounters | None = None, *, max_rate: float,
           duration: float = 1.0, resolution: float | None = None, loss_tolerance: float = 0.005,
           max_trials: int = 20, fanout: int = 1, in_ports: Sequence[str] = (),
           out_ports: Sequence[str] = (), count_at: str = "source", source_slack: float = 0.02,
           on_trial: Callable[[Trial], None] | None = None) -> SearchResult:
    """Binary search for NDR (no loss) and PDR (loss ratio <= loss_tolerance).

    The first trial is at ``max_rate``; each next one at the middle of the
    bracket of whichever search is not done (PDR first; trials count for
    both: NDR <= PDR holds by construction). A search is done when its
    bracket is narrower than ``resolution`` pps, when ``max_rate`` passed, or
    when the source could not go faster and passed at what it reached.
    A trial counts at the rate asked for, or at what the source reached when
    it fell short by more than ``source_slack`` (then it is source_limited).
    """
    if max_rate <= 0:
        raise ValueError("max_rate must be > 0")
    if count_at not in ("source", "dut"):
        raise ValueError("count_at is 'source' or 'dut'")
    if not 0 <= loss_tolerance < 1:
        raise ValueError("loss_tolerance is a ratio in [0, 1)")
    resolution = resolution if resolution else max_rate * 0.01
    params = dict(max_rate=max_rate, duration_s=duration, resolution_pps=resolution,
                  loss_tolerance=loss_tolerance, max_trials=max_trials, fanout=fanout,
                  in_ports=list(in_ports), out_ports=list(out_ports), count_at=count_at)
    trials: list[Trial] = []
    ndr, pdr = Bound("ndr", 0.0), Bound("pdr", loss_tolerance)
    source_cap = math.inf
    rate = max_rate
    while True:
        before = dut.read() if dut is not None else None
        counts = source.start(rate, duration)
        after = dut.settled() if dut is not None else None
        if hasattr(source, "recount"):
            counts = source.recount(counts)
        a = attribute(counts, before, after, in_ports=in_ports, out_ports=out_ports,
                      fanout=fanout, count_at=count_at)
        ratio = a.lost / a.expected if a.expected else 0.0
        t = Trial(index=len(trials), rate_pps=rate, duration_s=counts.duration_s,
                  offered=counts.offered, offered_pps=counts.offered_pps, received=a.received,
                  expected=a.expected, lost=a.lost, loss_ratio=ratio, lost_by_reason=a.reasons,
                  unattributed=a.unattributed,
                  source_limited=counts.offered_pps < rate * (1 - source_slack),
                  not_sent=counts.not_sent, offered_bytes=counts.offered_bytes,
                  ndr_pass=a.expected > 0 and a.lost <= 0,
                  pdr_pass=a.expected > 0 and ratio <= loss_tolerance, dut=a.dut, nic=a.nic)
        trials.append(t)
        if t.source_limited:  # the fastest the source has shown it can go
            source_cap = t.offered_pps if source_cap == math.inf else max(source_cap, t.offered_pps)
        if on_trial is not None:
            on_trial(t)
        rate = None
        for b in (pdr, ndr):
            b.rate_pps, b.trial, b.fail_pps = _bracket(trials, f"{b.name}_pass")
            b.offered_pps = trials[b.trial].offered_pps if b.trial is not None else 0.0
            b.limited_by = ""
            if b.fail_pps is not None:
                hi = b.fail_pps
                if hi - b.rate_pps <= resolution:
                    b.limited_by = "dut"
                    continue
            else:
                top = min(max_rate, source_cap)
                if b.rate_pps >= max_rate * (1 - source_slack) or top - b.rate_pps <= resolution:
                    b.limited_by = "max_rate" if top == max_rate else "source"
                    continue
                if b.rate_pps >= source_cap * (1 - source_slack):
                    b.limited_by = "source"
                    continue
                hi = top
            if rate is None:
                rate = (b.rate_pps + hi) / 2
        if rate is None:
            break
        if len(trials) >= max_trials:
            for b in (pdr, ndr):
                b.limited_by = b.limited_by or "trials"
            break
    return SearchResult(ndr=ndr, pdr=pdr, trials=trials, params=params)


# ---- frames for the AF_PACKET source ----------------------------------------------------


def _fold(s: int) -> int:
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return s


def _sum16(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    return sum(struct.unpack(f"!{len(data) // 2}H", data))


def mac_bytes(mac: str) -> bytes:
    return bytes(int(x, 16) for x in mac.split(":"))


def build_frames(*, size: int = 64, flows: int = 1, ipv: int = 4, src_mac: str = "02:00:00:00:00:01",
                 dst_mac: str = "02:00:00:00:00:02", src: str | None = None,
                 dst: str | None = None, sport: int = 1025, dport: int = 12) -> list[bytes]:
    """``flows`` UDP frames of ``size`` bytes on the wire (FCS included, as
    RFC 2544 counts them), source address src + i (the TRex profiles' field
    engine does the same). IPv6 frames under 66 bytes cannot hold a UDP
    header: they carry No Next Header (59) and padding, as bench/ip6flow.py."""
    if flows < 1 or flows > 1 << 24:
        raise ValueError("flows must be 1 .. 2^24")
    if ipv not in (4, 6):
        raise ValueError("ipv is 4 or 6")
    flen = size - 4
    eth = mac_bytes(dst_mac) + mac_bytes(src_mac) + (b"\x08\x00" if ipv == 4 else b"\x86\xdd")
    frames = []
    if ipv == 4:
        s0 = int(IPv4Address(src or "16.0.0.1"))
        d = IPv4Address(dst or "48.0.0.1").packed
        if flen < 14 + 28:
            raise ValueError(f"an IPv4/UDP frame needs >= {14 + 28 + 4} bytes")
        ip_len = flen - 14
        udp = struct.pack("!HHHH", sport, dport, ip_len - 20, 0) + bytes(ip_len - 28)
        hdr = struct.pack("!BBHHHBBH4s4s", 0x45, 0, ip_len, 0, 0, 64, 17, 0, b"\0" * 4, d)
        base = _sum16(hdr)
        for i in range(flows):
            s = (s0 + i) & 0xFFFFFFFF
            ck = ~_fold(base + (s >> 16) + (s & 0xFFFF)) & 0xFFFF
            frames.append(eth + hdr[:10] + struct.pack("!HI", ck, s) + d + udp)
        return frames
    s0 = int(IPv6Address(src or "2001:db8:10::1"))
    d = IPv6Address(dst or "2001:db8:30::1").packed
    if flen < 14 + 40:
        raise ValueError(f"an IPv6 frame needs >= {14 + 40 + 4} bytes")
    plen = flen - 54
    if plen < 8:  # no room for UDP
        for i in range(flows):
            s = ((s0 + i) & ((1 << 128) - 1)).to_bytes(16, "big")
            frames.append(eth + struct.pack("!IHBB", 0x60000000, plen, 59, 64) + s + d + bytes(plen))
        return frames
    payload = bytes(plen - 8)
    # UDP checksum (mandatory over IPv6): pseudo header + UDP header + payload
    fixed = _sum16(d) + plen + 17 + sport + dport + plen + _sum16(payload)
    for i in range(flows):
        s = ((s0 + i) & ((1 << 128) - 1)).to_bytes(16, "big")
        ck = (~_fold(fixed + _sum16(s)) & 0xFFFF) or 0xFFFF
        frames.append(eth + struct.pack("!IHBB", 0x60000000, plen, 17, 64) + s + d
                      + struct.pack("!HHHH", sport, dport, plen, ck) + payload)
    return frames


# ---- the AF_PACKET source (virtual devices) ------------------------------------------------

SOL_PACKET = 263
PACKET_QDISC_BYPASS = 20


def iface_counter(iface: str, name: str) -> int:
    return int(Path(f"/sys/class/net/{iface}/statistics/{name}").read_text())


def veth_peer(iface: str) -> str:
    """The other end of a veth pair (its ifindex is our iflink)."""
    base = Path("/sys/class/net")
    if not (base / iface).exists():
        raise ValueError(f"no network interface {iface!r}")
    peer_index = int((base / iface / "iflink").read_text())
    if peer_index == int((base / iface / "ifindex").read_text()):
        raise ValueError(f"{iface} is not one end of a veth pair")
    for d in base.iterdir():
        try:
            if int((d / "ifindex").read_text()) == peer_index:
                return d.name
        except (OSError, ValueError):
            continue
    raise ValueError(f"the peer of {iface} is not in this network namespace")


def device_iface(device: str | None) -> str | None:
    """The kernel interface of a net_af_packet / net_pcap iface= port spec."""
    if not device:
        return None
    for kv in device.split(",")[1:]:
        k, _, v = kv.partition("=")
        if k in ("iface", "rx_iface", "tx_iface", "rx_iface_in"):
            return v
    return None


class AfPacketSource:
    """A paced sender on a veth pair: the DUT's port is a ``net_af_packet``
    on one end, this sends on the other with an AF_PACKET socket at the
    requested rate (a timed loop that sends what is due, sleeping when
    ahead). What comes back is counted by the kernel on the return veth, so
    nothing has to read it. The veth counters also say what the link lost
    (its backlog) and what it delivered to the DUT's interface: the packets
    DPDK's af_packet PMD never saw overflowed its socket ring, which the PMD
    (DPDK 22.11) does not count.

    One Python thread, and the kernel delivers each frame into the DUT's
    socket ring in its context: on a 2-core VM that is 60-110k pps offered
    to a DUT (350k into a veth nobody reads). A trial the source cannot keep
    up with is marked source_limited; the search goes no higher than it got.
    """

    def __init__(self, tx_iface: str, rx_iface: str | None, frames: Sequence[bytes], *,
                 dut_iface: str | None = None, cpus: Iterable[int] | None = None,
                 settle_s: float = 0.2, max_settle_s: float = 5.0):
        if not frames:
            raise ValueError("no frames to send")
        self.tx_iface, self.rx_iface = tx_iface, rx_iface
        self.dut_iface = dut_iface
        self.frames = list(frames)
        self.settle_s, self.max_settle_s = settle_s, max_settle_s
        self._next = 0
        self._before: dict[str, int] = {}
        self.cpus = set(cpus) if cpus else None
        self.sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)  # proto 0: receives nothing
        try:
            self.sock.bind((tx_iface, 0))
            self.sock.setsockopt(SOL_PACKET, PACKET_QDISC_BYPASS, 1)
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 << 20)
            self.sock.setblocking(False)
        except OSError:
            self.sock.close()
            raise

    def _counters(self) -> dict[str, int]:
        c = {"tx": iface_counter(self.tx_iface, "tx_packets"),
             "tx_dropped": iface_counter(self.tx_iface, "tx_dropped")}
        if self.dut_iface:
            c["delivered"] = iface_counter(self.dut_iface, "rx_packets")
        if self.rx_iface:
            c["rx"] = iface_counter(self.rx_iface, "rx_packets")
        return c

    def _send(self, rate: float, duration: float) -> tuple[int, int, int, float]:
        """Frame k is due at t0 + k/rate: send what is due (in bursts of at
        most 512 when behind, then look at the clock again), sleep when
        ahead, stop at t0 + duration even if behind. Returns frames sent,
        refused, bytes, and the window they were sent in (the duration, or
        longer if the last burst ran past it)."""
        frames, nf, send = self.frames, len(self.frames), self.sock.send
        total = max(1, round(rate * duration))
        i = self._next
        done = sent = nbytes = 0
        t0 = last = time.perf_counter()
        end = t0 + duration
        while done < total:
            now = time.perf_counter()
            if now >= end:
                break
            n = min(int((now - t0) * rate) + 1, total) - done
            if n <= 0:
                wait = t0 + done / rate - now
                if wait > 0.0002:
                    time.sleep(wait - 0.0001)
                continue
            for _ in range(min(n, 512)):
                f = frames[i]
                try:
                    send(f)
                    sent += 1
                    nbytes += len(f) + 4
                except OSError as e:
                    if e.errno not in (errno.EAGAIN, errno.ENOBUFS):
                        raise
                done += 1
                i += 1
                if i == nf:
                    i = 0
            last = time.perf_counter()
        self._next = i
        return sent, done - sent, nbytes, max(duration, last - t0)

    def start(self, rate_pps: float, duration_s: float) -> SourceCounts:
        old_aff = None
        if self.cpus:
            old_aff = os.sched_getaffinity(0)
            os.sched_setaffinity(0, self.cpus)
        try:
            before = self._counters()
            sent, failed, nbytes, elapsed = self._send(rate_pps, duration_s)
        finally:
            if old_aff is not None:
                os.sched_setaffinity(0, old_aff)
        # in flight: wait until nothing moves on the links for settle_s
        deadline = time.monotonic() + self.max_settle_s
        prev = self._counters()
        while True:
            time.sleep(self.settle_s)
            cur = self._counters()
            if cur == prev or time.monotonic() > deadline:
                break
            prev = cur
        self._before = before
        return self._counts(SourceCounts(requested_pps=rate_pps, duration_s=elapsed, offered=sent,
                                         received=0, offered_bytes=nbytes, not_sent=failed), cur)

    def _counts(self, c: SourceCounts, cur: dict[str, int]) -> SourceCounts:
        delta = {k: cur[k] - self._before[k] for k in cur}
        link = {}
        # sent but not taken by the veth (its peer's backlog was full)
        if c.offered - delta["tx"]:
            link["veth_backlog"] = c.offered - delta["tx"]
        return SourceCounts(requested_pps=c.requested_pps, duration_s=c.duration_s,
                            offered=c.offered, received=delta.get("rx", 0),
                            offered_bytes=c.offered_bytes, not_sent=c.not_sent, link=link,
                            delivered=delta.get("delivered"))

    def recount(self, counts: SourceCounts) -> SourceCounts:
        """The trial's counts from the kernel again, now that the DUT is idle."""
        return self._counts(counts, self._counters())

    def close(self) -> None:
        self.sock.close()


# ---- the TRex source (a lab with NICs) ----------------------------------------------------


def _trex_api():
    """TRex's stateless API: ``trex.stl.api`` (v2.x), else the older
    ``trex_stl_lib.api``. TRex ships it under
    <trex>/automation/trex_control_plane/interactive: put that on PYTHONPATH."""
    try:
        from trex.stl import api  # type: ignore[import-not-found]
    except ImportError:
        try:
            import trex_stl_lib.api as api  # type: ignore[import-not-found]
        except ImportError:
            raise RuntimeError(
                "TRex's Python API is not importable: add <trex>/automation/trex_control_plane/"
                "interactive to PYTHONPATH (see deploy/trex/README.md)") from None
    return api


def parse_tunables(text: str | None) -> dict[str, str]:
    """TRex's ``-t size=64,flows=1000000`` -> {"size": "64", "flows": "1000000"}."""
    out: dict[str, str] = {}
    for tok in filter(None, (text or "").split(",")):
        k, eq, v = tok.partition("=")
        if not eq or not k:
            raise ValueError(f"tunables are key=value[,key=value...] (got {tok!r})")
        out[k.strip()] = v.strip()
    return out


class TrexSource:
    """TRex stateless (STLClient): connect, reset the ports, load a profile
    (deploy/trex/*.py) onto each transmit port with its tunables, then per
    trial clear the stats, start at ``<rate>pps`` divided over the transmit
    ports (total=True) for the duration, wait for the end and read opackets
    of the transmit ports and ipackets of the receive ports."""

    def __init__(self, profile: str, *, server: str = "127.0.0.1", tx_ports: Sequence[int] = (0,),
                 rx_ports: Sequence[int] = (1,), tunables: dict | None = None,
                 sync_port: int = 4501, async_port: int = 4500, rx_delay_ms: int = 100,
                 promiscuous: bool = True, api=None):
        self.profile = str(profile)
        self.server, self.sync_port, self.async_port = server, sync_port, async_port
        self.tx_ports, self.rx_ports = list(tx_ports), list(rx_ports)
        self.tunables = dict(tunables or {})
        self.rx_delay_ms = rx_delay_ms
        self.promiscuous = promiscuous
        self.api = api or _trex_api()
        self.client = None

    @property
    def ports(self) -> list[int]:
        return sorted(set(self.tx_ports) | set(self.rx_ports))

    def connect(self) -> "TrexSource":
        api = self.api
        c = api.STLClient(server=self.server, sync_port=self.sync_port, async_port=self.async_port)
        c.connect()
        self.client = c
        c.reset(ports=self.ports)
        if self.promiscuous:  # count what comes back whatever its destination MAC
            c.set_port_attr(ports=self.ports, promiscuous=True)
        for p in self.tx_ports:
            # direction: the profile swaps source and destination on odd ports
            prof = api.STLProfile.load_py(self.profile, direction=p % 2, port_id=p, **self.tunables)
            c.add_streams(prof.get_streams(), ports=[p])
        return self

    def start(self, rate_pps: float, duration_s: float) -> SourceCounts:
        if self.client is None:
            self.connect()
        c = self.client
        c.clear_stats(ports=self.ports)
        c.start(ports=self.tx_ports, mult=f"{max(1, int(round(rate_pps)))}pps",
                duration=duration_s, total=True, force=True)
        c.wait_on_traffic(ports=self.tx_ports, rx_delay_ms=self.rx_delay_ms)
        st = c.get_stats(ports=self.ports)
        offered = sum(st[p]["opackets"] for p in self.tx_ports)
        received = sum(st[p]["ipackets"] for p in self.rx_ports)
        obytes = sum(st[p].get("obytes", 0) for p in self.tx_ports)
        # TRex counts what its own queues refused (global "queue_full")
        qfull = int(st.get("global", {}).get("queue_full", 0) or 0)
        return SourceCounts(requested_pps=rate_pps, duration_s=duration_s, offered=offered,
                            received=received, offered_bytes=obytes, not_sent=qfull)

    def recount(self, counts: SourceCounts) -> SourceCounts:
        """ipackets again once the DUT is idle (the stats were cleared at the
        trial's start, so they still hold this trial only)."""
        st = self.client.get_stats(ports=self.ports)
        counts.received = sum(st[p]["ipackets"] for p in self.rx_ports)
        return counts

    def close(self) -> None:
        if self.client is not None:
            try:
                self.client.disconnect()
            finally:
                self.client = None


# ---- output ---------------------------------------------------------------------------------


def _si(x: float) -> str:
    for unit, div in (("M", 1e6), ("k", 1e3)):
        if abs(x) >= div:
            return f"{x / div:.3f}{unit}"
    return f"{x:.0f}"


def trial_table(trials: list[Trial], title: str = "trials"):
    from rich.table import Table
    t = Table(title=title)
    for col in ("#", "asked pps", "offered pps", "offered", "received", "lost", "loss %",
                "NDR", "PDR", "lost by reason"):
        t.add_column(col, justify="left" if col == "lost by reason" else "right")
    for tr in trials:
        why = ", ".join(f"{k} {v}" for k, v in sorted(tr.lost_by_reason.items(), key=lambda kv: -abs(kv[1])))
        if tr.unattributed:
            why += (", " if why else "") + f"unattributed {tr.unattributed}"
        offered = _si(tr.offered_pps) + (" (src)" if tr.source_limited else "")
        t.add_row(str(tr.index), _si(tr.rate_pps), offered,
                  str(tr.offered), str(tr.received), str(tr.lost), f"{tr.loss_ratio * 100:.4f}",
                  "ok" if tr.ndr_pass else "-", "ok" if tr.pdr_pass else "-", why or "")
    return t


def summary_lines(res: SearchResult) -> list[str]:
    out = []
    for b in (res.ndr, res.pdr):
        tol = "" if b.name == "ndr" else f" (loss <= {b.tolerance * 100:g}%)"
        fail = f", fails at {_si(b.fail_pps)} pps" if b.fail_pps is not None else ""
        why = {"dut": "bracketed", "max_rate": "the maximum rate passed",
               "source": "the source could go no faster", "trials": "out of trials"}.get(b.limited_by, "")
        out.append(f"{b.name.upper()}{tol}: {_si(b.rate_pps)} pps{fail}"
                   + (f" [{why}]" if why else "") + (f" (trial {b.trial})" if b.trial is not None else ""))
    return out


def write_json(res: SearchResult, path: str | os.PathLike) -> None:
    Path(path).write_text(json.dumps(res.as_dict(), indent=2, sort_keys=True) + "\n")


# ---- the command line (`dataplane ndr`) -----------------------------------------------------


def _port_names(text: str | None) -> list[str]:
    return [p for p in (text or "").split(",") if p]


def default_ports(cfg) -> tuple[list[str], list[str]]:
    """In and out ports when not given: the first xconnect mapping, else the
    first polled port in and the next port out."""
    for sc in cfg.pipeline:
        m = getattr(sc, "map", None)
        if m:
            for src, dst in m.items():
                if dst != "punt":
                    return [src], [dst]
    names = [p.name for p in cfg.ports]
    polled = [p.name for p in cfg.ports if p.poll]
    if not polled:
        raise ValueError("no polled port to send to: give --in")
    rest = [n for n in names if n != polled[0]]
    return [polled[0]], rest[:1]


def make_afpacket_source(cfg, in_ports: list[str], out_ports: list[str], *, tx_iface: str | None,
                         rx_iface: str | None, count_at: str, size: int, flows: int, ipv: int,
                         src: str | None, dst: str | None, dst_mac: str | None) -> AfPacketSource:
    by_name = {p.name: p for p in cfg.ports}
    dut_in = device_iface(by_name[in_ports[0]].device) if in_ports else None
    if tx_iface is None:
        if dut_in is None:
            raise ValueError(f"DUT port {in_ports[0]!r} is not a net_af_packet on a veth: give --tx-iface")
        tx_iface = veth_peer(dut_in)
    elif dut_in is None:
        try:
            dut_in = veth_peer(tx_iface)
        except ValueError:
            dut_in = None
    if rx_iface is None and count_at == "source":
        dut_out = device_iface(by_name[out_ports[0]].device) if out_ports else None
        if dut_out is None:
            raise ValueError(f"DUT port {out_ports[0] if out_ports else '?'!r} is not a net_af_packet "
                             "on a veth: give --rx-iface, or --count-at dut")
        rx_iface = veth_peer(dut_out)
    src_mac = Path(f"/sys/class/net/{tx_iface}/address").read_text().strip()
    if dst_mac is None:
        dst_mac = (Path(f"/sys/class/net/{dut_in}/address").read_text().strip() if dut_in
                   else "ff:ff:ff:ff:ff:ff")
    frames = build_frames(size=size, flows=flows, ipv=ipv, src_mac=src_mac, dst_mac=dst_mac,
                          src=src, dst=dst)
    workers = set(cfg.eal.workers)
    cpus = set(os.sched_getaffinity(0)) - workers  # never on the DUT's worker CPUs
    return AfPacketSource(tx_iface, rx_iface if count_at == "source" else None, frames,
                          dut_iface=dut_in, cpus=cpus or None)


def run_cli(*, config_path: str, socket_path: str | None, source: str, in_ports: str | None,
            out_ports: str | None, max_rate: float, resolution: float | None, duration: float,
            loss_tolerance_pct: float, max_trials: int, fanout: int, count_at: str,
            tx_iface: str | None, rx_iface: str | None, size: int, flows: int, ipv: int,
            src: str | None, dst: str | None, dst_mac: str | None, trex_server: str,
            profile: str | None, tunables: str | None, trex_tx: str, trex_rx: str,
            as_json: bool, json_out: str | None, echo: Callable[[str], None]) -> SearchResult:
    from . import config as config_mod
    cfg = config_mod.load(config_path)
    sock = Path(socket_path) if socket_path else config_mod.control_socket(cfg)
    ins, outs = _port_names(in_ports), _port_names(out_ports)
    if not ins or not outs:
        d_in, d_out = default_ports(cfg)
        ins, outs = ins or d_in, outs or d_out
    names = {p.name for p in cfg.ports}
    for p in ins + outs:
        if p not in names:
            raise ValueError(f"no port named {p!r} in {config_path} (ports: {', '.join(sorted(names))})")
    dut = DutCounters(sock)
    try:
        dut.read()  # fail early if the DUT is not running
    except OSError as e:
        raise RuntimeError(f"no dataplane answers on {sock}: {e.strerror or e} "
                           f"(is `dataplane run {config_path}` running?)") from None
    if source == "trex":
        if not profile:
            raise ValueError("--source trex needs --profile (a deploy/trex/*.py profile)")
        src_obj = TrexSource(profile, server=trex_server, tunables=parse_tunables(tunables),
                             tx_ports=[int(x) for x in trex_tx.split(",")],
                             rx_ports=[int(x) for x in trex_rx.split(",") if x]).connect()
    else:
        src_obj = make_afpacket_source(cfg, ins, outs, tx_iface=tx_iface, rx_iface=rx_iface,
                                       count_at=count_at, size=size, flows=flows, ipv=ipv,
                                       src=src, dst=dst, dst_mac=dst_mac)

    def progress(t: Trial) -> None:
        if not as_json:
            echo(f"trial {t.index}: asked {_si(t.rate_pps)} pps, offered {_si(t.offered_pps)} pps, "
                 f"lost {t.lost} ({t.loss_ratio * 100:.4f}%)")

    try:
        res = search(src_obj, dut, max_rate=max_rate, duration=duration, resolution=resolution,
                     loss_tolerance=loss_tolerance_pct / 100, max_trials=max_trials, fanout=fanout,
                     in_ports=ins, out_ports=outs, count_at=count_at, on_trial=progress)
    finally:
        src_obj.close()
    res.params.update(source=source, config=str(config_path), socket=str(sock),
                      frame_size=size if source == "afpacket" else None,
                      flows=flows if source == "afpacket" else None,
                      ipv=ipv if source == "afpacket" else None,
                      profile=profile, tunables=parse_tunables(tunables) if source == "trex" else None)
    if json_out:
        write_json(res, json_out)
    return res
