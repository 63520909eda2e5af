#!/usr/bin/env python3
"""NetFlow probes side by side: the dataplane's netflow stage, softflowd
(`softflowd -r`) and pmacctd (nfprobe plugin, `pcap_savefile`) read the same
pcap once, each exports NetFlow v9 to its own nfcapd on 127.0.0.1, and nfdump
reads every collector back: the flow sets must be identical (keys, packets,
bytes), and each probe's packets per CPU-second are compared as a ratio.

Traffic: a pcap of N distinct IPv4 TCP/UDP flows (default 1,000,000), 2 to 4
packets each (3 on average), sent in interleaved passes (pass j carries packet
j of every flow that has one, the flows in a strided order), no FIN/RST, 1 us
apart (a few seconds in all, far below every probe's timeouts, which are
3600 s here). See bench/README.md.
"""
from __future__ import annotations

import argparse
import csv
import io
import json
import math
import os
import shutil
import signal
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))
from common import (DPDK_RUN, MAIN_CPU, WORKER_CPU, last_json, pcap_to_null_toml,  # noqa: E402
                    require_hugepages, unique_prefix)
from netflow import wait_rusage  # noqa: E402
from tests import collectors  # noqa: E402

RESULT_MARK = "NETFLOW_PEERS_RESULT "
PCAP_DIR = Path("/tmp")
TIMEOUT_S = 3600               # every probe's flow timeouts: nothing expires by time
DATA_ROOM = 256                # 128 B headroom + 128 B data: the largest frame is 123 B
MBUFS = 65535                  # the file is read once (no infinite_rx): no preloaded copy
MBUF_BYTES = 64 + 128 + DATA_ROOM
FLOW_BYTES_BUDGET = 256        # EAL memory planned per max_flows slot
EAL_SLACK_MB = 512
MAX_FLOWS = 1 << 24            # flow i has source address 10.0.0.0 + i
PEERS = ("ours", "ours-net_pcap", "softflowd", "pmacctd")
TITLES = {"ours": "dataplane netflow stage, pcap_file reader",
          "ours-net_pcap": "dataplane netflow stage, DPDK net_pcap (libpcap) reader",
          "softflowd": "softflowd -r", "pmacctd": "pmacctd nfprobe"}
READER = {"ours": "pcap_file", "ours-net_pcap": "net_pcap"}

# ---- traffic -----------------------------------------------------------------

PCAP_GLOBAL = struct.Struct("<IHHiIII")
PCAP_RECORD = struct.Struct("<IIII")
ETH = struct.Struct("!6s6sH")
IPV4 = struct.Struct("!BBHHHBBHII")
TCP = struct.Struct("!HHIIBBHHH")
UDP = struct.Struct("!HHHH")
TCP_SYN, TCP_ACK_PSH = 0x02, 0x18
T0 = 1_700_000_000             # first packet's time (2023-11-14), 1 us between packets
STRIDE = 7919 * 7907           # visit order in a pass: flow (s * STRIDE + j) mod N


def flow_params(i: int) -> tuple[int, int, int, int, int, int]:
    """Flow i: (proto, src, dst, sport, dport, packets). Keys differ by source."""
    proto = 6 if i % 2 == 0 else 17
    src = 0x0A000000 | i
    dst = 0xAC100000 | ((i * 2654435761) >> 12 & 0xFFFFF)   # 172.16.0.0/12
    sport = 1024 + (i * 7 % 60000)
    dport = (443, 53, 80, 123, 8080, 5353)[i % 6]
    packets = 2 + i % 3
    return proto, src, dst, sport, dport, packets


def payload_len(i: int, j: int) -> int:
    """Payload of packet j of flow i: 0..63 bytes over a floor that keeps every
    frame >= 60 bytes (no Ethernet padding: IP length = frame length - 14)."""
    return (i * 31 + j * 17) % 64


def ip_len(proto: int, pay: int) -> int:
    return 20 + (20 + 6 + pay if proto == 6 else 8 + 18 + pay)


def frame(i: int, j: int, params) -> bytes:
    proto, src, dst, sport, dport, _ = params
    pay = payload_len(i, j)
    total = ip_len(proto, pay)
    c = 0x4500 + total + (64 << 8 | proto) + (src >> 16) + (src & 0xFFFF) + (dst >> 16) + (dst & 0xFFFF)
    c = (c & 0xFFFF) + (c >> 16)
    c = (c & 0xFFFF) + (c >> 16)
    head = ETH.pack(b"\x02\0\0\0\0\x02", b"\x02\0\0\0\0\x01", 0x0800) + \
        IPV4.pack(0x45, 0, total, i & 0xFFFF, 0, 64, proto, ~c & 0xFFFF, src, dst)
    if proto == 6:
        flags = TCP_SYN if j == 0 else TCP_ACK_PSH
        l4 = TCP.pack(sport, dport, 1000 + j * 100, 0, 5 << 4, flags, 65535, 0, 0)
        body = bytes(6 + pay)
    else:
        l4 = UDP.pack(sport, dport, 8 + 18 + pay, 0)
        body = bytes(18 + pay)
    return head + l4 + body


def stride(flows: int) -> int:
    s = STRIDE % flows or 1
    while math.gcd(s, flows) != 1:
        s += 1
    return s


def expected_flows(flows: int) -> dict[tuple, list[int]]:
    """The flow set the pcap holds: (src, dst, sport, dport, proto) -> [packets, bytes (IP length)]."""
    out = {}
    for i in range(flows):
        proto, src, dst, sport, dport, k = flow_params(i)
        out[(src, dst, sport, dport, proto)] = [k, sum(ip_len(proto, payload_len(i, j)) for j in range(k))]
    return out


def pcap_path(flows: int) -> Path:
    return PCAP_DIR / f"dp_netflow_peers_{flows}.pcap"


def make_pcap(flows: int) -> tuple[Path, int, float]:
    """Write (or reuse) the pcap; return (path, packets, span in seconds)."""
    path = pcap_path(flows)
    params = [flow_params(i) for i in range(flows)]
    packets = sum(p[5] for p in params)
    size = PCAP_GLOBAL.size + sum(p[5] * PCAP_RECORD.size + sum(14 + ip_len(p[0], payload_len(i, j))
                                                               for j in range(p[5]))
                                  for i, p in enumerate(params))
    span = (packets - 1) / 1e6
    if path.exists() and path.stat().st_size == size:
        return path, packets, span
    t0 = time.monotonic()
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    step = stride(flows)
    with open(tmp, "wb") as f:
        f.write(PCAP_GLOBAL.pack(0xA1B2C3D4, 2, 4, 0, 0, 65535, 1))  # usec, Ethernet
        buf = bytearray()
        t = 0
        for j in range(4):
            for s in range(flows):
                i = (s * step + j) % flows
                p = params[i]
                if j >= p[5]:
                    continue
                fr = frame(i, j, p)
                buf += PCAP_RECORD.pack(T0 + t // 1_000_000, t % 1_000_000, len(fr), len(fr))
                buf += fr
                t += 1
                if len(buf) >= 1 << 22:
                    f.write(buf)
                    buf.clear()
        f.write(buf)
    tmp.rename(path)
    if path.stat().st_size != size:
        raise RuntimeError(f"{path}: {path.stat().st_size} bytes, expected {size}")
    print(f"wrote {path} ({flows:,} flows, {packets:,} packets) in {time.monotonic() - t0:.1f} s",
          file=sys.stderr, flush=True)
    return path, packets, span


# ---- collectors: nfcapd, read back with nfdump --------------------------------------

PROTO_NUM = {"TCP": 6, "UDP": 17, "ICMP": 1}


def ip4(s: str) -> int:
    a, b, c, d = s.split(".")
    return int(a) << 24 | int(b) << 16 | int(c) << 8 | int(d)


def read_flows(cap: collectors.Nfcapd) -> tuple[dict[tuple, list[int]], int, dict]:
    """nfdump -R DIR -o csv, summed per (src, dst, sport, dport, proto):
    ({key: [packets, bytes, records]}, records, nfdump -I stats)."""
    stats = cap.stats()
    if not cap.files():
        return {}, 0, stats
    p = subprocess.run(["nfdump", "-R", str(cap.dir), "-o", "csv", "-q"], capture_output=True,
                       text=True, check=True)
    out: dict[tuple, list[int]] = {}
    records = 0
    for row in csv.reader(io.StringIO(p.stdout)):
        if len(row) < 13 or row[0] == "ts" or not row[3][:1].isdigit():
            continue  # header, summary lines
        proto = PROTO_NUM.get(row[7].strip())
        if proto is None:
            proto = int(row[7])
        key = (ip4(row[3]), ip4(row[4]), int(row[5]), int(row[6]), proto)
        v = out.get(key)
        if v is None:
            out[key] = [int(row[11]), int(row[12]), 1]
        else:
            v[0] += int(row[11])
            v[1] += int(row[12])
            v[2] += 1
        records += 1
    return out, records, stats


def udp_queue(port: int) -> tuple[int, int]:
    """(rx_queue bytes, drops) of the UDP socket on 127.0.0.1:port, from /proc/net/udp."""
    local = f"0100007F:{port:04X}"
    for line in Path("/proc/net/udp").read_text().splitlines()[1:]:
        cols = line.split()
        if cols[1] == local:
            return int(cols[4].split(":")[1], 16), int(cols[-1])
    return 0, 0


class Relay:
    """Between a probe and its nfcapd: a UDP socket with a 512 MB receive
    buffer (SO_RCVBUFFORCE) that takes whatever the probe sends, and a thread
    (on cpu MAIN_CPU) that forwards each datagram, in order, from one socket,
    to nfcapd, waiting while nfcapd's socket holds more than RELAY_QUEUE
    bytes. nfcapd's receive buffer is capped by net.core.rmem_max (4 MB here,
    8 MB granted) and softflowd sends its 1M-flow flush unpaced: sent straight
    to nfcapd, datagrams are dropped (--direct shows it). The relay changes
    no byte of a datagram."""

    QUEUE = 1 << 20

    def __init__(self, cap: collectors.Nfcapd):
        import socket
        import threading
        self.cap = cap
        self.rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.rx.setsockopt(socket.SOL_SOCKET, getattr(socket, "SO_RCVBUFFORCE", 33), 512 << 20)
        self.rx.bind(("127.0.0.1", 0))
        self.rx.settimeout(0.05)
        self.port = self.rx.getsockname()[1]
        self.tx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.tx.bind(("127.0.0.1", 0))
        self.datagrams = self.waits = 0
        self.last_arrival = self.last_empty = time.monotonic()
        self._stop = False
        self._t = threading.Thread(target=self._run, daemon=True)
        self._t.start()

    def nfcapd_queue(self) -> tuple[int, int]:
        return udp_queue(self.cap.port)

    def _run(self) -> None:
        import socket
        os.sched_setaffinity(0, {MAIN_CPU})  # this thread only
        dest = ("127.0.0.1", self.cap.port)
        while not self._stop:
            try:
                d = self.rx.recv(65535)
            except socket.timeout:
                self.last_empty = time.monotonic()
                continue
            except OSError:
                return
            self.last_arrival = time.monotonic()
            if self.datagrams % 8 == 0:
                while self.nfcapd_queue()[0] > self.QUEUE and not self._stop:
                    self.waits += 1
                    time.sleep(0.0005)
            self.tx.sendto(d, dest)
            self.datagrams += 1

    def wait_quiet(self, settle: float = 0.5, timeout: float = 300) -> None:
        """Until the relay's socket was found empty `settle` s after the last datagram."""
        deadline = time.monotonic() + timeout
        while self.last_empty < self.last_arrival + settle:
            if time.monotonic() > deadline:
                raise TimeoutError("relay: datagrams kept arriving")
            time.sleep(0.05)

    def close(self) -> None:
        self._stop = True
        self._t.join()
        self.rx.close()
        self.tx.close()


def fmt_key(k: tuple) -> str:
    src, dst, sport, dport, proto = k
    q = lambda a: ".".join(str(a >> s & 255) for s in (24, 16, 8, 0))  # noqa: E731
    return f"{q(src)}:{sport} -> {q(dst)}:{dport} proto {proto}"


def compare(got: dict, want: dict, examples: int = 3) -> dict:
    """Keys missing / extra, and keys whose packets or bytes differ."""
    missing = [k for k in want if k not in got]
    extra = [k for k in got if k not in want]
    pk = [k for k, v in got.items() if k in want and v[0] != want[k][0]]
    by = [k for k, v in got.items() if k in want and v[1] != want[k][1]]
    split = sum(1 for v in got.values() if len(v) > 2 and v[2] > 1)
    ex = lambda ks, f: [f(k) for k in ks[:examples]]  # noqa: E731
    return {
        "keys": len(got), "missing": len(missing), "extra": len(extra),
        "packets_differ": len(pk), "bytes_differ": len(by), "keys_in_several_records": split,
        "equal": not (missing or extra or pk or by),
        "examples": {
            "missing": ex(missing, lambda k: f"{fmt_key(k)} want {want[k][:2]}"),
            "extra": ex(extra, lambda k: f"{fmt_key(k)} got {got[k][:2]}"),
            "packets_differ": ex(pk, lambda k: f"{fmt_key(k)} got {got[k][:2]} want {want[k][:2]}"),
            "bytes_differ": ex(by, lambda k: f"{fmt_key(k)} got {got[k][:2]} want {want[k][:2]}"),
        },
    }


# ---- process helpers ------------------------------------------------------------------

def read_through(path: Path) -> None:
    """Read the file once, so that the peer about to run reads it from the page
    cache: whoever ran first used to pay the disk (an 'ours' run once read 634
    cycles a packet, 59 warm), and an 'ours' run right after another read it
    at 400-1250 cycles a packet until the file was read through again."""
    with open(path, "rb") as f:
        while f.read(1 << 24):
            pass


def thread_schedstat_s(pid: int, tid: int) -> tuple[float, float]:
    """(on-CPU seconds, seconds waiting for a CPU) of one thread."""
    f = (Path(f"/proc/{pid}/task/{tid}") / "schedstat").read_text().split()
    return int(f[0]) / 1e9, int(f[1]) / 1e9


def proc_cpu_s(pid: int) -> float:
    """utime + stime of a live process (all its threads), in seconds."""
    f = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(f[11]) + int(f[12])) / os.sysconf("SC_CLK_TCK")


def tsc_hz() -> int:
    """The TSC rate DPDK uses (busy_cycles are TSC cycles): a minimal EAL in a
    child process (rte_get_tsc_hz needs an initialised EAL)."""
    prefix = unique_prefix("tsc")
    code = ("from dataplane import native\n"
            f"native.eal_init(['tsc', '--no-huge', '-m', '64', '--no-pci', '--file-prefix', '{prefix}',"
            f" '-l', '{MAIN_CPU}', '--log-level', 'error', '--no-telemetry'])\n"
            "print(native.tsc_hz())\n")
    try:
        p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    finally:
        shutil.rmtree(DPDK_RUN / prefix, ignore_errors=True)
    if p.returncode != 0:
        raise RuntimeError(f"TSC probe failed:\n{p.stderr[-2000:]}")
    return int(p.stdout.split()[-1])


# ---- peer: ours -------------------------------------------------------------------------

NETFLOW_STAGE = """
[[pipeline]]
stage = "netflow"
max_flows = {max_flows}
active_timeout = {timeout}
inactive_timeout = {timeout}
export_ring = 65536
export = {{ version = 9, collectors = ["127.0.0.1:{port}"] }}

[[pipeline]]
stage = "xconnect"
map = {{ in = "out" }}

[control]
socket = "{socket}"

[metrics]
enabled = false
"""


def ours_memory_mb(flows: int) -> int:
    """EAL memory for ours: the pool, a 2N-flow cache and slack, in whole GiB."""
    need = MBUFS * MBUF_BYTES + 2 * flows * FLOW_BYTES_BUDGET + (EAL_SLACK_MB << 20)
    return -(-need // (1 << 30)) * 1024


def run_ours(wd: Path, args, pcap: Path, packets: int, port: int, hz: int, reader: str) -> dict:
    """`dataplane run CONFIG --json` (the pcap read once -> netflow -> net_null),
    polled over the control socket until netflow has metered every packet,
    then SIGTERM: the stop exports every cached flow."""
    from dataplane import control

    max_flows = 2 * args.flows
    memory_mb = ours_memory_mb(args.flows)
    prefix = unique_prefix("nfpeers")
    sock = wd / f"{prefix}.sock"
    cfg = wd / f"{prefix}.toml"
    cfg.write_text(pcap_to_null_toml(prefix, memory_mb, MBUFS, DATA_ROOM, pcap, forever=False, reader=reader,
                                     hugepages=args.hugepages)
                   + NETFLOW_STAGE.format(max_flows=max_flows, timeout=TIMEOUT_S, port=port,
                                          socket=sock))
    out_path, err_path = wd / f"{prefix}.out", wd / f"{prefix}.err"
    t_start = time.monotonic()
    with open(out_path, "w") as out, open(err_path, "w") as err:
        proc = subprocess.Popen([sys.executable, "-m", "dataplane", "run", str(cfg), "--json"],
                                stdout=out, stderr=err, text=True)
    res: dict = {"config": str(cfg), "memory_mb": memory_mb, "max_flows": max_flows}
    try:
        deadline = time.monotonic() + 60 + packets / 1e5
        while not sock.exists():
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"dataplane: no control socket; stderr:\n{err_path.read_text()[-3000:]}")
            time.sleep(0.005)
        res["socket_after_s"] = time.monotonic() - t_start
        tid = control.request(sock, "stats")["workers"][0]["tid"]
        polls = 0
        while True:
            info = control.request(sock, "netflow.info")
            polls += 1
            if info["packets"] + info.get("unmetered", 0) >= packets:
                break
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"dataplane: {info['packets']:,} of {packets:,} packets metered "
                                   f"before the deadline; stderr:\n{err_path.read_text()[-3000:]}")
            time.sleep(0.001)
        res["all_metered_after_s"] = time.monotonic() - t_start
        res["polls"] = polls
        # The worker thread itself: on-CPU time from its start to now (its
        # idle polls before the first packet and since the last included),
        # and time it waited for its CPU (another task ran there).
        res["worker_oncpu_s"], res["worker_waited_s"] = thread_schedstat_s(proc.pid, tid)
        res["process_cpu_s_before_stop"] = proc_cpu_s(proc.pid)
        res["info_before_stop"] = info
        proc.send_signal(signal.SIGTERM)
        code, ru = wait_rusage(proc, 120)
    except BaseException:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        raise
    finally:
        shutil.rmtree(DPDK_RUN / prefix, ignore_errors=True)
    text = out_path.read_text(errors="replace")
    if code != 0:
        raise RuntimeError(f"dataplane exited {code}; config {cfg}:\n{err_path.read_text()[-3000:]}")
    final = last_json(text)
    w = final["workers"][0]
    nf = final["netflow"][0]
    res.update(
        exit_code=code, wall_s=time.monotonic() - t_start,
        process_cpu_s=ru.ru_utime + ru.ru_stime, user_s=ru.ru_utime, sys_s=ru.ru_stime,
        peak_rss_mib=ru.ru_maxrss / 1024,
        packets=w["rx"], tx=final["totals"]["tx"], dropped=final["totals"]["dropped"],
        busy_cycles=w["busy_cycles"], tsc_hz=hz, busy_s=w["busy_cycles"] / hz,
        netflow={k: nf[k] for k in ("packets", "bytes", "flows_created", "alloc_failed", "exported",
                                    "export_failed", "act_exp", "inact_exp", "flows_used", "unmetered",
                                    "skipped")},
        export=nf.get("export", {}),
        runtime={r["stage"]: round(r["cycles_per_pkt"], 1) for r in final.get("runtime", [])},
    )
    res["stop_cpu_s"] = res["process_cpu_s"] - res["process_cpu_s_before_stop"]
    # Our cost: the worker's time in the loops that moved packets, from the first
    # burst to the last (busy_cycles, TSC). It spins on its own core, so this wall
    # time bounds its CPU time from above (preemption only adds to it). Left out:
    # the 1 ms ticks between loops (the expiry scan: with 3600 s timeouts it
    # visits no flow, see info "scanned") and the empty polls after the file.
    # Plus the export: the CPU time the exporter spent flushing the cache at the
    # stop, draining the rings, building and sending datagrams (its own
    # counter, export.cpu_s), as softflowd's and pmacctd's rusage include theirs.
    res["export_cpu_s"] = res["export"].get("cpu_s", 0.0)
    # busy_s is TSC time, so a moment another task held the worker's CPU
    # counts as busy (worker_waited_s says how long that was); the thread's
    # on-CPU time excludes it but includes its idle polls.
    # Both bound the metering's CPU time from above: the smaller is charged.
    res["worker_s"] = min(res["busy_s"], res["worker_oncpu_s"])
    res["cpu_s"] = res["worker_s"] + res["export_cpu_s"]
    res["pkts_per_cpu_s"] = packets / res["cpu_s"] if res["cpu_s"] else 0.0
    res["pkts_per_busy_s"] = packets / res["busy_s"] if res["busy_s"] else 0.0
    res["pkts_per_process_cpu_s"] = packets / res["process_cpu_s"]
    return res



# ---- peer: softflowd ----------------------------------------------------------------------

SF_PACKETS = "Packets processed:"


def softflowd_version() -> str:
    p = subprocess.run(["softflowd", "-h"], capture_output=True, text=True)
    for word in (p.stdout + p.stderr).split("softflowd version ")[1:2]:
        return word.split()[0].rstrip(".")
    return "?"


def run_softflowd(wd: Path, args, pcap: Path, packets: int, port: int) -> dict:
    """softflowd -r FILE: reads the file, expires every flow at its end, exports
    them (v9) and exits. `-c none`: with a control socket 1.1.0 blocks in
    accept() when reading a file (bench/netflow.py)."""
    cmd = ["taskset", "-c", str(WORKER_CPU), "softflowd", "-r", str(pcap),
           "-n", f"127.0.0.1:{port}", "-v", "9", "-d", "-m", str(2 * args.flows),
           "-p", str(wd / "softflowd.pid"), "-c", "none",
           "-t", f"tcp={TIMEOUT_S}", "-t", f"udp={TIMEOUT_S}", "-t", f"general={TIMEOUT_S}",
           "-t", f"maxlife={TIMEOUT_S}"]
    out_path = wd / "softflowd.out"
    t0 = time.monotonic()
    with open(out_path, "w") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, text=True)
        code, ru = wait_rusage(proc, args.peer_timeout)
    text = out_path.read_text(errors="replace")
    stats = {}
    for line in text.splitlines():
        k, sep, v = line.partition(":")
        if sep and v.strip().split()[:1] and v.strip().split()[0].isdigit():
            stats[k.strip()] = int(v.strip().split()[0])
    if code != 0 or SF_PACKETS.rstrip(":") not in stats:
        raise RuntimeError(f"softflowd exited {code}:\n{text[-3000:]}")
    cpu = ru.ru_utime + ru.ru_stime
    return {"cmd": " ".join(cmd), "exit_code": code, "wall_s": time.monotonic() - t0,
            "user_s": ru.ru_utime, "sys_s": ru.ru_stime, "cpu_s": cpu, "peak_rss_mib": ru.ru_maxrss / 1024,
            "packets": stats["Packets processed"], "stats": stats,
            "pkts_per_cpu_s": packets / cpu if cpu else 0.0}


# ---- peer: pmacctd ------------------------------------------------------------------------

def pmacctd_version() -> str:
    p = subprocess.run(["pmacctd", "-V"], capture_output=True, text=True)
    first = (p.stdout + p.stderr).splitlines()[:1]
    return first[0].split("pmacctd ")[-1].strip() if first else "?"


def children(pid: int) -> list[int]:
    try:
        return [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except (OSError, ValueError):
        return []


def run_pmacctd(wd: Path, args, pcap: Path, packets: int, port: int) -> dict:
    """pmacctd reading the file (pcap_savefile) into one nfprobe plugin (v9).

    The core and the plugin are two processes joined by pmacct's own ring. Its
    default (4 MB, no buffering: a hand-over per packet) cost ~120 CPU-s for
    the 1M-flow file in a trial; it is replaced by a 64 MB ring in 64 KB
    chunks (CONFIG-KEYS: a ratio of 1:100 to 1:1000 is good practice).

    At the end of a savefile the core signals the plugin and exits, and the
    plugin stops without reading what is still in the ring (thousands of
    packets lost at 1M flows, nothing logged). So `pcap_savefile_wait: true`:
    the core waits after "finished reading PCAP capture file"; we wait until
    the plugin's CPU time stops moving (it has read the ring), then SIGINT
    the core, whose graceful stop makes the plugin export every cached flow.
    The core reaps the plugin, so wait4's rusage covers both; waiting costs
    no CPU."""
    conf = wd / "pmacctd.conf"
    log = wd / "pmacctd.log"
    cfg = {
        "daemonize": "false",
        "pcap_savefile": str(pcap),
        "pcap_savefile_wait": "true",
        "plugins": "nfprobe",
        "nfprobe_receiver": f"127.0.0.1:{port}",
        "nfprobe_version": 9,
        "nfprobe_maxflows": 2 * args.flows,
        "nfprobe_timeouts": f"tcp={TIMEOUT_S}:udp={TIMEOUT_S}:general={TIMEOUT_S}:maxlife={TIMEOUT_S}",
        "aggregate": "src_host, dst_host, src_port, dst_port, proto, tos",
        "plugin_pipe_size": 64 << 20,
        "plugin_buffer_size": 64 << 10,
        "logfile": str(log),
    }
    conf.write_text("".join(f"{k}: {v}\n" for k, v in cfg.items()))
    cmd = ["taskset", "-c", str(WORKER_CPU), "pmacctd", "-f", str(conf)] if args.pin_pmacctd \
        else ["pmacctd", "-f", str(conf)]
    out_path = wd / "pmacctd.out"
    t0 = time.monotonic()
    with open(out_path, "w") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = t0 + args.peer_timeout
        logtext = lambda: log.read_text(errors="replace") if log.exists() else ""  # noqa: E731
        while "finished reading PCAP capture file" not in logtext():
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"pmacctd did not finish the file (exit {proc.poll()}):\n"
                                   f"{(out_path.read_text() + logtext())[-3000:]}")
            time.sleep(0.05)
        finished_s = time.monotonic() - t0
        last, still = None, 0
        while still < 4:  # 0.4 s without CPU in core or plugin
            time.sleep(0.1)
            cur = tuple(proc_cpu_s(p) for p in [proc.pid, *children(proc.pid)])
            still = still + 1 if cur == last else 0
            last = cur
            if time.monotonic() > deadline:
                raise RuntimeError("pmacctd: the plugin kept running")
        proc.send_signal(signal.SIGINT)
        code, ru = wait_rusage(proc, 60)
    except BaseException:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        raise
    text = out_path.read_text(errors="replace") + logtext()
    if code != 0:
        raise RuntimeError(f"pmacctd exited {code}:\n{text[-3000:]}")
    cpu = ru.ru_utime + ru.ru_stime
    warnings = [ln for ln in text.splitlines() if "WARN" in ln or "ERROR" in ln or "missing data" in ln]
    return {"cmd": " ".join(cmd), "config": cfg, "exit_code": code, "wall_s": time.monotonic() - t0,
            "finished_reading_s": finished_s,
            "user_s": ru.ru_utime, "sys_s": ru.ru_stime, "cpu_s": cpu, "peak_rss_mib": ru.ru_maxrss / 1024,
            "packets": packets, "warnings": warnings[:10],
            "pkts_per_cpu_s": packets / cpu if cpu else 0.0}


# ---- driver ---------------------------------------------------------------------------------

def run_peer(peer: str, wd: Path, args, pcap: Path, packets: int, want: dict, hz: int) -> dict:
    pd = wd / peer
    shutil.rmtree(pd, ignore_errors=True)
    read_through(pcap)  # every run starts from the same page cache state
    t0 = time.monotonic()
    with collectors.Nfcapd(pd / "nfcapd") as cap:
        os.sched_setaffinity(cap.proc.pid, {MAIN_CPU})
        relay = None if args.direct else Relay(cap)
        port = cap.port if relay is None else relay.port
        try:
            if peer in READER:
                r = run_ours(pd, args, pcap, packets, port, hz, READER[peer])
            elif peer == "softflowd":
                r = run_softflowd(pd, args, pcap, packets, port)
            else:
                r = run_pmacctd(pd, args, pcap, packets, port)
            if relay is not None:
                relay.wait_quiet()
            cap.drain(timeout=60, settle=0.5)
            r["nfcapd_socket_drops"] = udp_queue(cap.port)[1]
            r["relay"] = None if relay is None else {"datagrams": relay.datagrams, "waits": relay.waits}
        finally:
            if relay is not None:
                relay.close()
    got, records, stats = read_flows(cap)
    r["collector"] = {"records": records, "flows": stats.get("flows"), "packets": stats.get("packets"),
                      "bytes": stats.get("bytes"), "sequence_failures": stats.get("sequence_failures")}
    r["vs_pcap"] = compare(got, want)
    r["run_s"] = time.monotonic() - t0
    r["_flows"] = got
    return r


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--flows", type=int, default=1_000_000, help="distinct flows N (default 1,000,000)")
    ap.add_argument("--quick", action="store_true", help="smoke run: 20,000 flows")
    ap.add_argument("--rounds", type=int, default=1, help="rounds; each runs every peer once (default 1)")
    ap.add_argument("--peers", default=",".join(PEERS), help=f"subset of {','.join(PEERS)}")
    ap.add_argument("--pin-pmacctd", action="store_true",
                    help="run pmacctd's core and plugin both on cpu 1 (default: unpinned, 2 processes)")
    ap.add_argument("--direct", action="store_true",
                    help="export straight to nfcapd, without the pacing relay (shows UDP loss)")
    ap.add_argument("--peer-timeout", type=float, default=600.0, help="kill a peer after this many s")
    ap.add_argument("--json-out", metavar="FILE", help="also write all figures as JSON here")
    ap.add_argument("--hugepages", action="store_true",
                    help="ours on 2 MiB hugepages (as deployed) instead of --no-huge, where its "
                         "tables get transparent hugepages only while the kernel has free 2 MiB blocks")
    args = ap.parse_args()
    if args.hugepages:
        require_hugepages(ours_memory_mb(args.flows))
    if args.quick:
        args.flows = 20_000
    if not 1 <= args.flows <= MAX_FLOWS:
        ap.error(f"--flows must be 1..{MAX_FLOWS}")
    peers = [p.strip() for p in args.peers.split(",") if p.strip()]
    if not peers or set(peers) - set(PEERS):
        ap.error(f"--peers: a subset of {','.join(PEERS)}")
    if not collectors.available():
        sys.exit("nfcapd/nfdump not found (apt-get install -y nfdump)")
    for p, exe in (("softflowd", "softflowd"), ("pmacctd", "pmacctd")):
        if p in peers and shutil.which(exe) is None:
            sys.exit(f"{exe} not found (apt-get install -y {'pmacct' if p == 'pmacctd' else p}), "
                     f"or leave it out of --peers")

    t_all = time.monotonic()
    pcap, packets, span = make_pcap(args.flows)
    want = expected_flows(args.flows)
    hz = tsc_hz() if set(READER) & set(peers) else 0
    setup = {
        "pcap": str(pcap), "pcap_bytes": pcap.stat().st_size, "flows": args.flows, "packets": packets,
        "span_s": span, "timeouts_s": TIMEOUT_S, "tsc_hz": hz, "rounds": args.rounds, "peers": peers,
        "softflowd_version": softflowd_version() if "softflowd" in peers else None,
        "pmacctd_version": pmacctd_version() if "pmacctd" in peers else None,
        "nfcapd": subprocess.run(["nfcapd", "-V"], capture_output=True, text=True).stdout.strip(),
        "loadavg_before": [round(x, 2) for x in os.getloadavg()],
    }
    results: dict[str, list[dict]] = {p: [] for p in peers}
    errors: dict[str, list[str]] = {p: [] for p in peers}
    flowsets: dict[str, dict] = {}
    with tempfile.TemporaryDirectory(prefix="netflow_peers_") as tmp:
        wd = Path(tmp)
        for rnd in range(args.rounds):
            order = peers[rnd % len(peers):] + peers[:rnd % len(peers)]  # rotate: spread host noise
            for peer in order:
                print(f"round {rnd + 1}/{args.rounds}: {TITLES[peer]} ...", file=sys.stderr, flush=True)
                try:
                    r = run_peer(peer, wd, args, pcap, packets, want, hz)
                except Exception as e:  # noqa: BLE001 - report it, keep the other peers going
                    errors[peer].append(str(e))
                    print(f"  {peer} FAILED: {e}", file=sys.stderr, flush=True)
                    continue
                flowsets.setdefault(peer, r["_flows"])
                del r["_flows"]
                results[peer].append(r)
    setup["loadavg_after"] = [round(x, 2) for x in os.getloadavg()]
    setup["total_s"] = time.monotonic() - t_all
    summary = report(args, setup, results, errors, flowsets, want)
    if args.json_out:
        Path(args.json_out).write_text(json.dumps({"setup": setup, "runs": results, "errors": errors,
                                                   **summary}, indent=2, default=str) + "\n")


def report(args, setup: dict, results: dict, errors: dict, flowsets: dict, want: dict) -> dict:
    p = print
    n_tcp = (args.flows + 1) // 2
    p("NetFlow probes side by side on one pcap, read once, each exporting NetFlow v9 to its own nfcapd")
    p(f"traffic: {setup['pcap']} ({setup['pcap_bytes'] / 1e6:.1f} MB): {args.flows:,} distinct IPv4 flows "
      f"({n_tcp:,} TCP, {args.flows - n_tcp:,} UDP), 2-4 packets each, {setup['packets']:,} packets of 60-123 B, "
      f"in 4 interleaved passes (pass j = packet j of every flow that has one, flows in a strided order); "
      f"TCP: SYN then ACK|PSH, no FIN/RST; 1 us apart: {setup['span_s']:.2f} s of capture time; "
      f"every probe's timeouts {TIMEOUT_S} s, cache 2N flows")
    p(f"ours: python3 -m dataplane run CFG --json: the file read once -> netflow (v9) -> "
      f"net_null; worker on cpu {WORKER_CPU}, main thread on cpu {MAIN_CPU}, {'2 MiB hugepages' if args.hugepages else '--no-huge'}; polled over the "
      f"control socket until netflow.info packets = {setup['packets']:,}, then SIGTERM (every cached flow "
      f"is exported at stop). Two readers: 'ours' a pcap_file port (the dataplane's reader: the file "
      f"mapped, records copied into mbufs a burst at a time), 'ours-net_pcap' DPDK's net_pcap "
      f"rx_pcap=FILE (libpcap, a packet at a time)")
    if setup["softflowd_version"]:
        p(f"softflowd {setup['softflowd_version']}: softflowd -r FILE -n 127.0.0.1:PORT -v 9 -d -m 2N -c none "
          f"-t tcp=/udp=/general=/maxlife={TIMEOUT_S} on cpu {WORKER_CPU} (taskset); exits at the end of "
          f"the file after exporting every flow")
    if setup["pmacctd_version"]:
        p(f"pmacctd {setup['pmacctd_version']}: pcap_savefile FILE, plugins nfprobe, nfprobe_version 9, "
          f"aggregate src_host,dst_host,src_port,dst_port,proto,tos, nfprobe_maxflows 2N, timeouts "
          f"{TIMEOUT_S} s, plugin_pipe_size 64 MB / plugin_buffer_size 64 KB; "
          f"{'core and plugin pinned to cpu ' + str(WORKER_CPU) if args.pin_pmacctd else 'core + plugin process, unpinned'}; "
          f"pcap_savefile_wait true: once the log says the file is read and the plugin's CPU time stops "
          f"moving, SIGINT (graceful: the plugin exports every flow)")
    p(f"collectors: {setup['nfcapd']}, one per peer per run on 127.0.0.1 (-B 32 MB, 8 MB granted), cpu "
      f"{MAIN_CPU}; " + ("the probes export straight to it (--direct)" if args.direct else
                         "the probes export to a relay that forwards to it, paced by its socket queue "
                         "(no datagram altered; without it softflowd's flush overflows nfcapd)")
      + "; read back with nfdump -R DIR -o csv, summed per (src, dst, sport, dport, proto)")
    p(f"{args.rounds} round(s), peers rotated each round; TSC {setup['tsc_hz'] / 1e9:.3f} GHz; load average "
      f"before/after {setup['loadavg_before']} / {setup['loadavg_after']}; whole benchmark "
      f"{setup['total_s']:.0f} s")
    p("")

    # -- flow sets
    p("FLOW SETS (each run's collector vs the flow set the pcap holds, computed by the generator):")
    p(f"  expected: {len(want):,} keys, {sum(v[0] for v in want.values()):,} packets, "
      f"{sum(v[1] for v in want.values()):,} bytes (IP length)")
    all_equal = True
    for peer, runs in results.items():
        for i, r in enumerate(runs):
            c, col = r["vs_pcap"], r["collector"]
            all_equal &= c["equal"]
            p(f"  {peer:<10} round {i + 1}: {'EQUAL' if c['equal'] else 'DIFFERENT'}: {c['keys']:,} keys in "
              f"{col['records']:,} records ({c['keys_in_several_records']:,} keys split over several records); "
              f"missing {c['missing']:,}, extra {c['extra']:,}, packets differ {c['packets_differ']:,}, "
              f"bytes differ {c['bytes_differ']:,}; nfdump -I: {col['flows']:,} flows, "
              f"{col['packets']:,} packets, {col['bytes']:,} bytes, sequence failures {col['sequence_failures']}; "
              f"nfcapd socket drops {r['nfcapd_socket_drops']}")
            for kind, ex in c["examples"].items():
                for e in ex:
                    p(f"      {kind}: {e}")
    # pairwise, on the first run of each peer (all runs were checked against the pcap above)
    names = list(flowsets)
    pairs = {}
    for a in range(len(names)):
        for b in range(a + 1, len(names)):
            x, y = flowsets[names[a]], flowsets[names[b]]
            c = compare(x, y)
            pairs[f"{names[a]}/{names[b]}"] = {k: c[k] for k in ("equal", "keys", "missing", "extra",
                                                                  "packets_differ", "bytes_differ")}
            p(f"  {names[a]} vs {names[b]} (first runs): {'IDENTICAL' if c['equal'] else 'DIFFERENT'} "
              f"({c['keys']:,} vs {len(y):,} keys; only in {names[b]} {c['missing']:,}, only in {names[a]} "
              f"{c['extra']:,}, packets differ {c['packets_differ']:,}, bytes differ {c['bytes_differ']:,})")
    p("  bytes: every probe counts the IP total length (no normalisation applied)")
    p("")

    # -- cost
    p("COST (packets of the file per CPU-second; per run, then the median):")
    med = {}
    for peer, runs in results.items():
        if not runs:
            continue
        med[peer] = statistics.median(r["pkts_per_cpu_s"] for r in runs)
        for i, r in enumerate(runs):
            if peer in READER:
                p(f"  {peer:<10} round {i + 1}: {r['pkts_per_cpu_s'] / 1e6:7.3f} M pkts/CPU-s   "
                  f"worker {r['worker_s'] * 1e3:.1f} ms (the smaller of: busy {r['busy_s'] * 1e3:.1f} ms, "
                  f"busy_cycles / TSC of its loops that moved packets, first burst to last; on-CPU "
                  f"{r['worker_oncpu_s'] * 1e3:.1f} ms, schedstat from its start, after waiting "
                  f"{r['worker_waited_s'] * 1e3:.1f} ms for its CPU; metering alone "
                  f"{r['pkts_per_busy_s'] / 1e6:.3f} M/s) "
                  f"+ export {r['export_cpu_s'] * 1e3:.1f} ms (flush, drain, datagrams, sends: "
                  f"export.cpu_s); whole process {r['process_cpu_s']:.2f} CPU-s "
                  f"(user {r['user_s']:.2f}, sys {r['sys_s']:.2f}; of it the stop: flush, export, teardown "
                  f"{r['stop_cpu_s']:.2f}) -> {r['pkts_per_process_cpu_s'] / 1e6:.3f} M/CPU-s; "
                  f"wall {r['wall_s']:.1f} s, peak RSS {r['peak_rss_mib']:.0f} MiB")
                p(f"                        netflow {r['runtime'].get('netflow', '-')} cycles/pkt, port-rx "
                  f"(the reader) {r['runtime'].get('port-rx', '-')}; flows created "
                  f"{r['netflow']['flows_created']:,}, alloc_failed {r['netflow']['alloc_failed']}, expired "
                  f"before the stop {r['info_before_stop']['act_exp'] + r['info_before_stop']['inact_exp']}, "
                  f"scanned {r['info_before_stop']['scanned']}, "
                  f"exported {r['netflow']['exported']:,}, export errors "
                  f"{sum(c['errors'] for c in r['export'].get('collectors', []))}, lost records "
                  f"{r['export'].get('lost_records', 0)}")
            else:
                extra = ""
                if peer == "softflowd":
                    st = r["stats"]
                    extra = (f"; processed {r['packets']:,} packets, flows expired "
                             f"{st.get('Flows expired', '?')}, exported {st.get('Flows exported', '?')}")
                elif r.get("warnings"):
                    extra = f"; log: {' | '.join(r['warnings'][:3])}"
                p(f"  {peer:<10} round {i + 1}: {r['pkts_per_cpu_s'] / 1e6:7.3f} M pkts/CPU-s   user {r['user_s']:.2f} + "
                  f"sys {r['sys_s']:.2f} = {r['cpu_s']:.2f} CPU-s (wait4 rusage, whole process incl. "
                  f"start and export), wall {r['wall_s']:.1f} s, peak RSS {r['peak_rss_mib']:.0f} MiB{extra}")
    ratios = {}
    for ours in (o for o in READER if o in med):
        for other in ("softflowd", "pmacctd"):
            if other in med and med[other]:
                ratios[f"{ours}/{other}"] = med[ours] / med[other]
                whole = statistics.median(r["pkts_per_process_cpu_s"] for r in results[ours])
                ratios[f"{ours}/{other} (ours: whole process)"] = whole / med[other]
    p("")
    p("FIGURES (medians):")
    for peer, v in med.items():
        how = ("the worker's time metering (the smaller of its busy TSC time and its on-CPU "
               "time), plus the exporter's CPU"
               if peer in READER
               else "user+sys of the process (and the children it reaped)")
        p(f"  {peer:<10} {v / 1e6:8.3f} M packets per CPU-second   ({how})")
    for k, v in ratios.items():
        goal = "  (goal >= 12)" if k == "ours/softflowd" else ""
        p(f"  ratio {k:<36} {v:7.2f}{goal}")
    for peer, errs in errors.items():
        for e in errs:
            p(f"  {peer} FAILED: {e.splitlines()[0] if e else e}")
    p(f"  flow sets: {'all runs EQUAL to the pcap, hence identical across peers' if all_equal and not any(errors.values()) else 'see FLOW SETS above'}")
    summary = {"medians_pkts_per_cpu_s": med, "ratios": ratios, "pairs": pairs, "all_equal": all_equal}
    print(RESULT_MARK + json.dumps(summary, default=str), flush=True)
    return summary


if __name__ == "__main__":
    main()
