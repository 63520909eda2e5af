#!/usr/bin/env python3
"""The router under slow-path storms: good traffic forwarded while a share of
the input needs the slow path, against the same router on clean traffic,
measured in the same run.

Traffic: a pcap replayed forever by net_pcap (infinite_rx) into ONE worker
(cpu 1) running the router (ip6flow) of two ports: `in` (the pcap, and the
way back for ICMP errors and replies) and `out` (a net_null sink, one route
behind it). Good frames are 64-byte IPv6 UDP frames of 1024 flows, routed to
`out`; a scenario replaces a share of them with frames the fast path cannot
finish: hop limit 1 (ICMP time exceeded), IPv6 hop-by-hop options and IPv4
options (forwarded by the slow path), neighbour solicitations and ARP
requests for unknown targets, pings to the router. Each scenario is one
`dataplane run --duration D --json`; the figures are its final counters.

Printed per scenario: good packets out per second, their ratio to
clean x (1 - share) (the issue's bar: >= 0.95), the worker's longest time
outside its C loop (bar: <= 200 us), punts handed to the slow path and
policed in C, ICMP errors sent per second against the configured rate, and
two conservation checks (every packet the worker saw is forwarded, dropped
or punted; every punt ends in exactly one slow-path outcome).

Run: .venv/bin/python bench/punt_storm.py [--duration 4] [--only hop_limit_10]
"""
from __future__ import annotations

import argparse
import json
import struct
import subprocess
import sys
import tempfile
from pathlib import Path

from scapy.layers.inet import IP, UDP, IPOption_NOP, IPOption_RR
from scapy.layers.inet6 import ICMPv6EchoRequest, ICMPv6ND_NS, ICMPv6NDOptSrcLLAddr, IPv6, IPv6ExtHdrHopByHop
from scapy.layers.l2 import ARP, Ether

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import WORKER_CPU, last_json, pcap_to_null_toml, unique_prefix  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
ROUTER_MAC = "02:70:63:61:70:00"   # net_pcap0's MAC (drivers/net/pcap: 02:'p':'c':'a':'p':0)
HOST_MAC = "02:00:00:00:00:01"
FRAMES = 100_000                  # per pcap; a storm frame every 1/share (10k new hosts at 10 %)
FLOWS = 1024
ICMP_RATE, ICMP_BURST = 100, 10

ROUTER = f"""
[metrics]
enabled = false

[control]
enabled = false

[[pipeline]]
stage = "ip6flow"
icmp_rate = {ICMP_RATE}
icmp_burst = {ICMP_BURST}

[[pipeline.interfaces]]
port = "in"
addresses = ["2001:db8:1::1/64", "192.0.2.1/23"]

[[pipeline.interfaces]]
port = "out"
addresses = ["2001:db8:2::1/64", "198.51.100.1/24"]

[[pipeline.routes]]
prefix = "2001:db8:99::/48"
via = "2001:db8:2::2"

[[pipeline.routes]]
prefix = "10.99.0.0/16"
via = "198.51.100.2"

[[pipeline.neighbours]]
address = "2001:db8:2::2"
mac = "02:00:00:00:00:02"
port = "out"

[[pipeline.neighbours]]
address = "198.51.100.2"
mac = "02:00:00:00:00:02"
port = "out"
"""


def good(i: int) -> Ether:
    return (Ether(dst=ROUTER_MAC, src=HOST_MAC)
            / IPv6(src=f"2001:db8:1::{i % FLOWS + 16:x}", dst="2001:db8:99::1", hlim=64)
            / UDP(sport=1024 + i % FLOWS, dport=9))


def hop_limit_1(i: int) -> Ether:
    return (Ether(dst=ROUTER_MAC, src=HOST_MAC)
            / IPv6(src=f"2001:db8:1::{i % FLOWS + 16:x}", dst="2001:db8:99::1", hlim=1)
            / UDP(sport=33434 + i % 64, dport=33434))


def hop_by_hop(i: int) -> Ether:
    return (Ether(dst=ROUTER_MAC, src=HOST_MAC)
            / IPv6(src="2001:db8:1::9", dst="2001:db8:99::1") / IPv6ExtHdrHopByHop()
            / UDP(sport=1000 + i % 64, dport=9))


def ipv4_options(i: int) -> Ether:
    return (Ether(dst=ROUTER_MAC, src=HOST_MAC)
            / IP(src="192.0.2.9", dst="10.99.0.1", options=[IPOption_NOP(), IPOption_RR()])
            / UDP(sport=1000 + i % 64, dport=9))


def ns_unknown_target(i: int) -> Ether:
    target = f"2001:db8:1::2:{i >> 16 & 0xffff:x}:{i & 0xffff:x}"
    return (Ether(dst="33:33:ff:00:00:00", src=HOST_MAC)
            / IPv6(src="2001:db8:1::9", dst="ff02::1:ff00:0", hlim=255)
            / ICMPv6ND_NS(tgt=target) / ICMPv6NDOptSrcLLAddr(lladdr=HOST_MAC))


def arp_unknown_target(i: int) -> Ether:
    return (Ether(dst="ff:ff:ff:ff:ff:ff", src=HOST_MAC)
            / ARP(op=1, hwsrc=HOST_MAC, psrc="192.0.2.9", pdst=f"192.0.2.{100 + i % 100}"))


def ns_new_host(i: int) -> Ether:
    """An NS for the router's address from a host it has never seen (learnt)."""
    mac = f"02:aa:{i >> 24 & 255:02x}:{i >> 16 & 255:02x}:{i >> 8 & 255:02x}:{i & 255:02x}"
    return (Ether(dst="33:33:ff:00:00:01", src=mac)
            / IPv6(src=f"2001:db8:1::1:{i >> 16 & 0xffff:x}:{i & 0xffff:x}", dst="ff02::1:ff00:1", hlim=255)
            / ICMPv6ND_NS(tgt="2001:db8:1::1") / ICMPv6NDOptSrcLLAddr(lladdr=mac))


def arp_new_host(i: int) -> Ether:
    """An ARP request for the router's address from a host it has never seen."""
    mac = f"02:bb:{i >> 24 & 255:02x}:{i >> 16 & 255:02x}:{i >> 8 & 255:02x}:{i & 255:02x}"
    return (Ether(dst="ff:ff:ff:ff:ff:ff", src=mac)
            / ARP(op=1, hwsrc=mac, psrc=f"192.0.{2 + (i >> 8) % 2}.{i % 254 + 1}", pdst="192.0.2.1"))


def ping_router(i: int) -> Ether:
    return (Ether(dst=ROUTER_MAC, src=HOST_MAC)
            / IPv6(src="2001:db8:1::9", dst="2001:db8:1::1") / ICMPv6EchoRequest(seq=i & 0xFFFF))


# name -> (storm frame maker or None, share of the input)
SCENARIOS = {
    "clean": (None, 0.0),
    "hop_limit_1": (hop_limit_1, 0.01),
    "hop_limit_10": (hop_limit_1, 0.10),
    "hop_limit_50": (hop_limit_1, 0.50),
    "hop_by_hop_1": (hop_by_hop, 0.01),
    "ipv4_options_1": (ipv4_options, 0.01),
    "ns_flood_10": (ns_unknown_target, 0.10),
    "arp_flood_10": (arp_unknown_target, 0.10),
    "ping_flood_10": (ping_router, 0.10),
    "ndp_new_hosts_10": (ns_new_host, 0.10),
    "arp_new_hosts_10": (arp_new_host, 0.10),
}


def make_pcap(workdir: Path, name: str) -> Path:
    """FRAMES frames, every 1/share-th a storm frame; frames are built once
    per distinct content (scapy is slow) and written as a plain pcap."""
    path = workdir / f"{name}.pcap"
    if path.exists():  # the same file for every round
        return path
    maker, share = SCENARIOS[name]
    every = round(1 / share) if share else 0
    built: dict[tuple, bytes] = {}

    def frame(fn, i: int, key) -> bytes:
        if (fn, key) not in built:
            data = bytes(fn(i))
            built[(fn, key)] = data + b"\x00" * max(0, 60 - len(data))
        return built[(fn, key)]

    with open(path, "wb") as f:
        f.write(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1))
        for i in range(FRAMES):
            if every and i % every == 0:
                # hop-limit and option storms repeat every 64 frames; the
                # new-host floods and unknown targets are distinct per frame
                data = frame(maker, i, i % 64 if maker in (hop_limit_1, hop_by_hop, ipv4_options) else i)
            else:
                data = frame(good, i, i % FLOWS)
            f.write(struct.pack("<IIII", i // 1_000_000, i % 1_000_000, len(data), len(data)) + data)
    return path


# --capacity: no policing (every punt reaches the slow path thread): what it
# handles per second is its capacity
OPEN_POLICE = "\n[slowpath]\nsource_share = 1.0\n[slowpath.police]\n" + "".join(
    f"{reason} = {{ rate = 10000000.0, burst = 100000 }}\n"
    for reason in ("local", "hop_limit", "multicast", "arp", "hbh", "ip4_options"))


def run(workdir: Path, name: str, duration: float, extra: str = "") -> dict:
    prefix = unique_prefix(f"punt_{name}")
    cfg = workdir / f"{name}.toml"
    cfg.write_text(pcap_to_null_toml(prefix, memory_mb=1024, mbufs=131071, data_room=2176,
                                     pcap=make_pcap(workdir, name), forever=True) + ROUTER + extra)
    r = subprocess.run([sys.executable, "-m", "dataplane", "run", str(cfg), "--duration", str(duration),
                        "--json"], capture_output=True, text=True, timeout=duration + 120, cwd=REPO)
    if r.returncode != 0:
        raise RuntimeError(f"{name}: exit {r.returncode}\n{r.stderr[-3000:]}")
    return last_json(r.stdout)


def figures(name: str, out: dict, clean_pps: float | None) -> dict:
    _, share = SCENARIOS[name]
    t, w = out["totals"], out["workers"][0]
    rf = out["ip6flow"][0]
    sp = rf["slowpath"]
    from dataplane.slowpath import OUTCOMES
    outcomes = sum(sp.get(o, 0) for o in OUTCOMES)
    errors = sum(sp.get(o, 0) for o in ("icmp_time_exceeded", "icmp_unreachable", "icmp_too_big",
                                       "icmp_frag_needed", "icmp_parameter_problem"))
    seconds = out["rates"]["interval_s"]
    good_pps = out["rates"]["ports"]["out"]["tx"]
    return {
        "scenario": name, "share": share, "good_pps": good_pps,
        "vs_clean": good_pps / (clean_pps * (1 - share)) if clean_pps else 1.0,
        "max_gap_us": w["max_gap_us"], "punted": t["punted"],
        "policed": sum(w["punt_policed"].values()),
        "slowpath_handled": outcomes,
        "icmp_errors_per_s": max(errors - ICMP_BURST, 0) / seconds if errors else 0.0,
        "echo_replies": sp.get("echo_replies", 0),
        "neighbours": rf.get("neighbours", {}),
        "pool_in_use": sum(p["in_use"] for p in out["pools"]),
        "conserved": t["rx"] + t["injected"] == t["tx"] + t["dropped"] + t["punted"],
        "every_punt_one_outcome": t["punted"] == outcomes,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--duration", type=float, default=4.0, help="seconds per scenario")
    ap.add_argument("--rounds", type=int, default=2, help="rounds of every scenario (median shown)")
    ap.add_argument("--only", action="append", choices=list(SCENARIOS), help="run just these (clean always)")
    ap.add_argument("--json-out", help="write the figures as JSON here")
    ap.add_argument("--capacity", action="store_true",
                    help="no policing: measure how many punts per second the slow path thread handles")
    args = ap.parse_args()
    if args.capacity:
        return capacity(args)
    storms = [n for n in SCENARIOS if n != "clean" and (not args.only or n in args.only)]
    # clean, every storm, clean, every storm, ..., clean: each storm is compared
    # with the mean of the clean runs just before and after it (host drift).
    cleans: list[dict] = []
    rounds: list[list[tuple[str, dict]]] = []
    with tempfile.TemporaryDirectory(prefix="punt_storm_") as tmp:
        cleans.append(run(Path(tmp), "clean", args.duration))
        for r in range(args.rounds):
            rounds.append([(n, run(Path(tmp), n, args.duration)) for n in storms])
            cleans.append(run(Path(tmp), "clean", args.duration))
            print(f"  round {r + 1}/{args.rounds} done", file=sys.stderr, flush=True)
    tx = [o["rates"]["ports"]["out"]["tx"] for o in cleans]
    per_storm: dict[str, list[dict]] = {n: [] for n in storms}
    for r, runs in enumerate(rounds):
        for n, out in runs:
            per_storm[n].append(figures(n, out, (tx[r] + tx[r + 1]) / 2))
    table = [figures("clean", o, sum(tx) / len(tx)) for o in cleans]
    for n, figs in per_storm.items():
        figs.sort(key=lambda f: f["vs_clean"])
        table.append(dict(figs[len(figs) // 2], rounds=[round(f["vs_clean"], 3) for f in figs]))
    print(f"punt storm: router, 1 worker (cpu {WORKER_CPU}), net_pcap infinite_rx -> ip6flow -> "
          f"net_null; {args.duration:g} s per run, {args.rounds} rounds (median; every round's "
          f"ratio in brackets); ICMP rate {ICMP_RATE}/s burst {ICMP_BURST}; clean runs "
          f"{', '.join(f'{v / 1e6:.2f}' for v in tx)} Mpps")
    base = table[0]
    print(f"{'scenario':<18}{'share':>6}{'good Mpps':>11}{'vs clean':>10}{'max gap us':>12}"
          f"{'punted':>10}{'policed':>11}{'ICMP err/s':>12}{'echo':>7}{'neighbours':>12}  leak  "
          f"conserved  rounds")
    for f in table:
        n, b = f["neighbours"], base["neighbours"]
        # every next hop a learnt neighbour does not hold is free again; mbufs as in a clean run
        leak = (n["nexthops_free"] + n["learnt"] != b["nexthops_free"] + b["learnt"]
                or f["pool_in_use"] != base["pool_in_use"])
        print(f"{f['scenario']:<18}{f['share']:>6.0%}{f['good_pps'] / 1e6:>11.3f}{f['vs_clean']:>10.3f}"
              f"{f['max_gap_us']:>12.1f}{f['punted']:>10}{f['policed']:>11}{f['icmp_errors_per_s']:>12.1f}"
              f"{f['echo_replies']:>7}{n['learnt']:>6}/{n['max_neighbours']:<5}  {'YES' if leak else 'no ':<4}  "
              f"{'yes' if f['conserved'] and f['every_punt_one_outcome'] else 'NO':<9}  {f.get('rounds', '')}")
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(table, indent=2))


def capacity(args) -> None:
    """The slow path thread's capacity per kind of punt: every punt reaches it
    (policing off), the punt rings overflow (punt_full), and what it handled
    per second is what it can do."""
    print(f"slow path capacity: policing off, {args.duration:g} s per kind; punts handled per second "
          "by the one slow path thread (Python), and what the rings could not hold")
    with tempfile.TemporaryDirectory(prefix="punt_capacity_") as tmp:
        for name in ("ns_flood_10", "arp_flood_10", "ping_flood_10", "hop_limit_10", "ndp_new_hosts_10"):
            out = run(Path(tmp), name, args.duration, OPEN_POLICE)
            seconds = out["rates"]["interval_s"]
            handled = out["slowpath"]["handled"]
            print(f"  {name:<18} {handled / seconds:>10,.0f} punts/s handled   "
                  f"punt_full {out['totals']['drops'].get('punt_full', 0):>10,}")


if __name__ == "__main__":
    main()
