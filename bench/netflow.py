#!/usr/bin/env python3
"""NetFlow metering at N concurrent flows: the dataplane's netflow stage vs the
same pipeline without it, and vs softflowd reading the same packets offline.

Traffic: a pcap of N distinct IPv4/UDP flows, one 60-byte frame (64 on the
wire) per flow, replayed forever by net_pcap (infinite_rx) into ONE worker
core (cpu 1, main thread on cpu 0) whose pipeline is [netflow, xconnect to a
net_null sink]. Flows stay cached for the whole run (timeouts 3600 s,
max_flows 2N), so the measured window is the cache-hit path at N flows.
Runs with and without the netflow stage alternate for --rounds rounds; each
round also runs softflowd (-r) on the same packets, once as written (N
packets, every one a new flow) and once repeated --passes times.
See bench/README.md.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import (  # noqa: E402
    DPDK_RUN,
    MAIN_CPU,
    WORKER_CPU,
    load_alt_native,
    pcap_to_null_toml,
    unique_prefix,
)

RESULT_MARK = "NETFLOW_BENCH_RESULT "
PCAP_DIR = Path("/tmp")
TIMEOUT_S = 3600               # active and inactive: nothing expires during a run
DATA_ROOM = 256                # 128 B headroom + 128 B data: a 60-byte frame fits
POOL_SPARE = 65536             # mbufs beyond the preloaded pcap (rx bursts, caches)
MBUF_BYTES = 64 + 128 + DATA_ROOM  # mempool object header + rte_mbuf + data room
FLOW_BYTES_BUDGET = 256        # EAL memory planned per max_flows entry (hash, keys, flow)
EAL_SLACK_MB = 512

PEERS = {
    "netflow": "dataplane [netflow, xconnect]",
    "netflow_alt": "dataplane [netflow, xconnect], --alt-native build",
    "plain": "dataplane [xconnect] (no netflow)",
    "sf_once": "softflowd -r, file as written",
    "sf_passes": "softflowd -r, file repeated",
}

CONFIG = """\
{head}{netflow}
[[pipeline]]
stage = "xconnect"
map = {{ in = "out" }}
"""

NETFLOW_STAGE = """
[[pipeline]]
stage = "netflow"
max_flows = {max_flows}
active_timeout = {timeout}
inactive_timeout = {timeout}
export_ring = 65536
scan_budget = 1024
export = {{ version = 5, collectors = ["127.0.0.1:{port}"] }}
"""



# ---- traffic -----------------------------------------------------------------

PCAP_GLOBAL = struct.Struct("<IHHiIII")
PCAP_RECORD = struct.Struct("<IIII")
# Ethernet / IPv4 (no options) / UDP / 18 bytes of payload = 60 bytes
FRAME = struct.Struct("!6s6sH BBHHHBBHII HHHH 18s")
FRAME_LEN = FRAME.size
IP_LEN = FRAME_LEN - 14
MAX_FLOWS = 1 << 24            # flow i has source address 10.0.0.0 + i


def flow_frame(i: int) -> bytes:
    """Flow i: 10.0.0.0+i:(1024 + i % 60000) -> 192.168.x.y:53, UDP."""
    src = 0x0A000000 | i
    dst = 0xC0A80000 | ((i * 2654435761) >> 16 & 0xFFFF)
    c = 0x4500 + IP_LEN + (64 << 8 | 17) + (src >> 16) + (src & 0xFFFF) + (dst >> 16) + (dst & 0xFFFF)
    c = (c & 0xFFFF) + (c >> 16)
    c = (c & 0xFFFF) + (c >> 16)
    return FRAME.pack(b"\x02\0\0\0\0\x02", b"\x02\0\0\0\0\x01", 0x0800,
                      0x45, 0, IP_LEN, 0, 0, 64, 17, ~c & 0xFFFF, src, dst,
                      1024 + i % 60000, 53, IP_LEN - 20, 0, bytes(18))


def pcap_path(flows: int, passes: int) -> Path:
    return PCAP_DIR / f"dp_netflow_bench_{flows}x{passes}.pcap"


def make_pcap(flows: int, passes: int = 1) -> Path:
    """N flows, packet i = flow i, the whole sequence `passes` times; 1 us apart.
    Written with struct (scapy would take minutes), cached under /tmp."""
    path = pcap_path(flows, passes)
    size = PCAP_GLOBAL.size + flows * passes * (PCAP_RECORD.size + FRAME_LEN)
    if path.exists() and path.stat().st_size == size:
        return path
    t0 = time.monotonic()
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    with open(tmp, "wb") as f:
        f.write(PCAP_GLOBAL.pack(0xA1B2C3D4, 2, 4, 0, 0, 65535, 1))  # usec, Ethernet
        buf = bytearray()
        t = 0
        for _ in range(passes):
            for i in range(flows):
                buf += PCAP_RECORD.pack(t // 1_000_000, t % 1_000_000, FRAME_LEN, FRAME_LEN)
                buf += flow_frame(i)
                t += 1
                if len(buf) >= 1 << 22:
                    f.write(buf)
                    buf.clear()
        f.write(buf)
    tmp.rename(path)
    print(f"wrote {path} ({flows:,} flows x {passes}) in {time.monotonic() - t0:.1f} s",
          file=sys.stderr, flush=True)
    return path


# ---- a collector that counts what it gets ----------------------------------------

class Sink:
    """UDP socket on 127.0.0.1 that drains NetFlow v5 datagrams and counts records."""

    def __init__(self):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:  # root: beyond rmem_max, so a 1M-flow flush fits
            self.sock.setsockopt(socket.SOL_SOCKET, getattr(socket, "SO_RCVBUFFORCE", 33), 64 << 20)
        except OSError:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 << 20)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.datagrams = 0
        self.records = 0
        self._stop = False
        self._t = threading.Thread(target=self._run, daemon=True)
        self._t.start()

    def _run(self) -> None:
        while not self._stop:
            try:
                d = self.sock.recv(65535)
            except socket.timeout:
                continue
            except OSError:
                return
            self.datagrams += 1
            if len(d) >= 4 and d[1] == 5:
                self.records += int.from_bytes(d[2:4], "big")

    def counts(self, settle: float = 0.5) -> tuple[int, int]:
        """(datagrams, records) once nothing arrived for `settle` seconds."""
        last = None
        while (cur := (self.datagrams, self.records)) != last:
            last = cur
            time.sleep(settle)
        return cur

    def close(self) -> None:
        self._stop = True
        self._t.join()
        self.sock.close()


# ---- dataplane -------------------------------------------------------------------

def plan_memory(flows: int, packets: int, max_flows: int) -> tuple[int, int]:
    """(mbufs, memory_mb): every pcap packet sits in an mbuf (infinite_rx preloads
    them), plus spare; EAL memory for that pool and the flow cache."""
    mbufs = packets + POOL_SPARE
    need = mbufs * MBUF_BYTES + max_flows * FLOW_BYTES_BUDGET
    memory_mb = -(-(need + (EAL_SLACK_MB << 20)) // (1 << 30)) * 1024
    return mbufs, memory_mb


def write_config(workdir: Path, tag: str, pcap: Path, flows: int, port: int, with_netflow: bool,
                 mbufs: int, memory_mb: int) -> tuple[Path, str]:
    prefix = unique_prefix(tag)
    nf = NETFLOW_STAGE.format(max_flows=2 * flows, timeout=TIMEOUT_S, port=port) if with_netflow else ""
    path = workdir / f"{prefix}.toml"
    head = pcap_to_null_toml(prefix, memory_mb, mbufs, DATA_ROOM, pcap, forever=True)
    path.write_text(CONFIG.format(head=head, netflow=nf))
    return path, prefix


def wait_rusage(proc: subprocess.Popen, timeout: float) -> tuple[int, object]:
    """Wait for `proc` with wait4 (its own rusage: CPU time, peak RSS)."""
    deadline = time.monotonic() + timeout
    while True:
        pid, status, ru = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            proc.returncode = os.waitstatus_to_exitcode(status)
            return proc.returncode, ru
        if time.monotonic() > deadline:
            proc.kill()
            pid, status, ru = os.wait4(proc.pid, 0)
            proc.returncode = os.waitstatus_to_exitcode(status)
            raise RuntimeError(f"{proc.args} did not finish in {timeout:.0f} s (killed)")
        time.sleep(0.05)


def run_dataplane(workdir: Path, args, pcap: Path, sink: Sink, with_netflow: bool,
                  native_so: str | None = None) -> dict:
    packets = args.flows  # the pcap holds one packet per flow
    mbufs, memory_mb = plan_memory(args.flows, packets, 2 * args.flows)
    if args.memory_mb:
        memory_mb = args.memory_mb
    cfg, prefix = write_config(workdir, "nf" if with_netflow else "plain", pcap, args.flows,
                               sink.port, with_netflow, mbufs, memory_mb)
    before = sink.counts(0.05)
    out_path = workdir / f"{prefix}.out"
    cmd = [sys.executable, __file__, "--child", str(cfg), "--duration", str(args.duration),
           "--warmup", str(args.warmup)]
    if native_so:
        cmd += ["--alt-native", native_so]
    try:
        with open(out_path, "w") as out:
            proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, text=True)
            code, ru = wait_rusage(proc, args.warmup + args.duration + 300)
    finally:
        shutil.rmtree(DPDK_RUN / prefix, ignore_errors=True)
    text = out_path.read_text(errors="replace")
    line = next((ln for ln in text.splitlines() if ln.startswith(RESULT_MARK)), None)
    if code != 0 or line is None:
        raise RuntimeError(f"dataplane child exited {code}; config {cfg}:\n{text[-4000:]}")
    res = json.loads(line[len(RESULT_MARK):])
    after = sink.counts()
    res.update(mbufs=mbufs, memory_mb=memory_mb, peak_rss_mib_wait4=ru.ru_maxrss / 1024,
               cpu_s_total=ru.ru_utime + ru.ru_stime,
               collector_datagrams=after[0] - before[0], collector_records=after[1] - before[1])
    return res


def _proc_status_kib(field: str) -> int:
    m = re.search(rf"^{field}:\s+(\d+) kB", Path("/proc/self/status").read_text(), re.M)
    return int(m.group(1)) if m else 0


def _schedstat_ns(tid: int) -> tuple[int, int]:
    """(time on a CPU, time runnable but waiting for one) of thread `tid`, in ns."""
    run, wait, _ = Path(f"/proc/self/task/{tid}/schedstat").read_text().split()
    return int(run), int(wait)


def child(cfg_path: str, duration: float, warmup: float, alt_native: str | None = None) -> None:
    """One EAL per process: start, warm up (every flow created), measure, then
    read the cache before the stop flushes it, and time that flush."""
    if alt_native:
        load_alt_native(alt_native)
    from dataplane import config, native
    from dataplane.eal import Eal
    from dataplane.engine import Dataplane
    from dataplane.view import rates, runtime_rows

    rss_start = _proc_status_kib("VmRSS")
    cfg = config.load(cfg_path)
    t0 = time.monotonic()
    eal = Eal(cfg)
    dp = Dataplane(cfg)
    res: dict = {}
    try:
        dp.start()
        res["start_s"] = time.monotonic() - t0
        time.sleep(warmup)
        tid = dp.workers[0].native_id
        first = dp.snapshot()
        cpu0, sched0 = os.times(), _schedstat_ns(tid)
        time.sleep(duration)
        last = dp.snapshot()
        cpu1, sched1 = os.times(), _schedstat_ns(tid)
        res["rss_mib"] = _proc_status_kib("VmRSS") / 1024
        res["hwm_mib_before_stop"] = _proc_status_kib("VmHWM") / 1024
        ctrls = list(dp.netflow)
        t1 = time.monotonic()
        dp.quiesce()  # workers stopped, every cached flow exported
        res["stop_flush_s"] = time.monotonic() - t1
        res["netflow_after_stop"] = [c.info() for c in ctrls]
        res["hwm_mib_after_flush"] = _proc_status_kib("VmHWM") / 1024
    finally:
        dp.stop()
        # freeing the cache touches its pages (DPDK zeroes memory it frees)
        res["hwm_mib_after_teardown"] = _proc_status_kib("VmHWM") / 1024
        eal.close()
    r = rates(first, last)
    window_packets = last.totals["tx"] - first.totals["tx"]
    cpu_s = (cpu1.user - cpu0.user) + (cpu1.system - cpu0.system)
    worker_cpu_s = (sched1[0] - sched0[0]) / 1e9
    res.update(
        pps=r["totals"]["tx"], rx_pps=r["totals"]["rx"], interval_s=r["interval_s"],
        dropped_pps=r["totals"]["dropped"], busy=r["workers"][0]["busy"],
        window_packets=window_packets, process_cpu_s=cpu_s, worker_cpu_s=worker_cpu_s,
        worker_runqueue_wait_s=(sched1[1] - sched0[1]) / 1e9,
        worker_on_cpu=worker_cpu_s / r["interval_s"],
        pkts_per_worker_cpu_s=window_packets / worker_cpu_s if worker_cpu_s else 0.0,
        pkts_per_process_cpu_s=window_packets / cpu_s if cpu_s else 0.0,
        tsc_hz=native.tsc_hz(), rss_mib_at_python_start=rss_start / 1024,
        runtime={row["stage"]: {k: row[k] for k in ("cycles_per_pkt", "pkts_per_call", "packets",
                                                     "sampled")}
                 for row in runtime_rows(last)},
        netflow=last.netflow, pools=last.pools)
    print(RESULT_MARK + json.dumps(res), flush=True)


# ---- softflowd -------------------------------------------------------------------

SF_STATS = {
    "packets": re.compile(r"Packets processed:\s+(\d+)"),
    "flows_expired": re.compile(r"Flows expired:\s+(\d+)"),
    "flows_exported": re.compile(r"Flows exported:\s+(\d+)"),
    "export_datagrams": re.compile(r"Flows exported:.*? in (\d+) packets"),
    "active_flows": re.compile(r"Number of active flows:\s+(\d+)"),
}


def run_softflowd(workdir: Path, pcap: Path, sink: Sink, max_flows: int, cap_s: float) -> dict:
    """softflowd -r reads the whole file and exits, printing its statistics.
    `-c none`: with a control socket, 1.1.0 blocks in accept() once per read
    loop when reading a file (its poll set is never filled in that mode)."""
    pidfile = workdir / "softflowd.pid"
    cmd = ["taskset", "-c", str(WORKER_CPU), "softflowd", "-r", str(pcap), "-n", f"127.0.0.1:{sink.port}", "-v", "5", "-d",
           "-m", str(max_flows), "-p", str(pidfile), "-c", "none"]
    before = sink.counts(0.05)
    out_path = workdir / "softflowd.out"
    t0 = time.monotonic()
    with open(out_path, "w") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, text=True)
        capped = False
        deadline = t0 + cap_s
        while True:
            pid, status, ru = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            if not capped and time.monotonic() > deadline:
                proc.terminate()  # graceful: it stops after the current read, prints stats
                capped = True
                deadline = time.monotonic() + 60
            elif capped and time.monotonic() > deadline:
                proc.kill()
            time.sleep(0.01)
    wall = time.monotonic() - t0
    code = os.waitstatus_to_exitcode(status)
    text = out_path.read_text(errors="replace")
    stats = {k: int(m.group(1)) for k, rx in SF_STATS.items() if (m := rx.search(text))}
    if "packets" not in stats:
        raise RuntimeError(f"softflowd exited {code} without statistics:\n{text[-3000:]}")
    after = sink.counts()
    cpu = ru.ru_utime + ru.ru_stime
    return {**stats, "exit_code": code, "capped": capped, "wall_s": wall, "user_s": ru.ru_utime,
            "sys_s": ru.ru_stime, "cpu_s": cpu, "peak_rss_mib": ru.ru_maxrss / 1024,
            "pkts_per_cpu_s": stats["packets"] / cpu if cpu else 0.0,
            "collector_datagrams": after[0] - before[0], "collector_records": after[1] - before[1]}


def softflowd_version() -> str:
    p = subprocess.run(["softflowd", "-h"], capture_output=True, text=True)
    m = re.search(r"softflowd version (\S+)", p.stdout + p.stderr)
    return m.group(1).rstrip(".") if m else "?"


# ---- driver --------------------------------------------------------------------

def median(runs: list[dict], key: str) -> float:
    return statistics.median(r[key] for r in runs)


def summarize(args, results: dict[str, list[dict]]) -> dict:
    nf, plain = results["netflow"], results["plain"]
    s: dict = {}
    s["mpps_netflow"] = median(nf, "pps") / 1e6
    s["mpps_plain"] = median(plain, "pps") / 1e6
    s["ratio_netflow_over_plain"] = s["mpps_netflow"] / s["mpps_plain"]
    # the same per worker CPU-second: unmoved by other processes taking turns on cpu 1
    s["ratio_netflow_over_plain_per_cpu_s"] = (median(nf, "pkts_per_worker_cpu_s")
                                               / median(plain, "pkts_per_worker_cpu_s"))
    s["netflow_cycles_per_pkt"] = statistics.median(r["runtime"]["netflow"]["cycles_per_pkt"] for r in nf)
    # The stage's cost by difference: what it adds to each packet's cycles, from
    # the two pipelines' packets per worker CPU-second (no timer in the loop, so
    # no sampling artefact; the runtime row above times sampled loops only).
    hz = nf[0]["tsc_hz"]
    s["netflow_cycles_per_pkt_by_difference"] = hz * (1 / median(nf, "pkts_per_worker_cpu_s")
                                                      - 1 / median(plain, "pkts_per_worker_cpu_s"))
    if results.get("netflow_alt"):
        alt = results["netflow_alt"]
        s["mpps_netflow_alt"] = median(alt, "pps") / 1e6
        s["netflow_alt_cycles_per_pkt"] = statistics.median(r["runtime"]["netflow"]["cycles_per_pkt"]
                                                            for r in alt)
        s["netflow_alt_cycles_per_pkt_by_difference"] = hz * (
            1 / median(alt, "pkts_per_worker_cpu_s") - 1 / median(plain, "pkts_per_worker_cpu_s"))
        s["rss_mib_netflow_alt"] = median(alt, "rss_mib")
        s["bytes_per_flow_alt"] = ((s["rss_mib_netflow_alt"] - statistics.median(r["rss_mib"] for r in plain))
                                   * (1 << 20) / min(r["netflow"][0]["flows_used"] for r in alt))
    for key in ("port-rx", "port-tx", "xconnect"):
        s[f"{key}_cycles_per_pkt_netflow"] = statistics.median(r["runtime"][key]["cycles_per_pkt"] for r in nf)
        s[f"{key}_cycles_per_pkt_plain"] = statistics.median(r["runtime"][key]["cycles_per_pkt"] for r in plain)
    info = [r["netflow"][0] for r in nf]
    s["flows_used"] = min(i["flows_used"] for i in info)
    s["flows_created"] = max(i["flows_created"] for i in info)
    s["alloc_failed"] = max(i["alloc_failed"] for i in info)
    s["expired_during_run"] = max(i["act_exp"] + i["inact_exp"] for i in info)
    s["skipped"] = max(i["skipped"] for i in info)
    s["rss_mib_netflow"] = median(nf, "rss_mib")
    s["rss_mib_plain"] = median(plain, "rss_mib")
    s["peak_rss_mib_netflow"] = max(r["peak_rss_mib_wait4"] for r in nf)
    s["peak_rss_mib_plain"] = max(r["peak_rss_mib_wait4"] for r in plain)
    s["bytes_per_flow"] = ((s["rss_mib_netflow"] - s["rss_mib_plain"]) * (1 << 20) / s["flows_used"]
                           if s["flows_used"] else None)
    # Freeing the cache at stop touches every page of it, so the peak RSS bounds
    # what the whole cache (max_flows slots) costs.
    s["peak_bytes_per_slot"] = ((s["peak_rss_mib_netflow"] - s["peak_rss_mib_plain"]) * (1 << 20)
                                / (2 * args.flows))
    s["stop_flush_s"] = median(nf, "stop_flush_s")
    s["exported_at_stop"] = min(r["netflow_after_stop"][0]["exported"] for r in nf)
    s["collector_records_dataplane"] = min(r["collector_records"] for r in nf)
    # ours: the worker polls without pause, so packets per worker CPU-second is
    # the Mpps when it has its core to itself; measured from its schedstat, it
    # stays right when other processes take turns on that core
    s["ours_pkts_per_worker_cpu_s"] = median(nf, "pkts_per_worker_cpu_s")
    s["worker_on_cpu_netflow"] = median(nf, "worker_on_cpu")
    s["worker_on_cpu_plain"] = median(plain, "worker_on_cpu")
    s["ours_pkts_per_process_cpu_s"] = median(nf, "pkts_per_process_cpu_s")
    if results.get("sf_once"):
        once, rep = results["sf_once"], results["sf_passes"]
        s["sf_once_pkts_per_cpu_s"] = median(once, "pkts_per_cpu_s")
        s["sf_passes_pkts_per_cpu_s"] = median(rep, "pkts_per_cpu_s")
        # the cost of the extra passes alone: cache hits (+ reading them from the file)
        marg = [(b["packets"] - a["packets"]) / (b["cpu_s"] - a["cpu_s"])
                for a, b in zip(once, rep) if b["cpu_s"] > a["cpu_s"]]
        s["sf_hit_pkts_per_cpu_s"] = statistics.median(marg) if marg else None
        s["sf_peak_rss_mib"] = max(r["peak_rss_mib"] for r in once + rep)
        s["sf_peak_rss_bytes_per_flow"] = median(once, "peak_rss_mib") * (1 << 20) / args.flows
        s["ratio_ours_over_sf_hits"] = (s["ours_pkts_per_worker_cpu_s"] / s["sf_hit_pkts_per_cpu_s"]
                                        if s["sf_hit_pkts_per_cpu_s"] else None)
        s["ratio_ours_over_sf_passes"] = s["ours_pkts_per_worker_cpu_s"] / s["sf_passes_pkts_per_cpu_s"]
        s["ratio_ours_over_sf_once"] = s["ours_pkts_per_worker_cpu_s"] / s["sf_once_pkts_per_cpu_s"]
    return s


def report(args, results: dict[str, list[dict]], setup: dict) -> dict:
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    s = summarize(args, results)
    c = Console(width=None if sys.stdout.isatty() else 120)
    nf0 = results["netflow"][0]
    c.print(f"[bold]NetFlow metering at {args.flows:,} flows[/]: {setup['traffic']}\n"
            f"dataplane: net_pcap infinite_rx -> pipeline -> net_null sink; one worker (cpu {WORKER_CPU}), "
            f"main thread on cpu {MAIN_CPU}; --no-huge -m {nf0['memory_mb']}; {nf0['mbufs']:,} mbufs "
            f"of {DATA_ROOM} B data room; netflow max_flows {2 * args.flows:,}, timeouts {TIMEOUT_S} s, "
            f"v5 export to a local UDP socket\n"
            f"{args.rounds} round(s); dataplane runs measured {args.duration:g} s after a "
            f"{args.warmup:g} s warm-up; TSC {nf0['tsc_hz'] / 1e9:.2f} GHz\n"
            f"load average before/after: {setup['loadavg_before']} / {setup['loadavg_after']}",
            highlight=False)

    t = Table(title="per run")
    t.add_column("peer")
    for i in range(args.rounds):
        t.add_column(f"round {i + 1}", justify="right")
    t.add_column("median", justify="right", style="bold")
    for key in ("netflow", "netflow_alt", "plain"):
        runs = results.get(key)
        if not runs:
            continue
        t.add_row(escape(PEERS[key]) + ", Mpps", *(f"{r['pps'] / 1e6:.3f}" for r in runs),
                  f"{median(runs, 'pps') / 1e6:.3f}")
        if key.startswith("netflow"):
            t.add_row("  netflow stage, cycles/pkt",
                      *(f"{r['runtime']['netflow']['cycles_per_pkt']:.1f}" for r in runs),
                      f"{statistics.median(r['runtime']['netflow']['cycles_per_pkt'] for r in runs):.1f}")
        t.add_row("  worker on its CPU (schedstat), %", *(f"{r['worker_on_cpu'] * 100:.1f}" for r in runs),
                  f"{median(runs, 'worker_on_cpu') * 100:.1f}")
    for key in ("sf_once", "sf_passes"):
        runs = results.get(key) or []
        if runs:
            t.add_row(f"{escape(PEERS[key])} ({runs[0]['packets']:,} pkts), Mpkts/CPU-s",
                      *(f"{r['pkts_per_cpu_s'] / 1e6:.3f}" for r in runs),
                      f"{median(runs, 'pkts_per_cpu_s') / 1e6:.3f}")
    c.print(t)

    f = Table(title="figures")
    f.add_column("what")
    f.add_column("value", justify="right")
    f.add_column("how")
    rows = [
        ("with netflow", f"{s['mpps_netflow']:.3f} Mpps", "rates.totals.tx over the window, median"),
        ("without netflow", f"{s['mpps_plain']:.3f} Mpps", "same pipeline minus the netflow stage"),
        ("ratio with/without", f"{s['ratio_netflow_over_plain']:.3f}",
         f"of the Mpps; per worker CPU-second: {s['ratio_netflow_over_plain_per_cpu_s']:.3f}"),
        ("netflow stage, by difference", f"{s['netflow_cycles_per_pkt_by_difference']:.1f} cycles/pkt",
         "TSC Hz x (1/with - 1/without), packets per worker CPU-second: what the stage adds"),
        ("netflow stage, runtime row", f"{s['netflow_cycles_per_pkt']:.1f} cycles/pkt",
         "runtime row 'netflow' (timed in sampled loops only)"),
        ("port-rx (pcap replay)", f"{s['port-rx_cycles_per_pkt_netflow']:.1f} / "
         f"{s['port-rx_cycles_per_pkt_plain']:.1f} cycles/pkt", "with / without netflow"),
        ("port-tx (null sink)", f"{s['port-tx_cycles_per_pkt_netflow']:.1f} / "
         f"{s['port-tx_cycles_per_pkt_plain']:.1f} cycles/pkt", "with / without netflow"),
        ("flows cached at window end", f"{s['flows_used']:,}", "netflow info flows_used (min over runs)"),
        ("flows created / alloc_failed", f"{s['flows_created']:,} / {s['alloc_failed']:,}", ""),
        ("expired during run / skipped", f"{s['expired_during_run']:,} / {s['skipped']:,}", ""),
        ("RSS with / without netflow", f"{s['rss_mib_netflow']:.0f} / {s['rss_mib_plain']:.0f} MiB",
         "VmRSS at window end"),
        ("peak RSS with / without", f"{s['peak_rss_mib_netflow']:.0f} / {s['peak_rss_mib_plain']:.0f} MiB",
         "ru_maxrss from wait4 (whole run, incl. stop)"),
        ("flow cache bytes per flow",
         "-" if s["bytes_per_flow"] is None else f"{s['bytes_per_flow']:.0f} B",
         "(RSS with - RSS without) / flows_used; max_flows = 2 x flows"),
        ("whole cache per max_flows slot", f"{s['peak_bytes_per_slot']:.0f} B",
         "(peak with - peak without) / max_flows: the stop's free touches every page"),
        ("stop: flush + export", f"{s['stop_flush_s']:.2f} s",
         f"{s['exported_at_stop']:,} records exported, {s['collector_records_dataplane']:,} received"),
        ("ours, pkts per CPU-second", f"{s['ours_pkts_per_worker_cpu_s'] / 1e6:.3f} M",
         f"window packets / worker thread CPU time (on its CPU "
         f"{s['worker_on_cpu_netflow'] * 100:.1f}% of the window); whole process: "
         f"{s['ours_pkts_per_process_cpu_s'] / 1e6:.3f} M"),
    ]
    if results.get("netflow_alt"):
        rows += [
            ("--alt-native build", f"{s['mpps_netflow_alt']:.3f} Mpps, "
             f"{s['netflow_alt_cycles_per_pkt_by_difference']:.1f} cycles/pkt by difference "
             f"({s['netflow_alt_cycles_per_pkt']:.1f} runtime row), {s['bytes_per_flow_alt']:.0f} B/flow",
             escape(args.alt_native)),
        ]
    if results.get("sf_once"):
        rows += [
            (f"softflowd {setup['softflowd_version']}, N packets",
             f"{s['sf_once_pkts_per_cpu_s'] / 1e6:.3f} M/CPU-s", "every packet a new flow; incl. final export"),
            (f"softflowd, {args.passes} x N packets",
             f"{s['sf_passes_pkts_per_cpu_s'] / 1e6:.3f} M/CPU-s", "first pass creates, later passes hit"),
            ("softflowd, hit passes only",
             "-" if s["sf_hit_pkts_per_cpu_s"] is None else f"{s['sf_hit_pkts_per_cpu_s'] / 1e6:.3f} M/CPU-s",
             f"({args.passes - 1} x N packets) / (CPU of {args.passes}xN run - CPU of N run)"),
            ("softflowd peak RSS", f"{s['sf_peak_rss_mib']:.0f} MiB",
             f"ru_maxrss, -m 2 x flows; {s['sf_peak_rss_bytes_per_flow']:.0f} B per flow (N-packet run)"),
            ("ratio ours/softflowd (hits)",
             "-" if s["ratio_ours_over_sf_hits"] is None else f"{s['ratio_ours_over_sf_hits']:.2f}",
             "both on cached flows"),
            ("ratio ours/softflowd (whole files)",
             f"{s['ratio_ours_over_sf_once']:.2f} / {s['ratio_ours_over_sf_passes']:.2f}",
             f"vs N-packet / {args.passes}xN-packet file"),
        ]
    for row in rows:
        f.add_row(*row)
    c.print(f)
    return {"setup": setup, "runs": results, **s}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--flows", type=int, default=1_000_000, help="concurrent flows N (default 1,000,000)")
    ap.add_argument("--rounds", type=int, default=2, help="rounds of alternated runs (default 2)")
    ap.add_argument("--duration", type=float, default=8.0, help="seconds measured per dataplane run (default 8)")
    ap.add_argument("--warmup", type=float, default=1.0,
                    help="seconds of traffic before the window, so every flow exists (default 1)")
    ap.add_argument("--passes", type=int, default=3,
                    help="softflowd's second file: the N packets this many times (default 3)")
    ap.add_argument("--softflowd-cap", type=float, default=120.0,
                    help="stop a softflowd run after this many seconds (default 120)")
    ap.add_argument("--no-softflowd", action="store_true", help="skip softflowd")
    ap.add_argument("--memory-mb", type=int, default=0, help="EAL -m (default: sized from --flows)")
    ap.add_argument("--json-out", metavar="FILE", help="also write all figures as JSON here")
    ap.add_argument("--alt-native", metavar="SO",
                    help="also run the netflow pipeline, alternated with the others in every round, "
                         "with this build of the C module (a copy of build/cp311/_native*.so): "
                         "A/B of two builds in one run")
    ap.add_argument("--child", metavar="CONFIG", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(args.child, args.duration, args.warmup, args.alt_native)
        return
    if not 1 <= args.flows <= MAX_FLOWS:
        ap.error(f"--flows must be 1..{MAX_FLOWS}")
    if args.passes < 2:
        ap.error("--passes must be >= 2")
    use_sf = not args.no_softflowd
    if use_sf and shutil.which("softflowd") is None:
        sys.exit("softflowd not found (apt-get install -y softflowd), or pass --no-softflowd")

    pcap = make_pcap(args.flows, 1)
    pcap_passes = make_pcap(args.flows, args.passes) if use_sf else None
    setup = {
        "traffic": f"{args.flows:,} IPv4/UDP flows, one {FRAME_LEN}-byte frame each "
                   f"({FRAME_LEN + 4} B with FCS), flow i = packet i",
        "pcap": str(pcap), "pcap_passes": str(pcap_passes) if pcap_passes else None,
        "flows": args.flows, "max_flows": 2 * args.flows, "timeouts_s": TIMEOUT_S,
        "worker_cpu": WORKER_CPU, "main_cpu": MAIN_CPU, "data_room": DATA_ROOM,
        "duration_s": args.duration, "warmup_s": args.warmup, "rounds": args.rounds,
        "passes": args.passes,
        "softflowd_version": softflowd_version() if use_sf else None,
        "softflowd_cmd": "softflowd -r FILE -n 127.0.0.1:PORT -v 5 -d -m 2N -p PIDFILE -c none",
        "loadavg_before": [round(x, 2) for x in os.getloadavg()],
    }
    results: dict[str, list[dict]] = {k: [] for k in PEERS if use_sf or not k.startswith("sf_")}
    if not args.alt_native:
        del results["netflow_alt"]
    sink = Sink()
    try:
        with tempfile.TemporaryDirectory(prefix="netflow_bench_") as tmp:
            wd = Path(tmp)
            for rnd in range(args.rounds):
                for key in results:
                    print(f"round {rnd + 1}/{args.rounds}: {PEERS[key]} ...", file=sys.stderr, flush=True)
                    if key == "netflow":
                        r = run_dataplane(wd, args, pcap, sink, with_netflow=True)
                    elif key == "netflow_alt":
                        r = run_dataplane(wd, args, pcap, sink, with_netflow=True,
                                          native_so=args.alt_native)
                    elif key == "plain":
                        r = run_dataplane(wd, args, pcap, sink, with_netflow=False)
                    else:
                        r = run_softflowd(wd, pcap if key == "sf_once" else pcap_passes, sink,
                                          2 * args.flows, args.softflowd_cap)
                    results[key].append(r)
    finally:
        sink.close()
    setup["loadavg_after"] = [round(x, 2) for x in os.getloadavg()]
    out = report(args, results, setup)
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()
