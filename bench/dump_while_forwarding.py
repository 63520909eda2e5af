#!/usr/bin/env python3
"""Table dumps while forwarding: `netflow.show` and `ip6flow.show` over a
large cache, through the control socket, while the router forwards at full
speed, and what they cost the worker.

Setup: bench/ip6flow.py's router (net_pcap infinite_rx of N IPv6 flows ->
ONE worker on cpu 1 -> net_null), with a netflow stage in front, so both
caches hold N flows. After both are full, a window of forwarding alone, then
a window of the same length in which the control socket asks for
`netflow.show limit=L` and `ip6flow.show limit=L` one after the other, page by
page (each page is read by the worker inside its C loop). Printed: the dumps'
wall time and flows/s, the sink's rate in each window and their ratio, the
worker's longest time outside its C loop (max_gap_us: the RX ring must hold
that), the longest page read inside the loop (max_command_us), and whether
the worker came back to Python at all (polls).

Run: .venv/bin/python bench/dump_while_forwarding.py [--flows 1000000] [--limit 100000]
"""
from __future__ import annotations

import argparse
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import ip6flow as router_bench  # noqa: E402
from common import MAIN_CPU, WORKER_CPU, last_json, unique_prefix  # noqa: E402

from dataplane.control import request  # noqa: E402

NETFLOW_BYTES_PER_FLOW = 256   # EAL memory planned per netflow slot (entry + table)


def config(workdir: Path, flows: int, pcap: Path) -> tuple[Path, Path]:
    sz = router_bench.plan(flows)
    prefix = unique_prefix("dump")
    sock = workdir / "ctl.sock"
    text = router_bench.CONFIG.format(
        worker=WORKER_CPU, main=MAIN_CPU, prefix=prefix, hugepages="false",
        memory=sz["memory_mb"] + (-(-sz["hashsize"] * NETFLOW_BYTES_PER_FLOW // (1 << 30)) * 1024),
        mbufs=sz["mbufs"], data_room=router_bench.DATA_ROOM, pcap=pcap, hashsize=sz["hashsize"],
        maxflows=sz["hashsize"], in_addr=router_bench.IN_ADDR, out_addr=router_bench.OUT_ADDR,
        dst_prefix=router_bench.DST_PREFIX, nexthop=router_bench.NEXTHOP,
        nexthop_mac=router_bench.NEXTHOP_MAC)
    text = text.replace('[[pipeline]]\nstage = "ip6flow"',
                        f'[[pipeline]]\nstage = "netflow"\nmax_flows = {sz["hashsize"]}\n\n'
                        '[[pipeline]]\nstage = "ip6flow"', 1)
    text = text.replace("[metrics]\nenabled = false", f'[metrics]\nenabled = false\n\n[control]\nsocket = "{sock}"')
    cfg = workdir / "dump.toml"
    cfg.write_text(text)
    return cfg, sock


def counters(sock: Path) -> dict:
    s = request(sock, "stats", timeout=30)
    w = s["workers"][0]
    return {"t": time.monotonic(), "tx": s["ports"]["out"]["tx"], "polls": w["polls"],
            "max_gap_us": w["max_gap_us"], "max_command_us": w["max_command_us"],
            "commands": w["commands"], "netflow_flows": s["netflow"][0]["flows_used"],
            "ip6flow_flows": s["ip6flow"][0]["ipv6"]["flows"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--flows", type=int, default=1_000_000)
    ap.add_argument("--limit", type=int, default=100_000)
    ap.add_argument("--dumps", type=int, default=2, help="netflow+ip6flow show pairs in the window")
    args = ap.parse_args()
    pcap = router_bench.make_pcap(args.flows)
    with tempfile.TemporaryDirectory(prefix="dump_bench_") as tmp:
        cfg, sock = config(Path(tmp), args.flows, pcap)
        proc = subprocess.Popen([sys.executable, "-m", "dataplane", "run", str(cfg), "--duration", "3600",
                                 "--json"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                cwd=router_bench.REPO)
        try:
            deadline = time.monotonic() + 300
            while not sock.exists() or counters(sock)["netflow_flows"] < args.flows * 0.99 \
                    or counters(sock)["ip6flow_flows"] < args.flows * 0.99:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"the dataplane did not fill its caches:\n{proc.stderr.read()[-3000:]}")
                time.sleep(0.5)
            a = counters(sock)
            dumps = []
            t_dump0 = time.monotonic()
            for _ in range(args.dumps):
                for cmd, extra in (("netflow.show", {}), ("ip6flow.show", {"family": "ipv6"})):
                    t0 = time.monotonic()
                    got = request(sock, cmd, dict(limit=args.limit, **extra), timeout=600)
                    dumps.append((cmd, len(got["flows"]), time.monotonic() - t0))
            window = time.monotonic() - t_dump0
            b = counters(sock)
            time.sleep(window)          # the same length of forwarding alone, after
            c = counters(sock)
        finally:
            proc.send_signal(signal.SIGINT)
            out, err = proc.communicate(timeout=120)
        final = last_json(out)
    during = (b["tx"] - a["tx"]) / (b["t"] - a["t"])
    alone = (c["tx"] - b["tx"]) / (c["t"] - b["t"])
    print(f"dumps while forwarding: {args.flows:,} flows in netflow and ip6flow caches, router on "
          f"1 worker (cpu {WORKER_CPU}), net_pcap infinite_rx -> netflow -> ip6flow -> net_null, no hugepages")
    for cmd, n, s in dumps:
        print(f"  {cmd:<13} limit={args.limit}: {n:>7} flows in {s:6.2f} s ({n / s:,.0f} flows/s)")
    print(f"  forwarding during the dumps {during / 1e6:.3f} Mpps, alone after {alone / 1e6:.3f} Mpps: "
          f"ratio {during / alone:.3f}")
    w = final["workers"][0]
    print(f"  worker: max gap outside its C loop {w['max_gap_us']:.1f} us over the whole run; "
          f"pages read inside the loop {b['commands'] - a['commands']}, longest {w['max_command_us']:.1f} us; "
          f"returns to Python during the dumps: {b['polls'] - a['polls']}")


if __name__ == "__main__":
    main()
