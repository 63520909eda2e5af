"""The router's Python slow path (dataplane/slowpath.py), without DPDK: frames
built with scapy go in through handle()/tick(), what it injects is parsed
back with scapy. The route table is a small dict-backed RouterView with a
real longest-prefix match."""
from __future__ import annotations

import ipaddress
import re
import socket
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
from scapy.compat import raw
from scapy.layers.inet import ICMP, IP, TCP, UDP, IPOption_Router_Alert, IPOption_RR
from scapy.layers.inet6 import (
    HBHOptUnknown,
    ICMPv6DestUnreach,
    ICMPv6EchoReply,
    ICMPv6EchoRequest,
    ICMPv6MLReport,
    ICMPv6ND_NA,
    ICMPv6ND_NS,
    ICMPv6ND_RS,
    ICMPv6NDOptDstLLAddr,
    ICMPv6NDOptSrcLLAddr,
    ICMPv6PacketTooBig,
    ICMPv6ParamProblem,
    ICMPv6TimeExceeded,
    IPv6,
    IPv6ExtHdrHopByHop,
    RouterAlert,
    in6_getnsma,
    in6_getnsmac,
)
from scapy.layers.l2 import ARP, Ether

from dataplane import slowpath
from dataplane.slowpath import (
    EVENTS,
    OUTCOMES,
    PUNT_ARP,
    PUNT_HBH,
    PUNT_HOP_LIMIT,
    PUNT_IP4_OPTIONS,
    PUNT_L2_MULTICAST,
    PUNT_LOCAL,
    PUNT_MULTICAST,
    PUNT_NO_ROUTE,
    PUNT_OTHER,
    PUNT_REASONS,
    PUNT_RESOLVE,
    PUNT_TOO_BIG,
    SlowPath,
)

A = ipaddress.ip_address

# ---- the router under test: two interfaces and a few routes -----------------------------

LAN, WAN, MGMT = 0, 1, 2
LAN_MAC, WAN_MAC = "02:00:00:00:00:01", "02:00:00:00:00:02"
LAN6, LAN4, LAN_LL = "2001:db8:1::1", "192.0.2.1", "fe80::ff:fe00:1"
WAN6, WAN4, WAN_LL = "2001:db8:2::1", "198.51.100.1", "fe80::ff:fe00:2"
WAN_MTU = 1280

HOST_MAC, HOST6, HOST4, HOST_LL = "02:aa:00:00:00:01", "2001:db8:1::100", "192.0.2.100", "fe80::aa"
GW_MAC, GW6, GW4 = "02:bb:00:00:00:02", "2001:db8:2::2", "198.51.100.2"
REMOTE6, REMOTE4 = "2001:db8:99::5", "203.0.113.5"        # behind the gateway
NOWHERE6, NOWHERE4 = "2001:db8:77::1", "10.1.2.3"          # no route
REJECT6, REJECT4 = "2001:db8:dead::1", "10.66.0.1"
BLACKHOLE6, BLACKHOLE4 = "2001:db8:bad::1", "10.99.0.1"


@dataclass(frozen=True)
class Interface:
    port_id: int
    name: str
    mac: str
    mtu: int
    addresses: tuple


@dataclass(frozen=True)
class Lookup:
    kind: str
    port_id: int | None
    mtu: int
    neighbour: ipaddress.IPv4Address | ipaddress.IPv6Address | None
    dst_mac: str | None
    src_mac: str | None


class TableRouter:
    """A RouterView over dicts, with routing.RouteTable's semantics: connected
    subnets from the interfaces, static routes (via a gateway, or an action),
    learnt neighbours; the longest matching prefix wins."""

    def __init__(self):
        self.ifaces = {
            LAN: Interface(LAN, "lan", LAN_MAC, 1500, tuple(map(ipaddress.ip_interface, (
                f"{LAN6}/64", f"{LAN4}/24", f"{LAN_LL}/64")))),
            WAN: Interface(WAN, "wan", WAN_MAC, WAN_MTU, tuple(map(ipaddress.ip_interface, (
                f"{WAN6}/64", f"{WAN4}/24", f"{WAN_LL}/64")))),
        }
        self.routes: dict = {}  # network -> (action, via)
        for iface in self.ifaces.values():
            for a in iface.addresses:
                if not a.ip.is_link_local:
                    self.routes[a.network] = ("connected", None)
        for prefix, action, via in (("2001:db8:99::/48", "forward", GW6),
                                    ("203.0.113.0/24", "forward", GW4),
                                    ("2001:db8:dead::/48", "reject", None),
                                    ("10.66.0.0/16", "reject", None),
                                    ("2001:db8:bad::/48", "blackhole", None),
                                    ("10.99.0.0/16", "blackhole", None)):
            self.routes[ipaddress.ip_network(prefix)] = (action, via and A(via))
        self.neighbours: dict = {}  # (port, address) -> mac
        self.learnt: set = set()    # the keys of neighbours learnt from the wire

    def interface(self, port_id):
        return self.ifaces.get(port_id)

    def interfaces(self):
        return list(self.ifaces.values())

    def is_local(self, addr):
        return any(a.ip == A(addr) for i in self.ifaces.values() for a in i.addresses)

    def _connected_port(self, addr):
        for iface in self.ifaces.values():
            if any(addr in a.network and not a.ip.is_link_local for a in iface.addresses):
                return iface.port_id
        return None

    def lookup(self, addr):
        addr = A(addr)
        if self.is_local(addr):
            return Lookup("local", None, 0, None, None, None)
        matches = [n for n in self.routes if n.version == addr.version and addr in n]
        if not matches:
            return Lookup("none", None, 0, None, None, None)
        action, via = self.routes[max(matches, key=lambda n: n.prefixlen)]
        if action in ("reject", "blackhole"):
            return Lookup(action, None, 0, None, None, None)
        neighbour = via or addr
        port = self._connected_port(neighbour)
        iface = self.ifaces[port]
        mac = self.neighbours.get((port, neighbour))
        return Lookup("forward" if mac else "resolve", port, iface.mtu, neighbour, mac, iface.mac)

    def neighbour_mac(self, port_id, addr):
        return self.neighbours.get((port_id, A(addr)))

    def learnt_neighbours(self):
        return [(port, addr, self.neighbours[(port, addr)]) for port, addr in self.learnt]

    def forget(self, port_id, addr):
        key = (port_id, A(addr))
        if key not in self.learnt:
            return False
        self.learnt.discard(key)
        del self.neighbours[key]
        return True

    def learn(self, port_id, addr, mac):
        addr = A(addr)
        if port_id not in self.ifaces or self.is_local(addr) or addr.is_multicast:
            return False
        if not (addr.is_link_local or self._connected_port(addr) == port_id):
            return False
        changed = self.neighbours.get((port_id, addr)) != mac
        self.neighbours[(port_id, addr)] = mac
        self.learnt.add((port_id, addr))
        return changed


class FakeClock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now

    def advance(self, seconds):
        self.now += seconds


class Rig:
    """A slow path over a TableRouter, capturing what it injects."""

    def __init__(self, **options):
        self.clock = FakeClock()
        self.router = TableRouter()
        self.sent: list[tuple[int, bytes]] = []
        self.slow = SlowPath(self.router, lambda port, frame: self.sent.append((port, frame)),
                             clock=self.clock, **options)

    def punt(self, reason, frame, port=LAN):
        self.slow.handle(port, reason, frame)
        return self.take()

    def take(self):
        sent, self.sent = self.sent, []
        return sent

    def know(self, port, address, mac):
        self.router.neighbours[(port, A(address))] = mac

    @property
    def stats(self):
        return self.slow.stats

    def check_invariants(self):
        stats = self.slow.stats
        assert stats["internal_error"] == 0
        # every handled frame has exactly one outcome
        assert sum(stats[name] for name in OUTCOMES) == self.slow.handled
        # every held packet is released, dropped for a newer one, or still held
        released = sum(n for name, n in stats.items() if name.startswith("released_"))
        assert (stats["held"] + stats["released_held"]
                == released + stats["hold_dropped"] + self.slow.held_packets)
        for name in stats:
            assert name in OUTCOMES or name in EVENTS or name.startswith(("punted_", "released_"))


@pytest.fixture
def rig():
    rig = Rig()
    yield rig
    rig.check_invariants()


# ---- frames ------------------------------------------------------------------------------

def frame(l3, src=HOST_MAC, dst=LAN_MAC) -> bytes:
    return raw(Ether(src=src, dst=dst) / l3)


def udp6(src=HOST6, dst=REMOTE6, hlim=64, size=0, payload=b"data"):
    payload = payload + bytes(max(0, size - 48 - len(payload)))
    return IPv6(src=src, dst=dst, hlim=hlim) / UDP(sport=1111, dport=2222) / payload


def udp4(src=HOST4, dst=REMOTE4, ttl=64, size=0, flags=0, payload=b"data", options=()):
    header_len = 20 + len(raw(IP(options=list(options)))) - 20
    payload = payload + bytes(max(0, size - header_len - 8 - len(payload)))
    return IP(src=src, dst=dst, ttl=ttl, flags=flags, id=0x4242, options=list(options)) \
        / UDP(sport=1111, dport=2222) / payload


def solicited_node(target: str) -> str:
    return socket.inet_ntop(socket.AF_INET6, in6_getnsma(socket.inet_pton(socket.AF_INET6, target)))


def ns_frame(target, src=HOST6, dst=None, src_mac=HOST_MAC, sllao=True, hlim=255):
    dst = dst or solicited_node(target)
    eth_dst = in6_getnsmac(socket.inet_pton(socket.AF_INET6, dst)) if A(dst).is_multicast \
        else LAN_MAC
    ns = IPv6(src=src, dst=dst, hlim=hlim) / ICMPv6ND_NS(tgt=target)
    if sllao:
        ns = ns / ICMPv6NDOptSrcLLAddr(lladdr=src_mac)
    return frame(ns, src=src_mac, dst=eth_dst)


def na_frame(target, src, dst, src_mac, rx_mac, solicited=1, tlla=True, hlim=255):
    eth_dst = "33:33:00:00:00:01" if A(dst).is_multicast else rx_mac
    na = IPv6(src=src, dst=dst, hlim=hlim) / ICMPv6ND_NA(R=0, S=solicited, O=1, tgt=target)
    if tlla:
        na = na / ICMPv6NDOptDstLLAddr(lladdr=src_mac)
    return frame(na, src=src_mac, dst=eth_dst)


def arp_frame(op, psrc, pdst, hwsrc=HOST_MAC, hwdst="00:00:00:00:00:00", eth_dst=None):
    eth_dst = eth_dst or ("ff:ff:ff:ff:ff:ff" if op == 1 else LAN_MAC)
    return frame(ARP(op=op, hwsrc=hwsrc, psrc=psrc, hwdst=hwdst, pdst=pdst), src=hwsrc,
                 dst=eth_dst)


def checked(frame_bytes: bytes) -> Ether:
    """Parse what the slow path sent, and check its outer checksums: scapy
    rebuilds the frame with the IPv4 header and ICMP/ICMPv6 checksums deleted
    (so recomputed), and it must come out byte for byte the same."""
    rebuilt = Ether(frame_bytes)
    if IP in rebuilt:
        del rebuilt[IP].chksum
        if isinstance(rebuilt[IP].payload, ICMP):
            del rebuilt[IP].payload.chksum
    if IPv6 in rebuilt and hasattr(rebuilt[IPv6].payload, "cksum"):
        del rebuilt[IPv6].payload.cksum
    assert raw(rebuilt) == frame_bytes
    return Ether(frame_bytes)


def one(sent, port=None):
    assert len(sent) == 1, sent
    if port is not None:
        assert sent[0][0] == port
    return checked(sent[0][1])


def quoted(error: Ether) -> bytes:
    """The offending packet an ICMP(v6) error quotes."""
    ip_header = 40 if IPv6 in error else 20
    return raw(error)[14 + ip_header + 8:]


# ---- the punt reasons ---------------------------------------------------------------------

def test_punt_reasons_match_dp_h():
    dp_h = Path(__file__).resolve().parents[2] / "native" / "include" / "dp.h"
    if not dp_h.exists():
        pytest.skip("no native/include/dp.h")
    defines = dict(re.findall(r"#define DP_PUNT_([A-Z0-9_]+) (\d+)", dp_h.read_text()))
    assert defines, "no DP_PUNT_* in dp.h"
    assert len(defines) == len(PUNT_REASONS)
    for name, value in defines.items():
        assert getattr(slowpath, f"PUNT_{name}") == int(value)
        assert PUNT_REASONS[int(value)] == name.lower()


def test_unknown_reasons_and_ports_are_ignored(rig):
    ping = frame(IPv6(src=HOST6, dst=LAN6) / ICMPv6EchoRequest())
    assert rig.punt(PUNT_OTHER, ping) == []
    assert rig.punt(42, ping) == []
    assert rig.stats["ignored"] == 2 and rig.stats["punted_unknown"] == 1
    assert rig.punt(PUNT_LOCAL, ping, port=MGMT) == []  # nothing to answer from
    assert rig.stats["no_interface"] == 1
    assert rig.punt(PUNT_L2_MULTICAST, raw(Ether(src=HOST_MAC, dst="01:80:c2:00:00:00",
                                                  type=0x88CC) / b"lldp")) == []
    assert rig.stats["ignored"] == 3


# ---- NDP -----------------------------------------------------------------------------------

def test_ns_for_our_address_gets_a_solicited_na_and_teaches_the_sender(rig):
    na = one(rig.punt(PUNT_MULTICAST, ns_frame(LAN6)), port=LAN)
    assert (na[Ether].src, na[Ether].dst) == (LAN_MAC, HOST_MAC)
    assert (na[IPv6].src, na[IPv6].dst, na[IPv6].hlim) == (LAN6, HOST6, 255)
    adv = na[ICMPv6ND_NA]
    assert (adv.code, adv.R, adv.S, adv.O, adv.tgt) == (0, 1, 1, 1, LAN6)
    assert na[ICMPv6NDOptDstLLAddr].lladdr == LAN_MAC
    assert rig.router.neighbour_mac(LAN, HOST6) == HOST_MAC
    assert rig.stats["na_sent"] == 1 and rig.stats["neighbours_learned"] == 1


def test_ns_for_our_link_local_address(rig):
    na = one(rig.punt(PUNT_MULTICAST, ns_frame(LAN_LL, src=HOST_LL)), port=LAN)
    assert (na[IPv6].src, na[IPv6].dst) == (LAN_LL, HOST_LL)
    assert na[ICMPv6ND_NA].tgt == LAN_LL and na[ICMPv6ND_NA].S == 1
    assert rig.router.neighbour_mac(LAN, HOST_LL) == HOST_MAC


def test_unicast_ns_is_answered_to_the_frame_sender_when_it_has_no_sllao(rig):
    na = one(rig.punt(PUNT_LOCAL, ns_frame(LAN6, dst=LAN6, sllao=False)), port=LAN)
    assert na[Ether].dst == HOST_MAC and na[IPv6].dst == HOST6
    assert rig.router.neighbour_mac(LAN, HOST6) is None  # nothing to learn from


def test_dad_ns_is_answered_to_all_nodes_unsolicited(rig):
    na = one(rig.punt(PUNT_MULTICAST, ns_frame(LAN6, src="::", sllao=False)), port=LAN)
    assert na[Ether].dst == "33:33:00:00:00:01"
    assert (na[IPv6].src, na[IPv6].dst, na[IPv6].hlim) == (LAN6, "ff02::1", 255)
    assert (na[ICMPv6ND_NA].S, na[ICMPv6ND_NA].O) == (0, 1)
    assert rig.router.neighbours == {}


@pytest.mark.parametrize("bad", ["hop_limit", "checksum", "short", "zero_length_option",
                                 "dad_with_sllao"])
def test_invalid_ns_is_dropped(rig, bad):
    if bad == "hop_limit":
        ns = ns_frame(LAN6, hlim=64)
    elif bad == "checksum":
        ns = bytearray(ns_frame(LAN6))
        ns[14 + 40 + 2] ^= 0xFF
    elif bad == "short":
        ns = frame(IPv6(src=HOST6, dst=solicited_node(LAN6), hlim=255, nh=58) / b"\x87\0\0\0\0\0\0\0",
                   dst="33:33:ff:00:00:01")
    elif bad == "zero_length_option":
        ns = frame(IPv6(src=HOST6, dst=solicited_node(LAN6), hlim=255) / ICMPv6ND_NS(tgt=LAN6)
                   / (b"\x01\x00" + bytes(6)), dst="33:33:ff:00:00:01")
    else:
        ns = ns_frame(LAN6, src="::")
    assert rig.punt(PUNT_MULTICAST, bytes(ns)) == []
    assert rig.stats["ndp_invalid"] == 1
    assert rig.router.neighbours == {}


def test_ns_for_other_targets_is_ignored(rig):
    assert rig.punt(PUNT_MULTICAST, ns_frame("2001:db8:1::77")) == []
    assert rig.punt(PUNT_MULTICAST, ns_frame(WAN6)) == []  # ours, but not on this link
    assert rig.stats["ndp_ignored"] == 2
    assert rig.router.neighbours == {}  # nothing learnt from strangers' chatter


def test_unsolicited_na_is_learnt(rig):
    na = na_frame(GW6, src=GW6, dst="ff02::1", src_mac=GW_MAC, rx_mac=WAN_MAC, solicited=0)
    assert rig.punt(PUNT_MULTICAST, na, port=WAN) == []
    assert rig.router.neighbour_mac(WAN, GW6) == GW_MAC
    assert rig.stats["na_received"] == 1


def test_na_without_tlla_learns_the_frame_source(rig):
    na = na_frame(GW6, src=GW6, dst=WAN6, src_mac=GW_MAC, rx_mac=WAN_MAC, tlla=False)
    rig.punt(PUNT_LOCAL, na, port=WAN)
    assert rig.router.neighbour_mac(WAN, GW6) == GW_MAC


def test_na_claiming_our_address_or_with_bad_hop_limit_is_not_believed(rig):
    rig.punt(PUNT_MULTICAST, na_frame(WAN6, src=GW6, dst="ff02::1", src_mac=GW_MAC,
                                      rx_mac=WAN_MAC, solicited=0), port=WAN)
    rig.punt(PUNT_LOCAL, na_frame(GW6, src=GW6, dst=WAN6, src_mac=GW_MAC, rx_mac=WAN_MAC,
                                  hlim=64), port=WAN)
    assert rig.router.neighbours == {}
    assert rig.stats["ndp_ignored"] == 1 and rig.stats["ndp_invalid"] == 1


def test_router_solicitations_and_other_multicast_are_dropped(rig):
    rs = frame(IPv6(src=HOST_LL, dst="ff02::2", hlim=255) / ICMPv6ND_RS(), dst="33:33:00:00:00:02")
    mld = frame(IPv6(src=HOST_LL, dst="ff02::16", hlim=1) / ICMPv6MLReport(),
                dst="33:33:00:00:00:16")
    mcast4 = frame(IP(src=HOST4, dst="224.0.0.5") / UDP(), dst="01:00:5e:00:00:05")
    directed = frame(IP(src=HOST4, dst="192.0.2.255") / UDP(), dst="ff:ff:ff:ff:ff:ff")
    for f in (rs, mld, mcast4, directed):
        assert rig.punt(PUNT_MULTICAST, f) == []
    assert rig.stats["ndp_ignored"] == 1 and rig.stats["multicast_dropped"] == 3


# ---- ARP -----------------------------------------------------------------------------------

def test_arp_request_for_our_address_is_answered_and_learnt(rig):
    reply = one(rig.punt(PUNT_ARP, arp_frame(1, HOST4, LAN4)), port=LAN)
    assert (reply[Ether].src, reply[Ether].dst) == (LAN_MAC, HOST_MAC)
    arp = reply[ARP]
    assert (arp.op, arp.hwsrc, arp.psrc, arp.hwdst, arp.pdst) == (2, LAN_MAC, LAN4, HOST_MAC, HOST4)
    assert rig.router.neighbour_mac(LAN, HOST4) == HOST_MAC
    assert rig.stats["arp_replies_sent"] == 1


def test_arp_not_for_us_is_ignored_unless_it_updates_a_known_neighbour(rig):
    assert rig.punt(PUNT_ARP, arp_frame(1, HOST4, "192.0.2.77")) == []
    assert rig.punt(PUNT_ARP, arp_frame(1, HOST4, WAN4)) == []  # ours, but not on this link
    assert rig.router.neighbours == {} and rig.stats["arp_ignored"] == 2
    rig.know(LAN, HOST4, "02:aa:00:00:00:99")
    gratuitous = arp_frame(1, HOST4, HOST4)
    assert rig.punt(PUNT_ARP, gratuitous) == []
    assert rig.router.neighbour_mac(LAN, HOST4) == HOST_MAC
    assert rig.stats["arp_learned"] == 1


def test_arp_that_is_not_ethernet_ipv4_or_truncated(rig):
    odd = frame(ARP(op=1, hwsrc=HOST_MAC, psrc=HOST4, pdst=LAN4, hwtype=6),  # IEEE 802
                dst="ff:ff:ff:ff:ff:ff")
    assert rig.punt(PUNT_ARP, odd) == []
    assert rig.punt(PUNT_ARP, arp_frame(1, HOST4, LAN4)[:30]) == []
    assert rig.stats["arp_ignored"] == 1 and rig.stats["malformed"] == 1


# ---- resolution ---------------------------------------------------------------------------

def test_resolve_holds_solicits_once_and_releases_on_na(rig):
    packets = [udp6(payload=b"packet-%d" % i) for i in range(4)]
    ns = one(rig.punt(PUNT_RESOLVE, frame(packets[0])), port=WAN)
    assert ns[Ether].src == WAN_MAC
    assert ns[Ether].dst == in6_getnsmac(socket.inet_pton(socket.AF_INET6, solicited_node(GW6)))
    assert (ns[IPv6].src, ns[IPv6].dst, ns[IPv6].hlim) == (WAN6, solicited_node(GW6), 255)
    assert ns[ICMPv6ND_NS].tgt == GW6 and ns[ICMPv6NDOptSrcLLAddr].lladdr == WAN_MAC
    rig.clock.advance(0.5)
    for p in packets[1:]:  # within the second: no new solicitation
        assert rig.punt(PUNT_RESOLVE, frame(p)) == []
    assert rig.stats["held"] == 4 and rig.stats["hold_dropped"] == 1
    assert rig.slow.held_packets == 3 and rig.stats["ns_sent"] == 1

    na = na_frame(GW6, src=GW6, dst=WAN6, src_mac=GW_MAC, rx_mac=WAN_MAC)
    released = rig.punt(PUNT_LOCAL, na, port=WAN)
    assert rig.stats["na_received"] == 1 and rig.router.neighbour_mac(WAN, GW6) == GW_MAC
    assert [port for port, _ in released] == [WAN] * 3
    for (_, sent), original in zip(released, packets[1:], strict=True):  # oldest was dropped
        forwarded = Ether(sent)
        assert (forwarded[Ether].src, forwarded[Ether].dst) == (WAN_MAC, GW_MAC)
        expected = IPv6(raw(original))
        expected.hlim -= 1
        assert raw(forwarded[IPv6]) == raw(expected)
    assert rig.stats["released_slow_forwarded"] == 3 and rig.slow.pending_neighbours == 0


def test_resolve_on_link_solicits_the_destination_itself(rig):
    ns = one(rig.punt(PUNT_RESOLVE, frame(udp6(dst="2001:db8:2::50"))), port=WAN)
    assert ns[ICMPv6ND_NS].tgt == "2001:db8:2::50"
    assert ns[IPv6].dst == solicited_node("2001:db8:2::50")


def test_resolve_ipv4_sends_arp_and_releases_on_reply(rig):
    packet = udp4()
    request = one(rig.punt(PUNT_RESOLVE, frame(packet)), port=WAN)
    assert (request[Ether].src, request[Ether].dst) == (WAN_MAC, "ff:ff:ff:ff:ff:ff")
    arp = request[ARP]
    assert (arp.op, arp.hwsrc, arp.psrc, arp.hwdst, arp.pdst) == (
        1, WAN_MAC, WAN4, "00:00:00:00:00:00", GW4)
    reply = arp_frame(2, GW4, WAN4, hwsrc=GW_MAC, hwdst=WAN_MAC, eth_dst=WAN_MAC)
    released = rig.punt(PUNT_ARP, reply, port=WAN)
    assert rig.stats["arp_learned"] == 1
    forwarded = one(released, port=WAN)  # checked: the IPv4 header checksum was redone
    assert (forwarded[Ether].src, forwarded[Ether].dst) == (WAN_MAC, GW_MAC)
    assert forwarded[IP].ttl == 63
    assert raw(forwarded[IP].payload) == raw(packet[IP].payload)


def test_resolution_retransmits_every_second_then_gives_up(rig):
    packet6, packet4 = udp6(), udp4()
    rig.punt(PUNT_RESOLVE, frame(packet6))
    rig.punt(PUNT_RESOLVE, frame(packet4))
    assert rig.stats["ns_sent"] == 1 and rig.stats["arp_requests_sent"] == 1
    for advance, expected in ((0.5, 0), (0.5, 2), (1.0, 2), (0.5, 0)):
        rig.clock.advance(advance)
        rig.slow.tick()
        sent = rig.take()
        assert len(sent) == expected and all(port == WAN for port, _ in sent)
    assert rig.stats["ns_sent"] == 3 and rig.stats["arp_requests_sent"] == 3

    rig.clock.advance(0.5)  # three tries, the last a second ago: give up
    rig.slow.tick()
    errors = {Ether(f).type: checked(f) for port, f in rig.take() if port == LAN}
    assert len(errors) == 2 and rig.slow.pending_neighbours == 0
    error6, error4 = errors[0x86DD], errors[0x0800]
    assert error6[Ether].dst == HOST_MAC and error6[IPv6].src == LAN6
    assert (error6[ICMPv6DestUnreach].type, error6[ICMPv6DestUnreach].code) == (1, 3)
    assert quoted(error6) == raw(packet6)
    assert (error4[ICMP].type, error4[ICMP].code) == (3, 1)
    assert (error4[IP].src, error4[IP].dst) == (LAN4, HOST4)
    assert rig.stats["resolution_failed"] == 2
    assert rig.stats["released_icmp_unreachable"] == 2
    rig.slow.tick()
    assert rig.take() == []


def test_resolve_that_resolved_meanwhile_is_just_forwarded(rig):
    rig.know(WAN, GW6, GW_MAC)
    forwarded = one(rig.punt(PUNT_RESOLVE, frame(udp6(hlim=9))), port=WAN)
    assert forwarded[Ether].dst == GW_MAC and forwarded[IPv6].hlim == 8
    assert rig.stats["slow_forwarded"] == 1


def test_resolve_with_hop_limit_one_is_time_exceeded_not_held(rig):
    error = one(rig.punt(PUNT_RESOLVE, frame(udp6(hlim=1))), port=LAN)
    assert error[ICMPv6TimeExceeded].code == 0
    assert rig.slow.pending_neighbours == 0


# ---- ICMP errors ---------------------------------------------------------------------------

def test_time_exceeded_ipv6(rig):
    rig.know(WAN, GW6, GW_MAC)
    packet = udp6(hlim=1)
    error = one(rig.punt(PUNT_HOP_LIMIT, frame(packet)), port=LAN)
    assert (error[Ether].src, error[Ether].dst) == (LAN_MAC, HOST_MAC)
    assert (error[IPv6].src, error[IPv6].dst) == (LAN6, HOST6)
    assert (error[ICMPv6TimeExceeded].type, error[ICMPv6TimeExceeded].code) == (3, 0)
    assert quoted(error) == raw(packet)
    assert rig.stats["icmp_time_exceeded"] == 1


def test_ipv6_error_quotes_what_fits_in_1280_bytes(rig):
    rig.know(WAN, GW6, GW_MAC)
    packet = udp6(hlim=1, size=1500)
    error = one(rig.punt(PUNT_HOP_LIMIT, frame(packet)))
    assert len(error[IPv6]) == 1280
    assert quoted(error) == raw(packet)[:1280 - 48]


def test_time_exceeded_ipv4_quotes_header_and_8_bytes(rig):
    rig.know(WAN, GW4, GW_MAC)
    packet = udp4(ttl=1, size=200)
    error = one(rig.punt(PUNT_HOP_LIMIT, frame(packet)), port=LAN)
    assert (error[IP].src, error[IP].dst) == (LAN4, HOST4)
    assert (error[ICMP].type, error[ICMP].code) == (11, 0)
    assert quoted(error) == raw(packet)[:28]


def test_packet_too_big_carries_the_egress_mtu(rig):
    rig.know(WAN, GW6, GW_MAC)
    packet = udp6(size=1400)
    error = one(rig.punt(PUNT_TOO_BIG, frame(packet)), port=LAN)
    assert error[ICMPv6PacketTooBig].mtu == WAN_MTU and error[ICMPv6PacketTooBig].code == 0
    assert len(error[IPv6]) <= 1280
    assert quoted(error) == raw(packet)[:1280 - 48]
    assert rig.stats["icmp_too_big"] == 1


def test_ipv4_dont_fragment_gets_fragmentation_needed(rig):
    rig.know(WAN, GW4, GW_MAC)
    packet = udp4(size=1400, flags="DF")
    error = one(rig.punt(PUNT_TOO_BIG, frame(packet)), port=LAN)
    assert (error[ICMP].type, error[ICMP].code, error[ICMP].nexthopmtu) == (3, 4, WAN_MTU)
    assert quoted(error) == raw(packet)[:28]
    assert rig.stats["icmp_frag_needed"] == 1


def reassemble(fragments: list[Ether]) -> bytes:
    fragments = sorted(fragments, key=lambda f: f[IP].frag)
    payload = b""
    for f in fragments:
        assert f[IP].frag * 8 == len(payload)
        payload += raw(f[IP])[f[IP].ihl * 4:f[IP].len]
    assert [f[IP].flags.MF for f in fragments] == [1] * (len(fragments) - 1) + [0]
    return payload


@pytest.mark.parametrize("options", [(), (IPOption_RR(), IPOption_Router_Alert())],
                         ids=["plain", "options"])
def test_ipv4_without_dont_fragment_is_fragmented(rig, options):
    rig.know(WAN, GW4, GW_MAC)
    packet = IP(raw(udp4(size=3000, options=options)))
    reason = PUNT_IP4_OPTIONS if options else PUNT_TOO_BIG
    sent = rig.punt(reason, frame(packet))
    assert len(sent) == 3 and {port for port, _ in sent} == {WAN}
    fragments = [checked(f) for _, f in sent]  # each header checksum recomputed
    for f in fragments:
        assert (f[Ether].src, f[Ether].dst) == (WAN_MAC, GW_MAC)
        assert len(f[IP]) <= WAN_MTU and f[IP].ttl == 63 and f[IP].id == 0x4242
    assert reassemble(fragments) == raw(packet[IP].payload)
    first, later = fragments[0][IP], fragments[1][IP]
    assert raw(first)[20:first.ihl * 4] == raw(packet)[20:packet.ihl * 4]
    if options:  # record route is not copied into later fragments, router alert is
        assert raw(later)[20:later.ihl * 4] == b"\x94\x04\x00\x00"
    assert rig.stats["fragmented"] == 1 and rig.stats["fragments_sent"] == 3


def test_no_route_and_reject_and_blackhole(rig):
    cases = [(udp6(dst=NOWHERE6), (1, 0)), (udp4(dst=NOWHERE4), (3, 0)),
             (udp6(dst=REJECT6), (1, 1)), (udp4(dst=REJECT4), (3, 13))]
    for packet, type_code in cases:
        error = one(rig.punt(PUNT_NO_ROUTE, frame(packet)), port=LAN)
        icmp = error[IPv6].payload if IPv6 in error else error[ICMP]
        assert (icmp.type, icmp.code) == type_code
    for packet in (udp6(dst=BLACKHOLE6), udp4(dst=BLACKHOLE4)):
        assert rig.punt(PUNT_NO_ROUTE, frame(packet)) == []
    assert rig.stats["icmp_unreachable"] == 4 and rig.stats["blackholed"] == 2


def test_link_local_source_is_not_forwarded_off_link(rig):
    rig.know(WAN, GW6, GW_MAC)
    error = one(rig.punt(PUNT_NO_ROUTE, frame(udp6(src=HOST_LL))), port=LAN)
    assert (error[ICMPv6DestUnreach].code, error[IPv6].src, error[IPv6].dst) == (2, LAN_LL, HOST_LL)


def test_errors_are_routed_back_by_the_source_address(rig):
    rig.know(WAN, GW6, GW_MAC)
    packet = udp6(src=REMOTE6, dst="2001:db8:1::200", hlim=1)
    error = one(rig.punt(PUNT_HOP_LIMIT, frame(packet, src=GW_MAC, dst=WAN_MAC), port=WAN),
                port=WAN)
    assert (error[Ether].src, error[Ether].dst) == (WAN_MAC, GW_MAC)
    assert (error[IPv6].src, error[IPv6].dst) == (WAN6, REMOTE6)
    # asymmetric: arrived on the LAN, so sourced from the LAN, but routed out of the WAN
    error = one(rig.punt(PUNT_HOP_LIMIT, frame(udp6(src=REMOTE6, dst=GW6, hlim=1))), port=WAN)
    assert (error[IPv6].src, error[Ether].dst) == (LAN6, GW_MAC)


def test_icmp_errors_are_rate_limited_by_a_token_bucket():
    rig = Rig(icmp_rate=100, icmp_burst=10)

    def burst(n):
        return sum(len(rig.punt(PUNT_NO_ROUTE, frame(udp6(dst=NOWHERE6)))) for _ in range(n))

    assert burst(15) == 10 and rig.stats["icmp_rate_limited"] == 5
    rig.clock.advance(0.055)  # 5.5 tokens back
    assert burst(10) == 5 and rig.stats["icmp_rate_limited"] == 10
    rig.clock.advance(60)    # never more than the burst
    assert burst(15) == 10
    rig.check_invariants()


def test_one_sources_storm_leaves_icmp_errors_for_the_others():
    """source_share 0.2 of 100 errors/s, burst 10: a storming source gets its
    burst, then 20/s; the other 80/s stay for the other sources."""
    rig = Rig(icmp_rate=100, icmp_burst=10, source_share=0.2)

    def burst(n, src=HOST6):
        return sum(len(rig.punt(PUNT_NO_ROUTE, frame(udp6(src=src, dst=NOWHERE6)))) for _ in range(n))

    assert burst(50) == 10 and rig.stats["icmp_rate_limited"] == 40
    rig.clock.advance(0.1)      # the router's bucket: 10 back; the storming source's: 2
    assert burst(50) == 2
    assert burst(3, src="2001:db8:1::77") == 3                 # a traceroute from elsewhere
    rig.clock.advance(1.0)
    assert burst(50) == 10 and burst(3, src="2001:db8:1::77") == 0  # its burst back; the router's empty
    rig.slow.set_icmp_rate(100, 10, source_share=1.0)          # live: no per-source limit
    rig.clock.advance(1)
    assert burst(50) == 10
    rig.check_invariants()


def test_no_errors_about_errors(rig):
    error6 = IPv6(src=HOST6, dst=NOWHERE6) / ICMPv6DestUnreach() / raw(udp6())
    error4 = IP(src=HOST4, dst=NOWHERE4) / ICMP(type=11) / raw(udp4())[:28]
    for packet in (error6, error4):
        assert rig.punt(PUNT_NO_ROUTE, frame(packet)) == []
    assert rig.stats["icmp_suppressed"] == 2
    # informational messages are fine to complain about
    for packet in (IPv6(src=HOST6, dst=NOWHERE6) / ICMPv6EchoRequest(),
                   IP(src=HOST4, dst=NOWHERE4) / ICMP(type=8)):
        one(rig.punt(PUNT_NO_ROUTE, frame(packet)))


def test_no_errors_about_odd_sources_fragments_or_link_broadcasts(rig):
    rig.know(WAN, GW4, GW_MAC)
    not_first = IP(src=HOST4, dst=NOWHERE4, frag=100) / (b"x" * 16)
    for packet in (udp6(src="::", dst=NOWHERE6), udp6(src="ff02::1", dst=NOWHERE6),
                   udp4(src="0.0.0.0", dst=NOWHERE4), udp4(src="192.0.2.255", dst=NOWHERE4),
                   udp6(src=WAN6, dst=NOWHERE6), not_first):
        assert rig.punt(PUNT_NO_ROUTE, frame(packet)) == []
    broadcast = frame(udp4(ttl=1), dst="ff:ff:ff:ff:ff:ff")
    assert rig.punt(PUNT_L2_MULTICAST, broadcast) == []
    assert rig.stats["icmp_suppressed"] == 6
    assert rig.stats["l2_multicast_dropped"] == 1  # not routed at all (RFC 1812 5.3.4)


# ---- to us ---------------------------------------------------------------------------------

def test_echo_reply_ipv6(rig):
    request = IPv6(src=HOST6, dst=WAN6) / ICMPv6EchoRequest(id=7, seq=9, data=b"ping payload")
    reply = one(rig.punt(PUNT_LOCAL, frame(request)), port=LAN)
    assert (reply[Ether].src, reply[Ether].dst) == (LAN_MAC, HOST_MAC)
    assert (reply[IPv6].src, reply[IPv6].dst) == (WAN6, HOST6)  # from the address pinged
    echo = reply[ICMPv6EchoReply]
    assert (echo.id, echo.seq, echo.data) == (7, 9, b"ping payload")
    assert rig.stats["echo_replies"] == 1


def test_echo_reply_ipv6_link_local(rig):
    request = IPv6(src=HOST_LL, dst=LAN_LL) / ICMPv6EchoRequest(id=1, seq=2)
    reply = one(rig.punt(PUNT_LOCAL, frame(request)), port=LAN)
    assert (reply[IPv6].src, reply[IPv6].dst, reply[Ether].dst) == (LAN_LL, HOST_LL, HOST_MAC)


def test_echo_reply_ipv4(rig):
    rig.know(LAN, HOST4, HOST_MAC)
    request = IP(src=HOST4, dst=LAN4) / ICMP(type=8, id=0x1234, seq=5) / b"abcdefgh"
    reply = one(rig.punt(PUNT_LOCAL, frame(request)), port=LAN)
    assert (reply[IP].src, reply[IP].dst) == (LAN4, HOST4)
    icmp = reply[ICMP]
    assert (icmp.type, icmp.code, icmp.id, icmp.seq) == (0, 0, 0x1234, 5)
    assert raw(icmp.payload) == b"abcdefgh"


def test_echo_request_with_bad_checksum_is_dropped(rig):
    request = IP(src=HOST4, dst=LAN4) / ICMP(type=8, chksum=0xBAD) / b"x"
    assert rig.punt(PUNT_LOCAL, frame(request)) == []
    assert rig.stats["bad_checksum"] == 1


def test_udp_to_us_gets_port_unreachable(rig):
    packet6, packet4 = udp6(dst=LAN6), udp4(dst=LAN4)
    error6 = one(rig.punt(PUNT_LOCAL, frame(packet6)), port=LAN)
    assert (error6[ICMPv6DestUnreach].code, error6[IPv6].src) == (4, LAN6)
    assert quoted(error6) == raw(packet6)
    error4 = one(rig.punt(PUNT_LOCAL, frame(packet4)), port=LAN)
    assert (error4[ICMP].type, error4[ICMP].code, error4[IP].src) == (3, 3, LAN4)
    assert quoted(error4) == raw(packet4)[:28]
    assert rig.stats["port_unreachable"] == 2


def test_other_traffic_to_us_is_dropped(rig):
    for packet in (IPv6(src=HOST6, dst=LAN6) / TCP(dport=22), IP(src=HOST4, dst=LAN4) / TCP()):
        assert rig.punt(PUNT_LOCAL, frame(packet)) == []
    assert rig.stats["local_dropped"] == 2


# ---- slow-path forwarding ------------------------------------------------------------------

def test_hop_by_hop_is_forwarded_with_hop_limit_decremented(rig):
    rig.know(WAN, GW6, GW_MAC)
    packet = IPv6(src=HOST6, dst=REMOTE6, hlim=30) / IPv6ExtHdrHopByHop(options=[RouterAlert()]) \
        / UDP() / b"hbh"
    forwarded = one(rig.punt(PUNT_HBH, frame(packet)), port=WAN)
    assert (forwarded[Ether].src, forwarded[Ether].dst) == (WAN_MAC, GW_MAC)
    expected = bytearray(raw(packet))
    expected[7] = 29
    assert raw(forwarded[IPv6]) == bytes(expected)


def test_ports_without_addresses_still_forward(rig):
    rig.know(WAN, GW6, GW_MAC)
    packet = IPv6(src=HOST6, dst=REMOTE6) / IPv6ExtHdrHopByHop() / UDP()
    forwarded = one(rig.punt(PUNT_HBH, frame(packet), port=MGMT), port=WAN)
    assert forwarded[Ether].dst == GW_MAC
    # but errors need an address on the rx port to come from
    assert rig.punt(PUNT_NO_ROUTE, frame(udp6(dst=NOWHERE6)), port=MGMT) == []
    assert rig.stats["no_source_address"] == 1


def test_ipv4_options_are_forwarded_with_ttl_and_checksum_redone(rig):
    rig.know(WAN, GW4, GW_MAC)
    packet = udp4(options=[IPOption_Router_Alert()])
    forwarded = one(rig.punt(PUNT_IP4_OPTIONS, frame(packet)), port=WAN)
    assert forwarded[IP].ttl == 63 and forwarded[IP].options == packet[IP].options
    assert raw(forwarded[IP])[9:] != raw(packet)[9:]  # the checksum changed with the TTL
    assert raw(forwarded[IP])[12:] == raw(packet)[12:]


def test_link_layer_broadcast_to_a_unicast_destination_is_not_forwarded(rig):
    """RFC 1812 5.3.4, NetBSD's ip_input: a unicast packet that arrived as a
    link-layer broadcast/multicast is not routed; to us it is still served."""
    rig.know(WAN, GW4, GW_MAC)
    assert rig.punt(PUNT_L2_MULTICAST, frame(udp4(), dst="ff:ff:ff:ff:ff:ff")) == []
    assert rig.stats["l2_multicast_dropped"] == 1 and rig.stats["slow_forwarded"] == 0
    ping = frame(IP(src=HOST4, dst=LAN4) / ICMP(type=8, id=7, seq=1), dst="ff:ff:ff:ff:ff:ff")
    reply = one(rig.punt(PUNT_L2_MULTICAST, ping), port=LAN)
    assert reply[ICMP].type == 0 and reply[ICMP].id == 7
    assert rig.stats["echo_replies"] == 1


def test_ethernet_padding_is_not_forwarded(rig):
    rig.know(WAN, GW4, GW_MAC)
    packet = IP(src=HOST4, dst=REMOTE4, options=[IPOption_Router_Alert()]) / UDP() / b"x"
    padded = frame(packet) + bytes(60 - len(frame(packet)))
    forwarded = one(rig.punt(PUNT_IP4_OPTIONS, padded), port=WAN)
    assert len(forwarded[IP]) == len(packet) and len(raw(forwarded)) == 14 + len(packet)


# ---- bad input and accounting --------------------------------------------------------------

def test_malformed_frames_are_counted_never_raised(rig):
    good6, good4 = frame(udp6(dst=LAN6)), frame(udp4(dst=LAN4))
    bad_length = bytearray(good6)
    bad_length[14 + 4:14 + 6] = (5000).to_bytes(2, "big")
    bad_ihl = bytearray(good4)
    bad_ihl[14] = 0x44
    bad_version = bytearray(good6)
    bad_version[14] = 0x40
    malformed = [b"", b"\x00" * 10, good6[:14 + 30], bytes(bad_length), good4[:14 + 12],
                 bytes(bad_ihl), bytes(bad_version)]
    for f in malformed:
        assert rig.punt(PUNT_LOCAL, f) == []
    assert rig.stats["malformed"] == len(malformed)
    bad_checksum = bytearray(good4)
    bad_checksum[14 + 10] ^= 0xFF
    assert rig.punt(PUNT_LOCAL, bytes(bad_checksum)) == []
    assert rig.stats["bad_checksum"] == 1


def test_every_frame_has_exactly_one_outcome(rig):
    rig.know(WAN, GW4, GW_MAC)
    frames = [
        (PUNT_MULTICAST, ns_frame(LAN6)),
        (PUNT_ARP, arp_frame(1, HOST4, LAN4)),
        (PUNT_RESOLVE, frame(udp6())),
        (PUNT_HOP_LIMIT, frame(udp4(ttl=1))),
        (PUNT_TOO_BIG, frame(udp4(size=2000))),
        (PUNT_NO_ROUTE, frame(udp6(dst=NOWHERE6))),
        (PUNT_LOCAL, frame(IPv6(src=HOST6, dst=LAN6) / ICMPv6EchoRequest())),
        (PUNT_LOCAL, b"\x01"),
        (PUNT_OTHER, b""),
    ]
    for reason, f in frames:
        rig.punt(reason, f)
    assert rig.slow.handled == len(frames)
    counts = rig.slow.outcome_counts()
    assert sum(counts.values()) == len(frames)
    assert set(OUTCOMES).isdisjoint(EVENTS)
    assert rig.stats["punted_local"] == 2 and rig.stats["punted_other"] == 1


# ---- options (dataplane/ipoptions.py, NetBSD ip_dooptions / RFC 8200 4.2) -------------------

def ipv4_with_options(options: bytes, dst=REMOTE4) -> bytes:
    """A UDP datagram whose header carries `options` as given, well formed or
    not (scapy would rebuild them), with a correct header checksum."""
    assert len(options) % 4 == 0
    plain = bytearray(raw(udp4(dst=dst)))
    header = plain[:20] + options
    header[0] = 0x40 | len(header) // 4
    header[2:4] = (len(plain) + len(options)).to_bytes(2, "big")
    return slowpath.ipv4_with_checksum(header) + bytes(plain[20:])


def frame4(datagram: bytes) -> bytes:
    return raw(Ether(src=HOST_MAC, dst=LAN_MAC, type=0x0800) / datagram)


def test_record_route_gets_the_egress_address(rig):
    rig.know(WAN, GW4, GW_MAC)
    packet = ipv4_with_options(b"\x07\x0b\x04" + bytes(8) + b"\x00")  # room for 2, NOP-padded
    forwarded = one(rig.punt(PUNT_IP4_OPTIONS, frame4(packet)), port=WAN)
    options = raw(forwarded[IP])[20:forwarded[IP].ihl * 4]
    assert options[:3] == b"\x07\x0b\x08"                    # the pointer moved by one address
    assert options[3:7] == A(WAN4).packed and options[7:11] == bytes(4)
    assert forwarded[IP].ttl == 63 and rig.stats["slow_forwarded"] == 1


def test_full_record_route_is_forwarded_unchanged(rig):
    rig.know(WAN, GW4, GW_MAC)
    packet = ipv4_with_options(b"\x07\x07\x08" + A(HOST4).packed + b"\x00")
    forwarded = one(rig.punt(PUNT_IP4_OPTIONS, frame4(packet)), port=WAN)
    assert raw(forwarded[IP])[20:28] == packet[20:28]


def test_timestamp_only_records_milliseconds_since_midnight_ut(rig):
    rig.know(WAN, GW4, GW_MAC)
    packet = ipv4_with_options(b"\x44\x0c\x05\x00" + bytes(8))
    before = int(time.time() * 1000) % 86_400_000
    forwarded = one(rig.punt(PUNT_IP4_OPTIONS, frame4(packet)), port=WAN)
    options = raw(forwarded[IP])[20:32]
    assert options[2] == 9 and options[8:12] == bytes(4)
    stamp = int.from_bytes(options[4:8], "big")
    assert 0 <= (stamp - before) % 86_400_000 < 60_000


def test_timestamp_with_address_records_the_rx_interface(rig):
    rig.know(WAN, GW4, GW_MAC)
    packet = ipv4_with_options(b"\x44\x0c\x05\x01" + bytes(8))
    forwarded = one(rig.punt(PUNT_IP4_OPTIONS, frame4(packet)), port=WAN)
    options = raw(forwarded[IP])[20:32]
    assert options[2] == 13 and options[4:8] == A(LAN4).packed


def test_full_timestamp_counts_an_overflow_then_is_a_parameter_problem(rig):
    rig.know(WAN, GW4, GW_MAC)
    forwarded = one(rig.punt(PUNT_IP4_OPTIONS, frame4(ipv4_with_options(b"\x44\x08\x09\x20" + bytes(4)))))
    assert raw(forwarded[IP])[23] == 0x30  # overflow 2 -> 3, flag 0
    error = one(rig.punt(PUNT_IP4_OPTIONS, frame4(ipv4_with_options(b"\x44\x08\x09\xf0" + bytes(4)))),
                port=LAN)
    assert (error[ICMP].type, error[ICMP].code, error[ICMP].ptr) == (12, 0, 22)


@pytest.mark.parametrize("options, pointer", [
    (b"\x07\x09\x04\x00", 21),            # length past the header
    (b"\x07\x01\x00\x00", 21),            # length below 2
    (b"\x01\x01\x01\x07", 24),            # no room for the length octet
    (b"\x07\x07\x03" + bytes(5), 22),      # record route pointer below 4
    (b"\x44\x0c\x04\x00" + bytes(8), 22),  # timestamp pointer below 5
    (b"\x44\x0c\x05\x02" + bytes(8), 23),  # unknown timestamp flag
], ids=["past-header", "short", "no-length", "rr-pointer", "ts-pointer", "ts-flag"])
def test_malformed_ipv4_options_get_parameter_problem(rig, options, pointer):
    packet = ipv4_with_options(options)
    error = one(rig.punt(PUNT_IP4_OPTIONS, frame4(packet)), port=LAN)
    assert (error[IP].src, error[IP].dst) == (LAN4, HOST4)
    assert (error[ICMP].type, error[ICMP].code, error[ICMP].ptr) == (12, 0, pointer)
    assert raw(error)[14 + 20 + 8:] == packet[:20 + len(options) + 8]  # header and 8 bytes
    assert rig.stats["icmp_parameter_problem"] == 1


@pytest.mark.parametrize("kind", [0x83, 0x89], ids=["lsrr", "ssrr"])
def test_source_routes_are_refused(rig, kind):
    rig.know(WAN, GW4, GW_MAC)
    packet = ipv4_with_options(bytes([kind, 7, 4]) + A(GW4).packed + b"\x00")
    error = one(rig.punt(PUNT_IP4_OPTIONS, frame4(packet)), port=LAN)
    assert (error[ICMP].type, error[ICMP].code) == (3, 9)
    assert rig.stats["icmp_unreachable"] == 1 and rig.stats["slow_forwarded"] == 0


def test_record_route_to_nowhere_is_host_unreachable(rig):
    packet = ipv4_with_options(b"\x07\x07\x04" + bytes(4) + b"\x00", dst=NOWHERE4)
    error = one(rig.punt(PUNT_IP4_OPTIONS, frame4(packet)), port=LAN)
    assert (error[ICMP].type, error[ICMP].code) == (3, 1)


def hbh(*options, dst=REMOTE6):
    return IPv6(src=HOST6, dst=dst) / IPv6ExtHdrHopByHop(options=list(options)) / UDP() / b"x"


@pytest.mark.parametrize("option_type", [0x1E, 0x3F], ids=["0x1e", "0x3f"])
def test_unknown_skippable_hop_by_hop_option_is_forwarded(rig, option_type):
    rig.know(WAN, GW6, GW_MAC)
    packet = hbh(HBHOptUnknown(otype=option_type, optdata=b"ab"))
    forwarded = one(rig.punt(PUNT_HBH, frame(packet)), port=WAN)
    assert raw(forwarded[IPv6])[8:] == raw(packet)[8:]


def test_unknown_hop_by_hop_option_to_discard_is_dropped_silently(rig):
    rig.know(WAN, GW6, GW_MAC)
    assert rig.punt(PUNT_HBH, frame(hbh(HBHOptUnknown(otype=0x5E, optdata=b"ab")))) == []
    assert rig.stats["bad_options_dropped"] == 1


@pytest.mark.parametrize("option_type", [0x9E, 0xDE], ids=["action-10", "action-11"])
def test_unknown_hop_by_hop_option_gets_parameter_problem_code_2(rig, option_type):
    rig.know(WAN, GW6, GW_MAC)
    packet = hbh(RouterAlert(), HBHOptUnknown(otype=option_type, optdata=b"ab"))
    error = one(rig.punt(PUNT_HBH, frame(packet)), port=LAN)
    # the IPv6 header (40), next header + length (2), router alert (4): the option at 46
    assert (error[ICMPv6ParamProblem].code, error[ICMPv6ParamProblem].ptr) == (2, 46)
    assert quoted(error) == raw(packet)
    assert rig.stats["icmp_parameter_problem"] == 1


def test_bad_router_alert_length_points_at_the_length(rig):
    rig.know(WAN, GW6, GW_MAC)
    packet = hbh(HBHOptUnknown(otype=0x05, optdata=b"abc"))
    error = one(rig.punt(PUNT_HBH, frame(packet)), port=LAN)
    assert (error[ICMPv6ParamProblem].code, error[ICMPv6ParamProblem].ptr) == (0, 43)


def test_hop_by_hop_option_past_its_header_is_dropped(rig):
    rig.know(WAN, GW6, GW_MAC)
    packet = bytearray(raw(hbh(HBHOptUnknown(otype=0x1E, optdata=b"abcd"))))
    packet[43] = 30  # the option now runs past the 8-byte header
    assert rig.punt(PUNT_HBH, frame(IPv6(bytes(packet)))) == []
    assert rig.stats["bad_options_dropped"] == 1


# ---- neighbour unreachability detection ---------------------------------------------------

def learn_gateways(rig):
    """GW6 and GW4 learnt from the wire (an NA and an ARP reply)."""
    rig.punt(PUNT_MULTICAST, na_frame(GW6, GW6, "ff02::1", GW_MAC, WAN_MAC, solicited=0), port=WAN)
    rig.punt(PUNT_ARP, arp_frame(2, GW4, WAN4, hwsrc=GW_MAC, hwdst=WAN_MAC, eth_dst=WAN_MAC), port=WAN)
    assert rig.router.lookup(REMOTE6).kind == rig.router.lookup(REMOTE4).kind == "forward"


def test_silent_learnt_neighbours_are_polled_by_unicast_then_forgotten(rig):
    learn_gateways(rig)
    rig.clock.advance(29.5)
    rig.slow.tick()
    assert rig.take() == []
    probes = []
    for _ in range(3):
        rig.clock.advance(1.0)
        rig.slow.tick()
        probes.append(rig.take())
    for sent in probes:
        assert len(sent) == 2 and {port for port, _ in sent} == {WAN}
        by_type = {Ether(f).type: checked(f) for _, f in sent}
        ns, arp = by_type[0x86DD], by_type[0x0806]
        # unicast, straight to the MAC we have (RFC 4861 7.3.3 PROBE)
        assert ns[Ether].dst == GW_MAC and ns[IPv6].dst == GW6 and ns[ICMPv6ND_NS].tgt == GW6
        assert ns[IPv6].hlim == 255 and ns[ICMPv6NDOptSrcLLAddr].lladdr == WAN_MAC
        assert arp[Ether].dst == GW_MAC and (arp[ARP].op, arp[ARP].pdst, arp[ARP].hwdst) == (1, GW4, GW_MAC)
    assert rig.stats["nud_probes_sent"] == 6
    rig.clock.advance(1.0)
    rig.slow.tick()
    assert rig.take() == [] and rig.stats["neighbours_expired"] == 2
    assert rig.router.lookup(REMOTE6).kind == rig.router.lookup(REMOTE4).kind == "resolve"
    rig.clock.advance(60)
    rig.slow.tick()
    assert rig.take() == []


def test_an_answer_to_a_poll_keeps_the_neighbour(rig):
    learn_gateways(rig)
    rig.clock.advance(30)
    rig.slow.tick()
    assert len(rig.take()) == 2
    rig.punt(PUNT_LOCAL, na_frame(GW6, GW6, WAN_LL, GW_MAC, WAN_MAC, solicited=1), port=WAN)
    rig.punt(PUNT_ARP, arp_frame(2, GW4, WAN4, hwsrc=GW_MAC, hwdst=WAN_MAC, eth_dst=WAN_MAC), port=WAN)
    for _ in range(5):
        rig.clock.advance(1.0)
        rig.slow.tick()
    assert rig.take() == [] and rig.stats["neighbours_expired"] == 0
    assert rig.router.lookup(REMOTE6).kind == rig.router.lookup(REMOTE4).kind == "forward"
    rig.clock.advance(25)  # 30 s after the answers: polled again
    rig.slow.tick()
    assert len(rig.take()) == 2


def test_static_neighbours_and_a_zero_reachable_time_never_age():
    rig = Rig(reachable_s=0)
    learn_gateways(rig)
    rig.know(WAN, "2001:db8:2::7", "02:cc:00:00:00:07")
    for _ in range(10):
        rig.clock.advance(60)
        rig.slow.tick()
    assert rig.take() == [] and rig.stats["nud_probes_sent"] == 0
    rig.check_invariants()

    rig = Rig()
    rig.know(WAN, GW6, GW_MAC)  # configured, not learnt
    rig.clock.advance(600)
    rig.slow.tick()
    assert rig.take() == [] and rig.router.lookup(REMOTE6).kind == "forward"
