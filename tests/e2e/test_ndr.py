"""`dataplane ndr` against a real dataplane, and the Grafana dashboard against
a real metrics scrape.

NDR topology (root: veth pairs and AF_PACKET; built per test, removed after)::

    source (this test's `dataplane ndr`)         DUT (`dataplane run`)
    ng<id>a  --veth-->  nd<id>a  net_af_packet0 "in"  --xconnect-->
    ng<id>b  <--veth--  nd<id>b  net_af_packet1 "out"

The source paces UDP frames into ng<id>a; the kernel counts what comes back
on ng<id>b. Each trial's counters are checked against each other: the
source's, the DUT's (over its control socket) and the kernel's.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import urllib.request
import uuid
from pathlib import Path

import pytest

from dataplane.control import request
from tests.conftest import unique_prefix
from tests.helpers import RunningCli, eal_toml, sh
from tests.unit.test_ndr import DASHBOARD, check_dashboard, emitted_metrics

pytestmark = pytest.mark.timeout(120)


def answering(dut: RunningCli) -> RunningCli:
    """The socket file exists a moment before the server listens on it."""
    deadline = time.monotonic() + 20
    while True:
        try:
            request(dut.socket, "status")
            return dut
        except ConnectionRefusedError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def kernel(iface: str, counter: str) -> int:
    return int(Path(f"/sys/class/net/{iface}/statistics/{counter}").read_text())


@pytest.fixture
def veths():
    if os.geteuid() != 0:
        pytest.skip("needs root: veth pairs and AF_PACKET sockets")
    if shutil.which("ip") is None:
        pytest.skip("iproute2 (ip) not installed")
    uid = uuid.uuid4().hex[:6]
    pairs = [(f"ng{uid}a", f"nd{uid}a"), (f"ng{uid}b", f"nd{uid}b")]
    try:
        for src, dut in pairs:
            sh("ip", "link", "add", src, "type", "veth", "peer", "name", dut)
            for dev in (src, dut):
                # no IPv6 (no RS/MLD/ND of the kernel's own on the wire), no addresses:
                # the only packets on these links are the source's and the DUT's
                sh("sysctl", "-q", "-w", f"net.ipv6.conf.{dev}.disable_ipv6=1")
                sh("ip", "link", "set", dev, "up")
        yield pairs
    finally:
        for src, _ in pairs:
            sh("ip", "link", "del", src, check=False)


def dut_config(tmp_path: Path, pairs, pipeline: str, extra_ports: str = "", *,
               workers: str = "[1]", in_args: str = "") -> tuple[Path, Path]:
    prefix = unique_prefix("ndr")
    run_dir = tmp_path / "run"
    cfg = tmp_path / "dut.toml"
    (_, din), (_, dout) = pairs
    cfg.write_text(eal_toml(prefix, workers) + f"""
[mempool]
mbufs = 8191
cache = 64
[[ports]]
name = "in"
device = "net_af_packet0,iface={din}{in_args}"
[[ports]]
name = "out"
device = "net_af_packet1,iface={dout}"
{extra_ports}
{pipeline}
[run]
runtime_dir = "{run_dir}"
[metrics]
enabled = false
""")
    return cfg, run_dir / f"{prefix}.sock"


def ndr_cli(cfg: Path, *args: str) -> dict:
    r = subprocess.run([sys.executable, "-m", "dataplane", "ndr", "-c", str(cfg), "--json", *args],
                       capture_output=True, text=True, timeout=90)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def check_trials(res: dict) -> None:
    """What must hold for every search, whatever the machine's speed."""
    trials = res["trials"]
    assert trials and len(trials) <= res["params"]["max_trials"]
    top = max(t["offered_pps"] for t in trials)
    ndr, pdr = res["ndr"], res["pdr"]
    assert 0 <= ndr["rate_pps"] <= pdr["rate_pps"] <= res["params"]["max_rate"]
    assert ndr["offered_pps"] <= top and pdr["offered_pps"] <= top
    for b in (ndr, pdr):
        if b["trial"] is not None:
            t = trials[b["trial"]]
            assert t["loss_ratio"] <= b["tolerance"]
        if b["fail_pps"] is not None:
            assert b["rate_pps"] < b["fail_pps"]
    for t in trials:
        # every lost packet has a reason, and the reasons add up
        assert sum(t["lost_by_reason"].values()) + t["unattributed"] == t["lost"]
        assert t["unattributed"] == 0, t
        assert t["lost"] == t["expected"] - t["received"] and t["expected"] == t["offered"]
        # the DUT conserves packets: rx + injected == tx + punted + dropped
        assert t["dut"]["conserved"], t["dut"]
        # the DUT's NIC counters and its workers' agree once it is idle
        assert t["nic"]["ipackets"] == t["dut"]["rx_in"]
        assert t["ndr_pass"] == (t["lost"] <= 0)
        assert t["pdr_pass"] == (t["loss_ratio"] <= res["params"]["loss_tolerance"])


def test_ndr_search_on_veths(tmp_path, veths):
    # The DUT is given a capacity below the source's (a Python sender offers
    # 60-110k pps here): two workers share one CPU, so the one that polls `in`
    # is off the CPU for whole scheduler slices and its socket ring (512
    # frames) overflows while it is. The search then has losses to find.
    cfg, sock = dut_config(tmp_path, veths, '[[pipeline]]\nstage = "xconnect"\nmap = { in = "out" }\n',
                           workers="[1, 1]", in_args=",framecnt=512")
    (src, _), (ret, _) = veths
    with RunningCli(cfg, sock) as dut:
        answering(dut)
        before = {"tx": kernel(src, "tx_packets"), "rx": kernel(ret, "rx_packets")}
        dut_before = request(sock, "stats")["totals"]
        t0 = time.monotonic()
        res = ndr_cli(cfg, "--max-rate", "1000000", "--resolution", "10000", "--duration", "0.4",
                      "--max-trials", "6", "--loss-tolerance", "1", "--size", "64", "--flows", "256",
                      "--json-out", str(tmp_path / "ndr.json"))
        took = time.monotonic() - t0
        dut_after = request(sock, "stats")["totals"]
        after = {"tx": kernel(src, "tx_packets"), "rx": kernel(ret, "rx_packets")}
        assert dut.stop() == 0, dut.stderr
    print(f"\nNDR {res['ndr']['rate_pps']:.0f} pps, PDR {res['pdr']['rate_pps']:.0f} pps, "
          f"{len(res['trials'])} trials in {took:.1f} s")
    for t in res["trials"]:
        print(f"  {t['rate_pps']:9.0f} asked {t['offered_pps']:9.0f} offered {t['lost']:6d} lost "
              f"{t['lost_by_reason']}")
    check_trials(res)
    assert json.loads((tmp_path / "ndr.json").read_text()) == res
    assert res["params"]["in_ports"] == ["in"] and res["params"]["out_ports"] == ["out"]
    # the source's counts are the kernel's: every packet it offered left on the
    # veth (or is a link loss), everything counted back arrived on the return veth
    offered = sum(t["offered"] for t in res["trials"])
    link = sum(t["lost_by_reason"].get("link:veth_backlog", 0) for t in res["trials"])
    assert after["tx"] - before["tx"] == offered - link
    assert after["rx"] - before["rx"] == sum(t["received"] for t in res["trials"])
    # and the DUT saw exactly what the trials say it saw
    assert dut_after["rx"] - dut_before["rx"] == sum(t["dut"]["rx"] for t in res["trials"])
    assert dut_after["tx"] - dut_before["tx"] == sum(t["dut"]["tx"] for t in res["trials"])
    assert dut.result["totals"]["rx"] == dut.result["totals"]["tx"] + dut.result["totals"]["dropped"]


def test_losses_inside_the_dut_are_attributed_to_their_reason(tmp_path, veths):
    # `in` has no mapping: every packet the DUT reads from it is dropped as no_egress
    cfg, sock = dut_config(tmp_path, veths, '[[pipeline]]\nstage = "xconnect"\nmap = { out = "in" }\n')
    with RunningCli(cfg, sock) as dut:
        answering(dut)
        res = ndr_cli(cfg, "--in", "in", "--out", "out", "--max-rate", "20000",
                      "--resolution", "10000", "--duration", "0.3", "--max-trials", "4")
        assert dut.stop() == 0, dut.stderr
    check_trials(res)
    assert res["ndr"]["rate_pps"] == res["pdr"]["rate_pps"] == 0
    assert res["ndr"]["trial"] is None and res["ndr"]["limited_by"] == "dut"
    for t in res["trials"]:
        assert t["received"] == 0 and t["lost"] == t["offered"] > 0
        reasons = t["lost_by_reason"]
        # dropped by the stage; a DUT starved of CPU may also miss some at its socket ring
        assert set(reasons) <= {"stage:no_egress", "nic_miss:socket_ring"}
        assert reasons["stage:no_egress"] == t["dut"]["dropped"] == t["dut"]["rx_in"] > 0


def test_count_at_dut_for_a_probe(tmp_path, veths):
    # a flow probe: in -> netflow -> a sink; nothing comes back to the source
    cfg, sock = dut_config(
        tmp_path, veths,
        '[[pipeline]]\nstage = "netflow"\nmax_flows = 4096\n'
        '[[pipeline]]\nstage = "xconnect"\nmap = { in = "sink" }\n',
        extra_ports='[[ports]]\nname = "sink"\ndevice = "net_null0,no-rx=1"\npoll = false\n')
    with RunningCli(cfg, sock) as dut:
        answering(dut)
        res = ndr_cli(cfg, "--in", "in", "--out", "sink", "--count-at", "dut", "--max-rate", "20000",
                      "--duration", "0.3", "--max-trials", "3", "--flows", "100")
        info = request(sock, "netflow.info")
    check_trials(res)
    assert res["params"]["count_at"] == "dut"
    assert all(t["received"] == t["dut"]["tx_out"] for t in res["trials"])
    assert info["packets"] >= sum(t["dut"]["rx_in"] for t in res["trials"])
    assert info["flows_created"] >= 100  # every source address became a flow


def test_ndr_needs_a_running_dut(tmp_path, veths):
    cfg, _ = dut_config(tmp_path, veths, '[[pipeline]]\nstage = "xconnect"\nmap = { in = "out" }\n')
    r = subprocess.run([sys.executable, "-m", "dataplane", "ndr", "-c", str(cfg), "--max-rate", "1000"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 1 and "error: no dataplane answers on" in r.stderr


# ---- the Grafana dashboard against a real scrape ---------------------------------------------

ALL_STAGES = """
[mempool]
mbufs = 8191
cache = 64
[[ports]]
name = "lan"
device = "net_null0"
[[ports]]
name = "wan"
device = "net_null1,no-rx=1"
poll = false
[[ports]]
name = "one"
device = "net_null2"
[[ports]]
name = "l0"
device = "net_null3,no-rx=1"
poll = false
[[ports]]
name = "l1"
device = "net_null4,no-rx=1"
poll = false
[[pipeline]]
stage = "netflow"
max_flows = 4096
[pipeline.export]
version = 10
collectors = ["127.0.0.1:9"]
[[pipeline]]
stage = "one2many"
one = "one"
many = ["l0", "l1"]
[[pipeline]]
stage = "ip6flow"
maxflows = 64
hashsize = 64
maxflows4 = 64
hashsize4 = 64
max_routes = 1024
max_nexthops = 64
[[pipeline.interfaces]]
port = "lan"
addresses = ["2001:db8:1::1/64", "192.0.2.1/24"]
[[pipeline.interfaces]]
port = "wan"
addresses = ["2001:db8:2::1/64", "198.51.100.1/24"]
[[pipeline.routes]]
prefix = "::/0"
via = "2001:db8:2::2"
[[pipeline.neighbours]]
address = "2001:db8:2::2"
mac = "02:00:00:00:00:02"
port = "wan"
"""


def test_dashboard_metrics_exist_in_a_real_scrape(tmp_path):
    """A dataplane with every stage kind (netflow, one2many, ip6flow) forwarding
    on net_null ports: its /metrics must have every metric and label the
    dashboard queries, and the dashboard must show every metric it has."""
    prefix = unique_prefix("graf")
    run_dir = tmp_path / "run"
    cfg = tmp_path / "all.toml"
    cfg.write_text(eal_toml(prefix) + ALL_STAGES + f"""
[run]
runtime_dir = "{run_dir}"
[metrics]
listen = "127.0.0.1:0"
interval_s = 0.1
""")
    with RunningCli(cfg, run_dir / f"{prefix}.sock") as dut:
        answering(dut)
        url = request(dut.socket, "status")["metrics"]
        time.sleep(0.5)
        text = urllib.request.urlopen(url, timeout=10).read().decode()
        assert dut.stop() == 0, dut.stderr
    emitted = emitted_metrics(text)
    for prefix in ("port_", "worker_", "stage_", "netflow_", "one2many_", "ip6flow_"):
        assert any(n.startswith("dataplane_" + prefix) for n in emitted), prefix
    check_dashboard(json.loads(DASHBOARD.read_text()), emitted, all_used=True)
