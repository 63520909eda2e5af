#!/usr/bin/env python3
"""io-forward throughput: the Python-driven dataplane worker vs `dpdk-testpmd --forward-mode=io`.

Both peers forward between the same two virtual devices (net_null0 <-> net_null1,
cross-connected both ways) on ONE forwarding core (cpu 1, main thread on cpu 0).
Runs alternate (testpmd, dataplane, ...) for --rounds rounds because the host is
shared. A second scenario runs the dataplane in-process with its main Python
thread idle, then busy (holding the GIL in a JSON-encoding loop).
See bench/README.md.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import MAIN_CPU, Testpmd, WORKER_CPU, last_json, remove_runtime_dir, unique_prefix  # noqa: E402

MEMORY_MB = 512
TESTPMD_MBUFS, DP_MBUFS = 16384, 16383
DP_BURST = 32  # native/dp_internal.h
WARMUP_S = 1.0  # testpmd: forwarding time before the first counter read
RESULT_MARK = "IO_FORWARD_RESULT "

PEERS = {  # key -> what the table calls it
    "testpmd": "dpdk-testpmd --forward-mode=io",
    "dataplane": "dataplane (CLI `run --json`)",
    "idle": "dataplane in-process, main thread idle",
    "busy": "dataplane in-process, main thread busy",
}

CONFIG = """\
[eal]
workers = [{worker}]
main_core = {main}
hugepages = false
memory_mb = {memory}
file_prefix = "{prefix}"
log_level = "warning"

[mempool]
mbufs = {mbufs}

[[ports]]
name = "a"
device = "net_null0"

[[ports]]
name = "b"
device = "net_null1"

[[pipeline]]
stage = "xconnect"
map = {{ a = "b", b = "a" }}
"""

# ---- testpmd -----------------------------------------------------------------

def run_testpmd(workdir: Path, duration: float) -> dict:
    prefix = unique_prefix("testpmd")
    tp = None
    try:
        tp = Testpmd(workdir, prefix, ["net_null0", "net_null1"], memory_mb=MEMORY_MB,
                     mbufs=TESTPMD_MBUFS)
        _, started = tp.command("start")
        burst = re.search(r"packets/burst=(\d+)", started)
        time.sleep(WARMUP_S)
        t1, s1 = tp.port_stats({0, 1})
        time.sleep(duration)
        t2, s2 = tp.port_stats({0, 1})
        tp.command("stop")
    finally:
        if tp is not None:
            tp.close()
        remove_runtime_dir(prefix)
    dt = t2 - t1
    rx = sum(s2[p][0] - s1[p][0] for p in s1) / dt
    tx = sum(s2[p][1] - s1[p][1] for p in s1) / dt
    return {"pps": rx, "rx_pps": rx, "tx_pps": tx, "interval_s": dt,
            "burst": int(burst.group(1)) if burst else None}


# ---- dataplane -----------------------------------------------------------------

def write_config(workdir: Path, tag: str) -> tuple[Path, str]:
    prefix = unique_prefix(tag)
    path = workdir / f"{prefix}.toml"
    path.write_text(CONFIG.format(worker=WORKER_CPU, main=MAIN_CPU, memory=MEMORY_MB,
                                  prefix=prefix, mbufs=DP_MBUFS))
    return path, prefix


def run_checked(cmd: list[str], timeout: float) -> str:
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    if p.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} exited {p.returncode}:\n{p.stdout[-2000:]}\n"
                           f"{p.stderr[-2000:]}")
    return p.stdout


def run_dataplane_cli(workdir: Path, duration: float) -> dict:
    cfg, prefix = write_config(workdir, "dp")
    try:
        out = run_checked([sys.executable, "-m", "dataplane", "run", str(cfg),
                           "--duration", str(duration), "--json"], timeout=duration + 120)
    finally:
        remove_runtime_dir(prefix)
    res = last_json(out)
    rates = res["rates"]
    return {"pps": rates["totals"]["tx"], "rx_pps": rates["totals"]["rx"],
            "tx_pps": rates["totals"]["tx"], "interval_s": rates["interval_s"],
            "max_gap_us": max(w["max_gap_us"] for w in res["workers"]),
            "ready_s": res.get("ready_s")}


def run_dataplane_inprocess(workdir: Path, duration: float, busy: bool) -> dict:
    cfg, prefix = write_config(workdir, "busy" if busy else "idle")
    cmd = [sys.executable, __file__, "--child", str(cfg), "--duration", str(duration)]
    try:
        out = run_checked(cmd + (["--busy"] if busy else []), timeout=duration + 120)
    finally:
        remove_runtime_dir(prefix)
    line = next(ln for ln in out.splitlines() if ln.startswith(RESULT_MARK))
    return json.loads(line[len(RESULT_MARK):])


def child(cfg_path: str, duration: float, busy: bool) -> None:
    """One EAL per process: run the dataplane here, the main thread idle or busy."""
    from dataplane import config, native
    from dataplane.eal import Eal
    from dataplane.engine import Dataplane
    from dataplane.view import rates

    cfg = config.load(cfg_path)
    eal = Eal(cfg)
    dp = Dataplane(cfg)
    doc = {"ports": ["a", "b"], "values": list(range(256)), "nested": {"k": "v" * 64}}
    spins = 0
    try:
        dp.start()
        a, b = dp.port("a").port_id, dp.port("b").port_id
        first = dp.snapshot()
        end = time.monotonic() + duration
        next_cmd = time.monotonic()
        commands = 0
        while (now := time.monotonic()) < end:
            # A control command every 100 ms (an xconnect entry set again, as a
            # reload does): the worker runs it inside its C loop, it never
            # waits for the GIL the main thread holds. The gap is measured.
            if now >= next_cmd:
                dp.stage_command(0, native.CMD_XCONNECT_SET, a, b, what="xconnect")
                commands += 1
                next_cmd = now + 0.1
            if busy:  # pure-Python work that holds the GIL; no sleeping
                json.dumps(doc)
                spins += 1
            else:
                time.sleep(0.01)
        last = dp.snapshot()
    finally:
        dp.stop()
        eal.close()
    r = rates(first, last)
    print(RESULT_MARK + json.dumps({
        "pps": r["totals"]["tx"], "rx_pps": r["totals"]["rx"], "tx_pps": r["totals"]["tx"],
        "interval_s": r["interval_s"], "max_gap_us": last.totals["max_gap_us"],
        "main_spins_per_s": spins / r["interval_s"], "commands": commands}), flush=True)


# ---- driver --------------------------------------------------------------------

def median(runs: list[dict], key: str = "pps") -> float:
    return statistics.median(r[key] for r in runs)


def report(args, results: dict[str, list[dict]], load: tuple[list[float], list[float]]) -> dict:
    from rich.console import Console
    from rich.table import Table

    med = {k: median(v) for k, v in results.items()}
    best = {k: max(r["pps"] for r in v) for k, v in results.items()}
    summary = {
        "ratio_dataplane_over_testpmd": med["dataplane"] / med["testpmd"],
        "ratio_dataplane_over_testpmd_best": best["dataplane"] / best["testpmd"],
        "ratio_busy_over_idle": med["busy"] / med["idle"],
        "max_gap_us_idle": max(r["max_gap_us"] for r in results["idle"]),
        "max_gap_us_busy": max(r["max_gap_us"] for r in results["busy"]),
    }
    burst = results["testpmd"][0].get("burst")
    setup = {
        "devices": "2x net_null (net_null0 <-> net_null1, cross-connected both ways)",
        "forwarding_cpu": WORKER_CPU, "main_cpu": MAIN_CPU, "forwarding_cores": 1,
        "burst": {"dataplane": DP_BURST, "testpmd": burst},
        "memory": f"--no-huge -m {MEMORY_MB}",
        "mbufs": {"dataplane": DP_MBUFS, "testpmd": TESTPMD_MBUFS},
        "duration_s": args.duration, "testpmd_warmup_s": WARMUP_S, "rounds": args.rounds,
        "metric": "packets forwarded per second, both directions summed "
                  "(testpmd: delta of RX-packets over both ports / script-measured time; "
                  "dataplane: rates.totals.tx)",
        "loadavg_before": load[0], "loadavg_after": load[1],
    }
    c = Console()
    c.print(f"[bold]io-forward throughput[/] on {setup['devices']}\n"
            f"one forwarding core (cpu {WORKER_CPU}), main thread on cpu {MAIN_CPU}; "
            f"burst {DP_BURST} (testpmd: {burst}); {setup['memory']}; "
            f"mbufs {DP_MBUFS}/{TESTPMD_MBUFS} (dataplane/testpmd)\n"
            f"{args.rounds} round(s), peers alternated, {args.duration:g} s measured per run "
            f"(testpmd after a {WARMUP_S:g} s warm-up)\n"
            f"metric: {setup['metric']}\n"
            f"load average before/after: {load[0]} / {load[1]}", highlight=False)
    t = Table(title="Mpps per run")
    t.add_column("peer")
    for i in range(args.rounds):
        t.add_column(f"round {i + 1}", justify="right")
    t.add_column("median", justify="right", style="bold")
    t.add_column("best", justify="right")
    t.add_column("max gap µs", justify="right")
    for key, runs in results.items():
        gap = max((r["max_gap_us"] for r in runs if "max_gap_us" in r), default=None)
        t.add_row(PEERS[key], *(f"{r['pps'] / 1e6:.2f}" for r in runs),
                  f"{med[key] / 1e6:.2f}", f"{best[key] / 1e6:.2f}", "-" if gap is None else f"{gap:.0f}")
    c.print(t)
    c.print(f"ratio dataplane/testpmd (medians): [bold]{summary['ratio_dataplane_over_testpmd']:.3f}[/]"
            f" (best runs: {summary['ratio_dataplane_over_testpmd_best']:.3f})\n"
            f"ratio busy/idle main thread (medians): [bold]{summary['ratio_busy_over_idle']:.3f}[/]"
            f" (design target >= 0.95; busy main thread ran "
            f"{median(results['busy'], 'main_spins_per_s'):,.0f} json.dumps/s)\n"
            f"worker max gap between polls: idle {summary['max_gap_us_idle']:.0f} µs, "
            f"busy {summary['max_gap_us_busy']:.0f} µs", highlight=False)
    return {"setup": setup, "runs": results, "median_pps": med, "best_pps": best, **summary}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=2, help="rounds of alternated runs (default 2)")
    ap.add_argument("--duration", type=float, default=8.0, help="seconds measured per run (default 8)")
    ap.add_argument("--json-out", metavar="FILE", help="also write all figures as JSON here")
    ap.add_argument("--child", metavar="CONFIG", help=argparse.SUPPRESS)
    ap.add_argument("--busy", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(args.child, args.duration, args.busy)
        return

    peers = {
        "testpmd": run_testpmd,
        "dataplane": run_dataplane_cli,
        "idle": lambda wd, d: run_dataplane_inprocess(wd, d, busy=False),
        "busy": lambda wd, d: run_dataplane_inprocess(wd, d, busy=True),
    }
    results: dict[str, list[dict]] = {k: [] for k in peers}
    load_before = [round(x, 2) for x in os.getloadavg()]
    with tempfile.TemporaryDirectory(prefix="io_forward_") as tmp:
        for rnd in range(args.rounds):
            for key, fn in peers.items():
                print(f"round {rnd + 1}/{args.rounds}: {PEERS[key]} ...", file=sys.stderr, flush=True)
                results[key].append(fn(Path(tmp), args.duration))
    out = report(args, results, (load_before, [round(x, 2) for x in os.getloadavg()]))
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()
