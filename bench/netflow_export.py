#!/usr/bin/env python3
"""NetFlow exporter throughput into a real collector (nfcapd), v5 / v9 / IPFIX.

Two measurements per format:
  capacity  synthetic expired-flow records fed to the exporter as fast as it
            takes them: C encodes the record bodies and frames the datagrams
            (headers, templates, sequence numbers) and sends them. Records/s
            sent, and what nfcapd received (it drops what it cannot keep up with:
            its own loss shows as nfdump sequence failures).
  paced     the same at --rate records/s (default 1M): must arrive without loss
            (received == sent, zero sequence failures).
The worker side (expiry, ring) is not in these figures: bench/netflow.py
measures metering; tests cover the ring. Peer: none (nfcapd is the receiver).
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from dataplane import native  # noqa: E402
from dataplane.config import NetflowExport  # noqa: E402
from dataplane.netflow import Exporter  # noqa: E402
from tests.collectors import Nfcapd  # noqa: E402  (the nfcapd harness the tests use)
from tests.helpers import flow_records  # noqa: E402  (expired-flow records, as a worker makes them)

BATCH = 1024
CLOCK_MS = 5_000_000_000


def run(version: int, total: int, rate: float, workdir: Path) -> dict:
    recs = flow_records(BATCH, CLOCK_MS - 100, CLOCK_MS)
    batches = total // BATCH
    with Nfcapd(workdir / f"v{version}-{int(rate)}") as cap:
        exp = Exporter(NetflowExport(version=version, collectors=[f"127.0.0.1:{cap.port}"]),
                       CLOCK_MS - 1000, 0)
        t0 = time.perf_counter()
        for i in range(batches):
            exp.add(recs, BATCH)
            exp.pump()
            if rate:
                ahead = t0 + (i + 1) * BATCH / rate - time.perf_counter()
                if ahead > 0:
                    time.sleep(ahead)
        exp.pump(force=True)
        elapsed = time.perf_counter() - t0
        cap.drain()
    stats = cap.stats()
    sent = batches * BATCH
    return {"version": version, "rate_target": rate, "records_sent": sent,
            "records_per_s": sent / elapsed, "datagrams": exp.datagrams,
            "send_errors": sum(c.errors for c in exp.collectors),
            "received": stats["flows"], "lost_at_collector": sent - stats["flows"],
            "sequence_failures": stats["sequence_failures"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--records", type=int, default=2_000_000, help="records per run (default 2M)")
    ap.add_argument("--rate", type=float, default=1e6, help="paced rate, records/s (default 1M)")
    ap.add_argument("--json-out", metavar="FILE")
    args = ap.parse_args()
    native.clock_set_manual(CLOCK_MS * 1_000_000)  # no EAL here: time is ours
    results = []
    with tempfile.TemporaryDirectory(prefix="nfexport-") as tmp:
        for version in (5, 9, 10):
            for rate in (0.0, args.rate):
                results.append(run(version, args.records, rate, Path(tmp)))
    print("NetFlow exporter into nfcapd on 127.0.0.1 (one exporter thread; "
          f"{args.records:,} synthetic IPv4 records per run)")
    print(f"{'format':8} {'mode':>14} {'Mrec/s sent':>12} {'datagrams':>10} {'received':>10} "
          f"{'lost':>8} {'seq fail':>8} {'send err':>8}")
    for r in results:
        mode = "capacity" if not r["rate_target"] else f"paced {r['rate_target'] / 1e6:g}M/s"
        name = {5: "v5", 9: "v9", 10: "IPFIX"}[r["version"]]
        print(f"{name:8} {mode:>14} {r['records_per_s'] / 1e6:12.2f} {r['datagrams']:10,} "
              f"{r['received']:10,} {r['lost_at_collector']:8,} {r['sequence_failures']:8} "
              f"{r['send_errors']:8}")
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
