"""netflow in front of the ip6flow router: flow records carry the route data
ng_netflow takes from the route table (output ifIndex, next hop, masks)."""
from __future__ import annotations

import textwrap
import time

import pytest
from scapy.layers.inet import IP, UDP
from scapy.layers.inet6 import IPv6
from scapy.layers.l2 import Ether

from tests.helpers import conserved, port, running, vdev_config

pytestmark = [pytest.mark.eal, pytest.mark.timeout(60)]

ROUTER = textwrap.dedent('''
    [[pipeline]]
    stage = "netflow"
    [[pipeline]]
    stage = "ip6flow"
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
    [[pipeline.neighbours]]
    address = "198.51.100.2"
    mac = "02:00:00:00:22:23"
    port = "wan"
    [[pipeline.routes]]
    prefix = "2001:db8:99::/48"
    via = "2001:db8:2::2"
    [[pipeline.routes]]
    prefix = "10.99.0.0/16"
    via = "198.51.100.2"
    ''')


def test_flow_records_carry_route_data(file_prefix):
    body = (port("lan", "net_ring0") + port("wan", "net_null0,no-rx=1", poll=False) + ROUTER)
    with running(vdev_config(file_prefix, body)) as dp:
        mac = dp.port("lan").info.mac
        for _ in range(3):
            dp.inject("lan", bytes(Ether(dst=mac) / IPv6(src="2001:db8:1::5", dst="2001:db8:99::1") /
                                   UDP(sport=1, dport=2)))
            dp.inject("lan", bytes(Ether(dst=mac) / IP(src="192.0.2.5", dst="10.99.0.1") /
                                   UDP(sport=1, dport=2)))
        deadline = time.monotonic() + 10
        while dp.snapshot().ports["wan"]["tx"] < 6 and time.monotonic() < deadline:
            time.sleep(0.01)
        flows = {r["dst"]: r for r in dp.netflow[0].show(10)}
        assert conserved(dp.snapshot())
    v6, v4 = flows["2001:db8:99::1"], flows["10.99.0.1"]
    # ifIndex = port position + 1: lan 1, wan 2
    assert (v6["packets"], v6["in_ifx"], v6["out_ifx"]) == (3, 1, 2)
    assert (v6["src_mask"], v6["dst_mask"], v6["nexthop"]) == (64, 48, "2001:db8:2::2")
    assert (v4["packets"], v4["in_ifx"], v4["out_ifx"]) == (3, 1, 2)
    assert (v4["src_mask"], v4["dst_mask"], v4["nexthop"]) == (24, 16, "198.51.100.2")


def test_without_a_router_route_data_stays_zero(file_prefix):
    body = (port("lan", "net_ring0") + port("wan", "net_null0,no-rx=1", poll=False) +
            '[[pipeline]]\nstage = "netflow"\n[[pipeline]]\nstage = "xconnect"\nmap = { lan = "wan" }\n')
    with running(vdev_config(file_prefix, body)) as dp:
        dp.inject("lan", bytes(Ether() / IP(src="192.0.2.5", dst="10.99.0.1") / UDP(sport=1, dport=2)))
        deadline = time.monotonic() + 10
        while dp.snapshot().ports["wan"]["tx"] < 1 and time.monotonic() < deadline:
            time.sleep(0.01)
        (r,) = dp.netflow[0].show(10)
    assert (r["out_ifx"], r["src_mask"], r["dst_mask"], r["nexthop"]) == (0, 0, 0, "0.0.0.0")
