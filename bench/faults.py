#!/usr/bin/env python3
"""Forwarding rate of a netflow pipeline while its collector is down, vs the
same pipeline, in the same process, while the collector is up.

One `dataplane run` (CLI, control socket): a pcap of N distinct IPv4/UDP flows
replayed forever by net_pcap (infinite_rx) into ONE worker (cpu 1, main thread
on cpu 0), pipeline [netflow (active_timeout 1 s: every flow expires and is
exported every second, so export never pauses), xconnect to a net_null sink],
exporting NetFlow v5 to 127.0.0.1:PORT. The collector is a UDP socket of this
script on PORT: bound ("up", it reads and counts datagrams) or closed ("down":
every other send() fails ECONNREFUSED, the rest are bounced by ICMP). Windows
alternate up, down, up, down ... for --rounds rounds of --window seconds; each
window's rate is the delta of the forwarded-packet counter over the delta of
the dataplane's own snapshot clock (`ctl stats`), taken after --settle s in
the new state. Printed: Mpps per window, the median of each state, the ratio
down/up, the send errors and records lost counted in down windows, and the
worker's largest time outside its C loop (max_gap_us).

    python3 bench/faults.py                    # 8000 flows, 4 rounds x 2 x 3 s: ~35 s
    python3 bench/faults.py --rounds 6 --json-out faults.json
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import DPDK_RUN, WORKER_CPU, pcap_to_null_toml, unique_prefix  # noqa: E402
from netflow import make_pcap  # noqa: E402

CONFIG = """\
{head}
[[pipeline]]
stage = "netflow"
max_flows = {max_flows}
active_timeout = 1
inactive_timeout = 15
export = {{ version = 5, collectors = ["127.0.0.1:{port}"] }}

[[pipeline]]
stage = "xconnect"
map = {{ in = "out" }}

[run]
runtime_dir = "{run_dir}"

[metrics]
enabled = false
"""


class Collector:
    """A UDP socket on 127.0.0.1:port that can be taken down and brought back."""

    def __init__(self) -> None:
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.bind(("127.0.0.1", 0))
        self.port = s.getsockname()[1]
        s.close()
        self.datagrams = 0
        self.sock: socket.socket | None = None
        self._thread: threading.Thread | None = None

    def up(self) -> None:
        if self.sock is not None:
            return
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
        self.sock.bind(("127.0.0.1", self.port))
        self.sock.settimeout(0.1)
        self._thread = threading.Thread(target=self._run, args=(self.sock,), daemon=True)
        self._thread.start()

    def _run(self, sock: socket.socket) -> None:
        while True:
            try:
                sock.recv(65535)
                self.datagrams += 1
            except socket.timeout:
                continue
            except OSError:
                return

    def down(self) -> None:
        if self.sock is not None:
            self.sock.close()
            self._thread.join()
            self.sock = None


def ctl_stats(sock: Path) -> dict:
    from dataplane.control import request
    return request(sock, "stats")


def measure(sock: Path, window: float) -> dict:
    a = ctl_stats(sock)
    time.sleep(window)
    b = ctl_stats(sock)
    ca, cb = a["netflow"][0]["export"]["collectors"][0], b["netflow"][0]["export"]["collectors"][0]
    dt = b["time"] - a["time"]
    return {"interval_s": dt, "pps": (b["totals"]["tx"] - a["totals"]["tx"]) / dt,
            "dropped": b["totals"]["dropped"] - a["totals"]["dropped"],
            "send_errors": cb["errors"] - ca["errors"],
            "error_records": cb.get("error_records", 0) - ca.get("error_records", 0),
            "datagrams_sent": cb["datagrams"] - ca["datagrams"],
            "exported": b["netflow"][0]["exported"] - a["netflow"][0]["exported"],
            "max_gap_us": b["totals"]["max_gap_us"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--flows", type=int, default=8000)
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--window", type=float, default=3.0)
    ap.add_argument("--settle", type=float, default=0.5)
    ap.add_argument("--json-out")
    args = ap.parse_args()

    pcap = make_pcap(args.flows)
    coll = Collector()
    coll.up()
    work = Path(tempfile.mkdtemp(prefix="dp_faults_bench_"))
    prefix = unique_prefix("faults")
    cfg = work / "dp.toml"
    head = pcap_to_null_toml(prefix, 512, max(16383, args.flows + 16384) | 1023, 256, pcap,
                             forever=True)
    cfg.write_text(CONFIG.format(head=head, max_flows=4 * args.flows, port=coll.port,
                                 run_dir=work / "run"))
    sock = work / "run" / f"{prefix}.sock"
    load0 = os.getloadavg()
    out = open(work / "dp.out", "w")
    proc = subprocess.Popen([sys.executable, "-m", "dataplane", "run", str(cfg), "--json"],
                            stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    runs: dict[str, list[dict]] = {"up": [], "down": []}
    try:
        deadline = time.monotonic() + 60
        while not sock.exists():
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"dataplane did not start:\n{(work / 'dp.out').read_text()[-3000:]}")
            time.sleep(0.05)
        time.sleep(1.5)  # every flow created once, export running
        for r in range(args.rounds):
            for state in ("up", "down"):
                coll.up() if state == "up" else coll.down()
                time.sleep(args.settle)
                m = measure(sock, args.window)
                m["round"] = r
                runs[state].append(m)
                print(f"round {r} collector {state:4}: {m['pps'] / 1e6:7.3f} Mpps, "
                      f"{m['datagrams_sent']} datagrams sent, {m['send_errors']} send errors "
                      f"({m['error_records']} records), dropped {m['dropped']}", flush=True)
    finally:
        coll.down()
        if proc.poll() is None:
            proc.terminate()
        proc.wait(60)
        out.close()
        shutil.rmtree(DPDK_RUN / prefix, ignore_errors=True)
    load1 = os.getloadavg()
    med = {s: statistics.median(m["pps"] for m in runs[s]) for s in runs}
    summary = {
        "mpps_up": med["up"] / 1e6, "mpps_down": med["down"] / 1e6,
        "ratio_down_over_up": med["down"] / med["up"],
        "send_errors_down": sum(m["send_errors"] for m in runs["down"]),
        "error_records_down": sum(m["error_records"] for m in runs["down"]),
        "send_errors_up": sum(m["send_errors"] for m in runs["up"]),
        "dropped": sum(m["dropped"] for m in runs["up"] + runs["down"]),
        "max_gap_us": max(m["max_gap_us"] for m in runs["up"] + runs["down"]),
        "exit_code": proc.returncode,
    }
    print(f"\nsetup: {args.flows} flows replayed forever (net_pcap infinite_rx), 1 worker on cpu "
          f"{WORKER_CPU}, [netflow (active 1 s, v5 to 127.0.0.1:{coll.port}), xconnect -> net_null]; "
          f"{args.rounds} rounds x (up, down) x {args.window} s windows after {args.settle} s settle; "
          f"load {load0[0]:.2f} -> {load1[0]:.2f}")
    print(f"collector up:   median {summary['mpps_up']:.3f} Mpps")
    print(f"collector down: median {summary['mpps_down']:.3f} Mpps "
          f"({summary['send_errors_down']} send errors, {summary['error_records_down']} records, counted)")
    print(f"ratio down/up = {summary['ratio_down_over_up']:.3f}; dropped {summary['dropped']}; "
          f"worker max_gap_us {summary['max_gap_us']:.0f}; send errors while up {summary['send_errors_up']}")
    if args.json_out:
        Path(args.json_out).write_text(json.dumps({"summary": summary, "runs": runs,
                                                   "args": vars(args)}, indent=2))
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
