"""ip6flow stage on virtual devices: golden tests, one per rule of the stage.

Topology (every test):

* ``lan``  = net_ring0, looped: ``dp.inject("lan", frame)`` makes the frame
  arrive on lan, as if a host on 2001:db8:1::/64 sent it to the router;
* ``wan``  = net_pcap, transmit only (wan.pcap): where 2001:db8:99::/48 and
  10.99.0.0/16 are routed (neighbour A, or B after a route change);
* ``back`` = net_pcap, transmit only (back.pcap): where the test hosts'
  source prefixes (2001:db8:77::/48, 10.77.0.0/16) are routed, so the ICMP
  errors the slow path sends toward a source land there to be decoded.

Frames are built with scapy; the pcaps are read after the dataplane stopped
(net_pcap flushes them when the port closes). Every test waits for counters
(``Router.settle``), never for time, and checks packet conservation.
"""
from __future__ import annotations

import threading

import pytest
from scapy.layers.inet import ICMP, IP, UDP, IPOption_NOP, IPOption_RR
from scapy.layers.inet6 import (
    ICMPv6DestUnreach,
    ICMPv6EchoRequest,
    ICMPv6ND_NA,
    ICMPv6ND_NS,
    ICMPv6NDOptDstLLAddr,
    ICMPv6NDOptSrcLLAddr,
    ICMPv6PacketTooBig,
    ICMPv6TimeExceeded,
    IPv6,
    IPv6ExtHdrHopByHop,
)
from scapy.layers.l2 import ARP, Ether
from scapy.packet import Raw
from scapy.utils import rdpcap

from dataplane import native
from dataplane.config import PuntPolice, PuntPolicer, SlowPathConfig
from dataplane.errors import ConfigError
from dataplane.ip6flow import Ip6flowError
from dataplane.slowpath import OUTCOMES
from tests.helpers import conserved, port, running, vdev_config, wait_for

pytestmark = [pytest.mark.eal, pytest.mark.timeout(60)]

LAN_MAC = "00:00:00:00:00:00"       # net_ring ports have no address of their own
HOST_MAC = "02:00:00:00:11:11"      # the test hosts behind lan
A_MAC = "02:00:00:00:22:22"         # wan neighbour A: 2001:db8:2::2, 198.51.100.2
B_MAC = "02:00:00:00:33:33"         # wan neighbour B: 2001:db8:2::3, 198.51.100.3
BACK_MAC = "02:00:00:00:77:77"      # back neighbour: 2001:db8:3::2, 203.0.113.2
GW_MAC = "02:00:00:00:44:44"        # wan2 gateway, learnt by NDP/ARP (no static entry)
GW6_DST, GW4_DST = "2001:db8:44::1", "10.44.0.1"   # routed via the wan2 gateway
BROADCAST = "ff:ff:ff:ff:ff:ff"
SRC6, SRC4 = "2001:db8:77::5", "10.77.0.5"
DST6, DST4 = "2001:db8:99::1", "10.99.0.1"
LAN6, LAN4 = "2001:db8:1::1", "192.0.2.1"   # the router's lan addresses (error sources)
WAN_MTU = 1280
T0_NS = 1_000_000_000_000           # manual clock start
PORT_MAC: dict[str, str] = {}       # the running ports' MACs (Router fills it in)


@pytest.fixture
def clock():
    """The stage clock, manual from T0_NS (it only moves when a test moves it)."""
    native.clock_set_manual(T0_NS)
    yield native
    native.clock_use_tsc()


# ---- topology --------------------------------------------------------------------

def stage_toml(maxflows=64, hashsize=64, maxflows4=64, hashsize4=64, idle_timeout_s=5.0,
               extra="") -> str:
    return f"""
[[pipeline]]
stage = "ip6flow"
maxflows = {maxflows}
hashsize = {hashsize}
maxflows4 = {maxflows4}
hashsize4 = {hashsize4}
idle_timeout_s = {idle_timeout_s}
icmp_rate = 1000
icmp_burst = 1000
max_routes = 1024
max_nexthops = 64
{extra}
[[pipeline.interfaces]]
port = "lan"
addresses = ["{LAN6}/64", "{LAN4}/24"]
[[pipeline.interfaces]]
port = "wan"
addresses = ["2001:db8:2::1/64", "198.51.100.1/24"]
[[pipeline.interfaces]]
port = "back"
addresses = ["2001:db8:3::1/64", "203.0.113.1/24"]
[[pipeline.neighbours]]
address = "2001:db8:2::2"
mac = "{A_MAC}"
port = "wan"
[[pipeline.neighbours]]
address = "198.51.100.2"
mac = "{A_MAC}"
port = "wan"
[[pipeline.neighbours]]
address = "2001:db8:2::3"
mac = "{B_MAC}"
port = "wan"
[[pipeline.neighbours]]
address = "198.51.100.3"
mac = "{B_MAC}"
port = "wan"
[[pipeline.neighbours]]
address = "2001:db8:3::2"
mac = "{BACK_MAC}"
port = "back"
[[pipeline.neighbours]]
address = "203.0.113.2"
mac = "{BACK_MAC}"
port = "back"
[[pipeline.routes]]
prefix = "2001:db8:99::/48"
via = "2001:db8:2::2"
[[pipeline.routes]]
prefix = "10.99.0.0/16"
via = "198.51.100.2"
[[pipeline.routes]]
prefix = "2001:db8:77::/48"
via = "2001:db8:3::2"
[[pipeline.routes]]
prefix = "10.77.0.0/16"
via = "203.0.113.2"
"""


WAN2_TOML = """
[[pipeline.interfaces]]
port = "wan2"
addresses = ["2001:db8:4::1/64", "198.18.0.1/24"]
[[pipeline.routes]]
prefix = "2001:db8:44::/48"
via = "2001:db8:4::2"
[[pipeline.routes]]
prefix = "10.44.0.0/16"
via = "198.18.0.2"
"""


def router_cfg(file_prefix, tmp_path, wan2: bool = False, top: str = "", **stage):
    body = (port("lan", "net_ring0")
            + port("wan", f"net_pcap1,tx_pcap={tmp_path}/wan.pcap", poll=False)
            + f"mtu = {WAN_MTU}\n"
            + port("back", f"net_pcap2,tx_pcap={tmp_path}/back.pcap", poll=False)
            + (port("wan2", "net_ring1") if wan2 else "")
            + stage_toml(**stage) + (WAN2_TOML if wan2 else ""))
    return vdev_config(file_prefix, body, extra=top)




class Router:
    """A running router: sends frames into lan, records what the slow path
    injects, and waits until every frame has gone wherever it goes."""

    def __init__(self, dp, rings=("lan",)):
        self.dp = dp
        self.ctl = dp.ip6flow[0]
        self.sp = self.ctl.slowpath
        self.rings = rings
        self.sent = 0
        self.slow_sent: list[tuple[int, bytes]] = []
        assert dp.port("lan").info.mac == LAN_MAC
        PORT_MAC.update({p.name: p.info.mac for p in dp.ports})
        real = self.sp.inject

        def spy(port_id: int, frame: bytes) -> None:
            self.slow_sent.append((port_id, bytes(frame)))
            real(port_id, frame)
        self.sp.inject = spy

    def send(self, *frames, port="lan") -> None:
        for f in frames:
            self.dp.inject(port, bytes(f))
            self.sent += 1

    def settle(self, timeout=10.0):
        """Every injected frame went round its ring and through the stage,
        every punt was handled by the slow path and what it sent went out."""
        state = {}

        def done():
            s = self.dp.snapshot()
            t = s.totals
            handled = sum(self.sp.stats[o] for o in OUTCOMES)
            state.update(totals={k: t[k] for k in ("rx", "tx", "injected", "punted", "dropped")},
                         handled=handled, sent=self.sent, slow=len(self.slow_sent))
            return (conserved(s) and t["punted"] == handled
                    and all(s.ports[n]["rx"] == s.ports[n]["tx"] for n in self.rings)
                    and t["injected"] == self.sent + len(self.slow_sent) - self.ctl.inject_failed)
        assert wait_for(done, timeout), f"did not settle: {state}"
        return self.dp.snapshot()

    def stats(self, family="ipv6") -> dict:
        return self.ctl.stats()[family]

    def flows(self, n: int, family="ipv6") -> None:
        """The stage's flow gauge (refreshed by its 1 ms tick) reaches n."""
        assert wait_for(lambda: self.stats(family)["flows"] == n), self.stats(family)


# ---- frames ----------------------------------------------------------------------

def payload(seq: int, size: int = 0) -> bytes:
    return (b"SEQ%06d|" % seq).ljust(size, b".")


def seq_of(pkt) -> int:
    raw = bytes(pkt[Raw].load) if Raw in pkt else b""
    assert raw.startswith(b"SEQ"), pkt.summary()
    return int(raw[3:9])


def eth(dst=LAN_MAC):
    return Ether(dst=dst, src=HOST_MAC)


def built(pkt):
    """The frame as it goes on the wire, every field filled in."""
    return Ether(bytes(pkt))


def udp6(dst=DST6, src=SRC6, hlim=64, seq=0, tc=0, fl=0, size=0, mac=LAN_MAC):
    return built(eth(mac) / IPv6(src=src, dst=dst, hlim=hlim, tc=tc, fl=fl) /
                 UDP(sport=4000, dport=5000) / payload(seq, size))


def udp4(dst=DST4, src=SRC4, ttl=64, seq=0, tos=0, size=0, mac=LAN_MAC, **ip):
    return built(eth(mac) / IP(src=src, dst=dst, ttl=ttl, tos=tos, **ip) /
                 UDP(sport=4000, dport=5000) / payload(seq, size))


def pcap(tmp_path, name: str) -> list:
    return list(rdpcap(str(tmp_path / f"{name}.pcap")))


def ones_sum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    s = sum(int.from_bytes(data[i:i + 2], "big") for i in range(0, len(data), 2))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return s


def ip4_checksum_ok(ip_bytes: bytes) -> bool:
    ihl = (ip_bytes[0] & 0xF) * 4
    return ones_sum(ip_bytes[:ihl]) == 0xFFFF


def icmp6_checksum_ok(pkt) -> bool:
    ip = bytes(pkt[IPv6])
    msg = ip[40:]
    pseudo = ip[8:40] + len(msg).to_bytes(4, "big") + b"\0\0\0\x3a"
    return ones_sum(pseudo + msg) == 0xFFFF


def recomputed(pkt):
    """The IPv4 header with scapy's own checksum."""
    ip = pkt[IP].copy()
    del ip.chksum
    return IP(bytes(ip))


def assert_forwarded6(out, sent, dst_mac=A_MAC, port="wan"):
    """`out` is `sent` as the router forwards it out of `port`: MACs
    rewritten, hop limit - 1, nothing else changed."""
    assert (out[Ether].dst, out[Ether].src, out[Ether].type) == (dst_mac, PORT_MAC[port], 0x86DD)
    want = sent[IPv6].copy()
    want.hlim -= 1
    assert bytes(out[IPv6]) == bytes(want)


def assert_forwarded4(out, sent, dst_mac=A_MAC, port="wan"):
    """As assert_forwarded6 for IPv4: TTL - 1 and a correct header checksum."""
    assert (out[Ether].dst, out[Ether].src, out[Ether].type) == (dst_mac, PORT_MAC[port], 0x0800)
    got, orig = bytes(out[IP]), bytes(sent[IP])
    assert got[8] == orig[8] - 1                              # TTL
    assert got[:8] + got[9:10] + got[12:] == orig[:8] + orig[9:10] + orig[12:]
    assert ip4_checksum_ok(got)
    assert out[IP].chksum == recomputed(out).chksum


# ---- 1. hop limit -------------------------------------------------------------------

def test_hop_limit_2_forwards_and_caches_1_and_0_punt_with_time_exceeded(tmp_path, file_prefix):
    with running(router_cfg(file_prefix, tmp_path)) as dp:
        r = Router(dp)
        first = udp6(hlim=2, seq=0)
        r.send(first)
        r.settle()
        st = r.stats()
        assert (st["forward"], st["fastforward"], st["created"]) == (1, 0, 1)
        r.flows(1)
        [flow] = r.ctl.show()
        assert (flow["src"], flow["dst"], flow["valid"]) == (SRC6, DST6, True)
        rest = [udp6(hlim=2, seq=i) for i in range(1, 5)]
        r.send(*rest)
        r.settle()
        st = r.stats()
        assert (st["forward"], st["fastforward"], st["created"]) == (1, 4, 1)
        # the same flow (the key has no hop limit) at hop limit 1 and 0: never forwarded
        dying = [udp6(hlim=1, seq=10), udp6(hlim=0, seq=11), udp6(hlim=1, seq=12)]
        r.send(*dying)
        snap = r.settle()
        st = r.stats()
        assert (st["forward"], st["fastforward"]) == (1, 4)
        assert st["punts"]["hop_limit"] == 3
        assert sum(st["punts"].values()) == 3
        assert r.sp.stats["icmp_time_exceeded"] == 3
        # IPv4: TTL 2 forwarded (then cached), TTL 1 and 0 time exceeded
        alive4 = [udp4(ttl=2, seq=20), udp4(ttl=2, seq=21)]
        dying4 = [udp4(ttl=1, seq=22), udp4(ttl=0, seq=23)]
        r.send(*alive4, *dying4)
        snap = r.settle()
        st4 = r.stats("ipv4")
        assert (st4["forward"], st4["fastforward"], st4["created"]) == (1, 1, 1)
        assert st4["punts"]["hop_limit"] == 2 and sum(st4["punts"].values()) == 2
        assert r.sp.stats["icmp_time_exceeded"] == 5
        assert snap.ports["wan"]["tx"] == 7 and snap.ports["back"]["tx"] == 5
        assert conserved(snap)
    wan = pcap(tmp_path, "wan")
    assert [seq_of(p) for p in wan] == [0, 1, 2, 3, 4, 20, 21]
    for out, sent in zip(wan[:5], [first, *rest], strict=True):
        assert_forwarded6(out, sent)
        assert out[IPv6].hlim == 1
    for out, sent in zip(wan[5:], alive4, strict=True):
        assert_forwarded4(out, sent)
        assert out[IP].ttl == 1
    back = pcap(tmp_path, "back")
    assert len(back) == 5
    for err, sent in zip(back[3:], dying4, strict=True):
        assert (err[Ether].dst, err[Ether].src) == (BACK_MAC, PORT_MAC["back"])
        assert (err[IP].src, err[IP].dst, err[IP].proto) == (LAN4, SRC4, 1)
        assert (err[ICMP].type, err[ICMP].code) == (11, 0)
        assert bytes(err[ICMP].payload) == bytes(sent[IP])[:28]
        assert ip4_checksum_ok(bytes(err[IP])) and ones_sum(bytes(err[ICMP])) == 0xFFFF
    for err, sent in zip(back[:3], dying, strict=True):
        assert (err[Ether].dst, err[Ether].src) == (BACK_MAC, PORT_MAC["back"])
        assert (err[IPv6].src, err[IPv6].dst, err[IPv6].nh) == (LAN6, SRC6, 58)
        te = err[ICMPv6TimeExceeded]
        assert (te.type, te.code) == (3, 0)
        assert bytes(te.payload) == bytes(sent[IPv6])      # quoted as received
        assert icmp6_checksum_ok(err)


# ---- 2. too big -------------------------------------------------------------------

def test_oversize_punts_too_big_with_ptb_frag_needed_or_fragments(tmp_path, file_prefix):
    with running(router_cfg(file_prefix, tmp_path)) as dp:
        r = Router(dp)
        assert {i["port"]: i["mtu"] for i in r.ctl.interfaces()}["wan"] == WAN_MTU
        fits6 = udp6(seq=0, size=WAN_MTU - 40 - 8)            # exactly the MTU
        big6 = udp6(seq=1, size=WAN_MTU - 40 - 8 + 1)         # one byte over
        r.send(fits6, big6, big6.copy())
        r.settle()
        st = r.stats()
        assert (st["forward"], st["fastforward"]) == (1, 0)   # the cached flow did not take it
        assert st["punts"]["too_big"] == 2
        assert r.sp.stats["icmp_too_big"] == 2
        fits4 = udp4(seq=2, size=WAN_MTU - 20 - 8)
        df4 = udp4(seq=3, size=1400, flags="DF", id=77)
        frag4 = udp4(seq=4, size=1900, ttl=9, id=4242)   # an mbuf holds ~2 kB
        r.send(fits4, df4, frag4)
        snap = r.settle()
        st4 = r.stats("ipv4")
        assert (st4["forward"], st4["fastforward"]) == (1, 0)
        assert st4["punts"]["too_big"] == 2
        assert r.sp.stats["icmp_frag_needed"] == 1 and r.sp.stats["fragmented"] == 1
        n_frags = r.sp.stats["fragments_sent"]
        assert n_frags == 2                                    # 1908 bytes: 1256 + 652
        assert snap.ports["wan"]["tx"] == 2 + n_frags
        assert snap.ports["back"]["tx"] == 3
        assert conserved(snap)
    wan = pcap(tmp_path, "wan")
    assert len(wan) == 2 + n_frags
    assert_forwarded6(wan[0], fits6)
    assert len(bytes(wan[0][IPv6])) == WAN_MTU
    assert_forwarded4(wan[1], fits4)
    frags = wan[2:]
    for f in frags:
        ipb = bytes(f[IP])
        assert (f[Ether].dst, f[Ether].src) == (A_MAC, PORT_MAC["wan"])
        assert len(ipb) <= WAN_MTU and ip4_checksum_ok(ipb)
        assert (f[IP].ttl, f[IP].id, f[IP].src, f[IP].dst) == (8, 4242, SRC4, DST4)
        assert not f[IP].flags.DF
    assert [bool(f[IP].flags.MF) for f in frags] == [True] * (n_frags - 1) + [False]
    frags.sort(key=lambda f: f[IP].frag)
    data, at = b"", 0
    for f in frags:
        assert f[IP].frag * 8 == at
        chunk = bytes(f[IP])[f[IP].ihl * 4:f[IP].len]
        data += chunk
        at += len(chunk)
    assert data == bytes(frag4[IP].payload)               # reassembles to the original
    back = pcap(tmp_path, "back")
    assert len(back) == 3
    for err in back[:2]:
        assert err[Ether].dst == BACK_MAC
        assert (err[IPv6].src, err[IPv6].dst) == (LAN6, SRC6)
        ptb = err[ICMPv6PacketTooBig]
        assert (ptb.type, ptb.code, ptb.mtu) == (2, 0, WAN_MTU)
        assert len(bytes(err[IPv6])) <= 1280                   # RFC 4443 2.4 (c)
        assert bytes(big6[IPv6]).startswith(bytes(ptb.payload))
        assert len(bytes(ptb.payload)) == 1280 - 48
        assert icmp6_checksum_ok(err)
    fn = back[2]
    assert fn[Ether].dst == BACK_MAC and (fn[IP].src, fn[IP].dst) == (LAN4, SRC4)
    icmp = fn[ICMP]
    assert (icmp.type, icmp.code, icmp.nexthopmtu) == (3, 4, WAN_MTU)
    assert bytes(icmp.payload) == bytes(df4[IP])[:28]          # header + 8 bytes, as received
    assert ip4_checksum_ok(bytes(fn[IP])) and ones_sum(bytes(icmp)) == 0xFFFF


# ---- 3. hop-by-hop ------------------------------------------------------------------

def test_hop_by_hop_is_punted_never_cached_and_slow_forwarded(tmp_path, file_prefix):
    with running(router_cfg(file_prefix, tmp_path)) as dp:
        r = Router(dp)
        sent = [eth() / IPv6(src=SRC6, dst=DST6, hlim=30) / IPv6ExtHdrHopByHop() /
                UDP(sport=4000, dport=5000) / payload(i) for i in range(4)]
        r.send(*sent)
        snap = r.settle()
        st = r.stats()
        assert st["punts"]["hbh"] == 4 and sum(st["punts"].values()) == 4
        assert (st["forward"], st["fastforward"], st["created"]) == (0, 0, 0)
        assert r.ctl.show() == []
        assert r.sp.stats["slow_forwarded"] == 4
        assert snap.ports["wan"]["tx"] == 4 and conserved(snap)
    wan = pcap(tmp_path, "wan")
    assert [seq_of(p) for p in wan] == [0, 1, 2, 3]
    for out, s in zip(wan, sent, strict=True):
        assert_forwarded6(out, s)
        assert out[IPv6].hlim == 29 and IPv6ExtHdrHopByHop in out


# ---- 4. multicast -------------------------------------------------------------------

def test_link_multicast_is_not_routed_and_ip_multicast_is_dropped_by_slow_path(tmp_path,
                                                                              file_prefix):
    with running(router_cfg(file_prefix, tmp_path)) as dp:
        r = Router(dp)
        r.send(udp6(seq=0), udp4(seq=1))            # cache both flows first
        r.settle()
        r.flows(1)
        r.flows(1, "ipv4")
        l2 = [udp6(seq=2, mac="33:33:00:00:00:01"), udp6(seq=3, mac="ff:ff:ff:ff:ff:ff"),
              udp4(seq=4, mac="ff:ff:ff:ff:ff:ff"), udp4(seq=5, mac="01:00:5e:00:00:01")]
        r.send(*l2)
        r.settle()
        st6, st4 = r.stats(), r.stats("ipv4")
        assert st6["punts"]["l2_multicast"] == 2 and st4["punts"]["l2_multicast"] == 2
        assert (st6["forward"], st6["fastforward"], st4["forward"], st4["fastforward"]) == \
            (1, 0, 1, 0)
        # RFC 1812 5.3.4 (NetBSD's ip_input): arrived as link-layer multicast or
        # broadcast, so not forwarded even with a unicast IP destination
        assert r.sp.stats["l2_multicast_dropped"] == 4 and r.sp.stats["slow_forwarded"] == 0
        # IP multicast (not NDP): punted as multicast, dropped by the slow path
        mc = [eth("33:33:00:00:01:02") / IPv6(src=SRC6, dst="ff0e::102") / UDP() / payload(6),
              eth("33:33:00:00:00:01") / IPv6(src=SRC6, dst="ff02::1") / UDP() / payload(7),
              eth("01:00:5e:01:02:03") / IP(src=SRC4, dst="224.1.2.3") / UDP() / payload(8),
              eth("ff:ff:ff:ff:ff:ff") / IP(src=SRC4, dst="255.255.255.255") / UDP() / payload(9)]
        r.send(*mc)
        snap = r.settle()
        st6, st4 = r.stats(), r.stats("ipv4")
        assert st6["punts"]["multicast"] == 2 and st4["punts"]["multicast"] == 2
        assert r.sp.stats["multicast_dropped"] == 4
        assert snap.ports["wan"]["tx"] == 2 and snap.ports["back"]["tx"] == 0
        assert conserved(snap)
    assert [seq_of(p) for p in pcap(tmp_path, "wan")] == [0, 1]


# ---- 5. ICMP is never cached ----------------------------------------------------

def test_icmp_is_forwarded_but_never_cached(tmp_path, file_prefix):
    n = 6
    with running(router_cfg(file_prefix, tmp_path)) as dp:
        r = Router(dp)
        pings6 = [eth() / IPv6(src=SRC6, dst=DST6, hlim=10) / ICMPv6EchoRequest(id=7, seq=i)
                  for i in range(n)]
        pings4 = [eth() / IP(src=SRC4, dst=DST4, ttl=10) / ICMP(id=7, seq=i) for i in range(n)]
        for p6, p4 in zip(pings6, pings4, strict=True):
            r.send(p6, p4)
        snap = r.settle()
        for fam in ("ipv6", "ipv4"):
            st = r.stats(fam)
            assert (st["forward"], st["fastforward"], st["created"], st["flows"]) == (n, 0, 0, 0)
            assert sum(st["punts"].values()) == 0
        assert r.ctl.show("ipv6") == [] and r.ctl.show("ipv4") == []
        assert snap.ports["wan"]["tx"] == 2 * n and conserved(snap)
    wan = pcap(tmp_path, "wan")
    got6 = [p for p in wan if IPv6 in p]
    got4 = [p for p in wan if IP in p]
    assert [p[ICMPv6EchoRequest].seq for p in got6] == list(range(n))
    assert [p[ICMP].seq for p in got4] == list(range(n))
    for out, s in zip(got6, pings6, strict=True):
        assert_forwarded6(out, s)
    for out, s in zip(got4, pings4, strict=True):
        assert_forwarded4(out, s)


# ---- 6. route change ------------------------------------------------------------

def test_route_replaced_at_runtime_repoints_the_cached_flow(tmp_path, file_prefix, clock):
    """The flow goes via A; the route is withdrawn and put back via B. No
    packet after the change leaves with A's MAC, and the flow is re-pointed
    (refreshed), not made twice. The stage clock stands still: NetBSD's slow
    timer (2 Hz) has not run between the change and the next packet."""
    with running(router_cfg(file_prefix, tmp_path)) as dp:
        r = Router(dp)
        r.send(*[udp6(seq=i) for i in range(4)])
        r.settle()
        before = r.stats()
        gen = r.ctl.stats()["generation"]
        r.ctl.route_del("2001:db8:99::/48")
        r.ctl.route_add("2001:db8:99::/48", via="2001:db8:2::3")
        assert r.ctl.stats()["generation"] == gen + 2
        assert [x["mac"] for x in r.ctl.routes() if x["prefix"] == "2001:db8:99::/48"] == [B_MAC]
        r.send(*[udp6(seq=i) for i in range(4, 8)])
        snap = r.settle()
        after = r.stats()
        shown = r.ctl.show()
        assert conserved(snap)
    wan = pcap(tmp_path, "wan")
    assert [(seq_of(p), p[Ether].dst) for p in wan] == \
        [(i, A_MAC) for i in range(4)] + [(i, B_MAC) for i in range(4, 8)]
    assert (before["forward"], before["fastforward"], before["created"]) == (1, 3, 1)
    assert (after["forward"], after["fastforward"]) == (2, 6)
    assert [(f["dst"], f["valid"]) for f in shown] == [(DST6, True)]
    assert (after["created"], after["refreshed"], after["invalidated"]) == (1, 1, 0)


def test_route_withdrawn_punts_no_route_and_answers_unreachable(tmp_path, file_prefix):
    with running(router_cfg(file_prefix, tmp_path)) as dp:
        r = Router(dp)
        r.send(udp6(seq=0), udp6(seq=1), udp4(seq=2), udp4(seq=3))
        r.settle()
        r.ctl.route_del("2001:db8:99::/48")
        r.ctl.route_del("10.99.0.0/16")
        lost = [udp6(seq=4), udp6(seq=5), udp4(seq=6)]
        r.send(*lost)
        snap = r.settle()
        st6, st4 = r.stats(), r.stats("ipv4")
        assert (st6["forward"], st6["fastforward"], st6["punts"]["no_route"]) == (1, 1, 2)
        assert (st4["forward"], st4["fastforward"], st4["punts"]["no_route"]) == (1, 1, 1)
        assert r.sp.stats["icmp_unreachable"] == 3
        assert snap.ports["wan"]["tx"] == 4 and snap.ports["back"]["tx"] == 3
        assert conserved(snap)
    assert [seq_of(p) for p in pcap(tmp_path, "wan")] == [0, 1, 2, 3]
    back = pcap(tmp_path, "back")
    assert len(back) == 3
    for err, sent in zip(back[:2], lost[:2], strict=True):
        assert (err[Ether].dst, err[IPv6].src, err[IPv6].dst) == (BACK_MAC, LAN6, SRC6)
        du = err[ICMPv6DestUnreach]
        assert (du.type, du.code) == (1, 0)                    # no route to destination
        assert bytes(du.payload) == bytes(sent[IPv6])
        assert icmp6_checksum_ok(err)
    err = back[2]
    assert (err[Ether].dst, err[IP].src, err[IP].dst) == (BACK_MAC, LAN4, SRC4)
    assert (err[ICMP].type, err[ICMP].code) == (3, 0)         # net unreachable
    assert bytes(err[ICMP].payload) == bytes(lost[2][IP])[:28]
    assert ip4_checksum_ok(bytes(err[IP])) and ones_sum(bytes(err[ICMP])) == 0xFFFF


# ---- 7. maxflows: reaping order, runtime limits, idle expiry --------------------

def nth_flow(i: int, seq: int):
    return udp6(dst=f"2001:db8:99::{i}", seq=seq)


def test_full_cache_reaps_the_least_recently_used_flow(tmp_path, file_prefix, clock):
    with running(router_cfg(file_prefix, tmp_path, maxflows=4, hashsize=16,
                            idle_timeout_s=10)) as dp:
        r = Router(dp)
        for i in range(1, 5):                       # f1..f4, 600 ms apart (LRU resolution 500)
            r.send(nth_flow(i, i))
            r.settle()
            clock.clock_advance(600_000_000)
        r.send(nth_flow(1, 11))                     # f1 used again: now the most recent
        r.settle()
        assert r.stats()["fastforward"] == 1
        clock.clock_advance(600_000_000)
        r.send(nth_flow(5, 5))                      # full: the least recently used (f2) goes
        snap = r.settle()
        st = r.stats()
        assert (st["created"], st["reaped_lru"], st["reaped_invalid"]) == (5, 1, 0)
        assert sorted(f["dst"] for f in r.ctl.show()) == \
            [f"2001:db8:99::{i}" for i in (1, 3, 4, 5)]
        r.flows(4)
        assert conserved(snap)


def test_full_cache_reaps_a_flow_with_an_invalid_route_first(tmp_path, file_prefix, clock):
    """After a route change every cached flow is stale; a new flow in a full
    cache takes the place of a stale one (the oldest), not of the LRU fresh
    one. The stage clock stands still: no slow-timer pass in between."""
    with running(router_cfg(file_prefix, tmp_path, maxflows=4, hashsize=16)) as dp:
        r = Router(dp)
        r.send(*[nth_flow(i, i) for i in range(1, 5)])
        r.settle()
        r.flows(4)
        r.ctl.route_add("2001:db8:aa::/48", via="2001:db8:2::3")   # any change: a new generation
        r.send(nth_flow(5, 5))
        snap = r.settle()
        st = r.stats()
        shown = {f["dst"]: f["valid"] for f in r.ctl.show()}
        assert conserved(snap)
    assert len(pcap(tmp_path, "wan")) == 5
    assert (st["created"], st["reaped_invalid"], st["reaped_lru"], st["invalidated"]) == \
        (5, 1, 0, 0)
    assert shown == {"2001:db8:99::2": False, "2001:db8:99::3": False,
                     "2001:db8:99::4": False, "2001:db8:99::5": True}


def test_maxflows_lowered_reaps_at_once_zero_disables_and_idle_flows_expire(
        tmp_path, file_prefix, clock):
    with running(router_cfg(file_prefix, tmp_path, maxflows=4, hashsize=16,
                            idle_timeout_s=2)) as dp:
        r = Router(dp)
        for i in range(1, 5):
            r.send(nth_flow(i, i))
            r.settle()
            clock.clock_advance(500_000_000)            # the LRU resolution (2 s / 4)
        r.flows(4)
        r.ctl.set_maxflows(2)                           # reaps the two oldest at once
        st = r.stats()
        assert (st["flows"], st["maxflows"], st["reaped_lru"]) == (2, 2, 2)
        assert sorted(f["dst"] for f in r.ctl.show()) == ["2001:db8:99::3", "2001:db8:99::4"]
        r.send(nth_flow(3, 10), nth_flow(4, 11))
        r.settle()
        assert r.stats()["fastforward"] == 2
        r.ctl.set_maxflows(0)                           # no cache: everything via the route
        assert r.stats()["flows"] == 0 and r.ctl.show() == []
        before = r.stats()
        r.send(*[nth_flow(1 + i % 4, 20 + i) for i in range(8)])
        r.settle()
        st = r.stats()
        assert st["forward"] - before["forward"] == 8
        assert (st["fastforward"], st["created"]) == (before["fastforward"], before["created"])
        assert r.ctl.show() == []
        r.ctl.set_maxflows(4)
        r.send(nth_flow(1, 30), nth_flow(2, 31), nth_flow(1, 32))
        r.settle()
        r.flows(2)
        assert r.stats()["fastforward"] == before["fastforward"] + 1
        expired = r.stats()["expired"]
        clock.clock_advance(2_000_000_000)              # idle 2 s: within idle + resolution
        r.send(nth_flow(3, 33))
        r.settle()
        r.flows(3)                                      # a tick ran since: nothing expired
        assert r.stats()["expired"] == expired
        clock.clock_advance(600_000_000)                # f1, f2: idle 2.6 s > 2 s + 0.5 s
        r.flows(1)
        assert r.stats()["expired"] == expired + 2
        assert [f["dst"] for f in r.ctl.show()] == ["2001:db8:99::3"]
        clock.clock_advance(2_000_000_000)              # f3: idle 2.6 s
        r.flows(0)
        assert r.stats()["expired"] == expired + 3
        assert r.ctl.show() == []
        snap = r.settle()
        assert conserved(snap)
    assert len(pcap(tmp_path, "wan")) == 4 + 2 + 8 + 3 + 1


# ---- 8. hashsize -----------------------------------------------------------------

def test_hashsize_must_be_a_power_of_two(tmp_path):
    with pytest.raises(ConfigError) as e:
        router_cfg("unused", tmp_path, hashsize=100)
    assert "pipeline[0].hashsize" in str(e.value) and "100" in str(e.value)
    with pytest.raises(ConfigError) as e:
        router_cfg("unused", tmp_path, hashsize4=48)
    assert "pipeline[0].hashsize4" in str(e.value) and "48" in str(e.value)


def test_hashsize_runtime_rejects_bad_values_and_a_new_size_flushes(tmp_path, file_prefix):
    with running(router_cfg(file_prefix, tmp_path)) as dp:
        r = Router(dp)
        r.send(*[udp6(dst=f"2001:db8:99::{i}", seq=i) for i in range(1, 4)])
        r.settle()
        r.flows(3)
        for bad in (100, 0, 8, -16, "64", True):
            with pytest.raises(Ip6flowError, match="power of two"):
                r.ctl.set_hashsize(bad)
        with pytest.raises(Ip6flowError, match="family"):
            r.ctl.set_hashsize(32, "ipv5")
        st, st4 = r.stats(), r.stats("ipv4")
        assert (st["hashsize"], st["maxflows"], st["flows"], st["invalidated"]) == (64, 64, 3, 0)
        assert (st4["hashsize"], st4["maxflows"]) == (64, 64)
        assert len(r.ctl.show()) == 3
        r.send(udp6(dst="2001:db8:99::1", seq=9))       # still served from the cache
        r.settle()
        assert r.stats()["fastforward"] == 1
        r.ctl.set_hashsize(32)
        st = r.stats()
        assert (st["hashsize"], st["flows"], st["invalidated"]) == (32, 0, 3)
        assert r.ctl.show() == []
        r.send(*[udp6(dst=f"2001:db8:99::{i}", seq=10 + i) for i in range(1, 4)])
        r.send(udp6(dst="2001:db8:99::1", seq=20))
        snap = r.settle()
        st = r.stats()
        assert (st["forward"], st["fastforward"], st["created"]) == (6, 2, 6)
        r.flows(3)
        assert snap.ports["wan"]["tx"] == 8 and conserved(snap)


# ---- 9. IPv4 checksum and options -----------------------------------------------

def test_ipv4_checksum_after_ttl_decrement_bad_checksum_and_options(tmp_path, file_prefix):
    cases = []
    for ttl, tos in ((2, 0), (64, 0x10), (255, 0xB8), (128, 0x04), (17, 0xFC)):
        cases.append(udp4(ttl=ttl, tos=tos, seq=len(cases), id=ttl * 257))
    # RFC 1624 corners: the incremental update wraps (checksum high byte ff) or
    # lands on zero (0xfeff + 0x0100 must give 0x0000, not 0xffff)
    for want in (0xFEFF, 0xFF12, 0x00FF):
        base = udp4(ttl=33, seq=len(cases))[IP]
        id_ = checksum_id(base, want)
        cases.append(udp4(ttl=33, seq=len(cases), id=id_))
        assert cases[-1][IP].chksum == want
    with running(router_cfg(file_prefix, tmp_path)) as dp:
        r = Router(dp)
        for c in cases:                      # each twice: the route path, then the cache
            r.send(c, c.copy())
        r.settle()
        st = r.stats("ipv4")
        flows = len({c[IP].tos for c in cases})   # the key is (src, dst, ToS): not the TTL
        assert (st["forward"], st["fastforward"]) == (flows, 2 * len(cases) - flows)
        bad = udp4(seq=90)
        raw = bytearray(bytes(bad))
        raw[14 + 10] ^= 0x01                  # break the header checksum
        opts = [udp4(seq=91, ttl=20, options=[IPOption_RR()]),
                udp4(seq=92, ttl=21, options=[IPOption_NOP(), IPOption_NOP(), IPOption_NOP(),
                                              IPOption_NOP()])]
        r.send(bytes(raw), *opts)
        snap = r.settle()
        st = r.stats("ipv4")
        assert snap.totals["drops"]["ip4_bad_checksum"] == 1
        assert st["punts"]["ip4_options"] == 2
        assert r.sp.stats["slow_forwarded"] == 2
        assert (st["forward"], st["fastforward"]) == (flows, 2 * len(cases) - flows)
        assert snap.ports["wan"]["tx"] == 2 * len(cases) + 2 and conserved(snap)
    wan = pcap(tmp_path, "wan")
    assert [seq_of(p) for p in wan] == \
        [i for i in range(len(cases)) for _ in range(2)] + [91, 92]
    for k, out in enumerate(wan[:-2]):
        sent = cases[k // 2]
        assert_forwarded4(out, sent)
        assert out[IP].ttl == sent[IP].ttl - 1 and out[IP].tos == sent[IP].tos
    for out, sent in zip(wan[-2:], opts, strict=True):
        assert_forwarded4(out, sent)
        assert bytes(out[IP])[20:out[IP].ihl * 4] == bytes(sent[IP])[20:sent[IP].ihl * 4]


def checksum_id(base, want: int) -> int:
    """The IP id that gives `base` (an IP layer) the header checksum `want`:
    the checksum is ~(S0 + id) in one's complement, S0 the sum with id 0."""
    ip = base.copy()
    ip.id, ip.chksum = 0, 0
    s0 = ones_sum(bytes(ip)[:20])
    ident = ones_sum(((~want & 0xFFFF) + (~s0 & 0xFFFF)).to_bytes(4, "big"))
    ip.id = ident
    del ip.chksum
    assert IP(bytes(ip)).chksum == want, (hex(IP(bytes(ip)).chksum), hex(want))
    return ident


# ---- 10. malformed frames ---------------------------------------------------------

def test_malformed_frames_drop_by_reason_and_valid_ones_still_forward(tmp_path, file_prefix):
    v6 = bytes(udp6(seq=0))
    v4 = bytes(udp4(seq=0))
    bad_version6 = bytearray(v6)
    bad_version6[14] = 0x40
    bad_ihl = bytearray(v4)
    bad_ihl[14] = 0x44
    long_len4 = bytearray(bytes(udp4(seq=0)))
    long_len4[16:18] = (len(v4) - 14 + 40).to_bytes(2, "big")
    malformed = {
        "l2_truncated": bytes(eth())[:10],
        "ip6_truncated": v6[:14 + 30],
        "ip6_bad_version": bytes(bad_version6),
        "ip6_bad_length": bytes(eth() / IPv6(src=SRC6, dst=DST6, plen=100) / Raw(b"x" * 20)),
        "ip4_truncated": v4[:14 + 12],
        "ip4_bad_ihl": bytes(bad_ihl),
        "ip4_bad_length": bytes(long_len4),
        "l2_unsupported": bytes(Ether(dst=LAN_MAC, src=HOST_MAC, type=0x88CC) / Raw(bytes(46))),
        "l2_other_host": bytes(udp6(seq=0, mac="02:00:00:00:99:99")),
    }
    with running(router_cfg(file_prefix, tmp_path)) as dp:
        r = Router(dp)
        valid = []
        for k, frame in enumerate(malformed.values()):
            for rep in range(2):
                r.send(frame)
                good = (udp6 if k % 2 else udp4)(seq=2 * k + rep)
                valid.append(good)
                r.send(good)
        snap = r.settle()
        drops = {k: v for k, v in snap.totals["drops"].items() if v}
        assert drops == {reason: 2 for reason in malformed}
        st6, st4 = r.stats(), r.stats("ipv4")
        assert st6["forward"] + st6["fastforward"] + st4["forward"] + st4["fastforward"] == \
            len(valid)
        assert sum(st6["punts"].values()) + sum(st4["punts"].values()) == 0
        assert snap.ports["wan"]["tx"] == len(valid) and conserved(snap)
    wan = pcap(tmp_path, "wan")
    assert [seq_of(p) for p in wan] == [seq_of(p) for p in valid]


# ---- 11. invalidate ---------------------------------------------------------------

def test_sources_no_router_forwards_from_are_dropped_or_answered(tmp_path, file_prefix):
    """Multicast, unspecified and loopback IPv6 sources, IPv4 martians (RFC 1812
    5.3.7) drop before the cache; a link-local source is not routed off its
    link: the slow path answers "beyond scope" (RFC 4443 3.1 code 2)."""
    bad6 = [udp6(src=a, seq=i) for i, a in enumerate(("::", "::1", "ff02::1", "ff0e::5"))]
    bad4 = [udp4(src=a, seq=10 + i) for i, a in enumerate(("0.0.0.0", "127.0.0.1", "224.0.0.5",
                                                          "240.0.0.1"))]
    with running(router_cfg(file_prefix, tmp_path)) as dp:
        r = Router(dp)
        r.send(*bad6, *bad4, udp6(src="fe80::99", seq=20))
        snap = r.settle()
        drops = {k: v for k, v in snap.totals["drops"].items() if v}
        # the error goes back to the link-local source on lan, whose ring loops
        # it into our own rx, addressed to the host's MAC: l2_other_host
        assert drops == {"ip6_bad_src": 4, "ip4_bad_src": 4, "l2_other_host": 1}
        st6 = r.stats()
        assert st6["punts"]["scope"] == 1 and st6["created"] == 0
        assert r.sp.stats["icmp_unreachable"] == 1
        assert snap.ports["wan"]["tx"] == 0 and conserved(snap)


def test_invalidate_frees_every_flow_and_the_next_packet_recreates(tmp_path, file_prefix):
    with running(router_cfg(file_prefix, tmp_path)) as dp:
        r = Router(dp)
        r.send(*[udp6(dst=f"2001:db8:99::{i}", seq=i) for i in range(1, 4)])
        r.send(*[udp4(dst=f"10.99.0.{i}", seq=10 + i) for i in range(1, 3)])
        r.settle()
        r.flows(3)
        r.flows(2, "ipv4")
        assert r.ctl.invalidate() == 5
        assert r.ctl.show("ipv6") == [] and r.ctl.show("ipv4") == []
        st6, st4 = r.stats(), r.stats("ipv4")
        assert (st6["flows"], st6["invalidated"], st4["flows"], st4["invalidated"]) == (0, 3, 0, 2)
        r.send(udp6(dst="2001:db8:99::1", seq=20), udp6(dst="2001:db8:99::1", seq=21),
               udp4(dst="10.99.0.1", seq=22))
        snap = r.settle()
        st6, st4 = r.stats(), r.stats("ipv4")
        assert (st6["forward"], st6["fastforward"], st6["created"]) == (4, 1, 4)
        assert (st4["forward"], st4["fastforward"], st4["created"]) == (3, 0, 3)
        r.flows(1)
        r.flows(1, "ipv4")
        assert r.ctl.invalidate() == 2
        assert snap.ports["wan"]["tx"] == 8 and conserved(snap)


# ---- 11b. per-flow counters ------------------------------------------------------

def test_freed_flows_fold_their_uses_into_the_stage_counter(tmp_path, file_prefix):
    """`uses` counts the fast-forwarded packets of freed flows (the seed's
    ip6flow_addstats), however a flow is freed: invalidate, or a flush by a
    new hash size."""
    with running(router_cfg(file_prefix, tmp_path)) as dp:
        r = Router(dp)
        for rnd in range(2):
            for i in (1, 2):                             # 2 flows: 1 forward + 2 hits each
                r.send(*[nth_flow(i, 10 * rnd + i) for _ in range(3)])
            r.settle()
            assert sorted(f["uses"] for f in r.ctl.show()) == [2, 2]
            if rnd == 0:
                assert r.ctl.invalidate() == 2
                assert r.stats()["uses"] == 4
            else:
                r.ctl.set_hashsize(32)
                assert r.stats()["flows"] == 0 and r.ctl.show() == []
        snap = r.settle()
        st = r.stats()
        assert (st["fastforward"], st["invalidated"]) == (8, 4)
        assert conserved(snap)
    assert st["uses"] == 8


# ---- 12. neighbour resolution through the slow path -------------------------------

def test_unresolved_gateway_is_solicited_and_the_answer_releases_the_held_packet(
        tmp_path, file_prefix):
    """wan2 is a looped net_ring: what the router sends there comes back in,
    so the NA (ARP reply) the test injects arrives on wan2 like a real one.
    What the slow path sends is recorded (Router.slow_sent); what the fast
    path forwards to the gateway's MAC loops back and drops as l2_other_host.
    The slow path's clock is frozen so it never retransmits a solicitation."""
    with running(router_cfg(file_prefix, tmp_path, wan2=True)) as dp:
        r = Router(dp, rings=("lan", "wan2"))
        now = r.sp.clock()
        r.sp.clock = lambda: now
        wan2 = dp.port("wan2")
        mac = wan2.info.mac
        # IPv6: NS to the solicited-node group, NA, the held packet goes
        held = udp6(dst=GW6_DST, seq=0)
        r.send(held)
        r.settle()
        st = r.stats()
        assert (st["punts"]["resolve"], st["forward"]) == (1, 0)
        assert (r.sp.stats["held"], r.sp.stats["ns_sent"]) == (1, 1)
        assert (r.sp.pending_neighbours, r.sp.held_packets) == (1, 1)
        [(pid, ns_frame)] = r.slow_sent
        assert pid == wan2.port_id
        ns = Ether(ns_frame)
        assert (ns[Ether].dst, ns[Ether].src) == ("33:33:ff:00:00:02", mac)
        assert (ns[IPv6].src, ns[IPv6].dst, ns[IPv6].hlim) == ("2001:db8:4::1", "ff02::1:ff00:2",
                                                                255)
        assert ns[ICMPv6ND_NS].tgt == "2001:db8:4::2"
        assert ns[ICMPv6NDOptSrcLLAddr].lladdr == mac
        assert icmp6_checksum_ok(ns)
        # the NS came back in on wan2 (looped): a multicast punt, not for us
        assert st["punts"]["multicast"] == 1 and r.sp.stats["ndp_ignored"] == 1
        na = (Ether(dst=mac, src=GW_MAC)
              / IPv6(src="2001:db8:4::2", dst="2001:db8:4::1", hlim=255)
              / ICMPv6ND_NA(R=1, S=1, O=1, tgt="2001:db8:4::2")
              / ICMPv6NDOptDstLLAddr(lladdr=GW_MAC))
        r.send(na, port="wan2")
        r.settle()
        assert r.stats()["punts"]["local"] == 1
        assert (r.sp.stats["na_received"], r.sp.stats["neighbours_learned"]) == (1, 1)
        assert r.sp.stats["released_slow_forwarded"] == 1 and r.sp.pending_neighbours == 0
        assert {n["address"]: n["mac"] for n in r.ctl.neighbours()}["2001:db8:4::2"] == GW_MAC
        [(pid, out)] = r.slow_sent[1:]
        assert pid == wan2.port_id
        assert_forwarded6(Ether(out), held, GW_MAC, "wan2")
        r.send(*[udp6(dst=GW6_DST, seq=i) for i in range(1, 5)])    # route path once, then cache
        r.settle()
        st = r.stats()
        assert (st["forward"], st["fastforward"], st["created"]) == (1, 3, 1)
        assert len(r.slow_sent) == 2
        # IPv4: ARP request (broadcast), ARP reply, the held packet goes
        held4 = udp4(dst=GW4_DST, seq=10)
        r.send(held4)
        r.settle()
        assert r.stats("ipv4")["punts"]["resolve"] == 1
        assert (r.sp.stats["held"], r.sp.stats["arp_requests_sent"]) == (2, 1)
        [(pid, req_frame)] = r.slow_sent[2:]
        req = Ether(req_frame)
        assert pid == wan2.port_id and (req[Ether].dst, req[Ether].src) == (BROADCAST, mac)
        assert (req[ARP].op, req[ARP].hwsrc, req[ARP].psrc, req[ARP].pdst) == \
            (1, mac, "198.18.0.1", "198.18.0.2")
        # the request came back in on wan2: ARP from our own address, ignored
        assert r.stats("ipv4")["punts"]["arp"] == 1 and r.sp.stats["arp_ignored"] == 1
        reply = Ether(dst=mac, src=GW_MAC) / ARP(op=2, hwsrc=GW_MAC, psrc="198.18.0.2",
                                                 hwdst=mac, pdst="198.18.0.1")
        r.send(reply, port="wan2")
        r.settle()
        assert r.sp.stats["arp_learned"] == 1 and r.sp.stats["released_slow_forwarded"] == 2
        [(pid, out)] = r.slow_sent[3:]
        assert pid == wan2.port_id
        assert_forwarded4(Ether(out), held4, GW_MAC, "wan2")
        r.send(*[udp4(dst=GW4_DST, seq=i) for i in range(11, 14)])
        snap = r.settle()
        st4 = r.stats("ipv4")
        assert (st4["forward"], st4["fastforward"], st4["created"]) == (1, 2, 1)
        assert len(r.slow_sent) == 4
        # everything sent to the gateway looped back and is not for us
        assert snap.totals["drops"] == {**dict.fromkeys(snap.totals["drops"], 0),
                                        "l2_other_host": 5 + 4}
        # NS, NA, released, 4 forwarded; ARP request, reply, released, 3 forwarded
        assert snap.ports["wan2"]["tx"] == 7 + 6
        assert conserved(snap)


def test_a_silent_learnt_neighbour_is_polled_then_forgotten_and_resolves_again(
        tmp_path, file_prefix):
    """Neighbour unreachability detection with the real route table: the
    gateway learnt on wan2 from an NA goes quiet; past neighbour_reachable_s
    the slow path (its clock driven by the test, its timer the monitor's)
    polls it three times by unicast NS, then forgets it: the host route and
    the cached flow go, and the next packet is punted to resolve again."""
    cfg = router_cfg(file_prefix, tmp_path, wan2=True,
                     extra="neighbour_reachable_s = 30")
    with running(cfg) as dp:
        r = Router(dp, rings=("lan", "wan2"))
        now = [r.sp.clock()]
        r.sp.clock = lambda: now[0]
        wan2 = dp.port("wan2")
        mac = wan2.info.mac
        na = (Ether(dst=mac, src=GW_MAC)
              / IPv6(src="2001:db8:4::2", dst="2001:db8:4::1", hlim=255)
              / ICMPv6ND_NA(R=1, S=0, O=1, tgt="2001:db8:4::2")
              / ICMPv6NDOptDstLLAddr(lladdr=GW_MAC))
        r.send(na, port="wan2")
        r.settle()
        assert r.sp.stats["neighbours_learned"] == 1
        r.send(*[udp6(dst=GW6_DST, seq=i) for i in range(3)])
        r.settle()
        assert (r.stats()["forward"], r.stats()["fastforward"]) == (1, 2)
        r.flows(1)

        def probes():
            return [Ether(f) for pid, f in r.slow_sent if pid == wan2.port_id
                    and ICMPv6ND_NS in Ether(f)]
        for n in (1, 2, 3):
            now[0] += 30 if n == 1 else 1.0
            assert wait_for(lambda n=n: len(probes()) == n), r.sp.stats
        for ns in probes():
            assert (ns[Ether].dst, ns[IPv6].dst, ns[ICMPv6ND_NS].tgt) == \
                (GW_MAC, "2001:db8:4::2", "2001:db8:4::2")
        now[0] += 1.0
        assert wait_for(lambda: r.sp.stats["neighbours_expired"] == 1), r.sp.stats
        assert "2001:db8:4::2" not in {n["address"] for n in r.ctl.neighbours()}
        r.flows(0)  # the host route went: the generation moved and the flow was swept
        r.send(udp6(dst=GW6_DST, seq=9))
        r.settle()
        assert r.stats()["punts"]["resolve"] == 1 and r.sp.stats["held"] == 1
        assert r.sp.stats["nud_probes_sent"] == 3


# ---- 9. punts: policed per reason in C, handled on the slow path's own thread ------

POLICE_HOP_LIMIT = """
[slowpath]
source_share = 1.0
[slowpath.police]
hop_limit = { rate = 1, burst = 5 }
"""


def test_punts_over_their_reasons_rate_are_dropped_in_c_and_counted(tmp_path, file_prefix, clock):
    """The manual clock stands still: a bucket of 5 lets 5 through, the rest
    are policed; 2 s later, 2 more tokens (rate 1/s); a live change of the
    rate takes effect at the next punt. Other reasons keep their own buckets."""
    threads = set()
    with running(router_cfg(file_prefix, tmp_path, top=POLICE_HOP_LIMIT),
                 before_start=lambda dp: dp.on_punt(
                     lambda *a: threads.add(threading.current_thread().name))) as dp:
        r = Router(dp)
        r.send(*[udp6(hlim=1, seq=i) for i in range(30)], *[udp4(ttl=1, seq=100 + i) for i in range(20)])
        snap = r.settle()
        w = snap.workers[0]
        assert (w["punts"]["hop_limit"], w["punt_policed"]["hop_limit"]) == (5, 45)
        assert snap.totals["drops"]["punt_policed"] == 45 and snap.totals["punted"] == 5
        assert r.sp.stats["icmp_time_exceeded"] == 5
        # neighbour discovery is not starved by the storm: its own bucket
        r.send(Ether(dst="33:33:ff:00:00:01", src=BACK_MAC) / IPv6(src="fe80::99", dst="ff02::1:ff00:1", hlim=255)
               / ICMPv6ND_NS(tgt=LAN6) / ICMPv6NDOptSrcLLAddr(lladdr=BACK_MAC))
        snap = r.settle()
        assert snap.workers[0]["punts"]["multicast"] == 1 and r.sp.stats["na_sent"] == 1

        native.clock_set_manual(T0_NS + 2_000_000_000)
        r.send(*[udp6(hlim=1, seq=200 + i) for i in range(10)])
        snap = r.settle()
        assert (snap.workers[0]["punts"]["hop_limit"], snap.workers[0]["punt_policed"]["hop_limit"]) == (7, 53)

        dp.set_punt_police(SlowPathConfig(source_share=1.0,
                                          police=PuntPolice(hop_limit=PuntPolicer(rate=1000, burst=1000))))
        native.clock_set_manual(T0_NS + 3_000_000_000)
        r.send(*[udp6(hlim=1, seq=300 + i) for i in range(10)])
        snap = r.settle()
        assert (snap.workers[0]["punts"]["hop_limit"], snap.workers[0]["punt_policed"]["hop_limit"]) == (17, 53)
        assert sum(snap.totals["drops"].values()) == snap.totals["dropped"] and conserved(snap)
    assert threads == {"dp-slowpath"}, "punts are handled on the slow path's own thread only"


def test_one_sources_storm_leaves_the_rest_of_a_reasons_rate_to_the_others(tmp_path, file_prefix, clock):
    """source_share 0.25 of a bucket of 8: a host flooding hop-limit-1 packets
    gets 2 through, then is dropped before it takes the reason's tokens; a
    traceroute from another host still gets its 2 (and so would 2 more)."""
    share = """
[slowpath]
source_share = 0.25
[slowpath.police]
hop_limit = { rate = 1, burst = 8 }
"""
    with running(router_cfg(file_prefix, tmp_path, top=share)) as dp:
        r = Router(dp)
        r.send(*[udp6(hlim=1, seq=i) for i in range(30)])                       # SRC6's storm
        r.send(*[udp6(src="2001:db8:1::77", hlim=1, seq=100 + i) for i in range(3)])  # another host
        snap = r.settle()
        w = snap.workers[0]
        assert (w["punts"]["hop_limit"], w["punt_policed"]["hop_limit"]) == (4, 29)
        te = [IPv6(f)[IPv6].dst for port, f in ((p, f[14:]) for p, f in r.slow_sent)]
        assert sorted(te) == sorted([SRC6] * 2 + ["2001:db8:1::77"] * 2), te


# ---- 10. neighbour floods: a bounded table, nothing leaked ------------------------

OPEN_POLICE = """
[slowpath]
source_share = 1.0
[slowpath.police]
multicast = { rate = 1000000, burst = 100000 }
arp = { rate = 1000000, burst = 100000 }
local = { rate = 1000000, burst = 100000 }
"""


def ns_from(i: int):
    """A neighbour solicitation for our lan address from a new host i."""
    mac = f"02:aa:00:00:{i >> 8 & 255:02x}:{i & 255:02x}"
    src = f"2001:db8:1::{0x1000 + i:x}"
    return (Ether(dst="33:33:ff:00:00:01", src=mac) / IPv6(src=src, dst="ff02::1:ff00:1", hlim=255)
            / ICMPv6ND_NS(tgt=LAN6) / ICMPv6NDOptSrcLLAddr(lladdr=mac))


def arp_from(i: int):
    mac = f"02:bb:00:00:{i >> 8 & 255:02x}:{i & 255:02x}"
    return Ether(dst="ff:ff:ff:ff:ff:ff", src=mac) / ARP(op=1, hwsrc=mac, psrc=f"192.0.2.{10 + i}",
                                                          pdst=LAN4)


def test_a_neighbour_flood_fills_the_table_to_its_bound_and_leaks_nothing(tmp_path, file_prefix):
    """240 new IPv6 and 200 new IPv4 hosts announce themselves (NS, ARP for our
    address) to a router that keeps 16 learnt neighbours: the table stays at
    16, the oldest make room, every one is answered, no next hop is lost, and
    routes can still be added."""
    with running(router_cfg(file_prefix, tmp_path, top=OPEN_POLICE, extra="max_neighbours = 16\n")) as dp:
        r = Router(dp)
        before = r.ctl.stats()["neighbours"]
        in_use = sum(p["in_use"] for p in r.settle().pools)
        r.send(*[ns_from(i) for i in range(240)], *[arp_from(i) for i in range(200)])
        assert sum(p["in_use"] for p in r.settle().pools) == in_use   # every mbuf back
        n = r.ctl.stats()["neighbours"]
        assert (n["learnt"], n["max_neighbours"], n["refused"]) == (16, 16, 0), n
        assert n["evicted"] == 440 - 16, n
        assert n["nexthops_free"] == before["nexthops_free"] - 16, (before, n)  # no leak
        assert r.sp.stats["na_sent"] == 240 and r.sp.stats["arp_replies_sent"] == 200
        learnt = [x for x in r.ctl.neighbours() if not x["static"]]
        assert {x["address"] for x in learnt} == {f"192.0.2.{10 + i}" for i in range(184, 200)}
        r.ctl.route_add("2001:db8:55::/48", via="2001:db8:2::2")
        r.ctl.route_add("10.55.0.0/16", via="198.51.100.2")
        r.send(udp6(dst="2001:db8:55::1", seq=1))
        snap = r.settle()
        assert snap.ports["wan"]["tx"] == 1 and conserved(snap)


def test_a_neighbour_the_fib_has_no_room_for_is_refused_and_leaks_nothing(tmp_path, file_prefix, caplog):
    """IPv6 neighbours spread over many /64s each take their own trie groups:
    with ipv6_tbl8 small the FIB fills before max_neighbours. The rest are
    refused (counted, one rate-limited warning, no traceback), their next
    hops are not lost, and IPv4 still learns."""
    with running(router_cfg(file_prefix, tmp_path, top=OPEN_POLICE,
                            extra="max_neighbours = 40\nipv6_tbl8 = 128\n")) as dp:
        r = Router(dp)
        before = r.ctl.stats()["neighbours"]
        link_local = [Ether(dst="33:33:ff:00:00:01", src=f"02:cc:00:00:00:{i:02x}")
                      / IPv6(src=f"fe80::{i:x}:{i:x}:{i:x}:{i + 1:x}", dst="ff02::1:ff00:1", hlim=255)
                      / ICMPv6ND_NS(tgt=LAN6) / ICMPv6NDOptSrcLLAddr(lladdr=f"02:cc:00:00:00:{i:02x}")
                      for i in range(40)]
        r.send(*link_local, *[arp_from(i) for i in range(4)])
        r.settle()
        n = r.ctl.stats()["neighbours"]
        assert n["refused"] > 0 and n["learnt"] + n["refused"] == 44, n
        assert n["nexthops_free"] == before["nexthops_free"] - n["learnt"], (before, n)
        assert {f"192.0.2.{10 + i}" for i in range(4)} <= {x["address"] for x in r.ctl.neighbours()}
    refusals = [rec for rec in caplog.records if "not learnt" in rec.getMessage()]
    assert len(refusals) == 1 and refusals[0].exc_info is None


def test_evicted_neighbours_do_not_flush_the_cache_nor_lend_their_next_hop_to_a_cached_flow(
        tmp_path, file_prefix):
    """A flow cached to learnt neighbour X; a flood of new hosts evicts X and
    recycles next-hop ids. The router's generation (every cached flow
    revalidates at a bump) moves once per batch of evictions, not once per
    eviction, and X's flow is never forwarded through another neighbour: its
    next packet goes to resolution."""
    x_mac, x_ip = "02:dd:00:00:00:01", "2001:db8:1::dd"
    x_ns = (Ether(dst="33:33:ff:00:00:01", src=x_mac) / IPv6(src=x_ip, dst="ff02::1:ff00:1", hlim=255)
            / ICMPv6ND_NS(tgt=LAN6) / ICMPv6NDOptSrcLLAddr(lladdr=x_mac))
    with running(router_cfg(file_prefix, tmp_path, top=OPEN_POLICE, extra="max_neighbours = 16\n")) as dp:
        r = Router(dp)
        r.send(x_ns)
        r.settle()
        r.send(udp6(dst=x_ip, seq=1), udp6(dst=x_ip, seq=2))
        r.settle()
        st = r.stats()
        assert (st["forward"], st["fastforward"], st["created"]) == (1, 1, 1)
        gen = r.ctl.stats()["generation"]
        r.send(*[ns_from(i) for i in range(100)])
        r.settle()
        n = r.ctl.stats()["neighbours"]
        assert n["evicted"] == 100 + 1 - 16
        bumps = r.ctl.stats()["generation"] - gen
        assert 1 <= bumps <= n["evicted"] // 8, (bumps, n)   # batches, not one per eviction
        assert x_ip not in {x["address"] for x in r.ctl.neighbours()}
        r.send(udp6(dst=x_ip, seq=3))
        r.settle()
        st2 = r.stats()
        assert (st2["forward"], st2["fastforward"]) == (st["forward"], st["fastforward"])
        assert st2["punts"]["resolve"] == st["punts"]["resolve"] + 1
