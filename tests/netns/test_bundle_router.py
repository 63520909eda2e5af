"""Network-namespace tier: the router's uplink is a one2many bundle of two veths.

    ns ba-a-<id>                  root namespace                       ns ba-b-<id>
    va<id> <-veth-> da<id> ==[dataplane]== d0<id> <-veth-> v0<id> --+
                    port a      bundle      d1<id> <-veth-> v1<id> --+-- br<id> (a bridge)
                                "uplink" = one2many round-robin over
                                links up0 (d0) and up1 (d1)

Host B sits behind a Linux bridge over both links (this kernel has no
bonding driver; a bridge is what a switch without a LAG config does: it
learns the bundle's MAC on whichever link carried it last). The dataplane
runs the pipeline one2many (one = the bundle) -> ip6flow with interfaces a
and uplink, no static neighbours: NDP and ARP for B go out through the
bundle and the answers come back on either link. Pings of both families
must all come back, and both links must carry traffic both ways.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
import uuid
from pathlib import Path

import pytest

from tests.helpers import sh, vdev_toml
from tests.netns.topology import DPDK_RUN_ROOT, DataplaneProc, add_veth, assert_no_loss, new_namespace

pytestmark = [pytest.mark.netns]

R_A6, R_A4 = "2001:db8:a::1", "10.1.0.1"
R_B6, R_B4 = "2001:db8:b::1", "10.2.0.1"
A6, A4 = "2001:db8:a::2", "10.1.0.2"
B6, B4 = "2001:db8:b::2", "10.2.0.2"
BUNDLE_MAC = "02:00:00:00:0b:01"
READY_TIMEOUT_S = 20.0


@pytest.fixture
def topo():
    if shutil.which("ip") is None:
        pytest.skip("iproute2 (ip) not installed")
    uid = uuid.uuid4().hex[:6]
    t = {"uid": uid, "ns_a": f"ba-a-{uid}", "ns_b": f"ba-b-{uid}", "va": f"va{uid}", "da": f"da{uid}",
         "links": [(f"d0{uid}", f"v0{uid}"), (f"d1{uid}", f"v1{uid}")], "br": f"br{uid}"}
    try:
        for ns in (t["ns_a"], t["ns_b"]):
            new_namespace(ns)
        for outer, inner, ns in [(t["da"], t["va"], t["ns_a"])] + [(d, v, t["ns_b"]) for d, v in t["links"]]:
            add_veth(outer, inner, ns)
        a, b = t["ns_a"], t["ns_b"]
        sh("ip", "-n", a, "addr", "add", f"{A4}/24", "dev", t["va"])
        sh("ip", "-n", a, "addr", "add", f"{A6}/64", "dev", t["va"], "nodad")
        sh("ip", "-n", a, "link", "set", t["va"], "up")
        sh("ip", "-n", a, "route", "add", "default", "via", R_A4)
        sh("ip", "-n", a, "-6", "route", "add", "default", "via", R_A6)
        sh("ip", "-n", b, "link", "add", t["br"], "type", "bridge", "stp_state", "0")
        for _, inner in t["links"]:
            sh("ip", "netns", "exec", b, "sysctl", "-q", "-w", f"net.ipv6.conf.{inner}.disable_ipv6=1")
            sh("ip", "-n", b, "link", "set", inner, "master", t["br"])
            sh("ip", "-n", b, "link", "set", inner, "up")
        sh("ip", "-n", b, "addr", "add", f"{B4}/24", "dev", t["br"])
        sh("ip", "-n", b, "addr", "add", f"{B6}/64", "dev", t["br"], "nodad")
        sh("ip", "-n", b, "link", "set", t["br"], "up")
        sh("ip", "-n", b, "route", "add", "default", "via", R_B4)
        sh("ip", "-n", b, "-6", "route", "add", "default", "via", R_B6)
        yield t
    finally:
        for ns in (t["ns_a"], t["ns_b"]):
            sh("ip", "netns", "del", ns, check=False)
        for outer in [t["da"]] + [d for d, _ in t["links"]]:
            if Path(f"/sys/class/net/{outer}").exists():
                sh("ip", "link", "del", outer, check=False)


def write_config(path: Path, t: dict, file_prefix: str, socket: Path) -> Path:
    (d0, _), (d1, _) = t["links"]
    path.write_text(vdev_toml(file_prefix) + textwrap.dedent(f"""
        [control]
        socket = "{socket}"

        [metrics]
        enabled = false

        [[ports]]
        name = "a"
        device = "net_af_packet0,iface={t['da']}"

        [[ports]]
        name = "up0"
        device = "net_af_packet1,iface={d0}"

        [[ports]]
        name = "up1"
        device = "net_af_packet2,iface={d1}"

        [[ports]]
        name = "uplink"
        bundle = true
        mac = "{BUNDLE_MAC}"

        [[pipeline]]
        stage = "one2many"
        one = "uplink"
        many = ["up0", "up1"]
        xmit = "roundrobin"

        [[pipeline]]
        stage = "ip6flow"
        max_routes = 1024
        maxflows = 4096
        hashsize = 4096
        maxflows4 = 4096
        hashsize4 = 4096

        [[pipeline.interfaces]]
        port = "a"
        addresses = ["{R_A6}/64", "{R_A4}/24"]

        [[pipeline.interfaces]]
        port = "uplink"
        addresses = ["{R_B6}/64", "{R_B4}/24"]
        """))
    return path


def ping(t: dict, dst: str, count: int, v6: bool, timeout: float = 30.0) -> subprocess.CompletedProcess:
    args = ["ping", *(["-6"] if v6 else []), "-n", "-c", str(count), "-i", "0.02", "-W", "1", dst]
    return sh("ip", "netns", "exec", t["ns_a"], *args, check=False, timeout=timeout)


def ctl(socket: Path, command: str, **kwargs) -> object:
    res = subprocess.run([sys.executable, "-m", "dataplane", "ctl", "--socket", str(socket), "--json",
                          command, *[f"{k}={v}" for k, v in kwargs.items()]],
                         capture_output=True, text=True, timeout=30)
    assert res.returncode == 0, f"ctl {command}: {res.stderr}"
    return json.loads(res.stdout)


def test_ping_through_a_router_whose_uplink_is_a_bundle(topo, tmp_path):
    file_prefix = f"dpt-ba-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    socket = tmp_path / "ctl.sock"
    cfg = write_config(tmp_path / "router.toml", topo, file_prefix, socket)
    dp = DataplaneProc(tmp_path, cfg, duration=120.0)
    try:
        deadline = time.monotonic() + READY_TIMEOUT_S
        for dst, v6 in ((B6, True), (B4, False)):   # the router resolves B through the bundle
            while ping(topo, dst, 1, v6, timeout=5).returncode != 0:
                dp.check_alive()
                assert time.monotonic() < deadline, f"no route to {dst} through the bundle\n{dp.stderr()}"
                time.sleep(0.1)
        before = [ctl(socket, "one2many.getstats", link=i) for i in (0, 1)]
        for dst, v6 in ((B6, True), (B4, False)):
            assert_no_loss(ping(topo, dst, 100, v6), 100, f"ping {dst} through the bundle")
        after = [ctl(socket, "one2many.getstats", link=i) for i in (0, 1)]
        sent = [after[i]["tx_packets"] - before[i]["tx_packets"] for i in (0, 1)]
        received = [after[i]["rx_packets"] - before[i]["rx_packets"] for i in (0, 1)]
        # 200 echo requests out, per packet round-robin over the two links
        assert sum(sent) >= 200 and min(sent) >= 90, sent
        # B's replies come in on whichever link its bridge last saw our MAC on
        assert sum(received) >= 200, received
        stats = ctl(socket, "ip6flow.stats")   # ICMP takes the route path (never cached)
        assert stats["ipv6"]["forward"] >= 200 and stats["ipv4"]["forward"] >= 200, stats
        neighbours = {n["address"]: n for n in ctl(socket, "neighbour.show")}
        assert neighbours[B6]["port"] == neighbours[B4]["port"] == "uplink"
        rc, _ = dp.stop(signal.SIGTERM)
        assert rc == 0, dp.stderr()
        final = dp.result()
        assert final["totals"]["rx"] + final["totals"]["injected"] == (
            final["totals"]["tx"] + final["totals"]["dropped"] + final["totals"]["punted"])
    finally:
        dp.kill()
        shutil.rmtree(DPDK_RUN_ROOT / file_prefix, ignore_errors=True)
