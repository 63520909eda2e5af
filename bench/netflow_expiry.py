#!/usr/bin/env python3
"""What the netflow stage's expiry scan costs per flow: N flows metered from
a pcap (the netflow_peers traffic, read once), then the manual clock jumps
past the inactive timeout and the scan expires every flow at once.

Printed: the scan's cycles per expired flow (the worker's tick_cycles over
the expiry, the scan being all its ticks do then), the wall time and rate
of the expiry, and, as the reference measured in the same run, the
worker's busy cycles per packet while it metered the same flows. The scan
budget is unlimited here (one tick expires as many flows as it can), and
the export ring holds every record, so no record is lost and nothing waits.
`--alt-native SO` runs a saved build of the C module instead (A/B of two
builds; a build without tick_cycles reports the wall-time rate only).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))
from common import load_alt_native, pcap_to_null_toml, unique_prefix  # noqa: E402
from netflow import Sink  # noqa: E402
from netflow_peers import DATA_ROOM, MBUFS, make_pcap  # noqa: E402

RESULT_MARK = "NETFLOW_EXPIRY_RESULT "
T0_NS = 1_000_000_000_000
INACTIVE_S = 15


def run(args) -> dict:
    if args.alt_native:
        load_alt_native(args.alt_native)
    from dataplane import config, native
    from dataplane.eal import Eal
    from dataplane.engine import Dataplane

    pcap, packets, _ = make_pcap(args.flows)
    max_flows = 2 * args.flows
    ring = 1 << max(6, (args.flows - 1).bit_length())
    memory_mb = max(2048, -(-(max_flows * 256 + ring * 96 + (700 << 20)) // (1 << 30)) * 1024)
    prefix = unique_prefix("nfexpiry")
    sink = Sink()  # reads and drops the export, as a live collector would take it
    text = pcap_to_null_toml(prefix, memory_mb, MBUFS, DATA_ROOM, pcap, forever=False) + f"""
[[pipeline]]
stage = "netflow"
max_flows = {max_flows}
inactive_timeout = {INACTIVE_S}
active_timeout = 1800
scan_budget = {1 << 20}
export_ring = {ring}
export = {{ version = 9, collectors = ["127.0.0.1:{sink.port}"] }}

[[pipeline]]
stage = "xconnect"
map = {{ in = "out" }}

[metrics]
enabled = false
"""
    with tempfile.NamedTemporaryFile("w", suffix=".toml", delete=False) as f:
        f.write(text)
    cfg = config.load(f.name)
    os.unlink(f.name)
    native.clock_set_manual(T0_NS)
    eal = Eal(cfg)
    dp = Dataplane(cfg)
    res: dict = {"flows": args.flows, "packets": packets, "alt_native": args.alt_native}
    try:
        dp.start()
        nf = dp.netflow[0]
        deadline = time.monotonic() + 120
        while nf.info()["packets"] < packets:
            if time.monotonic() > deadline:
                raise RuntimeError(f"only {nf.info()['packets']:,} of {packets:,} packets metered")
            time.sleep(0.01)
        w0 = dp.snapshot().workers[0]
        info0 = nf.info()
        res["metering_busy_cycles_per_pkt"] = w0["busy_cycles"] / packets
        t0 = time.monotonic()
        native.clock_advance((INACTIVE_S + 2) * 10**9)  # every flow is now idle
        while nf.info()["inact_exp"] < args.flows:
            if time.monotonic() > t0 + 120:
                raise RuntimeError(f"only {nf.info()['inact_exp']:,} flows expired")
            time.sleep(0.0005)
        res["expiry_wall_s"] = time.monotonic() - t0
        w1 = dp.snapshot().workers[0]
        info1 = nf.info()
        res["expired"] = info1["inact_exp"] - info0["inact_exp"]
        res["export_failed"] = info1["export_failed"]
        if "tick_cycles" in w1:
            res["scan_cycles_per_flow"] = (w1["tick_cycles"] - w0["tick_cycles"]) / res["expired"]
        res["tsc_hz"] = native.tsc_hz()
    finally:
        dp.stop()
        eal.close()
        sink.close()
        native.clock_use_tsc()
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--flows", type=int, default=1_000_000)
    ap.add_argument("--alt-native", metavar="SO", help="a saved build of dataplane/_native*.so")
    ap.add_argument("--json-out", metavar="FILE")
    args = ap.parse_args()
    r = run(args)
    build = f"build {r['alt_native']}" if r["alt_native"] else "this build"
    print(f"netflow expiry scan, {build}: {r['flows']:,} flows metered from a pcap read once "
          f"({r['packets']:,} packets), then the manual clock moved {INACTIVE_S + 2} s: every flow "
          f"idle; scan budget unlimited, export ring {1 << max(6, (r['flows'] - 1).bit_length()):,} "
          f"records (export_failed {r['export_failed']})")
    print(f"  expired {r['expired']:,} flows in {r['expiry_wall_s'] * 1e3:.0f} ms of wall time "
          f"({r['expired'] / r['expiry_wall_s'] / 1e6:.2f} M flows/s, expiry and polling included)")
    if "scan_cycles_per_flow" in r:
        print(f"  scan: {r['scan_cycles_per_flow']:.0f} cycles per expired flow (worker tick_cycles; "
              f"{r['scan_cycles_per_flow'] / r['tsc_hz'] * 1e9:.0f} ns)")
        print(f"  same run, metering: {r['metering_busy_cycles_per_pkt']:.0f} busy cycles per packet "
              f"(pcap read, netflow, tx); ratio expiry/metering "
              f"{r['scan_cycles_per_flow'] / r['metering_busy_cycles_per_pkt']:.2f}")
    print(RESULT_MARK + json.dumps(r))
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(r, indent=2) + "\n")


if __name__ == "__main__":
    main()
