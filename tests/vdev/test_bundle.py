"""A one2many bundle as a logical port: the router's uplink and netflow's input.

Topology (every test):

* ``lan``: net_pcap, hosts on 2001:db8:1::/64 and 192.0.2.0/24 (rx_pcap in,
  tx_pcap out);
* ``up0``, ``up1``: net_pcap links of the bundle ``uplink`` (each with its
  own rx and tx pcap), towards a gateway 2001:db8:2::2 / 198.51.100.2 that
  the default routes point at;
* ``uplink``: ``bundle = true`` with its own MAC, the one side of a
  one2many stage over [up0, up1], then netflow, then the ip6flow router with
  interfaces on lan and uplink.

What the router sends to the uplink leaves on the links by the transmit
algorithm, with the bundle's MAC as source; what arrives on either link is
routed as the bundle's (netflow meters it with the bundle's ifIndex). The
pcaps are read after the dataplane stopped (net_pcap flushes on close).
"""
from __future__ import annotations

import time

import pytest
from scapy.layers.inet import IP, UDP
from scapy.layers.inet6 import ICMPv6EchoReply, ICMPv6EchoRequest, IPv6
from scapy.layers.l2 import Ether
from scapy.utils import rdpcap, wrpcap

from dataplane import config
from dataplane.errors import ConfigError
from tests.helpers import conserved, port, running, vdev_config, vdev_toml

pytestmark = [pytest.mark.eal, pytest.mark.timeout(60)]

BUNDLE_MAC = "02:00:00:00:bb:01"
HOST_MAC = "02:00:00:00:11:11"
GW_MAC = "02:00:00:00:22:22"
LAN6, LAN4 = "2001:db8:1::1", "192.0.2.1"
UP6, UP4 = "2001:db8:2::1", "198.51.100.1"
GW6, GW4 = "2001:db8:2::2", "198.51.100.2"
HOST6, HOST4 = "2001:db8:1::100", "192.0.2.100"
REMOTE6, REMOTE4 = "2001:db8:99::5", "203.0.113.5"
LAN_PCAP_MAC = "02:70:63:61:70:00"   # net_pcap0's address (DPDK 22.11 net_pcap)


def bundle_cfg(tmp_path, file_prefix, xmit="roundrobin", enabled="[]"):
    body = (port("lan", f"net_pcap0,rx_pcap={tmp_path}/lan_in.pcap,tx_pcap={tmp_path}/lan_out.pcap")
            + port("up0", f"net_pcap1,rx_pcap={tmp_path}/up0_in.pcap,tx_pcap={tmp_path}/up0_out.pcap")
            + port("up1", f"net_pcap2,rx_pcap={tmp_path}/up1_in.pcap,tx_pcap={tmp_path}/up1_out.pcap")
            + f'[[ports]]\nname = "uplink"\nbundle = true\nmac = "{BUNDLE_MAC}"\nifindex = 42\n'
            + f"""
[[pipeline]]
stage = "one2many"
one = "uplink"
many = ["up0", "up1"]
xmit = "{xmit}"
enabled = {enabled}

[[pipeline]]
stage = "netflow"
max_flows = 1024

[[pipeline]]
stage = "ip6flow"
maxflows = 64
hashsize = 64
maxflows4 = 64
hashsize4 = 64
icmp_rate = 1000
icmp_burst = 1000
max_routes = 1024
max_nexthops = 64
[[pipeline.interfaces]]
port = "lan"
addresses = ["{LAN6}/64", "{LAN4}/24"]
[[pipeline.interfaces]]
port = "uplink"
addresses = ["{UP6}/64", "{UP4}/24"]
[[pipeline.neighbours]]
address = "{GW6}"
mac = "{GW_MAC}"
port = "uplink"
[[pipeline.neighbours]]
address = "{GW4}"
mac = "{GW_MAC}"
port = "uplink"
[[pipeline.neighbours]]
address = "{HOST6}"
mac = "{HOST_MAC}"
port = "lan"
[[pipeline.neighbours]]
address = "{HOST4}"
mac = "{HOST_MAC}"
port = "lan"
[[pipeline.routes]]
prefix = "::/0"
via = "{GW6}"
[[pipeline.routes]]
prefix = "0.0.0.0/0"
via = "{GW4}"
""")
    return vdev_config(file_prefix, body)


def outbound(n: int, start: int = 0) -> list:
    """From the lan host to the internet: half IPv6, half IPv4, many flows."""
    return [Ether(src=HOST_MAC, dst=LAN_PCAP_MAC)
            / (IPv6(src=HOST6, dst=REMOTE6, hlim=64) if i % 2 == 0 else IP(src=HOST4, dst=REMOTE4, ttl=64))
            / UDP(sport=1000 + i, dport=53) / f"out{i}".encode() for i in range(start, start + n)]


def inbound(n: int, tag: str) -> list:
    """From the internet to the lan host, as the gateway sends them to the bundle."""
    return [Ether(src=GW_MAC, dst=BUNDLE_MAC) / IPv6(src=REMOTE6, dst=HOST6, hlim=64)
            / UDP(sport=53, dport=2000 + i) / f"{tag}{i}".encode() for i in range(n)]


def write_inputs(tmp_path, lan=(), up0=(), up1=()):
    for name, frames in (("lan_in", lan), ("up0_in", up0), ("up1_in", up1)):
        wrpcap(str(tmp_path / f"{name}.pcap"), list(frames))


def wait_rx(dp, n: int, timeout: float = 10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        s = dp.snapshot()
        if s.totals["rx"] >= n and conserved(s) and s.totals["punted"] == dp.ip6flow[0].slowpath.handled:
            return s
        time.sleep(0.01)
    raise AssertionError(f"not settled: {dp.snapshot().totals}")


def test_router_uplink_bundle_round_robin_both_ways(tmp_path, file_prefix):
    out = outbound(40)
    write_inputs(tmp_path, lan=out, up0=inbound(5, "a"), up1=inbound(5, "b"))
    with running(bundle_cfg(tmp_path, file_prefix)) as dp:
        snap = wait_rx(dp, 50)
        o2m = dp.one2many[0]
        st = {link: o2m.getstats(link) for link in (-1, 0, 1)}
        flows = dp.netflow[0].show()
        assert dp.port("lan").info.mac == LAN_PCAP_MAC
    assert snap.totals["dropped"] == 0 and snap.totals["punted"] == 0
    # out: round-robin per packet over both links, 20 each
    sent = {name: rdpcap(str(tmp_path / f"{name}_out.pcap")) for name in ("up0", "up1", "lan")}
    assert len(sent["up0"]) == len(sent["up1"]) == 20
    assert (st[0]["tx_packets"], st[1]["tx_packets"]) == (20, 20)
    assert st[-1]["rx_packets"] == 40 and st[-1]["tx_packets"] == 10
    payloads = sorted(bytes(p[UDP].payload) for name in ("up0", "up1") for p in sent[name])
    assert payloads == sorted(bytes(p[UDP].payload) for p in out)
    for p in sent["up0"] + sent["up1"]:
        assert (p[Ether].src, p[Ether].dst) == (BUNDLE_MAC, GW_MAC)
        assert (p[IPv6].hlim if IPv6 in p else p[IP].ttl) == 63
    # in: both links' packets routed to the lan host as the bundle's
    assert len(sent["lan"]) == 10 and all(p[Ether].dst == HOST_MAC for p in sent["lan"])
    assert sorted(bytes(p[UDP].payload) for p in sent["lan"]) == sorted(
        f"{t}{i}".encode() for t in "ab" for i in range(5))
    assert (st[0]["rx_packets"], st[1]["rx_packets"]) == (5, 5)
    # netflow metered the inbound flows on the bundle's ifIndex, not a link's
    ins = [f for f in flows if f["in_ifx"] == 42]
    assert len(ins) == 5 and sum(f["packets"] for f in ins) == 10
    # lan's ifIndex is its position + 1; a link's (2, 3) never appears
    assert {f["in_ifx"] for f in flows} == {42, 1}
    assert sum(f["packets"] for f in flows if f["in_ifx"] == 1) == 40


def test_slow_path_answers_through_the_bundle(tmp_path, file_prefix):
    """A ping to the router's uplink address, arriving on up1: the echo reply
    is injected to the bundle and leaves on a link (failover: the lowest
    enabled one, up1 since up0 is disabled)."""
    ping = Ether(src=GW_MAC, dst=BUNDLE_MAC) / IPv6(src=GW6, dst=UP6, hlim=64) / ICMPv6EchoRequest(id=7, seq=1)
    write_inputs(tmp_path, up1=[ping])
    with running(bundle_cfg(tmp_path, file_prefix, xmit="failover", enabled="[false, true]")) as dp:
        deadline = time.monotonic() + 10
        while dp.ip6flow[0].slowpath.stats["echo_replies"] < 1 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert dp.ip6flow[0].slowpath.stats["echo_replies"] == 1
        deadline = time.monotonic() + 10
        while dp.one2many[0].getstats(1)["tx_packets"] < 1 and time.monotonic() < deadline:
            time.sleep(0.01)
    assert len(rdpcap(str(tmp_path / "up0_out.pcap"))) == 0
    [reply] = rdpcap(str(tmp_path / "up1_out.pcap"))
    assert (reply[Ether].src, reply[Ether].dst) == (BUNDLE_MAC, GW_MAC)
    assert (reply[IPv6].src, reply[IPv6].dst) == (UP6, GW6)
    assert (reply[ICMPv6EchoReply].id, reply[ICMPv6EchoReply].seq) == (7, 1)


def test_a_bundle_with_no_enabled_link_is_a_down_egress(tmp_path, file_prefix):
    """ng_one2many tells upstream when the set empties: the router then
    treats the uplink as down and drops what it would send there."""
    write_inputs(tmp_path, lan=outbound(6))
    with running(bundle_cfg(tmp_path, file_prefix, enabled="[false, false]")) as dp:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            s = dp.snapshot()
            if s.totals["rx"] >= 6 and conserved(s):
                break
            time.sleep(0.01)
        assert not dp.link_up(dp.port("uplink").port_id)
        drops = {k: v for k, v in s.totals["drops"].items() if v}
    assert drops == {"egress_down": 6}


@pytest.mark.parametrize("body, key", [
    ('[[ports]]\nname = "b"\nbundle = true\ndevice = "net_null0"\n', "ports[1]"),
    ('[[ports]]\nname = "b"\nbundle = true\n', "ports[1].bundle"),
    ('[[ports]]\nname = "b"\nmac = "02:00:00:00:00:01"\ndevice = "net_null1"\n', "ports[1]"),
], ids=["bundle-with-device", "bundle-without-stage", "mac-on-a-device"])
def test_bad_bundle_configs_name_the_key(body, key):
    text = vdev_toml("x") + port("a", "net_null0") + body + (
        '[[pipeline]]\nstage = "xconnect"\nmap = { a = "a" }\n')
    with pytest.raises(ConfigError) as e:
        config.loads(text, "site.toml", check_drivers=False)
    assert f"site.toml: {key}" in str(e.value)


def test_a_bundle_stage_must_come_first_and_links_must_be_devices():
    head = (vdev_toml("x") + port("a", "net_null0") + port("b", "net_null1")
            + '[[ports]]\nname = "u"\nbundle = true\n')
    o2m = '[[pipeline]]\nstage = "one2many"\none = "u"\nmany = ["a", "b"]\n'
    xc = '[[pipeline]]\nstage = "xconnect"\nmap = { a = "b" }\n'
    with pytest.raises(ConfigError, match=r"pipeline\[1\]: a one2many stage whose one is a bundle"):
        config.loads(head + xc + o2m, "site.toml", check_drivers=False)
    config.loads(head + o2m + xc, "site.toml", check_drivers=False)
    bad = head + '[[ports]]\nname = "v"\nbundle = true\n' + o2m + (
        '[[pipeline]]\nstage = "one2many"\none = "v"\nmany = ["u"]\n')
    with pytest.raises(ConfigError, match=r"pipeline\[1\]\.many\[0\]: a link must be a device"):
        config.loads(bad, "site.toml", check_drivers=False)
