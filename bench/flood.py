#!/usr/bin/env python3
"""Flow-table flood: N distinct sources offered once to the netflow stage with
a small and a large cache (max_flows), and the same number of packets in ONE
flow as the baseline.

Traffic: a pcap of N IPv4/UDP packets, packet i from source 10.0.0.0+i (every
packet a new key), read ONCE by net_pcap (no infinite_rx) into one worker
(cpu 1, main thread on cpu 0) whose pipeline is [netflow, xconnect to a
net_null sink]. Timeouts are 3600 s, so nothing expires unless the cache's own
logic has to. Per cache size the run reports peak RSS, the netflow counters,
the exact accounting (created + alloc_failed == packets metered; after the
stop's flush exported == created and nothing resident) and the forwarding
rate of the flood vs the one-flow baseline.
See bench/README.md.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import DPDK_RUN, WORKER_CPU, pcap_to_null_toml, unique_prefix  # noqa: E402
from netflow import (FRAME_LEN, PCAP_GLOBAL, PCAP_RECORD, Sink, flow_frame,  # noqa: E402
                     wait_rusage)

RESULT_MARK = "FLOOD_BENCH_RESULT "
PCAP_DIR = Path("/tmp")
TIMEOUT_S = 3600
DATA_ROOM = 256
MBUFS = 65535
FLOW_BYTES_BUDGET = 256        # EAL memory planned per max_flows entry
EAL_SLACK_MB = 512
MAX_SOURCES = 1 << 24          # source 10.0.0.0 + i

CONFIG = """\
{head}
[[pipeline]]
stage = "netflow"
max_flows = {max_flows}
active_timeout = {timeout}
inactive_timeout = {timeout}
export_ring = 65536
scan_budget = 1024
export = {{ version = 5, collectors = ["127.0.0.1:{port}"] }}

[[pipeline]]
stage = "xconnect"
map = {{ in = "out" }}
"""


# ---- traffic -----------------------------------------------------------------

def pcap_path(kind: str, n: int) -> Path:
    return PCAP_DIR / f"dp_flood_bench_{kind}_{n}.pcap"


def _write(path: Path, chunks) -> None:
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    with open(tmp, "wb") as f:
        f.write(PCAP_GLOBAL.pack(0xA1B2C3D4, 2, 4, 0, 0, 65535, 1))  # usec, Ethernet
        for c in chunks:
            f.write(c)
    tmp.rename(path)


def _flood_chunks_struct(n: int, chunk: int = 1 << 16):
    rec = struct.Struct(f"<IIII{FRAME_LEN}s")
    for lo in range(0, n, chunk):
        yield b"".join(rec.pack(i // 1_000_000, i % 1_000_000, FRAME_LEN, FRAME_LEN, flow_frame(i))
                       for i in range(lo, min(n, lo + chunk)))


def _flood_chunks_numpy(n: int, chunk: int = 1 << 20):
    """The same bytes as flow_frame(i) (bench/netflow.py), a chunk at a time:
    only the timestamp, addresses, IP checksum and source port vary."""
    import numpy as np
    rec_len = PCAP_RECORD.size + FRAME_LEN
    template = np.frombuffer(PCAP_RECORD.pack(0, 0, FRAME_LEN, FRAME_LEN) + flow_frame(0), np.uint8)
    ip_len = FRAME_LEN - 14
    base = 0x4500 + ip_len + (64 << 8 | 17)
    for lo in range(0, n, chunk):
        i = np.arange(lo, min(n, lo + chunk), dtype=np.uint64)
        buf = np.tile(template, (len(i), 1))
        src = 0x0A000000 | i
        dst = 0xC0A80000 | ((i * 2654435761) >> 16 & 0xFFFF)
        c = base + (src >> 16) + (src & 0xFFFF) + (dst >> 16) + (dst & 0xFFFF)
        c = (c & 0xFFFF) + (c >> 16)
        c = (c & 0xFFFF) + (c >> 16)
        csum = ~c & 0xFFFF
        sport = 1024 + i % 60000

        def put(off, width, val, order):
            buf[:, off:off + width] = val.astype(f"{order}u{width}").view(np.uint8).reshape(-1, width)
        put(0, 4, i // 1_000_000, "<")            # ts_sec
        put(4, 4, i % 1_000_000, "<")             # ts_usec
        o = PCAP_RECORD.size + 14                 # IPv4 header
        put(o + 10, 2, csum, ">")
        put(o + 12, 4, src, ">")
        put(o + 16, 4, dst, ">")
        put(o + 20, 2, sport, ">")                # UDP source port
        assert buf.shape[1] == rec_len
        yield buf.tobytes()


def make_flood_pcap(n: int) -> Path:
    """Packet i: 10.0.0.0+i:(1024 + i % 60000) -> 192.168.x.y:53, 1 us apart."""
    if n > MAX_SOURCES:
        raise SystemExit(f"--sources: at most {MAX_SOURCES} (sources are 10.0.0.0/8)")
    path = pcap_path("flood", n)
    size = PCAP_GLOBAL.size + n * (PCAP_RECORD.size + FRAME_LEN)
    if path.exists() and path.stat().st_size == size:
        return path
    t0 = time.monotonic()
    try:
        import numpy  # noqa: F401
        chunks = _flood_chunks_numpy(n)
    except ImportError:
        chunks = _flood_chunks_struct(n)
    _write(path, chunks)
    print(f"wrote {path} ({n:,} sources) in {time.monotonic() - t0:.1f} s", file=sys.stderr, flush=True)
    return path


def make_one_flow_pcap(n: int) -> Path:
    """N packets of flow 0 (same bytes, timestamps 1 us apart)."""
    path = pcap_path("oneflow", n)
    size = PCAP_GLOBAL.size + n * (PCAP_RECORD.size + FRAME_LEN)
    if path.exists() and path.stat().st_size == size:
        return path
    frame = flow_frame(0)

    def chunks(chunk=1 << 16):
        for lo in range(0, n, chunk):
            yield b"".join(PCAP_RECORD.pack(i // 1_000_000, i % 1_000_000, FRAME_LEN, FRAME_LEN) + frame
                           for i in range(lo, min(n, lo + chunk)))
    t0 = time.monotonic()
    _write(path, chunks())
    print(f"wrote {path} ({n:,} packets, one flow) in {time.monotonic() - t0:.1f} s",
          file=sys.stderr, flush=True)
    return path


# ---- dataplane child ---------------------------------------------------------------

def _status_kib(field: str, pid: str = "self") -> int:
    m = re.search(rf"^{field}:\s+(\d+) kB", Path(f"/proc/{pid}/status").read_text(), re.M)
    return int(m.group(1)) if m else 0


def child(cfg_path: str, packets: int, cap_s: float) -> None:
    """Start, poll until every packet of the file went through (rx == N and
    rx == tx + dropped), read the cache, stop (the stop flushes every flow),
    read it again."""
    from dataplane import config, native
    from dataplane.eal import Eal
    from dataplane.engine import Dataplane
    from dataplane.view import rates, runtime_rows

    cfg = config.load(cfg_path)
    eal = Eal(cfg)
    dp = Dataplane(cfg)
    res: dict = {"packets_in_file": packets}
    try:
        dp.start()
        first = dp.snapshot()
        t_cap = time.monotonic() + cap_s
        start = None            # the last snapshot before any packet arrived
        while True:
            cur = dp.snapshot()
            if cur.totals["rx"] == 0:
                start = cur
            elif cur.totals["rx"] >= packets and cur.totals["tx"] + cur.totals["dropped"] >= cur.totals["rx"]:
                break
            if time.monotonic() > t_cap:
                res["timed_out"] = True
                break
            time.sleep(0.002)
        last = cur
        # everything processed, nothing expired by time: the cache as the flood left it
        res["netflow_before_stop"] = last.netflow[0]
        res["hwm_mib_before_stop"] = _status_kib("VmHWM") / 1024
        res["rss_mib_before_stop"] = _status_kib("VmRSS") / 1024
        ctrls = list(dp.netflow)
        t1 = time.monotonic()
        dp.quiesce()            # workers stopped, every cached flow exported
        res["stop_flush_s"] = time.monotonic() - t1
        res["netflow_after_stop"] = ctrls[0].info()
        res["hwm_mib_after_flush"] = _status_kib("VmHWM") / 1024
    finally:
        dp.stop()
        res["hwm_mib_after_teardown"] = _status_kib("VmHWM") / 1024
        eal.close()
    start = start or first
    r = rates(start, last)      # the same computation as `dataplane run --json` "rates"
    res.update(rates=r, totals=last.totals,
               runtime={row["stage"]: {k: row[k] for k in ("cycles_per_pkt", "pkts_per_call", "packets")}
                        for row in runtime_rows(last)},
               tsc_hz=native.tsc_hz())
    print(RESULT_MARK + json.dumps(res), flush=True)


# ---- driver ------------------------------------------------------------------------

def run_one(workdir: Path, pcap: Path, packets: int, max_flows: int, sink: Sink, tag: str,
            cap_s: float) -> dict:
    prefix = unique_prefix(tag)
    need = MBUFS * (64 + 128 + DATA_ROOM) + max_flows * FLOW_BYTES_BUDGET + (EAL_SLACK_MB << 20)
    memory_mb = -(-need // (1 << 30)) * 1024
    cfg = workdir / f"{prefix}.toml"
    head = pcap_to_null_toml(prefix, memory_mb, MBUFS, DATA_ROOM, pcap, forever=False)
    cfg.write_text(CONFIG.format(head=head, max_flows=max_flows, timeout=TIMEOUT_S, port=sink.port))
    before = sink.counts(0.05)
    out_path = workdir / f"{prefix}.out"
    cmd = [sys.executable, __file__, "--child", str(cfg), "--packets", str(packets), "--cap", str(cap_s)]
    try:
        with open(out_path, "w") as out:
            proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, text=True)
            code, _ = wait_rusage(proc, cap_s + 300)
    finally:
        shutil.rmtree(DPDK_RUN / prefix, ignore_errors=True)
    text = out_path.read_text(errors="replace")
    line = next((ln for ln in text.splitlines() if ln.startswith(RESULT_MARK)), None)
    if code != 0 or line is None:
        raise RuntimeError(f"dataplane child exited {code}; config {cfg}:\n{text[-4000:]}")
    res = json.loads(line[len(RESULT_MARK):])
    after = sink.counts()
    # not ru.ru_maxrss: Linux carries the pre-exec high-water mark over execve, so
    # it would include this (forked) driver's memory; VmHWM is the child's own
    res.update(max_flows=max_flows, memory_mb=memory_mb, collector_records=after[1] - before[1])
    return res


def check(res: dict, new_keys: int) -> dict:
    """The accounting identities, each with its two sides."""
    b, a = res["netflow_before_stop"], res["netflow_after_stop"]
    metered = res["totals"]["rx"]
    expired_by_scan_or_active = b["inact_exp"] + b["act_exp"]
    out = {
        # every packet of a single pass is a new key
        "created+alloc_failed==packets": (b["flows_created"] + b["alloc_failed"], metered),
        "created+alloc_failed==new_keys": (b["flows_created"] + b["alloc_failed"], new_keys),
        # before the stop: what was created is resident or was expired (exported or lost)
        "created==resident+expired": (b["flows_created"], b["flows_used"] + b["exported"] + b["export_failed"]),
        # after the stop's flush: nothing resident, everything created was exported
        "exported==created (after flush)": (a["exported"], a["flows_created"]),
        "resident==0 (after flush)": (a["flows_used"], 0),
        "export_failed==0": (a["export_failed"], 0),
    }
    res["expired_before_stop"] = expired_by_scan_or_active
    return {k: {"lhs": l, "rhs": r, "ok": l == r} for k, (l, r) in out.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sources", type=int, default=10_000_000, help="distinct sources = packets (default 10M)")
    ap.add_argument("--quick", action="store_true", help="1M sources")
    ap.add_argument("--caches", default="65536,1048576", help="max_flows values, comma-separated")
    ap.add_argument("--no-baseline", action="store_true", help="skip the one-flow runs")
    ap.add_argument("--cap", type=float, default=120.0, help="seconds a run may take to read the file")
    ap.add_argument("--json-out")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    ap.add_argument("--packets", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(args.child, args.packets, args.cap)
        return
    if os.geteuid() != 0:
        raise SystemExit("needs root (DPDK EAL)")
    n = 1_000_000 if args.quick else args.sources
    caches = [int(c) for c in args.caches.split(",") if c]
    flood = make_flood_pcap(n)
    one = None if args.no_baseline else make_one_flow_pcap(n)

    print(f"flood: {n:,} packets, each a new source (10.0.0.0+i), read once by net_pcap; "
          f"pipeline [netflow (timeouts {TIMEOUT_S} s), xconnect -> net_null]; worker cpu {WORKER_CPU}",
          flush=True)
    results: dict = {"sources": n, "caches": {}}
    sink = Sink()
    workdir = Path(tempfile.mkdtemp(prefix="dp_flood_"))
    try:
        for mf in caches:
            entry: dict = {}
            entry["flood"] = run_one(workdir, flood, n, mf, sink, f"flood{mf}", args.cap)
            entry["checks"] = check(entry["flood"], n)
            if one is not None:
                entry["baseline"] = run_one(workdir, one, n, mf, sink, f"one{mf}", args.cap)
            results["caches"][mf] = entry
            report(mf, entry)
    finally:
        sink.close()
        shutil.rmtree(workdir, ignore_errors=True)
    ok = all(c["ok"] for e in results["caches"].values() for c in e["checks"].values())
    print(f"\naccounting identities: {'all held' if ok else 'SOME FAILED'}")
    results["all_identities_held"] = ok
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(results, indent=2))


def report(mf: int, e: dict) -> None:
    f = e["flood"]
    b, a = f["netflow_before_stop"], f["netflow_after_stop"]
    mpps = f["rates"]["totals"]["tx"] / 1e6
    print(f"\n== max_flows {mf:,} ==")
    base = f" (one-flow baseline: {e['baseline']['hwm_mib_after_teardown']:.0f} MiB)" if "baseline" in e else ""
    print(f"  peak RSS (VmHWM at exit): {f['hwm_mib_after_teardown']:.0f} MiB{base}; "
          f"{f['hwm_mib_before_stop']:.0f} MiB when the flood had been metered, "
          f"{f['hwm_mib_after_flush']:.0f} MiB after the flush")
    print(f"  packets metered {f['totals']['rx']:,}  forwarded {f['totals']['tx']:,}  "
          f"dropped {f['totals']['dropped']:,}")
    print(f"  before stop: created {b['flows_created']:,}  alloc_failed {b['alloc_failed']:,}  "
          f"resident {b['flows_used']:,}  exported {b['exported']:,}  "
          f"inact_exp {b['inact_exp']:,}  act_exp {b['act_exp']:,}")
    print(f"  after flush: created {a['flows_created']:,}  exported {a['exported']:,}  resident {a['flows_used']:,}  "
          f"export_failed {a['export_failed']:,}  collector records {f['collector_records']:,}  "
          f"(flush {f['stop_flush_s']:.2f} s)")
    for k, c in e["checks"].items():
        print(f"  {'ok  ' if c['ok'] else 'FAIL'} {k}: {c['lhs']:,} vs {c['rhs']:,}")
    nf_cyc = f["runtime"].get("netflow", {}).get("cycles_per_pkt")
    line = f"  flood {mpps:.2f} Mpps ({f['rates']['interval_s']:.2f} s"
    line += f", netflow {nf_cyc:.0f} cycles/pkt)" if nf_cyc else ")"
    if "baseline" in e:
        g = e["baseline"]
        bm = g["rates"]["totals"]["tx"] / 1e6
        gc = g["runtime"].get("netflow", {}).get("cycles_per_pkt")
        line += f"  vs one flow {bm:.2f} Mpps ({g['rates']['interval_s']:.2f} s"
        line += f", netflow {gc:.0f} cycles/pkt)" if gc else ")"
        line += f"  ratio {mpps / bm:.2f}"
    print(line, flush=True)


if __name__ == "__main__":
    main()
