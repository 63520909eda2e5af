#!/usr/bin/env python3
"""one2many throughput: the dataplane's one2many stage vs DPDK's bonding PMD
(net_bonding) forwarded by `dpdk-testpmd --forward-mode=io`.

Both peers run on the SAME virtual devices: net_null0 is the "one" port and
net_null1..N are the links (the bond's members); every net_null device makes
packets on rx and frees them on tx. Packets flow both ways: one -> links
(distributed by round-robin, failover or broadcast) and links -> one. ONE
forwarding core (cpu 1, main thread on cpu 0), bursts of 32, no hugepages.
Compared: round-robin over 2 and 4 links vs bonding mode 0, failover vs mode 1
(active-backup), xmit-all vs mode 3 (broadcast). Runs alternate within each
round (--rounds, default 2, of --duration 6 s) because the host is shared;
--together runs both at once on the forwarding CPU instead and compares what
each forwards per second of its own time on it, which a noisy host shifts far
less. See bench/README.md.
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
from common import MAIN_CPU, Testpmd, WORKER_CPU, last_json, remove_runtime_dir, require_hugepages, unique_prefix  # noqa: E402

MEMORY_MB = 1024
HUGEPAGES = False       # --hugepages: both peers on hugepages instead of --no-huge
TESTPMD_MBUFS, DP_MBUFS = 16384, 16383
DP_BURST = 32  # native/dp_internal.h
WARMUP_S = 1.0  # testpmd: forwarding time before the first counter read

# key -> (label, links, our xmit, bonding mode, what the bond mode is called)
SCENARIOS = {
    "rr2": ("round-robin, 2 links", 2, "roundrobin", 0, "mode 0 (round-robin)"),
    "rr4": ("round-robin, 4 links", 4, "roundrobin", 0, "mode 0 (round-robin)"),
    "failover": ("failover, 2 links", 2, "failover", 1, "mode 1 (active-backup)"),
    "all": ("xmit-all, 2 links", 2, "all", 3, "mode 3 (broadcast)"),
}
PEERS = {"bond": "testpmd + net_bonding", "ours": "dataplane one2many"}
SHORT = {"bond": "net_bonding", "ours": "one2many (ours)"}

CONFIG_HEAD = """\
[eal]
workers = [{worker}]
main_core = {main}
hugepages = {hugepages}
memory_mb = {memory}
file_prefix = "{prefix}"
log_level = "warning"

[mempool]
mbufs = {mbufs}

[metrics]
enabled = false  # no collector thread in the measured process (and no port 9108 clash)

[control]
socket = "{socket}"  # the bench reads the counters here, as it does testpmd's
"""
PORT = """
[[ports]]
name = "{name}"
device = "{device}"
"""
STAGE = """
[[pipeline]]
stage = "one2many"
one = "one"
many = [{many}]
xmit = "{xmit}"
failure = "manual"
"""


# ---- the shared topology ---------------------------------------------------------

def devices(key: str, direction: str, backup_rx: bool) -> list[str]:
    """vdev specs: [net_null0 (one), net_null1 .. net_nullN (links)]. The SAME
    list is given to testpmd (then the bond over the links) and the dataplane."""
    _, n, xmit, _, _ = SCENARIOS[key]
    one_rx = direction in ("both", "out")   # out: one -> links, so only net_null0 makes packets
    links_rx = direction in ("both", "in")  # in: links -> one
    devs = ["net_null0" + ("" if one_rx else ",no-rx=1")]
    for i in range(1, n + 1):
        # The bond in mode 1 never polls its backup; a standby link receives
        # nothing, so by default it makes no packets for either peer.
        rx = links_rx and not (xmit == "failover" and i > 1 and not backup_rx)
        devs.append(f"net_null{i}" + ("" if rx else ",no-rx=1"))
    return devs


def bond_spec(key: str) -> str:
    _, n, _, mode, _ = SCENARIOS[key]
    spec = f"net_bonding0,mode={mode}," + ",".join(f"slave=net_null{i}" for i in range(1, n + 1))
    if mode == 1:
        spec += ",primary=net_null1"  # = our failover's link 0 (lowest active)
    return spec




def thread_cpu_ns(pid: int) -> dict[int, int]:
    """Time on a CPU (ns) of every thread of ``pid`` (/proc/.../schedstat)."""
    out = {}
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            out[int(task.name)] = int((task / "schedstat").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            pass
    return out


def on_cpu_share(a: tuple[float, dict[int, int]], b: tuple[float, dict[int, int]]) -> float | None:
    """The busiest thread's share of the wall time between samples a and b: the
    forwarding thread spins, so below ~0.99 something else took turns on its CPU."""
    deltas = [b[1][t] - a[1][t] for t in b[1] if t in a[1]]
    dt = b[0] - a[0]
    return max(deltas) / (dt * 1e9) if deltas and dt > 0 else None


def sample(pid: int) -> tuple[float, dict[int, int]]:
    return time.monotonic(), thread_cpu_ns(pid)


def wait_spinning(proc: subprocess.Popen, timeout: float, step: float = 0.1):
    """The first sample at which a thread other than the main one ran > 30% of the
    last `step` (the worker forwarding), or None (exited, timed out)."""
    deadline = time.monotonic() + timeout
    prev = sample(proc.pid)
    while time.monotonic() < deadline and proc.poll() is None:
        time.sleep(step)
        cur = sample(proc.pid)
        dt = (cur[0] - prev[0]) * 1e9
        if any(t != proc.pid and t in prev[1] and (v - prev[1][t]) > 0.3 * dt
               for t, v in cur[1].items()):
            return cur
        prev = cur
    return None


# ---- testpmd + net_bonding ---------------------------------------------------------

PORT_INFO = re.compile(r"Infos for port (\d+)\s+\*+\s+MAC address:[^\n]*\n"
                       r"Device name:\s*(\S+)\s*\nDriver name:\s*(\S+)\s*\n"
                       r"(?:Firmware-version:[^\n]*\n)?Devargs:[ \t]*([^\n]*)")
STREAM = re.compile(r"RX P=(\d+)/Q=\d+ \(socket \d+\) -> TX P=(\d+)/Q=\d+")


class BondPeer:
    """dpdk-testpmd forwarding net_null0 <-> the bond, started and forwarding."""

    def __init__(self, workdir: Path, key: str, direction: str, backup_rx: bool):
        n = SCENARIOS[key][1]
        # EAL creates the vdevs in command-line order: net_null0..N are ports 0..N
        # and the bond (which needs its members first) is port N+1. Verified below.
        self.one_id, self.bond_id, self.member_ids = 0, n + 1, list(range(1, n + 1))
        self.prefix = unique_prefix("bond")
        self.tp = None
        try:
            self.tp = tp = Testpmd(workdir, self.prefix,
                                   devices(key, direction, backup_rx) + [bond_spec(key)],
                                   memory_mb=MEMORY_MB, mbufs=TESTPMD_MBUFS,
                                   portmask=(1 << self.one_id) | (1 << self.bond_id),
                                   hugepages=HUGEPAGES)
            self.cmd = tp.cmd[2:]
            _, info = tp.command("show port info all")
            self.ports = {int(p): {"device": d, "driver": drv, "devargs": a.strip()}
                          for p, d, drv, a in PORT_INFO.findall(info)}
            expect = {self.one_id: "net_null0", self.bond_id: "net_bonding0",
                      **{m: f"net_null{m}" for m in self.member_ids}}
            if {p: v["device"] for p, v in self.ports.items()} != expect:
                raise RuntimeError(f"testpmd port ids are not as assumed {expect}: {self.ports}")
            _, fwd = tp.command("show config fwd")
            self.streams = sorted((int(a), int(b)) for a, b in STREAM.findall(fwd))
            if self.streams != sorted([(self.one_id, self.bond_id), (self.bond_id, self.one_id)]):
                raise RuntimeError(f"testpmd forwards {self.streams}, not net_null0 <-> bond:\n{fwd}")
            _, started = tp.command("start")
            burst = re.search(r"packets/burst=(\d+)", started)
            self.burst = int(burst.group(1)) if burst else None
        except BaseException:
            self.close()
            raise

    def read(self):
        """(counter time, port counters, thread CPU times)."""
        t, stats = self.tp.port_stats({self.one_id, self.bond_id, *self.member_ids})
        return t, stats, sample(self.tp.proc.pid)

    def close(self) -> None:
        if self.tp is not None:
            self.tp.close()
            self.tp = None
        remove_runtime_dir(self.prefix)

    def result(self, a, b) -> dict:
        (t1, s1, c1), (t2, s2, c2) = a, b
        dt = t2 - t1

        def d(p: int, i: int) -> float:  # i: 0 = RX, 1 = TX
            return (s2[p][i] - s1[p][i]) / dt

        one_id, bond_id = self.one_id, self.bond_id
        # The bond's counters are the sums of its members' (bond_ethdev_stats_get).
        rx = d(one_id, 0) + d(bond_id, 0)
        tx = d(one_id, 1) + d(bond_id, 1)
        return {"pps": rx, "rx_pps": rx, "tx_pps": tx, "interval_s": dt,
                "one_rx_pps": d(one_id, 0), "links_rx_pps": d(bond_id, 0),
                "one_tx_pps": d(one_id, 1), "links_tx_pps": d(bond_id, 1),
                "member_tx_pps": [d(m, 1) for m in self.member_ids],
                "member_rx_pps": [d(m, 0) for m in self.member_ids],
                "burst": self.burst, "fwd_on_cpu": on_cpu_share(c1, c2),
                "ports": self.ports, "streams": self.streams, "command": self.cmd}

    def finish(self) -> None:
        self.tp.command("stop")
        self.close()


# ---- dataplane -----------------------------------------------------------------

def link_names(n: int) -> list[str]:
    return [f"link{i}" for i in range(1, n + 1)]


def write_config(workdir: Path, key: str, direction: str, backup_rx: bool) -> tuple[Path, str]:
    prefix = unique_prefix("dp")
    devs = devices(key, direction, backup_rx)
    names = ["one"] + link_names(len(devs) - 1)
    text = CONFIG_HEAD.format(worker=WORKER_CPU, main=MAIN_CPU, memory=MEMORY_MB,
                              hugepages="true" if HUGEPAGES else "false",
                              prefix=prefix, mbufs=DP_MBUFS, socket=workdir / f"{prefix}.sock")
    text += "".join(PORT.format(name=nm, device=dv) for nm, dv in zip(names, devs))
    text += STAGE.format(many=", ".join(f'"{nm}"' for nm in names[1:]),
                         xmit=SCENARIOS[key][2])
    path = workdir / f"{prefix}.toml"
    path.write_text(text)
    return path, prefix


class OursPeer:
    """The dataplane CLI running one2many for WARMUP_S + duration + a margin
    (`extra_s` more when the bond starts beside it, within its run).
    Counters are read through the control socket (`stats`, a snapshot the main
    thread takes; the worker is not disturbed). The CLI's own figures (whole
    run, start and stop included) are kept as `cli_window`."""

    def __init__(self, workdir: Path, key: str, duration: float, direction: str,
                 backup_rx: bool, extra_s: float = 0.0):
        self.key = key
        self.cfg, self.prefix = write_config(workdir, key, direction, backup_rx)
        self.sock = workdir / f"{self.prefix}.sock"
        self.run_s = WARMUP_S + duration + 1.0 + extra_s
        self.cmd = [sys.executable, "-m", "dataplane", "run", str(self.cfg),
                    "--duration", str(self.run_s), "--json"]
        self.out_path, self.err_path = self.cfg.with_suffix(".out"), self.cfg.with_suffix(".err")
        with open(self.out_path, "w") as out, open(self.err_path, "w") as err:
            self.proc = subprocess.Popen(self.cmd, stdout=out, stderr=err, text=True)
        self.spinning = wait_spinning(self.proc, timeout=min(30.0, self.run_s + 20))
        if self.spinning is None:
            try:
                self.finish()  # raises with its output
            finally:
                self.close()

    def read(self):
        """(counter time, `stats`, thread CPU times)."""
        from dataplane.control import request

        c = sample(self.proc.pid)
        s = request(self.sock, "stats")
        return s["time"], s, c

    def finish(self) -> None:
        """Wait for the run's end (close() kills it and cleans up after)."""
        self.rc = self.proc.wait(timeout=self.run_s + 120)
        self.stdout = self.out_path.read_text(errors="replace")
        if self.rc != 0 or self.spinning is None:
            stderr = self.err_path.read_text(errors="replace")
            raise RuntimeError(f"{' '.join(self.cmd)} exited {self.rc} (it forwarded: "
                               f"{self.spinning is not None}):\n{self.stdout[-2000:]}\n"
                               f"{stderr[-2000:]}")

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        remove_runtime_dir(self.prefix)

    def result(self, a, b) -> dict:
        (_, s1, c1), (_, s2, c2) = a, b
        res = last_json(self.stdout)
        dt = s2["time"] - s1["time"]

        def d(x: dict, y: dict, k: str) -> float:
            return (y[k] - x[k]) / dt

        links = link_names(SCENARIOS[self.key][1])
        ports = {nm: {k: d(s1["ports"][nm], s2["ports"][nm], k) for k in ("rx", "tx")}
                 for nm in ["one"] + links}
        rx, tx = d(s1["totals"], s2["totals"], "rx"), d(s1["totals"], s2["totals"], "tx")
        stage_rows = [row for row in res.get("runtime", []) if row["stage"] == "one2many"]
        return {"pps": rx, "rx_pps": rx, "tx_pps": tx, "interval_s": dt,
                "dropped_pps": d(s1["totals"], s2["totals"], "dropped"),
                "one_rx_pps": ports["one"]["rx"], "one_tx_pps": ports["one"]["tx"],
                "links_rx_pps": sum(ports[nm]["rx"] for nm in links),
                "links_tx_pps": sum(ports[nm]["tx"] for nm in links),
                "member_tx_pps": [ports[nm]["tx"] for nm in links],
                "member_rx_pps": [ports[nm]["rx"] for nm in links],
                "busy": [w["busy"] for w in res["rates"]["workers"]],
                "fwd_on_cpu": on_cpu_share(c1, c2),
                "max_gap_us": max(w["max_gap_us"] for w in res["workers"]),
                "one2many_cycles_per_pkt": stage_rows[0]["cycles_per_pkt"] if stage_rows else None,
                "cli_window": {"rx_pps": res["rates"]["totals"]["rx"],
                               "interval_s": res["rates"]["interval_s"]},
                "runtime": res.get("runtime"), "o2m_info": res.get("one2many"),
                "config": self.cfg.read_text()}


def measure(peers: list, duration: float) -> list:
    """Open the window WARMUP_S after the last peer started forwarding, read
    every peer's counters at both ends of `duration` s; (first, last) reads."""
    time.sleep(WARMUP_S)
    first = [p.read() for p in peers]
    time.sleep(duration)
    return list(zip(first, [p.read() for p in peers]))


def run_alone(peer, duration: float) -> dict:
    """One peer (started) alone on the forwarding CPU: its window, then its stop."""
    try:
        (window,) = measure([peer], duration)
        peer.finish()
    finally:
        peer.close()
    return peer.result(*window)


def run_together(workdir: Path, key: str, duration: float, direction: str,
                 backup_rx: bool, ours_first: bool) -> dict[str, dict]:
    """--together: both peers forward at once on the same CPU (cpu 1), so the
    kernel gives each ~half of it in turns of a few ms, and both are measured
    over the same window: whatever the host does in that window (a neighbour on
    the core's other hyperthread, a busy memory bus) it does to both. The
    figure to compare is then packets per second of the forwarding thread's
    own time on the CPU (schedstat), not per wall second. Which peer starts
    first alternates by round: in A/B runs of one build against itself the
    first started measured up to ~1 % faster (why, unexplained)."""
    bond = ours = None
    try:
        if ours_first:
            # ours stops on its own (--duration): a margin for the bond's start
            ours = OursPeer(workdir, key, duration, direction, backup_rx, extra_s=8.0)
            bond = BondPeer(workdir, key, direction, backup_rx)
        else:
            bond = BondPeer(workdir, key, direction, backup_rx)
            ours = OursPeer(workdir, key, duration, direction, backup_rx, extra_s=2.0)
        w_bond, w_ours = measure([bond, ours], duration)
        bond.finish()
        ours.finish()
    finally:
        for peer in (bond, ours):
            if peer is not None:
                peer.close()
    return {"bond": bond.result(*w_bond), "ours": ours.result(*w_ours)}


# ---- report --------------------------------------------------------------------

def pct(runs: list[dict]) -> str:
    vals = [r["fwd_on_cpu"] for r in runs if r.get("fwd_on_cpu") is not None]
    return f"{100 * min(vals):.1f}%" if vals else "-"


def cyc(runs: list[dict]) -> str:
    vals = [r["one2many_cycles_per_pkt"] for r in runs if r.get("one2many_cycles_per_pkt")]
    return f"{statistics.median(vals):.1f}" if vals else "-"


def split(runs: list[dict]) -> str:
    """Each link's share of the packets sent on the links, over all runs."""
    per = [sum(r["member_tx_pps"][i] * r["interval_s"] for r in runs)
           for i in range(len(runs[0]["member_tx_pps"]))]
    tot = sum(per)
    return "/".join(f"{100 * x / tot:.1f}" for x in per) if tot else "-"


def report(args, keys: list[str], results: dict, load: tuple[list[float], list[float]]) -> dict:
    from rich.console import Console
    from rich.table import Table

    c = Console(width=None if sys.stdout.isatty() else 170)
    med = {k: {p: statistics.median(r["pps"] for r in results[k][p]) for p in PEERS} for k in keys}
    med_tx = {k: {p: statistics.median(r["tx_pps"] for r in results[k][p]) for p in PEERS}
              for k in keys}
    best = {k: {p: max(r["pps"] for r in results[k][p]) for p in PEERS} for k in keys}
    for k in keys:
        for p in PEERS:
            for r in results[k][p]:
                r["pps_per_cpu_s"] = r["pps"] / r["fwd_on_cpu"] if r.get("fwd_on_cpu") else None
    med_cpu = {k: {p: statistics.median(v) if (v := [r["pps_per_cpu_s"] for r in results[k][p]
                                                     if r["pps_per_cpu_s"]]) else None
                   for p in PEERS} for k in keys}
    bursts = {r["burst"] for k in keys for r in results[k]["bond"]}
    first = results[keys[0]]["bond"][0]
    setup = {
        "what": "one2many stage (dataplane CLI) vs net_bonding under dpdk-testpmd "
                "--forward-mode=io, same net_null devices, both directions",
        "devices": {k: {"vdevs": devices(k, args.direction, args.backup_rx),
                        "bond": bond_spec(k)} for k in keys},
        "direction": args.direction, "backup_rx": args.backup_rx,
        "forwarding_cpu": WORKER_CPU, "main_cpu": MAIN_CPU, "forwarding_cores": 1,
        "burst": {"dataplane": DP_BURST, "testpmd": sorted(b for b in bursts if b)},
        "memory": f"{'hugepages' if HUGEPAGES else '--no-huge'} -m {MEMORY_MB}",
        "mbufs": {"dataplane": DP_MBUFS, "testpmd": TESTPMD_MBUFS},
        "duration_s": args.duration, "warmup_s": WARMUP_S, "rounds": args.rounds, "together": args.together,
        "metric": "forwarded packets per second = packets received on the forwarded ports, "
                  "each counted once, both directions summed (testpmd: delta of RX-packets "
                  "of port net_null0 + the bond port, whose counters sum its members; "
                  "dataplane: delta of totals.rx read through the control socket). Both "
                  "windows open after the same warm-up and last the same time. `tx` = "
                  "packets put on the wire (testpmd: TX-packets of net_null0 + bond; "
                  "dataplane: totals.tx).",
        "loadavg_before": load[0], "loadavg_after": load[1],
    }
    dirs = {"both": "both directions (one -> links and links -> one)",
            "out": "one -> links only (links have no-rx=1)",
            "in": "links -> one only (net_null0 has no-rx=1)"}[args.direction]
    c.print(f"[bold]one2many vs net_bonding[/]: {setup['what']}\n"
            f"devices: net_null0 = one (port 0) + net_null1..N = links / bond members; "
            f"traffic {dirs}\n"
            f"one forwarding core (cpu {WORKER_CPU}), main thread on cpu {MAIN_CPU}; "
            f"burst {DP_BURST} (testpmd: {', '.join(map(str, setup['burst']['testpmd']))}); "
            f"{setup['memory']}; mbufs {DP_MBUFS}/{TESTPMD_MBUFS} (dataplane/testpmd)\n"
            f"{args.rounds} round(s) x {args.duration:g} s measured per run "
            f"(each after a {WARMUP_S:g} s warm-up); peers alternated, order swapped "
            f"every round\nmetric: {setup['metric']}\n"
            f"load average before/after: {load[0]} / {load[1]}", highlight=False)
    c.print("testpmd ports (first run, `show port info all`): " + ", ".join(
        f"{p}={v['device']}" + (f" [{v['devargs']}]" if v["devargs"] else "")
        for p, v in sorted(first["ports"].items())) +
        f"; forwarding streams {first['streams']} (--portmask keeps the members out)",
        highlight=False, markup=False)
    for k in keys:
        c.print(f"  {k}: --vdev " + " --vdev ".join(setup["devices"][k]["vdevs"]) +
                f" --vdev '{setup['devices'][k]['bond']}'", highlight=False, markup=False)

    t = Table(title="Mpps forwarded per run (rx, each packet once; r1.. = rounds)")
    t.add_column("scenario")
    t.add_column("peer")
    for i in range(args.rounds):
        t.add_column(f"r{i + 1}", justify="right")
    t.add_column("median", justify="right", style="bold")
    t.add_column("best", justify="right")
    t.add_column("tx Mpps\n(median)", justify="right")
    t.add_column("one->links\nshare of rx", justify="right")
    t.add_column("tx split over\nlinks, %", justify="right")
    t.add_column("fwd thread\non CPU, min", justify="right")
    t.add_column("Mpps per\nCPU-s, med", justify="right")
    t.add_column("one2many\ncyc/pkt", justify="right")
    for k in keys:
        for p in PEERS:
            runs = results[k][p]
            share = statistics.median(r["one_rx_pps"] / r["rx_pps"] for r in runs if r["rx_pps"])
            t.add_row(SCENARIOS[k][0], SHORT[p] + (f" mode {SCENARIOS[k][3]}" if p == "bond" else ""),
                      *(f"{r['pps'] / 1e6:.2f}" for r in runs), f"{med[k][p] / 1e6:.2f}",
                      f"{best[k][p] / 1e6:.2f}", f"{med_tx[k][p] / 1e6:.2f}",
                      f"{100 * share:.0f}%", split(runs), pct(runs),
                      "-" if med_cpu[k][p] is None else f"{med_cpu[k][p] / 1e6:.2f}", cyc(runs))
    c.print(t)

    ratios = {}
    t = Table(title="ours / net_bonding (medians)")
    for col in ("scenario", "vs", "fwd ours", "fwd bond", "ratio fwd", "(best runs)",
                "(per CPU-s)", "tx ours", "tx bond", "ratio tx"):
        t.add_column(col, justify="left" if col in ("scenario", "vs") else "right")
    for k in keys:
        rf = med[k]["ours"] / med[k]["bond"] if med[k]["bond"] else float("nan")
        rt = med_tx[k]["ours"] / med_tx[k]["bond"] if med_tx[k]["bond"] else float("nan")
        rb = best[k]["ours"] / best[k]["bond"] if best[k]["bond"] else float("nan")
        rc = (med_cpu[k]["ours"] / med_cpu[k]["bond"]
              if med_cpu[k]["ours"] and med_cpu[k]["bond"] else None)
        ratios[k] = {"fwd": rf, "fwd_best": rb, "fwd_per_cpu_s": rc, "tx": rt}
        t.add_row(SCENARIOS[k][0], SCENARIOS[k][4], f"{med[k]['ours'] / 1e6:.2f}",
                  f"{med[k]['bond'] / 1e6:.2f}", f"[bold]{rf:.3f}[/]", f"{rb:.3f}",
                  "-" if rc is None else f"{rc:.3f}",
                  f"{med_tx[k]['ours'] / 1e6:.2f}", f"{med_tx[k]['bond'] / 1e6:.2f}", f"{rt:.3f}")
    c.print(t)
    if args.together:
        # Both peers shared each window: their ratio per round is the paired figure.
        t = Table(title=f"--together: ours / net_bonding per CPU-second, each round's shared "
                        f"window (cpu {WORKER_CPU} split between them)")
        for col in ("scenario", "vs", *(f"r{i + 1}" for i in range(args.rounds)), "median",
                    "CPU share ours / bond, med"):
            t.add_column(col, justify="left" if col in ("scenario", "vs") else "right")
        for k in keys:
            pairs = [o["pps_per_cpu_s"] / b["pps_per_cpu_s"]
                     for o, b in zip(results[k]["ours"], results[k]["bond"])
                     if o["pps_per_cpu_s"] and b["pps_per_cpu_s"]]
            ratios[k]["paired_per_cpu_s"] = pairs
            ratios[k]["paired_per_cpu_s_median"] = statistics.median(pairs) if pairs else None
            shares = [f"{statistics.median(r['fwd_on_cpu'] for r in results[k][p]):.2f}"
                      for p in ("ours", "bond")]
            t.add_row(SCENARIOS[k][0], SCENARIOS[k][4], *(f"{x:.3f}" for x in pairs),
                      "-" if not pairs else f"[bold]{statistics.median(pairs):.3f}[/]",
                      " / ".join(shares))
        c.print(t)

    notes = [
        "Polling differs, and so does the traffic mix: the bond's rx (modes 0 and 3) starts at "
        "the next member on every call and reads members until 32 packets are in; net_null "
        "always has 32, so one bond rx call = one member's burst, and each testpmd loop moves "
        "32 one->links + 32 links->one. Our worker polls every link port on every loop: 32 "
        "one->links + 32 x N links->one. The 'one->links share' column shows it (bond ~50%, "
        "ours ~1/(N+1)). --direction out / in measures each direction alone.",
        "Mode 1 (active-backup) reads only the primary member; our failover accepts packets "
        "from every link and polls each of them. The backup link is therefore given "
        "no-rx=1 for both peers " + ("(OVERRIDDEN: --backup-rx, the backup makes packets, "
                                     "which only we forward)" if args.backup_rx else
                                     "(a standby link receives nothing); we still poll it "
                                     "(an empty poll per loop), the bond does not; not polling "
                                     "it at all (poll = false) measured no different here") + ".",
        "Mode 3 / xmit-all: every packet from net_null0 is sent on every link (ours: one mbuf, "
        "refcount raised; the bond does the same). 'fwd' counts it once (packets received "
        "and forwarded), 'tx' counts every copy: testpmd's bond TX-packets is the sum of "
        "its members' = N x its one->bond packets. The ratio compared is 'ratio fwd' "
        "(both count received packets); 'ratio tx' is the same comparison in wire packets, "
        "which also depends on the mix (N copies per one->links packet).",
        "'fwd thread on CPU' = the forwarding thread's time on a CPU (schedstat) over the wall "
        "time of (most of) the window; it spins, so below ~99% another process took turns on "
        "cpu 1 and that run's Mpps is low; 'Mpps per CPU-s' = Mpps / that share (what the run "
        "would do with cpu 1 to itself, if the intruder did not also evict its caches), and "
        "'(per CPU-s)' is the ratio of those medians. 'one2many cyc/pkt' = the stage's own "
        "cycles per packet (runtime rows, sampled loops), without rx/tx.",
        "What only we do: ng_one2many counts octets per link (getstats), so our stage reads "
        "each packet's length, one load of an mbuf's first cache line; io forwarding and the "
        "bond never touch an mbuf between the driver's rx and tx. Without hugepages DPDK puts "
        "each 2.3 KiB mbuf on its own 4 KiB page at the same offset, so every mbuf header "
        "falls in one L1 set and that load is an L1 miss (measured ~13 cycles a packet "
        "on this host). The dataplane packs its pool instead when it runs without hugepages "
        "and I/O addresses are virtual (native/core.c); testpmd keeps DPDK's default layout. "
        "So without --hugepages that layout difference is in these figures (on this host it "
        "is most of our lead); with --hugepages both run on hugepages, like for like, as in "
        "production.",
        "--together runs the two peers at once, both pinned to the forwarding CPU: the "
        "kernel alternates them every few ms, so a slow spell of the host falls on both, and "
        "each is measured per second of its own thread's time on the CPU. Wall Mpps are then "
        "about half; compare the per-CPU-s figures. Each switch costs both peers their cache "
        "contents, a few µs against a turn of milliseconds.",
        "Both use bursts of 32. net_null frames are 64-byte zero-filled mbufs that no one "
        "reads (io forwarding; round-robin, failover and broadcast never look at the data), "
        "so the hash mode is not compared with a bonding hash policy here.",
    ]
    for n_ in notes:
        c.print("- " + n_, highlight=False)
    return {"setup": setup, "runs": results, "median_fwd_pps": med, "median_tx_pps": med_tx,
            "best_fwd_pps": best, "median_fwd_pps_per_cpu_s": med_cpu,
            "ratio_ours_over_bond": ratios, "notes": notes}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=2, help="rounds of alternated runs (default 2)")
    ap.add_argument("--duration", type=float, default=6.0, help="seconds measured per run (default 6)")
    ap.add_argument("--scenarios", default=",".join(SCENARIOS),
                    help=f"comma-separated subset of {','.join(SCENARIOS)} (default all)")
    ap.add_argument("--direction", choices=("both", "out", "in"), default="both",
                    help="both (default); out: one -> links only; in: links -> one only")
    ap.add_argument("--backup-rx", action="store_true",
                    help="failover: let the backup link make packets too (the bond ignores them)")
    ap.add_argument("--json-out", metavar="FILE", help="also write all figures as JSON here")
    ap.add_argument("--hugepages", action="store_true",
                    help="run both peers on 2 MiB hugepages (reserve and mount them first)")
    ap.add_argument("--together", action="store_true",
                    help="run both peers at once on the forwarding CPU, each measured per "
                         "second of its own time on it (robust to a noisy host)")
    args = ap.parse_args()
    global HUGEPAGES
    HUGEPAGES = args.hugepages
    if HUGEPAGES:
        require_hugepages(2 * MEMORY_MB)  # --together: both peers hold theirs at once
    keys = [k.strip() for k in args.scenarios.split(",") if k.strip()]
    if not keys or any(k not in SCENARIOS for k in keys):
        ap.error(f"--scenarios: choose from {', '.join(SCENARIOS)}")

    peers = {"bond": lambda tmp, k: BondPeer(tmp, k, args.direction, args.backup_rx),
             "ours": lambda tmp, k: OursPeer(tmp, k, args.duration, args.direction,
                                             args.backup_rx)}
    results = {k: {p: [] for p in PEERS} for k in keys}
    load_before = [round(x, 2) for x in os.getloadavg()]
    with tempfile.TemporaryDirectory(prefix="one2many_bench_") as tmp:
        for rnd in range(args.rounds):
            order = list(peers) if rnd % 2 == 0 else list(peers)[::-1]
            for k in keys:
                if args.together:
                    print(f"round {rnd + 1}/{args.rounds}: {SCENARIOS[k][0]}: both peers "
                          f"on cpu {WORKER_CPU} ...", file=sys.stderr, flush=True)
                    for p, r in run_together(Path(tmp), k, args.duration, args.direction,
                                             args.backup_rx, ours_first=rnd % 2 == 1).items():
                        results[k][p].append(r)
                    continue
                for p in order:
                    print(f"round {rnd + 1}/{args.rounds}: {SCENARIOS[k][0]}: {PEERS[p]} ...",
                          file=sys.stderr, flush=True)
                    results[k][p].append(run_alone(peers[p](Path(tmp), k), args.duration))
    out = report(args, keys, results, (load_before, [round(x, 2) for x in os.getloadavg()]))
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(out, indent=2, default=str) + "\n")


if __name__ == "__main__":
    main()
