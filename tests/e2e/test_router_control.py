"""`dataplane ctl` speaks the router's messages: ip6flow stats/show/maxflows/
hashsize/invalidate, routes, neighbours and interfaces, against a dataplane
routing a pcap replayed forever (so the caches are in use)."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from scapy.layers.inet import IP, UDP
from scapy.layers.inet6 import IPv6
from scapy.layers.l2 import Ether
from scapy.utils import wrpcap

from tests.conftest import unique_prefix
from tests.helpers import RunningCli, eal_toml

pytestmark = pytest.mark.timeout(120)

PCAP0_MAC = "02:70:63:61:70:00"  # what DPDK 22.11 gives the first net_pcap port

ROUTER = """
[[ports]]
name = "lan"
device = "net_pcap0,rx_pcap={pcap},infinite_rx=1"
[[ports]]
name = "wan"
device = "net_null0,no-rx=1"
poll = false
[[pipeline]]
stage = "ip6flow"
maxflows = 1024
hashsize = 1024
max_routes = 1024
[[pipeline.interfaces]]
port = "lan"
addresses = ["2001:db8:1::1/64", "192.0.2.1/24"]
[[pipeline.interfaces]]
port = "wan"
addresses = ["2001:db8:2::1/64", "198.51.100.1/24"]
[[pipeline.neighbours]]
address = "2001:db8:2::2"
mac = "02:00:00:00:22:22"
port = "wan"
[[pipeline.routes]]
prefix = "2001:db8:99::/48"
via = "2001:db8:2::2"
[run]
runtime_dir = "{run_dir}"
[metrics]
enabled = false
"""


def ctl(sock: Path, *args: str, ok: bool = True):
    p = subprocess.run([sys.executable, "-m", "dataplane", "ctl", "-s", str(sock), *args, "--json"],
                       capture_output=True, text=True, timeout=30)
    assert (p.returncode == 0) == ok, p.stderr
    return json.loads(p.stdout) if ok else p.stderr


@pytest.fixture
def router(tmp_path):
    pkts = [Ether(dst=PCAP0_MAC) / IPv6(src=f"2001:db8:1::{i + 10:x}", dst="2001:db8:99::1") /
            UDP(sport=1000 + i, dport=53) for i in range(4)]
    pkts += [Ether(dst=PCAP0_MAC) / IP(src="192.0.2.10", dst="198.51.100.7") / UDP()]
    wrpcap(str(tmp_path / "in.pcap"), pkts)
    run_dir, prefix = tmp_path / "run", unique_prefix("rctl")
    cfg = tmp_path / "router.toml"
    cfg.write_text(eal_toml(prefix) + ROUTER.format(pcap=tmp_path / "in.pcap", run_dir=run_dir))
    with RunningCli(cfg, run_dir / f"{prefix}.sock") as dp:
        yield dp.socket


def test_ctl_speaks_the_router_messages(router):
    sock = router
    stats = ctl(sock, "ip6flow.stats")
    assert stats["ipv6"]["fastforward"] > 0 and stats["ipv6"]["maxflows"] == 1024
    flows = ctl(sock, "ip6flow.show", "family=ipv6")["flows"]
    assert {f["src"] for f in flows} == {f"2001:db8:1::{i + 10:x}" for i in range(4)}
    assert all(f["valid"] and f["dst"] == "2001:db8:99::1" for f in flows)

    # the IPv4 packets have no neighbour for 198.51.100.7 yet: punted to resolve
    assert ctl(sock, "ip6flow.stats")["ipv4"]["punts"]["resolve"] > 0
    ctl(sock, "neighbour.add", "address=198.51.100.7", "mac=02:00:00:00:77:77", "port=wan")
    assert {"address": "198.51.100.7", "port": "wan", "mac": "02:00:00:00:77:77",
            "static": True} in ctl(sock, "neighbour.show")

    ctl(sock, "route.add", "prefix=2001:db8:98::/48", "via=2001:db8:2::2")
    routes = {r["prefix"]: r for r in ctl(sock, "route.show")}
    assert routes["2001:db8:98::/48"]["nexthop"] == "forward"
    assert routes["2001:db8:98::/48"]["mac"] == "02:00:00:00:22:22"
    ctl(sock, "route.del", "prefix=2001:db8:98::/48")
    assert "2001:db8:98::/48" not in {r["prefix"] for r in ctl(sock, "route.show")}

    ctl(sock, "ip6flow.maxflows", "value=2")
    assert ctl(sock, "ip6flow.stats")["ipv6"]["maxflows"] == 2
    assert ctl(sock, "ip6flow.invalidate") >= 0
    itf = {i["port"]: i for i in ctl(sock, "interface.show")}
    assert "2001:db8:1::1/64" in itf["lan"]["addresses"]
    assert any(a.startswith("fe80::") for a in itf["lan"]["addresses"])


def test_ctl_rejects_bad_router_requests_and_changes_nothing(router):
    sock = router
    before = ctl(sock, "route.show")
    assert "power of two" in ctl(sock, "ip6flow.hashsize", "value=100", ok=False)
    assert "no route" in ctl(sock, "route.del", "prefix=2001:db8:77::/48", ok=False)
    assert "connected" in ctl(sock, "route.add", "prefix=2001:db8:77::/48", "via=2001:db8:9::1",
                              ok=False)
    assert "family" in ctl(sock, "ip6flow.show", "family=ipx", ok=False)
    assert "no port" in ctl(sock, "neighbour.add", "address=2001:db8:2::9",
                            "mac=02:00:00:00:00:09", "port=nope", ok=False)
    assert ctl(sock, "route.show") == before
    assert ctl(sock, "ip6flow.stats")["ipv6"]["hashsize"] == 1024
