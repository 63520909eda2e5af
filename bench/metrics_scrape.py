#!/usr/bin/env python3
"""Forwarding rate while Prometheus scrapes the metrics endpoint at 10 Hz,
against the same run without scraping.

The dataplane runs io-forward (xconnect net_null0 <-> net_null1, one worker
on cpu 1, main thread on cpu 0) through the CLI (`run --json`) with metrics
on; in "scraped" runs a thread of this script GETs /metrics every
1/--hz seconds for the whole run. Runs alternate for --rounds rounds (the host
is shared); the figure is the dataplane's own tx rate over its run. The script (scraper included) is
pinned to the main core, off the worker's, as an agent would be. Scrapes are
served from a snapshot the collector takes every interval_s, never from the
workers: this measures that claim. See bench/README.md.
"""
from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import MAIN_CPU, WORKER_CPU, last_json, remove_runtime_dir, unique_prefix  # noqa: E402

RESULT_MARK = "METRICS_SCRAPE_RESULT "
CONFIG = """\
[eal]
workers = [{worker}]
main_core = {main}
hugepages = false
memory_mb = 512
file_prefix = "{prefix}"
log_level = "warning"

[[ports]]
name = "a"
device = "net_null0"

[[ports]]
name = "b"
device = "net_null1"

[[pipeline]]
stage = "xconnect"
map = {{ a = "b", b = "a" }}

[metrics]
enabled = true
listen = "127.0.0.1:{port}"
interval_s = 0.1
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Scraper(threading.Thread):
    """GET /metrics every 1/hz s until stopped; keeps latencies."""

    def __init__(self, url: str, hz: float):
        super().__init__(daemon=True)
        self.url, self.period = url, 1.0 / hz
        self.stop_evt = threading.Event()
        self.latencies: list[float] = []
        self.errors = 0
        self.bytes = 0

    def run(self) -> None:
        next_t = time.monotonic()
        while not self.stop_evt.is_set():
            t0 = time.monotonic()
            try:
                with urllib.request.urlopen(self.url, timeout=2) as r:
                    self.bytes = len(r.read())
                self.latencies.append(time.monotonic() - t0)
            except OSError:
                self.errors += 1  # before the endpoint is up, or as it goes
            next_t += self.period
            self.stop_evt.wait(max(0.0, next_t - time.monotonic()))


def run_once(workdir: Path, seconds: float, hz: float | None) -> dict:
    prefix, port = unique_prefix("scrape"), free_port()
    cfg = workdir / f"{prefix}.toml"
    cfg.write_text(CONFIG.format(worker=WORKER_CPU, main=MAIN_CPU, prefix=prefix, port=port))
    scraper = Scraper(f"http://127.0.0.1:{port}/metrics", hz) if hz else None
    try:
        proc = subprocess.Popen([sys.executable, "-m", "dataplane", "run", str(cfg),
                                 "--duration", str(seconds), "--json"],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        if scraper:
            scraper.start()
        out, err = proc.communicate(timeout=seconds + 120)
    finally:
        if scraper:
            scraper.stop_evt.set()
            scraper.join()
        remove_runtime_dir(prefix)
    if proc.returncode != 0:
        raise RuntimeError(f"dataplane exited {proc.returncode}:\n{err[-2000:]}")
    res = last_json(out)
    r = {"pps": res["rates"]["totals"]["tx"], "interval_s": res["rates"]["interval_s"]}
    if scraper:
        lat = sorted(scraper.latencies)
        r.update(scrapes=len(lat), scrape_errors=scraper.errors, body_bytes=scraper.bytes,
                 scrape_p50_ms=lat[len(lat) // 2] * 1e3 if lat else None,
                 scrape_max_ms=lat[-1] * 1e3 if lat else None)
    return r


def run_interleaved(workdir: Path, windows: int, window_s: float, hz: float) -> list[dict]:
    """One dataplane run; scraping switched on and off in alternate windows,
    the rate of each read from its own counters over the control socket.
    Adjacent windows share the machine's state, so their ratio is far less
    noisy than separate runs'."""
    from dataplane.control import request

    prefix, port = unique_prefix("scrapeil"), free_port()
    run_dir = workdir / f"{prefix}.run"
    cfg = workdir / f"{prefix}.toml"
    cfg.write_text(CONFIG.format(worker=WORKER_CPU, main=MAIN_CPU, prefix=prefix, port=port)
                   + f'\n[run]\nruntime_dir = "{run_dir}"\n')
    sock = run_dir / f"{prefix}.sock"
    total = windows * window_s + 10
    proc = subprocess.Popen([sys.executable, "-m", "dataplane", "run", str(cfg), "--duration",
                             str(total), "--json"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    out = []
    try:
        deadline = time.monotonic() + 30
        while not sock.exists():
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"dataplane did not start: {proc.stderr.read()[-2000:]}")
            time.sleep(0.05)
        time.sleep(1.0)

        def tx() -> tuple[float, int]:
            ports = request(sock, "ports")
            return time.monotonic(), sum(p["tx"] for p in ports.values())

        for i in range(windows):
            scraped = i % 2 == 1
            scraper = Scraper(f"http://127.0.0.1:{port}/metrics", hz) if scraped else None
            if scraper:
                scraper.start()
            t0, n0 = tx()
            time.sleep(window_s)
            t1, n1 = tx()
            if scraper:
                scraper.stop_evt.set()
                scraper.join()
            out.append({"scraped": scraped, "pps": (n1 - n0) / (t1 - t0),
                        "scrapes": len(scraper.latencies) if scraper else 0})
    finally:
        proc.terminate()
        proc.communicate(timeout=60)
        remove_runtime_dir(prefix)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--seconds", type=float, default=6.0)
    ap.add_argument("--hz", type=float, default=10.0, help="scrapes per second")
    ap.add_argument("--interleaved", type=int, default=0, metavar="WINDOWS",
                    help="one run, scraping on in every other window of --seconds (paired)")
    args = ap.parse_args()
    # The scraper stands for a Prometheus agent on the housekeeping core: keep
    # it (and this script) off the worker's core, as a deployment would.
    os.sched_setaffinity(0, {MAIN_CPU})
    if args.interleaved:
        with tempfile.TemporaryDirectory(prefix="scrape_bench_") as tmp:
            wins = run_interleaved(Path(tmp), args.interleaved, args.seconds, args.hz)
        # each scraped window against the mean of its two plain neighbours
        pairs = [w["pps"] / ((wins[i - 1]["pps"] + wins[i + 1]["pps"]) / 2)
                 for i, w in enumerate(wins) if w["scraped"] and i + 1 < len(wins)]
        mean = statistics.mean(pairs)
        sem = statistics.stdev(pairs) / len(pairs) ** 0.5 if len(pairs) > 1 else float("nan")
        for w in wins:
            print(f"{'scraped' if w['scraped'] else 'plain  '} {w['pps'] / 1e6:.2f} Mpps")
        print(f"one run, {len(wins)} windows of {args.seconds:g} s, scraping at {args.hz:g} Hz in "
              f"every other one: scraped/neighbours = {mean:.4f} +- {sem:.4f} (mean +- s.e., "
              f"{len(pairs)} pairs)")
        print(RESULT_MARK + json.dumps({"windows": wins, "pair_ratios": pairs, "mean": mean,
                                        "sem": sem, "hz": args.hz}))
        return
    runs: dict[str, list[dict]] = {"plain": [], "scraped": []}
    with tempfile.TemporaryDirectory(prefix="scrape_bench_") as tmp:
        for rnd in range(args.rounds):
            for key in runs:
                r = run_once(Path(tmp), args.seconds, args.hz if key == "scraped" else None)
                runs[key].append(r)
                extra = (f", {r['scrapes']} scrapes, p50 {r['scrape_p50_ms']:.1f} ms, "
                         f"max {r['scrape_max_ms']:.1f} ms" if key == "scraped" else "")
                print(f"round {rnd + 1} {key}: {r['pps'] / 1e6:.2f} Mpps{extra}", flush=True)
    med = {k: statistics.median(r["pps"] for r in v) for k, v in runs.items()}
    ratio = med["scraped"] / med["plain"]
    print(f"io-forward, net_null0 <-> net_null1, one worker; metrics snapshot every 0.1 s\n"
          f"median without scraping {med['plain'] / 1e6:.2f} Mpps, scraped at {args.hz:g} Hz "
          f"{med['scraped'] / 1e6:.2f} Mpps: ratio {ratio:.3f} ({(ratio - 1) * 100:+.1f}%)\n"
          f"caveat: a 2-core shared VM; the scraper and the dataplane's main thread share cpu {MAIN_CPU}")
    print(RESULT_MARK + json.dumps({"runs": runs, "median_pps": med, "ratio": ratio, "hz": args.hz}))


if __name__ == "__main__":
    main()
