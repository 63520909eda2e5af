"""Network-namespace tier: a one2many failover bundle over veth pairs while
link 0 flaps under a steady stream.

Topology (built per test, removed afterwards even on failure)::

    ns o2m-s-<id>             root namespace                      ns o2m-r-<id>
    s<id>  <-veth->  ds<id> ==[one2many]== dr0<id>  <-veth->  r0<id> \\
                     "lan"       |  link 0 "l0"                        receiver
                                 +==== dr1<id>  <-veth->  r1<id> /   (one AF_PACKET
                                    link 1 "l1"                     socket, both)

The dataplane runs ``python3 -m dataplane -v run CONFIG --json`` with
``xmit = "failover"``, ``failure = "notify"`` and a 10 ms link monitor. A
sender in S (a raw AF_PACKET socket, prebuilt 64-byte UDP frames, a 32-bit
sequence number in the payload, paced in 1 ms batches) streams at a fixed
rate; a receiver in R records (kernel arrival time, interface, sequence) for
every frame on r0 or r1. Link 0 is flapped 20 times on the root side
(``ip link set dr0<id> down`` / ``up``: the dataplane's own port), and the
test measures, per flap, how long the monitor took to see it (the kernel's
RTM_NEWLINK for dr0, and the ``ip`` command, to the monitor's log line) and
how many sequence numbers went missing.

What DPDK 22.11's net_af_packet does here (and the asserts rely on): its link
status never changes (link_update is a no-op; "up" from start to stop), so the
monitor's kernel check (IFF_UP and carrier of /sys/class/net/dr0<id>) is what
sees a flap. Frames the bundle put on link 0 between the down and its
detection are not lost: they stay in dr0's PACKET_TX_RING (the PMD's sendto
kick fails with ENETDOWN, counted in oerrors) and the kernel sends them with
the first transmit after link 0 is back, behind link 1's frames. The test
counts those as "held" and asserts that there is no other reordering.

The scenario code here (topology, scripts, run, analysis, report) is also what
``bench/one2many_failover.py`` runs; only the asserts are the test's.
"""
from __future__ import annotations

import bisect
import json
import re
import shutil
import signal
import socket
import statistics
import struct
import subprocess
import sys
import textwrap
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import pytest

from tests.helpers import kill_proc, sh

DPDK_RUN_ROOT = Path("/var/run/dpdk")
UDP_PORT = 9999
MAGIC = b"O2MF"
DST_MAC = "02:00:00:00:00:02"   # nobody's: R's stack drops it (no IP, OTHERHOST)
SEQ_OFFSET = 14 + 20 + 8 + 4    # eth + ipv4 + udp + MAGIC
READY_TIMEOUT_S = 20.0
STOP_GUARD_S = 15.0
# Generous sanity bound on detection (kernel event -> monitor log line); the
# goal (<= 2 polls) is printed, not asserted: the machine is shared and noisy.
DETECT_SANITY_S = 1.0
# A packet the dataplane may still have put on link 0 after the log line: the
# log line is written just before the new mask is published, and the worker
# reads the mask once per burst.
IN_FLIGHT_SLACK_S = 0.005
# A frame that arrives this long after it was sent is "late" (the stream's
# normal latency through the dataplane is well under a millisecond).
LATE_S = 0.05


# ---- topology -------------------------------------------------------------------

@dataclass
class FlapTopo:
    uid: str
    ns_s: str
    ns_r: str
    s: str     # in S: the sender's interface
    ds: str    # root side of s: the dataplane's `one` port
    r0: str    # in R
    dr0: str   # root side of r0: link 0
    r1: str    # in R
    dr1: str   # root side of r1: link 1

    @classmethod
    def new(cls) -> "FlapTopo":
        uid = uuid.uuid4().hex[:6]  # 'dr0' + 6: well under the 15-char IFNAMSIZ limit
        return cls(uid=uid, ns_s=f"o2m-s-{uid}", ns_r=f"o2m-r-{uid}", s=f"s{uid}", ds=f"ds{uid}",
                   r0=f"r0{uid}", dr0=f"dr0{uid}", r1=f"r1{uid}", dr1=f"dr1{uid}")

    @property
    def root_ifaces(self) -> list[str]:
        return [self.ds, self.dr0, self.dr1]

    def create(self) -> None:
        for ns in (self.ns_s, self.ns_r):
            sh("ip", "netns", "add", ns)
            sh("ip", "-n", ns, "link", "set", "lo", "up")
            # Interfaces born in the namespace inherit "default": no IPv6 at all,
            # so nobody puts RS/MLD/ND on the wire.
            for key in ("default", "all"):
                sh("ip", "netns", "exec", ns, "sysctl", "-q", "-w",
                   f"net.ipv6.conf.{key}.disable_ipv6=1")
        for ns, inner, outer in ((self.ns_s, self.s, self.ds), (self.ns_r, self.r0, self.dr0),
                                 (self.ns_r, self.r1, self.dr1)):
            sh("ip", "link", "add", outer, "type", "veth", "peer", "name", inner, "netns", ns)
            # set before the link goes up: no link-local, no RS/MLD
            sh("sysctl", "-q", "-w", f"net.ipv6.conf.{outer}.disable_ipv6=1")
            sh("ip", "netns", "exec", ns, "sysctl", "-q", "-w",
               f"net.ipv6.conf.{inner}.disable_ipv6=1")
            sh("ip", "-n", ns, "link", "set", inner, "up")
            sh("ip", "link", "set", outer, "up")

    def destroy(self) -> list[str]:
        """Remove everything; returns what is still there (should be [])."""
        # Deleting a namespace destroys its veth ends, which destroys the peers.
        for ns in (self.ns_s, self.ns_r):
            sh("ip", "netns", "del", ns, check=False)
        for outer in self.root_ifaces:  # only if a namespace never got its end
            if Path(f"/sys/class/net/{outer}").exists():
                sh("ip", "link", "del", outer, check=False)
        left = [n for n in self.root_ifaces if Path(f"/sys/class/net/{n}").exists()]
        left += [n for n in (self.ns_s, self.ns_r) if Path(f"/run/netns/{n}").exists()]
        return left

    def in_ns(self, ns: str, *cmd: str) -> list[str]:
        return ["ip", "netns", "exec", ns, *cmd]

    def flap_cmd(self, side: str, up: bool) -> list[str]:
        """root: the dataplane's own port dr0; peer: r0 in R (dr0 loses carrier)."""
        state = "up" if up else "down"
        if side == "root":
            return ["ip", "link", "set", self.dr0, state]
        return ["ip", "-n", self.ns_r, "link", "set", self.r0, state]


def write_config(path: Path, topo: FlapTopo, file_prefix: str, run_dir: Path,
                 interval_ms: float = 10.0) -> Path:
    # framecnt: 2048-frame af_packet rings, ~100 ms of the stream at 20 kpps,
    # so a worker descheduled for a while does not drop at the `one` port.
    path.write_text(textwrap.dedent(f"""
        [eal]
        workers = [1]
        hugepages = false
        memory_mb = 256
        file_prefix = "{file_prefix}"
        log_level = "warning"

        [mempool]
        mbufs = 16383
        cache = 64

        [run]
        runtime_dir = "{run_dir}"

        [[ports]]
        name = "lan"
        device = "net_af_packet0,iface={topo.ds},framecnt=2048"

        [[ports]]
        name = "l0"
        device = "net_af_packet1,iface={topo.dr0},framecnt=2048"

        [[ports]]
        name = "l1"
        device = "net_af_packet2,iface={topo.dr1},framecnt=2048"

        [[pipeline]]
        stage = "one2many"
        one = "lan"
        many = ["l0", "l1"]
        xmit = "failover"
        failure = "notify"
        monitor_interval_ms = {interval_ms}
        """))
    return path


# ---- traffic scripts (run inside the namespaces) ------------------------------------

SENDER = r'''
import json, signal, socket, struct, sys, time
iface, rate, dst, out, ready = sys.argv[1], float(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5]
MAGIC, SEQ_OFF, CAP = %(magic)r, %(seq_off)d, 64
stop = False
def on_term(*_):
    global stop
    stop = True
signal.signal(signal.SIGTERM, on_term)
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)   # protocol 0: send only
s.bind((iface, 0))
s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 << 20)
src = bytes.fromhex(open("/sys/class/net/%%s/address" %% iface).read().strip().replace(":", ""))
payload = MAGIC + b"\0" * 4 + b"p" * 14           # 64-byte frames
udp = struct.pack("!HHHH", 40000, %(port)d, 8 + len(payload), 0)
ip = bytearray(struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp) + len(payload), 0, 0x4000,
                           64, 17, 0, bytes([10, 78, 0, 1]), bytes([10, 78, 0, 2])))
c = sum(struct.unpack("!10H", ip)); c = (c & 0xffff) + (c >> 16); c = (c & 0xffff) + (c >> 16)
struct.pack_into("!H", ip, 10, ~c & 0xffff)
frame = bytearray(bytes.fromhex(dst.replace(":", "")) + src + b"\x08\x00" + bytes(ip) + udp + payload)
assert len(frame) == 64 and frame[SEQ_OFF - 4:SEQ_OFF] == MAGIC
seq = errors = slips = 0
batches = []          # [first seq, wall time] per batch: seq -> send time
period = 1e-3
m0 = time.monotonic()
open(ready, "w").write("%%.6f" %% time.time())
while not stop:
    now = time.monotonic()
    due = int((now - m0) * rate) + 1
    if due - seq > CAP:   # fell behind (descheduled): no burst, the schedule slips
        m0 += (due - seq - CAP) / rate
        due = seq + CAP
        slips += 1
    if due > seq:
        batches.append((seq, time.time()))
        while seq < due:
            struct.pack_into("!I", frame, SEQ_OFF, seq)
            try:
                s.send(frame)
            except OSError:
                errors += 1
                break         # not sent: the same sequence number goes next time
            seq += 1
    time.sleep(max(0.0, period - (time.monotonic() - now)))
json.dump({"sent": seq, "errors": errors, "slips": slips, "batches": batches,
           "elapsed": time.monotonic() - m0}, open(out + ".tmp", "w"))
import os; os.rename(out + ".tmp", out)
'''

RECEIVER = r'''
import array, json, signal, socket, struct, sys
out, ready, ifaces = sys.argv[1], sys.argv[2], sys.argv[3:]
MAGIC, SEQ_OFF = %(magic)r, %(seq_off)d
index = {name: i for i, name in enumerate(ifaces)}
stop = False
def on_term(*_):
    global stop
    stop = True
signal.signal(signal.SIGTERM, on_term)
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(3))   # ETH_P_ALL, every interface
s.setsockopt(socket.SOL_SOCKET, getattr(socket, "SO_RCVBUFFORCE", 33), 64 << 20)
s.setsockopt(socket.SOL_SOCKET, getattr(socket, "SO_TIMESTAMPNS", 35), 1)
s.settimeout(0.2)
open(ready, "w").write("ready")
ts, link, seqs = array.array("d"), array.array("b"), array.array("I")
other = outgoing = 0
while True:
    try:
        data, anc, _flags, addr = s.recvmsg(128, 64)
    except socket.timeout:
        if stop:
            break      # quiet for 0.2 s after the stop: drained
        continue
    if addr[2] == 4:                              # PACKET_OUTGOING
        outgoing += 1
        continue
    if len(data) < SEQ_OFF + 4 or data[SEQ_OFF - 4:SEQ_OFF] != MAGIC:
        other += 1
        continue
    t = None
    for level, kind, val in anc:
        if level == socket.SOL_SOCKET and kind == getattr(socket, "SO_TIMESTAMPNS", 35):
            sec, nsec = struct.unpack("qq", val[:16])
            t = sec + nsec * 1e-9
    if t is None:
        import time; t = time.time()
    ts.append(t)
    link.append(index.get(addr[0], -1))
    seqs.append(struct.unpack_from("!I", data, SEQ_OFF)[0])
packets, drops = struct.unpack("II", s.getsockopt(263, 6, 8))   # PACKET_STATISTICS
json.dump({"t": list(ts), "link": list(link), "seq": list(seqs), "other": other,
           "outgoing": outgoing, "socket_drops": drops}, open(out + ".tmp", "w"))
import os; os.rename(out + ".tmp", out)
'''


def write_scripts(d: Path) -> tuple[Path, Path]:
    subst = {"magic": MAGIC, "seq_off": SEQ_OFFSET, "port": UDP_PORT}
    tx, rx = d / "o2m_sender.py", d / "o2m_receiver.py"
    tx.write_text(SENDER % subst)
    rx.write_text(RECEIVER % subst)
    return tx, rx


# ---- observers: kernel link events, the dataplane's log -----------------------------

RTMGRP_LINK = 1
RTM_NEWLINK = 16
IFF_UP = 0x1
IFF_LOWER_UP = 0x10000


class LinkWatcher(threading.Thread):
    """Timestamps RTM_NEWLINK for some root-namespace interfaces. An admin
    up/down is announced synchronously from the ioctl/netlink call that does
    it; carrier-only changes go through linkwatch and can be late (up to 1 s)."""

    def __init__(self, ifnames: list[str]):
        super().__init__(name="o2m-linkwatch", daemon=True)
        self.names = {socket.if_nametoindex(n): n for n in ifnames}
        self.events: list[tuple[float, str, bool, bool]] = []   # (time, name, IFF_UP, LOWER_UP)
        self._halt = threading.Event()
        self.sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, socket.NETLINK_ROUTE)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
        self.sock.bind((0, RTMGRP_LINK))
        self.sock.settimeout(0.1)

    def run(self) -> None:
        while not self._halt.is_set():
            try:
                data = self.sock.recv(65536)
            except socket.timeout:
                continue
            except OSError:
                break
            now = time.time()
            off = 0
            while off + 32 <= len(data):
                nlen, ntype = struct.unpack_from("=IH", data, off)
                if ntype == RTM_NEWLINK:
                    _fam, _pad, _type, idx, flags, _chg = struct.unpack_from("=BBHiII", data, off + 16)
                    if idx in self.names:
                        self.events.append((now, self.names[idx], bool(flags & IFF_UP),
                                            bool(flags & IFF_LOWER_UP)))
                if nlen < 16:
                    break
                off += (nlen + 3) & ~3

    def stop(self) -> None:
        self._halt.set()
        self.join(timeout=2)
        self.sock.close()


LINK_LINE = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) WARNING dataplane\.one2many: "
                       r"one2many (\S+): link (\d+) \((\S+)\) (up|down)\s*$", re.M)
BUNDLE_LINE = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) WARNING dataplane\.one2many: "
                         r"one2many (\S+): bundle (UP|DOWN)", re.M)


def log_time(asctime: str) -> float:
    """logging's asctime (local time, ms truncated) -> epoch seconds."""
    return datetime.strptime(asctime, "%Y-%m-%d %H:%M:%S,%f").timestamp()


def link_log_events(text: str) -> list[dict]:
    return [{"time": log_time(m.group(1)), "one": m.group(2), "link": int(m.group(3)),
             "port": m.group(4), "up": m.group(5) == "up"} for m in LINK_LINE.finditer(text)]


class LogTail:
    """Reads the dataplane's stderr file as it grows."""

    def __init__(self, path: Path):
        self.path = path
        self.text = ""
        self._f = None

    def read(self) -> str:
        if self._f is None:
            if not self.path.exists():
                return self.text
            self._f = self.path.open("r")
        self.text += self._f.read()
        return self.text

    def wait_link_events(self, link: int, up: bool, count: int, timeout: float) -> float | None:
        """Wait until `count` such events are logged; the wall time we saw it."""
        deadline = time.monotonic() + timeout
        while True:
            evs = [e for e in link_log_events(self.read()) if e["link"] == link and e["up"] == up]
            if len(evs) >= count:
                return time.time()
            if time.monotonic() >= deadline:
                return None
            time.sleep(0.002)

    def close(self) -> None:
        if self._f is not None:
            self._f.close()


# ---- the scenario ---------------------------------------------------------------------

class ScenarioError(RuntimeError):
    pass


def _wait_file(path: Path, proc: subprocess.Popen, what: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        if proc.poll() is not None:
            raise ScenarioError(f"{what} exited with {proc.returncode} before it was ready")
        if time.monotonic() > deadline:
            raise ScenarioError(f"{what} not ready within {timeout:.0f} s")
        time.sleep(0.02)


@dataclass
class Scenario:
    """One run: flap link 0 `flaps` times under a `rate` pps stream."""
    workdir: Path
    topo: FlapTopo
    file_prefix: str
    flaps: int = 20
    rate: float = 20000.0
    down_s: float = 0.15
    up_s: float = 0.15
    interval_ms: float = 10.0
    side: str = "root"            # root: `ip link set dr0 down`; peer: r0 in R
    warmup_s: float = 1.0
    tail_s: float = 0.5
    raw: dict = field(default_factory=dict)

    def run(self) -> dict:
        from dataplane.control import request   # the control socket's client only

        wd, t = self.workdir, self.topo
        wd.mkdir(parents=True, exist_ok=True)
        run_dir = wd / "run"
        cfg = write_config(wd / "one2many_flap.toml", t, self.file_prefix, run_dir, self.interval_ms)
        sock = run_dir / f"{self.file_prefix}.sock"
        tx_script, rx_script = write_scripts(wd)
        rx_out, rx_ready = wd / "received.json", wd / "receiver.ready"
        tx_out, tx_ready = wd / "sent.json", wd / "sender.ready"
        dp_out, dp_err = wd / "dataplane.stdout", wd / "dataplane.stderr"
        procs: list[subprocess.Popen] = []
        watcher = LinkWatcher([t.dr0, t.dr1])
        watcher.start()
        tail = LogTail(dp_err)
        flaps: list[dict] = []
        raw = self.raw
        try:
            with (wd / "receiver.stderr").open("w") as err:
                receiver = subprocess.Popen(
                    t.in_ns(t.ns_r, sys.executable, str(rx_script), str(rx_out), str(rx_ready), t.r0, t.r1),
                    stdout=subprocess.DEVNULL, stderr=err)
            procs.append(receiver)
            _wait_file(rx_ready, receiver, "receiver", 15)

            with dp_out.open("w") as out, dp_err.open("w") as err:
                dp = subprocess.Popen([sys.executable, "-m", "dataplane", "-v", "run", str(cfg), "--json"],
                                      stdout=out, stderr=err, stdin=subprocess.DEVNULL)
            procs.append(dp)
            deadline = time.monotonic() + READY_TIMEOUT_S
            while True:
                if dp.poll() is not None:
                    raise ScenarioError(f"dataplane exited with {dp.returncode}:\n{tail.read()}")
                if sock.exists():
                    try:
                        request(sock, "status", timeout=2)
                        break
                    except (OSError, ValueError):
                        pass
                if time.monotonic() > deadline:
                    raise ScenarioError(f"dataplane not ready in {READY_TIMEOUT_S:.0f} s:\n{tail.read()}")
                time.sleep(0.05)
            raw["dpdk_link_at_start"] = {n: request(sock, "ports")[n]["link"].get("up")
                                         for n in ("lan", "l0", "l1")}

            with (wd / "sender.stderr").open("w") as err:
                sender = subprocess.Popen(
                    t.in_ns(t.ns_s, sys.executable, str(tx_script), t.s, str(self.rate), DST_MAC,
                            str(tx_out), str(tx_ready)),
                    stdout=subprocess.DEVNULL, stderr=err)
            procs.append(sender)
            _wait_file(tx_ready, sender, "sender", 15)
            time.sleep(self.warmup_s)
            s0 = request(sock, "one2many.getstats", {"link": 0})
            if s0["tx_packets"] == 0:
                raise ScenarioError(f"no traffic on link 0 after {self.warmup_s} s warm-up: "
                                    f"{request(sock, 'stats')['one2many']}")

            eth_l0 = [request(sock, "ports")["l0"]["eth"]]
            for k in range(self.flaps):
                f: dict = {"k": k}
                f["down_cmd"] = time.time()
                sh(*t.flap_cmd(self.side, up=False))
                f["down_cmd_end"] = time.time()
                seen = tail.wait_link_events(0, False, k + 1, timeout=self.down_s)
                f["down_seen"] = seen
                if seen is not None:
                    # Past the log line by more than one burst: the mask is out.
                    time.sleep(0.02)
                    f["l0_tx_after_detect"] = request(sock, "one2many.getstats", {"link": 0})["tx_packets"]
                    l0 = request(sock, "ports")["l0"]
                    f["dpdk_link_l0_down"] = l0["link"].get("up")
                    f["l0_oerrors_at_down"] = l0["eth"]["oerrors"] - eth_l0[-1]["oerrors"]
                    f["carrier_dr0_down"] = _sysfs(t.dr0, "carrier")
                    f["operstate_dr0_down"] = _sysfs(t.dr0, "operstate")
                _sleep_until(f["down_cmd_end"] + self.down_s)
                if seen is not None:
                    f["l0_tx_before_up"] = request(sock, "one2many.getstats", {"link": 0})["tx_packets"]
                f["up_cmd"] = time.time()
                sh(*t.flap_cmd(self.side, up=True))
                f["up_cmd_end"] = time.time()
                f["up_seen"] = tail.wait_link_events(0, True, k + 1, timeout=self.up_s)
                _sleep_until(f["up_cmd_end"] + self.up_s)
                eth_l0.append(request(sock, "ports")["l0"]["eth"])
                f["l0_oerrors"] = eth_l0[-1]["oerrors"] - eth_l0[-2]["oerrors"]
                f["l0_opackets"] = eth_l0[-1]["opackets"] - eth_l0[-2]["opackets"]
                flaps.append(f)
            raw["flaps"] = flaps
            time.sleep(self.tail_s)
            raw["o2m_live"] = request(sock, "stats")["one2many"]

            kill_proc(sender, signal.SIGTERM, wait=10)
            if not tx_out.exists():
                raise ScenarioError(f"sender wrote no result (rc {sender.returncode}): "
                                    f"{(wd / 'sender.stderr').read_text()}")
            time.sleep(0.3)   # the last frames cross the dataplane
            kill_proc(receiver, signal.SIGTERM, wait=15)
            if not rx_out.exists():
                raise ScenarioError(f"receiver wrote no result (rc {receiver.returncode}): "
                                    f"{(wd / 'receiver.stderr').read_text()}")
            time.sleep(0.3)   # the last snapshot (every 0.25 s)
            t0 = time.monotonic()
            dp.send_signal(signal.SIGINT)
            try:
                rc = dp.wait(timeout=STOP_GUARD_S)
            except subprocess.TimeoutExpired:
                raise ScenarioError(f"dataplane did not exit within {STOP_GUARD_S:.0f} s of SIGINT")
            raw["dp_rc"], raw["dp_stop_s"] = rc, time.monotonic() - t0
            raw["stderr"] = tail.read()
            try:
                raw["final"] = json.loads(dp_out.read_text())
            except json.JSONDecodeError as e:
                raise ScenarioError(f"--json output is not JSON ({e}):\n{dp_out.read_text()[:2000]}"
                                    f"\nstderr:\n{raw['stderr'][-3000:]}")
            raw["sent"] = json.loads(tx_out.read_text())
            raw["received"] = json.loads(rx_out.read_text())
            raw["netlink"] = list(watcher.events)
            raw["dr0"] = t.dr0
            raw["params"] = {"flaps": self.flaps, "rate": self.rate, "down_s": self.down_s,
                             "up_s": self.up_s, "interval_ms": self.interval_ms, "side": self.side}
            # everything but what sent.json / received.json / dataplane.* hold
            (wd / "scenario.json").write_text(json.dumps(
                {k: v for k, v in raw.items() if k not in ("sent", "received", "stderr", "final")},
                default=str))
            return raw
        finally:
            for p in reversed(procs):
                kill_proc(p, signal.SIGKILL if p is not procs[0] else signal.SIGTERM)
            watcher.stop()
            tail.close()
            shutil.rmtree(DPDK_RUN_ROOT / self.file_prefix, ignore_errors=True)


def _sleep_until(t_wall: float) -> None:
    d = t_wall - time.time()
    if d > 0:
        time.sleep(d)


def _sysfs(iface: str, attr: str) -> str:
    try:
        return (Path("/sys/class/net") / iface / attr).read_text().strip()
    except OSError as e:
        return f"<{e.strerror}>"


# ---- analysis -------------------------------------------------------------------------

def analyze(raw: dict) -> dict:
    """Per-flap figures and totals from one scenario's raw record."""
    p = raw["params"]
    rate, side = p["rate"], p["side"]
    sent = raw["sent"]
    n_sent = sent["sent"]
    b_seq = [b[0] for b in sent["batches"]]
    b_t = [b[1] for b in sent["batches"]]

    def send_time(seq: int) -> float:
        i = bisect.bisect_right(b_seq, seq) - 1
        return b_t[max(i, 0)]

    rx = raw["received"]
    t_rx, l_rx, s_rx = rx["t"], rx["link"], rx["seq"]
    counts = Counter(s_rx)
    dups = {s: c for s, c in counts.items() if c > 1}
    unknown = sorted(s for s in counts if s >= n_sent)
    missing = sorted(set(range(n_sent)) - set(counts))
    miss_t = [send_time(s) for s in missing]

    logs = link_log_events(raw["stderr"])
    downs = [e["time"] for e in logs if e["link"] == 0 and not e["up"]]
    ups = [e["time"] for e in logs if e["link"] == 0 and e["up"]]
    link1_events = [e for e in logs if e["link"] != 0]

    # arrivals per link, in time order, for window counts
    by_link: dict[int, list[tuple[float, int]]] = {0: [], 1: []}
    for t, ln, s in zip(t_rx, l_rx, s_rx):
        by_link.setdefault(ln, []).append((t, s))
    for v in by_link.values():
        v.sort()
    t_l0 = [x[0] for x in by_link[0]]
    t_l1 = [x[0] for x in by_link[1]]
    # frames (receive index) that arrived more than LATE_S after they were sent
    late = [i for i, (t, s) in enumerate(zip(t_rx, s_rx)) if t - send_time(s) > LATE_S]

    netlink, dr0 = raw.get("netlink", []), raw.get("dr0")

    def kernel_time(up: bool, after: float, before: float) -> float | None:
        if side != "root":
            return None    # carrier-only changes are announced late (linkwatch)
        for t, n, admin, carrier in netlink:
            if n == dr0 and after <= t <= before and (admin and carrier) == up:
                return t
        return None

    flaps = []
    fl = raw["flaps"]
    for i, f in enumerate(fl):
        nxt = fl[i + 1]["down_cmd"] if i + 1 < len(fl) else float("inf")
        r: dict = {"k": f["k"], "cmd_down_ms": 1e3 * (f["down_cmd_end"] - f["down_cmd"]),
                   "cmd_up_ms": 1e3 * (f["up_cmd_end"] - f["up_cmd"])}
        # the monitor's log line for this down / up: the first after the command
        d_log = next((t for t in downs if t >= f["down_cmd"] - 0.001 and t < f["up_cmd"] + 0.001), None)
        u_log = next((t for t in ups if t >= f["up_cmd"] - 0.001 and t < nxt), None)
        k_down = kernel_time(False, f["down_cmd"], f["down_cmd_end"] + 0.05)
        k_up = kernel_time(True, f["up_cmd"], f["up_cmd_end"] + 0.05)
        r["kernel_down"] = k_down is not None
        ref_down = k_down if k_down is not None else f["down_cmd_end"]
        ref_up = k_up if k_up is not None else f["up_cmd_end"]
        r["detect_down_ms"] = None if d_log is None else 1e3 * (d_log - ref_down)
        r["detect_down_from_cmd_ms"] = None if d_log is None else 1e3 * (d_log - f["down_cmd"])
        r["detect_up_ms"] = None if u_log is None else 1e3 * (u_log - ref_up)
        r["detect_up_from_cmd_ms"] = None if u_log is None else 1e3 * (u_log - f["up_cmd"])
        # the stream on the wire: first frame on link 1 after the down
        j = bisect.bisect_left(t_l1, f["down_cmd"])
        r["first_l1_ms"] = (1e3 * (t_l1[j] - ref_down)) if j < len(t_l1) and t_l1[j] < f["up_cmd_end"] else None
        # link 0 after the detection and before the up command: nothing but
        # what was already in flight when the monitor logged the change
        if d_log is not None:
            a, b = bisect.bisect_left(t_l0, d_log), bisect.bisect_left(t_l0, f["up_cmd"])
            win = by_link[0][a:b]
            r["l0_arrivals_down"] = len(win)
            r["l0_sent_after_detect"] = sum(1 for _, s in win if send_time(s) > d_log + IN_FLIGHT_SLACK_S)
        else:
            r["l0_arrivals_down"] = r["l0_sent_after_detect"] = None
        if f.get("l0_tx_after_detect") is not None:
            r["l0_tx_counter_while_down"] = f["l0_tx_before_up"] - f["l0_tx_after_detect"]
        else:
            r["l0_tx_counter_while_down"] = None
        r["dpdk_link_l0_while_down"] = f.get("dpdk_link_l0_down")
        # sequence gaps: frames sent in this flap's window (its down command to
        # the next flap's), split at the up command
        lo = bisect.bisect_left(miss_t, f["down_cmd"] - 0.01)
        mid = bisect.bisect_left(miss_t, f["up_cmd"])
        hi = bisect.bisect_left(miss_t, nxt - 0.01)
        r["lost_down"], r["lost_up"] = mid - lo, hi - mid
        r["lost"] = hi - lo
        # frames sent while link 0 was down but not yet detected: the stream's
        # in-flight budget for this flap
        r["in_flight_budget"] = (None if d_log is None
                                 else int(rate * max(0.0, d_log + IN_FLIGHT_SLACK_S - ref_down)) + 64)
        r["_win"] = (f["down_cmd"], ref_down, d_log, f["up_cmd"], u_log if u_log is not None
                     else f["up_cmd_end"], nxt)
        r["l0_oerrors"] = f.get("l0_oerrors")
        # of which counted by the time the down was detected (the rest: at the up)
        r["l0_oerrors_at_down"] = f.get("l0_oerrors_at_down")
        r["carrier_dr0_while_down"] = f"{f.get('carrier_dr0_down')}/{f.get('operstate_dr0_down')}"
        flaps.append(r)

    # Reordering. Frames put on link 0 between a down and its detection sit
    # in dr0's af_packet TX ring and leave with the first transmit after the
    # monitor saw link 0 up again: behind the link 1 frames sent meanwhile,
    # i.e. out of order ("held"). They are recognised by where and when they
    # arrive: on link 0, from that flap's up command to shortly after its up
    # log line. Any other frame arriving after a higher sequence number is
    # reordering the bundle caused. (A stalled worker delays frames, but in
    # order: that is "late", not reordered.)
    for r in flaps:
        r["held"] = r["reordered_other"] = 0
        r["held_max_ms"] = 0.0
    starts = [r["_win"][0] for r in flaps]
    top = -1
    reordered: set[int] = set()
    for i, (ta, ln, sq) in enumerate(zip(t_rx, l_rx, s_rx)):   # the receiver socket's queue order
        if sq > top:
            top = sq
            continue
        reordered.add(i)
        owner = next((r for r in flaps if ln == 0 and r["_win"][3] <= ta <= r["_win"][4] + 0.1), None)
        if owner is not None:
            owner["held"] += 1
            owner["held_max_ms"] = max(owner["held_max_ms"], 1e3 * (ta - send_time(sq)))
        elif flaps:
            flaps[max(bisect.bisect_right(starts, ta) - 1, 0)]["reordered_other"] += 1
    for r in flaps:
        del r["_win"]
    late_in_order = sum(1 for i in late if i not in reordered)
    late_max_ms = max((1e3 * (t_rx[i] - send_time(s_rx[i])) for i in late), default=0.0)

    first_flap = fl[0]["down_cmd"] - 0.01 if fl else float("inf")
    final = raw["final"]
    o2m = final["one2many"][0]
    return {
        "params": p,
        "sent": n_sent, "sender_errors": sent["errors"], "sender_slips": sent["slips"],
        "sender_rate": n_sent / sent["elapsed"] if sent["elapsed"] else 0.0,
        "received": len(s_rx), "distinct": len(counts), "duplicates": sum(c - 1 for c in dups.values()),
        "dup_examples": sorted(dups)[:10], "unknown": unknown[:10],
        "lost": len(missing), "lost_baseline": bisect.bisect_left(miss_t, first_flap),
        # where: before the bundle (S's veth, ds's af_packet RX ring: the
        # worker did not poll in time) or in/after it (the failover itself)
        "ingress_lost": max(0, n_sent - o2m["one"]["rx_packets"]),
        "bundle_lost": max(0, o2m["one"]["rx_packets"] - len(counts)),
        "missing_examples": missing[:20],
        "reordered": len(reordered), "held": sum(r["held"] for r in flaps),
        "reordered_other": sum(r["reordered_other"] for r in flaps),
        "late": len(late), "late_in_order": late_in_order, "late_max_ms": late_max_ms,
        "receiver_socket_drops": rx["socket_drops"], "receiver_other": rx["other"],
        "rx_per_link": {str(k): len(v) for k, v in by_link.items()},
        "log_downs": len(downs), "log_ups": len(ups), "log_link1": len(link1_events),
        "bundle_lines": len(BUNDLE_LINE.findall(raw["stderr"])),
        "o2m": o2m, "ports": {n: {k: final["ports"][n].get(k) for k in ("rx", "tx", "tx_dropped", "link")}
                              | {"eth": final["ports"][n].get("eth", {})} for n in ("lan", "l0", "l1")},
        "totals": {k: v for k, v in final["totals"].items() if k != "drops"},
        "drops": {k: v for k, v in final["totals"]["drops"].items() if v},
        "dp_rc": raw["dp_rc"], "dp_stop_s": raw["dp_stop_s"],
        "dpdk_link_at_start": raw.get("dpdk_link_at_start"),
        "flaps": flaps,
    }


def _stats(xs: list[float]) -> str:
    xs = [x for x in xs if x is not None]
    if not xs:
        return "n/a"
    q = statistics.quantiles(xs, n=100, method="inclusive") if len(xs) > 1 else [xs[0]] * 99
    return (f"min {min(xs):.1f}  p50 {statistics.median(xs):.1f}  p90 {q[89]:.1f}  "
            f"max {max(xs):.1f}  (n={len(xs)})")


def report(an: dict) -> list[str]:
    p = an["params"]
    out = [f"one2many failover: {p['flaps']} flaps of link 0 ({p['side']} side), "
           f"{p['down_s'] * 1e3:.0f} ms down / {p['up_s'] * 1e3:.0f} ms up, "
           f"stream {p['rate']:.0f} pps (achieved {an['sender_rate']:.0f}), "
           f"monitor every {p['interval_ms']:g} ms",
           " flap  det_down (from cmd)  det_up (from cmd)  first_l1  lost(dn/up)  budget  held(max ms) reord"
           "  l0_oerrors(dn)  l0_rx_down  l0_tx_ctr  dpdk_l0  dr0 carrier/operstate"]

    def ms(x):
        return "   -  " if x is None else f"{x:6.1f}"

    def n(x, w):
        return f"{'-' if x is None else x:>{w}}"

    for r in an["flaps"]:
        out.append(f" {r['k']:4d}  {ms(r['detect_down_ms'])}   {ms(r['detect_down_from_cmd_ms'])}  "
                   f"{ms(r['detect_up_ms'])}  {ms(r['detect_up_from_cmd_ms'])}    {ms(r['first_l1_ms'])}  "
                   f"{r['lost']:5d} ({r['lost_down']}/{r['lost_up']})  {r['in_flight_budget'] or 0:6d}  "
                   f"{r['held']:4d} ({r['held_max_ms']:4.0f})  {r['reordered_other']:5d}  {n(r['l0_oerrors'], 5)} ({n(r['l0_oerrors_at_down'], 5)})  "
                   f"{n(r['l0_arrivals_down'], 10)}  {n(r['l0_tx_counter_while_down'], 9)}  "
                   f"{str(r['dpdk_link_l0_while_down']):>7}  {r['carrier_dr0_while_down']}")
    fl = an["flaps"]
    ref = "kernel RTM_NEWLINK" if p["side"] == "root" else "ip command end"
    out += [
        f"detection down, {ref} -> log line (ms): {_stats([r['detect_down_ms'] for r in fl])}",
        f"detection down, ip command start -> log line (ms): {_stats([r['detect_down_from_cmd_ms'] for r in fl])}",
        f"detection up,   {ref} -> log line (ms): {_stats([r['detect_up_ms'] for r in fl])}",
        f"first frame on link 1 after the down (ms): {_stats([r['first_l1_ms'] for r in fl])}",
        f"lost per flap: {_stats([r['lost'] for r in fl])}; at down {sum(r['lost_down'] for r in fl)},"
        f" at up {sum(r['lost_up'] for r in fl)}",
        f"sent {an['sent']}  received {an['received']} (distinct {an['distinct']})  "
        f"lost {an['lost']} (before the first flap {an['lost_baseline']}; before the bundle "
        f"{an['ingress_lost']}, in or after it {an['bundle_lost']})  "
        f"duplicates {an['duplicates']}  out of order {an['reordered']}: held in dr0's TX ring over "
        f"a down and sent after the up {an['held']} (per flap: {_stats([r['held'] for r in fl])}), "
        f"other {an['reordered_other']}",
        f"late (> {LATE_S * 1e3:.0f} ms after sending) {an['late']}, of which in order (stalls, not "
        f"the bundle) {an['late_in_order']}; longest {an['late_max_ms']:.0f} ms",
        "timestamps: log lines are truncated to the ms; " + (
            "RTM_NEWLINK is stamped when a Python thread reads it (can be ~1-2 ms late)"
            if p["side"] == "root" else "the ip command ends after the change it makes")
        + ", so small negative detections are clock noise",
        f"receiver: per link {an['rx_per_link']}, socket drops {an['receiver_socket_drops']}, "
        f"other frames {an['receiver_other']}; sender errors {an['sender_errors']}, "
        f"schedule slips {an['sender_slips']}",
        f"bundle: link_events {an['o2m']['link_events']}, notifications {an['o2m']['notifications']}, "
        f"link_up {an['o2m']['link_up']}; log lines link0 down {an['log_downs']} up {an['log_ups']}, "
        f"link1 {an['log_link1']}, bundle UP/DOWN {an['bundle_lines']}",
        "per-link stats: " + json.dumps({k: {f: v[f] for f in ('rx_packets', 'tx_packets')}
                                         for k, v in an['o2m']['many'].items()})
        + f"  one rx {an['o2m']['one']['rx_packets']}",
        "ports: " + json.dumps({n: {"tx": v["tx"], "tx_dropped": v["tx_dropped"],
                                    "opackets": v["eth"].get("opackets"),
                                    "oerrors": v["eth"].get("oerrors"),
                                    "link_up": (v["link"] or {}).get("up")}
                                for n, v in an["ports"].items()}),
        f"DPDK link status: at start {an['dpdk_link_at_start']}, l0 while down "
        f"{sorted({str(r['dpdk_link_l0_while_down']) for r in fl})}",
        f"dataplane totals {json.dumps(an['totals'])} drops {json.dumps(an['drops'])}",
    ]
    return out


# ---- the test ---------------------------------------------------------------------------

@pytest.fixture
def flap_topo():
    if shutil.which("ip") is None:
        pytest.skip("iproute2 (ip) not installed")
    t = FlapTopo.new()
    try:
        t.create()
        yield t
    finally:
        left = t.destroy()
        assert not left, f"topology not cleaned up: {left}"


@pytest.mark.netns
@pytest.mark.timeout(180)
def test_failover_bundle_survives_20_flaps_of_link0(tmp_path, flap_topo, file_prefix):
    sc = Scenario(workdir=tmp_path, topo=flap_topo, file_prefix=file_prefix,
                  flaps=20, rate=20000.0, down_s=0.15, up_s=0.15, interval_ms=10.0, side="root")
    try:
        raw = sc.run()
    except ScenarioError as e:
        pytest.fail(str(e))
    an = analyze(raw)
    print()
    for line in report(an):
        print("[o2m-flap]", line)
    (tmp_path / "analysis.json").write_text(json.dumps(an, indent=1, default=str))

    n = sc.flaps
    fl = an["flaps"]
    assert an["dp_rc"] == 0, f"dataplane exit {an['dp_rc']}\n{raw['stderr'][-3000:]}"
    assert an["sent"] > 0.5 * sc.rate * n * (sc.down_s + sc.up_s), an["sent"]
    # 1. No frame delivered twice (failover sends each packet on one link).
    assert an["duplicates"] == 0, f"{an['duplicates']} duplicates, e.g. {an['dup_examples']}"
    assert not an["unknown"], f"sequence numbers never sent: {an['unknown']}"
    # 2. The monitor saw every down and every up of link 0, and nothing on link 1.
    missed = [r["k"] for r in fl if r["detect_down_ms"] is None or r["detect_up_ms"] is None]
    assert not missed, f"flaps whose down or up was not logged: {missed}"
    assert (an["log_downs"], an["log_ups"], an["log_link1"]) == (n, n, 0), an
    # 3. Once the down was detected, nothing new went to link 0 until the up:
    #    not on the wire (receiver, r0) and not in the bundle's link 0 counter.
    bad = [(r["k"], r["l0_sent_after_detect"]) for r in fl if r["l0_sent_after_detect"]]
    assert not bad, f"frames sent on link 0 after its down was detected (flap, count): {bad}"
    ctr = [(r["k"], r["l0_tx_counter_while_down"]) for r in fl if r["l0_tx_counter_while_down"]]
    assert not ctr, f"link 0 tx_packets grew while it was down and detected (flap, count): {ctr}"
    # Frames out of order are all ones the dataplane put on link 0 before it
    # saw the down: dr0's af_packet TX ring keeps them (the PMD's kick fails
    # with ENETDOWN) and the kernel sends them once dr0 is up and the bundle
    # transmits on it again. Any other reordering the bundle caused.
    assert an["reordered_other"] == 0, \
        [(r["k"], r["reordered_other"]) for r in fl if r["reordered_other"]]
    # ... and the stream did move to link 1 in every down window.
    assert all(r["first_l1_ms"] is not None for r in fl), [r["first_l1_ms"] for r in fl]
    # 4. The bundle: every change counted, link 1 kept it up the whole time.
    o2m = an["o2m"]
    assert o2m["link_events"] == 2 * n, o2m
    assert o2m["notifications"] == {"up": 0, "down": 0}, o2m
    assert an["bundle_lines"] == 0
    assert o2m["link_up"] == [True, True], o2m
    assert o2m["many"]["l0"]["tx_packets"] + o2m["many"]["l1"]["tx_packets"] == \
        o2m["one"]["rx_packets"], o2m
    # 5. Accounting: every sent sequence number is received or lost, and the
    #    loss is bounded by what was in flight between the down and its
    #    detection (plus one sender batch per flap).
    assert an["distinct"] + an["lost"] == an["sent"], an
    #    Frames that never reached the bundle (the worker did not empty ds's
    #    af_packet ring in time: a host stall, not the failover) are printed,
    #    not held against it; they also make per-flap attribution impossible.
    budget = sum(r["in_flight_budget"] for r in fl)
    print(f"[o2m-flap] lost {an['lost']} of {an['sent']}: before the bundle {an['ingress_lost']}, "
          f"in or after it {an['bundle_lost']} (bound: in-flight budget {budget} over {n} flaps)")
    assert an["bundle_lost"] <= budget, f"bundle lost {an['bundle_lost']} > in-flight budget {budget}"
    if an["ingress_lost"] == 0:
        over = [(r["k"], r["lost"], r["in_flight_budget"]) for r in fl if r["lost"] > r["in_flight_budget"]]
        assert not over, f"flaps losing more than was in flight (flap, lost, budget): {over}"
    else:
        print(f"[o2m-flap] per-flap loss bound not checked: {an['ingress_lost']} frames were lost "
              f"before the bundle (host stall), so gaps cannot be pinned on a flap")
    # 6. Sanity only on timing (shared, noisy machine).
    slow = [(r["k"], round(r["detect_down_ms"]), round(r["detect_up_ms"])) for r in fl
            if max(r["detect_down_ms"], r["detect_up_ms"]) > DETECT_SANITY_S * 1e3]
    assert not slow, f"detection slower than {DETECT_SANITY_S} s (flap, down ms, up ms): {slow}"
    assert not (DPDK_RUN_ROOT / file_prefix).exists()
