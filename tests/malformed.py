"""A malformed-packet corpus, generated (scapy plus byte surgery), never stored.

Every kind is a function ``f(a: Addrs) -> list[bytes]`` registered under a
name with ``@kind``: the frames of one way a packet can be wrong (or odd but
legal), cut or patched so that exactly the named thing is wrong and the rest
is consistent (lengths, checksums), unless the kind is about them.
``corpus(a)`` builds them all, in registration order, for one set of
addresses (the router's MAC and routed prefixes, so the valid parts route).

What is covered: truncation at every header boundary (Ethernet, VLAN tag,
QinQ, IPv4, IPv6, IPv6 extension headers, TCP, UDP, ICMP, ICMPv6, ARP); IPv4
IHL < 5 / beyond the frame / beyond the total length, options (valid and
garbage), total length beyond the frame / below the header, bad checksum,
bad version; IPv6 payload length beyond the frame / short of the extension
chain / zero, long (20) and looping extension chains, fragment header first
and not first, hop-by-hop first and not first, unknown next headers, AH;
VLAN/QinQ stacks up to 8 tags (and tags to the end of the frame); TCP data
offset < 5 and beyond the packet; UDP length 0, < 8 and beyond; runts from
0 to 13 bytes; frames bigger than one mbuf (2200 bytes, 9000-byte jumbos:
``Kind.pcap_only``, since a frame only reaches the dataplane that large
through a PMD that chains mbufs, net_pcap here); ARP cut and garbage;
unknown ethertypes and 802.3 length frames; multicast, broadcast and other
hosts' MACs; ND/ICMP aimed at the router; legal oddities too (padding,
fragments, odd flags, checksums at the edges of the incremental update,
special source and destination addresses).

``valid(a, seq)`` is a well-formed UDP packet (IPv4 for even seq, IPv6 for
odd) whose payload carries ``MARK + seq``, so the ones that get out can be
found and counted in an output pcap; no corpus frame contains a mark.
``write_pcap`` writes frames byte-exact (0-byte records included), which
scapy's wrpcap does not do for every frame.
"""
from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass

from scapy.layers.inet import (
    ICMP,
    IP,
    TCP,
    UDP,
    IPOption_NOP,
    IPOption_Router_Alert,
    IPOption_RR,
    IPOption_Timestamp,
)
from scapy.layers.inet6 import (
    ICMPv6EchoRequest,
    ICMPv6ND_NA,
    ICMPv6ND_NS,
    ICMPv6ND_RA,
    ICMPv6NDOptSrcLLAddr,
    IPv6,
    IPv6ExtHdrHopByHop,
    IPv6ExtHdrRouting,
    RouterAlert,
)
from scapy.layers.l2 import ARP, Dot1AD, Dot1Q, Ether
from scapy.packet import Raw

MARKS = (b"VALID#", b"CANARY#")  # payload prefixes of the valid packets
INJECT_MAX = 2048                 # bytes dp.inject fits in one default mbuf (2176 - headroom)

ETH_IPV4, ETH_IPV6, ETH_ARP, ETH_VLAN, ETH_QINQ = 0x0800, 0x86DD, 0x0806, 0x8100, 0x88A8
NH_HOP, NH_TCP, NH_UDP, NH_ROUTING, NH_FRAG, NH_AH, NH_ICMP6, NH_NONE, NH_DSTOPT = (
    0, 6, 17, 43, 44, 51, 58, 59, 60)


@dataclass(frozen=True)
class Addrs:
    """Who the frames are to and from. The defaults match tests/vdev's router
    topology: sources in 2001:db8:77::/48 and 10.77.0.0/16, destinations in
    2001:db8:99::/48 and 10.99.0.0/16, the router 2001:db8:1::1 / 192.0.2.1."""
    dst_mac: str = "02:00:00:00:00:02"       # the receiving port (the router's MAC)
    src_mac: str = "02:00:00:00:11:11"
    other_mac: str = "02:00:00:00:99:99"     # some other host on the segment
    src4: str = "10.77.0.5"
    dst4: str = "10.99.0.1"
    src6: str = "2001:db8:77::5"
    dst6: str = "2001:db8:99::1"
    router4: str = "192.0.2.1"               # the receiving interface's addresses
    router6: str = "2001:db8:1::1"


@dataclass(frozen=True)
class Kind:
    name: str
    doc: str
    frames: tuple[bytes, ...]

    @property
    def pcap_only(self) -> bool:
        """Frames too big for one mbuf: only a PMD that chains mbufs can
        deliver them (net_pcap does), dp.inject cannot."""
        return any(len(f) > INJECT_MAX for f in self.frames)


KINDS: dict[str, tuple[str, Callable[[Addrs], list[bytes]]]] = {}


def kind(name: str, doc: str):
    def register(fn: Callable[[Addrs], list[bytes]]):
        assert name not in KINDS, name
        KINDS[name] = (doc, fn)
        return fn
    return register


def corpus(a: Addrs = Addrs()) -> list[Kind]:
    out = []
    for name, (doc, fn) in KINDS.items():
        frames = tuple(bytes(f) for f in fn(a))
        assert frames, name
        for f in frames:
            assert not any(m in f for m in MARKS), name
        out.append(Kind(name, doc, frames))
    return out


def valid(a: Addrs, seq: int, mark: bytes = MARKS[0], size: int = 0) -> bytes:
    """A well-formed, routable UDP packet carrying mark + seq."""
    body = (mark + b"%08d|" % seq).ljust(size, b".")
    ip = (IP(src=a.src4, dst=a.dst4) if seq % 2 == 0 else IPv6(src=a.src6, dst=a.dst6))
    return bytes(Ether(dst=a.dst_mac, src=a.src_mac) / ip / UDP(sport=4000, dport=5000) / body)


def marks_in(frames, mark: bytes = MARKS[0]) -> list[int]:
    """The sequence numbers of the valid packets among frames, in order."""
    out = []
    for f in frames:
        i = f.find(mark)
        if i >= 0:
            out.append(int(f[i + len(mark):i + len(mark) + 8]))
    return out


def write_pcap(path, frames) -> None:
    """Byte-exact classic pcap (Ethernet linktype), one record per frame."""
    with open(path, "wb") as f:
        f.write(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1))
        for i, fr in enumerate(frames):
            f.write(struct.pack("<IIII", 1_000_000 + i // 1000, i % 1000 * 1000, len(fr), len(fr)))
            f.write(fr)


def read_pcap(path) -> list[bytes]:
    """Frames of a classic pcap as captured (caplen bytes)."""
    data = open(path, "rb").read()
    magic = struct.unpack_from("<I", data)[0]
    end = "<" if magic in (0xA1B2C3D4, 0xA1B23C4D) else ">"
    off, out = 24, []
    while off + 16 <= len(data):
        _, _, caplen, _ = struct.unpack_from(end + "IIII", data, off)
        out.append(data[off + 16:off + 16 + caplen])
        off += 16 + caplen
    return out


# ---- builders --------------------------------------------------------------------

def eth(a: Addrs, type: int | None = None, dst: str | None = None, src: str | None = None):
    e = Ether(dst=dst or a.dst_mac, src=src or a.src_mac)
    if type is not None:
        e.type = type
    return e


def udp4(a: Addrs, payload: bytes = b"u" * 18, dst: str | None = None, mac: str | None = None,
         **ip) -> bytes:
    return bytes(eth(a, dst=mac) / IP(src=a.src4, dst=dst or a.dst4, **ip) /
                 UDP(sport=1111, dport=2222) / payload)


def udp6(a: Addrs, payload: bytes = b"u" * 18, dst: str | None = None, mac: str | None = None,
         **ip) -> bytes:
    return bytes(eth(a, dst=mac) / IPv6(src=a.src6, dst=dst or a.dst6, **ip) /
                 UDP(sport=1111, dport=2222) / payload)


def l4_6(a: Addrs, l4) -> bytes:
    """An upper-layer header with its checksum for a.src6 -> a.dst6 (no IPv6 header)."""
    return bytes(IPv6(src=a.src6, dst=a.dst6) / l4)[40:]


def ip6_raw(a: Addrs, nh: int, payload: bytes, plen: int | None = None, dst: str | None = None,
            mac: str | None = None, **ip) -> bytes:
    """An IPv6 packet with an explicit next header and raw payload (extension
    headers built by hand); plen defaults to the payload's length."""
    return bytes(eth(a, dst=mac) / IPv6(src=a.src6, dst=dst or a.dst6, nh=nh,
                                        plen=len(payload) if plen is None else plen, **ip) /
                 Raw(payload))


def ext(nh: int, hlen: int = 0) -> bytes:
    """A destination-options-shaped extension header: next header, length
    (8-octet units beyond the first 8), then one PadN filling it."""
    size = 8 * (hlen + 1)
    pad = size - 4
    return bytes([nh, hlen, 1, min(pad, 255)]) + bytes(size - 4)


def frag6(nh: int, offset: int = 0, m: int = 0, ident: int = 0x1234) -> bytes:
    return bytes([nh, 0]) + struct.pack("!HI", (offset << 3) | m, ident)


def patch(frame: bytes, off: int, new: bytes) -> bytes:
    return frame[:off] + new + frame[off + len(new):]


def ip4_csum(hdr: bytes) -> int:
    if len(hdr) % 2:
        hdr += b"\0"
    s = sum(struct.unpack("!%dH" % (len(hdr) // 2), hdr))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return ~s & 0xFFFF


def refix4(frame: bytes, l3: int = 14) -> bytes:
    """Recompute the IPv4 header checksum after patching (as far as the
    header is present and its IHL is sane)."""
    ihl = (frame[l3] & 0xF) * 4
    if ihl < 20 or l3 + ihl > len(frame):
        ihl = 20
    hdr = bytearray(frame[l3:l3 + ihl])
    hdr[10:12] = b"\0\0"
    return patch(frame, l3 + 10, struct.pack("!H", ip4_csum(bytes(hdr))))


def tagged(a: Addrs, tags: list[int], inner: bytes) -> bytes:
    """Ethernet with a stack of tags (each TPID given) around inner (from the
    inner ethertype on, i.e. a frame[12:] of an untagged frame)."""
    out = bytes(eth(a))[:12]
    for i, tpid in enumerate(tags):
        out += struct.pack("!HH", tpid, 100 + i)
    return out + inner


# ---- Ethernet, sizes -------------------------------------------------------------

@kind("runt_empty", "a 0-byte frame")
def _runt_empty(a):
    return [b""]


@kind("runt_1_to_13", "1..13 bytes: Ethernet header cut at every byte")
def _runt_short(a):
    f = udp4(a)
    return [f[:n] for n in range(1, 14)]


@kind("eth_header_only", "exactly 14 bytes: IPv4, IPv6, ARP, VLAN, QinQ ethertypes, nothing after")
def _eth_only(a):
    return [bytes(eth(a, type=t)) for t in (ETH_IPV4, ETH_IPV6, ETH_ARP, ETH_VLAN, ETH_QINQ)]


@kind("vlan_tag_truncated", "802.1Q tag cut: 15..17 bytes, then the tag without any IPv4")
def _vlan_cut(a):
    f = tagged(a, [ETH_VLAN], udp4(a)[12:])
    return [f[:n] for n in (15, 16, 17, 18)]


@kind("qinq_truncated", "802.1ad + 802.1Q cut inside either tag and right after them")
def _qinq_cut(a):
    f = tagged(a, [ETH_QINQ, ETH_VLAN], udp6(a)[12:])
    return [f[:n] for n in range(15, 23)]


@kind("vlan_single_valid", "one 802.1Q tag around IPv4/UDP and IPv6/UDP (legal)")
def _vlan_ok(a):
    return [tagged(a, [ETH_VLAN], udp4(a)[12:]), tagged(a, [ETH_VLAN], udp6(a)[12:]),
            bytes(eth(a) / Dot1Q(vlan=7) / IP(src=a.src4, dst=a.dst4) / TCP(flags="S"))]


@kind("qinq_valid", "802.1ad outer + 802.1Q inner around IPv4 and IPv6 (legal)")
def _qinq_ok(a):
    return [bytes(eth(a) / Dot1AD(vlan=10) / Dot1Q(vlan=20) / IP(src=a.src4, dst=a.dst4) /
                  UDP(sport=1, dport=2) / (b"q" * 10)),
            tagged(a, [ETH_QINQ, ETH_VLAN], udp6(a)[12:])]


@kind("vlan_stack_4_and_5", "4 tags (netflow's limit) and 5 tags around IPv4/UDP")
def _vlan_45(a):
    return [tagged(a, [ETH_VLAN] * 4, udp4(a)[12:]), tagged(a, [ETH_VLAN] * 5, udp4(a)[12:])]


@kind("vlan_stack_8", "8 stacked tags (QinQ then 802.1Q) around IPv4 and IPv6")
def _vlan_8(a):
    return [tagged(a, [ETH_QINQ] + [ETH_VLAN] * 7, udp4(a)[12:]),
            tagged(a, [ETH_VLAN] * 8, udp6(a)[12:])]


@kind("vlan_tags_to_the_end", "tags and nothing else until the frame ends (30 and 372 tags)")
def _vlan_forever(a):
    return [tagged(a, [ETH_VLAN] * 29, struct.pack("!HH", ETH_VLAN, 1)),
            tagged(a, [ETH_QINQ, ETH_VLAN] * 186, b"")]


@kind("ethertype_unknown", "unknown and non-IP ethertypes with 46-byte payloads (LLDP, MPLS, 0x88B5...)")
def _ethertype(a):
    return [bytes(eth(a, type=t) / Raw(bytes(range(46)))) for t in
            (0x88B5, 0x1234, 0xFFFF, 0x88CC, 0x8847, 0x0600, 0x86DE)]


@kind("ieee8023_length", "802.3 frames: a length (< 0x600) where the ethertype goes, LLC/SNAP")
def _llc(a):
    return [bytes(eth(a, type=46) / Raw(b"\xaa\xaa\x03\x00\x00\x00\x08\x00" + bytes(38))),
            bytes(eth(a, type=0) / Raw(bytes(46))),
            bytes(eth(a, type=0x05DC) / Raw(b"\x42\x42\x03" + bytes(43)))]


@kind("mac_multicast", "IPv4/IPv6 unicast inside a multicast destination MAC")
def _mac_mcast(a):
    return [udp4(a, mac="01:00:5e:00:00:01"), udp6(a, mac="33:33:00:00:00:01"),
            udp4(a, mac="01:80:c2:00:00:0e")]


@kind("mac_broadcast", "IPv4/IPv6 unicast inside a broadcast destination MAC")
def _mac_bcast(a):
    return [udp4(a, mac="ff:ff:ff:ff:ff:ff"), udp6(a, mac="ff:ff:ff:ff:ff:ff")]


@kind("mac_other_host", "unicast frames to another host's MAC")
def _mac_other(a):
    return [udp4(a, mac=a.other_mac), udp6(a, mac=a.other_mac),
            bytes(eth(a, dst=a.other_mac) / ARP(op=1, psrc=a.src4, pdst=a.router4))]


@kind("mac_source_multicast", "a multicast (group bit) source MAC, otherwise valid")
def _mac_src(a):
    return [bytes(eth(a, src="01:00:5e:7f:00:01") / IP(src=a.src4, dst=a.dst4) / UDP()),
            bytes(eth(a, src="ff:ff:ff:ff:ff:ff") / IPv6(src=a.src6, dst=a.dst6) / UDP())]


# ---- ARP -------------------------------------------------------------------------

@kind("arp_truncated", "an ARP request for the router cut at 0..24 bytes of the 28")
def _arp_cut(a):
    f = bytes(eth(a, dst="ff:ff:ff:ff:ff:ff") /
              ARP(op=1, hwsrc=a.src_mac, psrc=a.src4, pdst=a.router4))
    return [f[:14 + n] for n in (0, 1, 4, 7, 8, 14, 20, 24, 27)]


@kind("arp_garbage", "ARP with odd hardware/protocol types and lengths, opcode 99, 0.0.0.0")
def _arp_bad(a):
    bc = "ff:ff:ff:ff:ff:ff"
    return [bytes(eth(a, dst=bc) / ARP(hwtype=6, op=1, psrc=a.src4, pdst=a.router4)),
            bytes(eth(a, dst=bc) / ARP(hwlen=0, plen=16, op=1, psrc=a.src4, pdst=a.router4)),
            bytes(eth(a, dst=bc) / ARP(ptype=0x86DD, op=1, psrc=a.src4, pdst=a.router4)),
            bytes(eth(a, dst=bc) / ARP(op=99, psrc=a.src4, pdst=a.router4)),
            bytes(eth(a) / ARP(op=2, hwsrc=a.src_mac, psrc="0.0.0.0", pdst=a.router4)),
            bytes(eth(a, dst=bc) / ARP(op=1, psrc=a.router4, pdst=a.router4))]


# ---- IPv4 ------------------------------------------------------------------------

@kind("ipv4_truncated", "IPv4 header cut at every byte: 0..19 bytes after Ethernet")
def _ip4_cut(a):
    f = udp4(a)
    return [f[:14 + n] for n in range(20)]


@kind("ipv4_ihl_below_5", "IHL 0..4 (a header shorter than 20 bytes)")
def _ihl_small(a):
    f = udp4(a)
    return [refix4(patch(f, 14, bytes([0x40 | ihl]))) for ihl in range(5)]


@kind("ipv4_ihl_beyond_frame", "IHL 6..15 with only the 20-byte header (and 4 bytes) in the frame")
def _ihl_big(a):
    f = bytes(eth(a) / IP(src=a.src4, dst=a.dst4, proto=17))
    return [refix4(patch(f, 14, bytes([0x40 | ihl])) + (b"\x01" * 4 if ihl == 15 else b""))
            for ihl in range(6, 16)]


@kind("ipv4_ihl_beyond_total_length", "IHL 15 (60 bytes of NOPs) but total length 20, 40, 59")
def _ihl_tlen(a):
    out = []
    for tlen in (20, 40, 59):
        f = bytes(eth(a) / IP(src=a.src4, dst=a.dst4, options=[IPOption_NOP()] * 40) /
                  UDP(sport=1, dport=2) / (b"x" * 10))
        out.append(refix4(patch(f, 16, struct.pack("!H", tlen))))
    return out


@kind("ipv4_options_valid", "record route, router alert, timestamp, NOPs (legal options)")
def _opts_ok(a):
    def p(opts):
        return bytes(eth(a) / IP(src=a.src4, dst=a.dst4, options=opts) / UDP(sport=1, dport=2) /
                     (b"o" * 8))
    return [p([IPOption_RR(routers=["0.0.0.0"] * 3)]), p([IPOption_Router_Alert()]),
            p([IPOption_Timestamp(b"\x44\x0c\x05\x00" + bytes(8))]), p([IPOption_NOP()] * 4)]


@kind("ipv4_options_garbage", "options of length 0, 1, past the header; unknown types; no EOL")
def _opts_bad(a):
    out = []
    for opts in (b"\x07\x00\x00\x00",               # RR of length 0
                 b"\x07\x01\x00\x00",               # length 1
                 b"\x07\xff\x04\x00",               # length 255: past the header
                 b"\x83\x27\x04" + bytes(37),       # LSRR longer than the space
                 b"\x9e\x04\x00\x00" * 2,           # unknown type 0x9e
                 b"\x44\x04\x05\x00",               # timestamp with pointer < 5
                 bytes([0xA5] * 40)):               # 40 bytes of noise
        ihl = 5 + len(opts) // 4
        f = bytes(eth(a) / IP(src=a.src4, dst=a.dst4, ihl=ihl, proto=17) / Raw(opts) /
                  UDP(sport=1, dport=2) / (b"g" * 8))
        out.append(refix4(f))
    return out


@kind("ipv4_total_length_beyond_frame", "total length frame + 1, + 100, 65535")
def _tlen_big(a):
    f = udp4(a)
    real = len(f) - 14
    return [refix4(patch(f, 16, struct.pack("!H", t))) for t in (real + 1, real + 100, 65535)]


@kind("ipv4_total_length_below_header", "total length 0, 1, 19 (< the 20-byte header)")
def _tlen_small(a):
    f = udp4(a)
    return [refix4(patch(f, 16, struct.pack("!H", t))) for t in (0, 1, 19)]


@kind("ipv4_total_length_header_only", "total length 20 with a UDP header after it (padding)")
def _tlen_20(a):
    f = udp4(a)
    return [refix4(patch(f, 16, struct.pack("!H", 20)))]


@kind("ipv4_bad_checksum", "header checksum 0, 0xffff, off by one")
def _csum(a):
    f = udp4(a)
    good = struct.unpack_from("!H", f, 24)[0]
    return [patch(f, 24, struct.pack("!H", c)) for c in (0, 0xFFFF if good != 0xFFFF else 1,
                                                          (good + 1) & 0xFFFF)]


@kind("ipv4_bad_version", "version 0, 6, 15 under the IPv4 ethertype")
def _ver4(a):
    f = udp4(a)
    return [refix4(patch(f, 14, bytes([v << 4 | 5]))) for v in (0, 6, 15)]


@kind("ipv4_padding", "Ethernet padding after the IP datagram (legal: frame > total length)")
def _pad4(a):
    return [udp4(a, payload=b"p" * 2) + bytes(20), udp4(a) + b"\xff" * 100]


@kind("ipv4_fragments", "first, middle, last, tiny (8 bytes of TCP) and max-offset fragments")
def _frag4(a):
    def fr(offset, mf, l4: bytes, proto=17):
        return bytes(eth(a) / IP(src=a.src4, dst=a.dst4, proto=proto, id=77, frag=offset,
                                 flags="MF" if mf else 0) / Raw(l4))
    udp = bytes(UDP(sport=1, dport=2, len=1000, chksum=0)) + b"f" * 32
    return [fr(0, 1, udp), fr(5, 1, b"m" * 40), fr(10, 0, b"l" * 40),
            fr(0, 1, bytes(TCP(sport=1, dport=2))[:8], proto=6), fr(8191, 0, b"z" * 8)]


@kind("ipv4_checksum_edges", "legal headers whose checksum is 0x0000, 0x00ff, 0xfeff, 0xff00, 0xfffe "
      "(the incremental update after the TTL decrement must still match a full recompute)")
def _csum_edges(a):
    def ones(words: int, add: int) -> int:
        s = words + add
        while s >> 16:
            s = (s & 0xFFFF) + (s >> 16)
        return s
    base = bytes(IP(src=a.src4, dst=a.dst4, id=0, chksum=0, proto=17, len=20 + 8 + 18))
    s0 = ones(sum(struct.unpack("!10H", base)), 0)
    out = []
    for want in (0x0000, 0x00FF, 0xFEFF, 0xFF00, 0xFFFE):
        # the id field adds to the one's complement sum: pick it so ~sum == want
        ident = (((~want & 0xFFFF) - s0) % 0xFFFF) or 0xFFFF
        f = udp4(a, id=ident)
        assert struct.unpack_from("!H", f, 24)[0] == want, (hex(want), ident)
        out.append(f)
    return out


@kind("ipv4_flags_odd", "reserved flag set, DF + MF, DF with an offset")
def _flags4(a):
    return [udp4(a, flags="evil"), udp4(a, flags="DF+MF"), udp4(a, flags="DF", frag=3)]


@kind("ipv4_special_sources", "source multicast, broadcast, 0.0.0.0, loopback, the router itself")
def _src4(a):
    return [bytes(eth(a) / IP(src=s, dst=a.dst4) / UDP(sport=1, dport=2) / b"s")
            for s in ("224.0.0.5", "255.255.255.255", "0.0.0.0", "127.0.0.1", a.router4)]


@kind("ipv4_ttl_expiring", "TTL 0 and 1")
def _ttl(a):
    return [udp4(a, ttl=0), udp4(a, ttl=1)]


@kind("ipv4_special_destinations", "multicast, limited broadcast, 0.0.0.0, loopback, the router, src == dst")
def _dst4(a):
    return [udp4(a, dst="224.0.0.1"), udp4(a, dst="255.255.255.255"), udp4(a, dst="0.0.0.0"),
            udp4(a, dst="127.0.0.1"), udp4(a, dst=a.router4),
            bytes(eth(a) / IP(src=a.dst4, dst=a.dst4) / UDP())]


@kind("ipv4_unknown_protocol", "protocol 0, 253, 255 with noise")
def _proto4(a):
    return [bytes(eth(a) / IP(src=a.src4, dst=a.dst4, proto=p) / Raw(b"\x5a" * 12))
            for p in (0, 253, 255)]


# ---- IPv6 ------------------------------------------------------------------------

@kind("ipv6_truncated", "IPv6 header cut: 0..39 bytes after Ethernet (every 3rd byte, and 39)")
def _ip6_cut(a):
    f = udp6(a)
    return [f[:14 + n] for n in list(range(0, 40, 3)) + [39]]


@kind("ipv6_bad_version", "version 0, 4, 15 under the IPv6 ethertype")
def _ver6(a):
    f = udp6(a)
    return [patch(f, 14, bytes([v << 4 | (f[14] & 0xF)])) for v in (0, 4, 15)]


@kind("ipv6_payload_length_beyond_frame", "payload length frame + 1, 1000, 65535")
def _plen_big(a):
    f = udp6(a)
    real = len(f) - 54
    return [patch(f, 18, struct.pack("!H", p)) for p in (real + 1, 1000, 65535)]


@kind("ipv6_payload_length_short_of_chain", "payload length ending inside the extension chain or UDP")
def _plen_chain(a):
    body = ext(NH_DSTOPT) + ext(NH_UDP) + l4_6(a, UDP(sport=1, dport=2) / (b"c" * 10))
    return [ip6_raw(a, NH_DSTOPT, body, plen=p) for p in (4, 8, 12, 16, 20)]


@kind("ipv6_payload_length_zero", "payload length 0 with a UDP datagram after the header (no jumbo option)")
def _plen_zero(a):
    return [ip6_raw(a, NH_UDP, l4_6(a, UDP(sport=1, dport=2) / (b"z" * 10)), plen=0),
            ip6_raw(a, NH_HOP, ext(NH_UDP) + l4_6(a, UDP() / b"z"), plen=0)]


@kind("ipv6_padding", "Ethernet padding after the IPv6 packet (legal: frame > 40 + payload length)")
def _pad6(a):
    return [udp6(a, payload=b"") + bytes(10), udp6(a) + b"\xee" * 64]


@kind("ipv6_hop_limit_expiring", "hop limit 0 and 1")
def _hlim(a):
    return [udp6(a, hlim=0), udp6(a, hlim=1)]


@kind("ipv6_ext_chain_8_and_9", "8 (netflow's limit) and 9 destination-options headers, then UDP")
def _chain89(a):
    udp = l4_6(a, UDP(sport=5, dport=6) / b"e")
    return [ip6_raw(a, NH_DSTOPT, b"".join(ext(NH_DSTOPT if i < n - 1 else NH_UDP)
                                          for i in range(n)) + udp) for n in (8, 9)]


@kind("ipv6_ext_chain_20", "20 extension headers (routing, dest-opts alternating), then UDP/TCP")
def _chain20(a):
    out = []
    for last in (NH_UDP, NH_TCP):
        chain = b""
        types = [NH_ROUTING if i % 2 else NH_DSTOPT for i in range(20)]
        for i, t in enumerate(types):
            nxt = types[i + 1] if i + 1 < len(types) else last
            chain += ext(nxt) if t == NH_DSTOPT else bytes([nxt, 0, 0, 0]) + bytes(4)
        l4 = l4_6(a, UDP(sport=5, dport=6) if last == NH_UDP else TCP(sport=5, dport=6))
        out.append(ip6_raw(a, types[0], chain + l4))
    return out


@kind("ipv6_ext_loop", "next headers pointing back at themselves until the packet ends "
      "(dest-opts -> dest-opts..., routing -> routing..., last one still says more)")
def _chain_loop(a):
    return [ip6_raw(a, NH_DSTOPT, ext(NH_DSTOPT) * 30),
            ip6_raw(a, NH_ROUTING, (bytes([NH_ROUTING, 0, 0, 0]) + bytes(4)) * 64),
            ip6_raw(a, NH_DSTOPT, ext(NH_DSTOPT, hlen=3) * 12),
            ip6_raw(a, NH_DSTOPT, ext(NH_DSTOPT) * 3, plen=8 * 300)[:14 + 40 + 24]]


@kind("ipv6_ext_truncated", "an extension header cut (0..7 of its 8 bytes), and one claiming 2048 bytes")
def _ext_cut(a):
    out = [ip6_raw(a, NH_DSTOPT, ext(NH_UDP)[:n]) for n in (0, 1, 2, 7)]
    out.append(ip6_raw(a, NH_DSTOPT, bytes([NH_UDP, 255]) + bytes(30)))
    out.append(ip6_raw(a, NH_ROUTING, bytes([NH_UDP, 255, 0, 0]) + bytes(4)))
    return out


@kind("ipv6_fragment_first", "fragment header first: first fragment, atomic, non-first, max offset")
def _frag6_first(a):
    udp = l4_6(a, UDP(sport=7, dport=8, len=800) / (b"F" * 32))
    return [ip6_raw(a, NH_FRAG, frag6(NH_UDP, 0, 1) + udp),
            ip6_raw(a, NH_FRAG, frag6(NH_UDP, 0, 0) + udp),
            ip6_raw(a, NH_FRAG, frag6(NH_UDP, 100, 1) + b"N" * 40),
            ip6_raw(a, NH_FRAG, frag6(NH_UDP, 8191, 0) + b"L" * 8),
            ip6_raw(a, NH_FRAG, frag6(NH_TCP, 0, 1) + l4_6(a, TCP(sport=1, dport=2))[:8])]


@kind("ipv6_fragment_not_first", "fragment header after dest-opts / routing, twice in a row")
def _frag6_later(a):
    udp = l4_6(a, UDP(sport=7, dport=8) / (b"F" * 16))
    return [ip6_raw(a, NH_DSTOPT, ext(NH_FRAG) + frag6(NH_UDP, 0, 1) + udp),
            ip6_raw(a, NH_ROUTING, bytes([NH_FRAG, 0, 0, 0]) + bytes(4) + frag6(NH_UDP, 3, 0) +
                    b"x" * 16),
            ip6_raw(a, NH_FRAG, frag6(NH_FRAG, 0, 1) + frag6(NH_UDP, 0, 1) + udp)]


@kind("ipv6_hop_by_hop_first", "hop-by-hop first: legal (router alert, padding) and with odd options")
def _hbh_first(a):
    udp = l4_6(a, UDP(sport=9, dport=9) / (b"h" * 8))
    return [bytes(eth(a) / IPv6(src=a.src6, dst=a.dst6) / IPv6ExtHdrHopByHop(options=[RouterAlert()]) /
                  UDP(sport=9, dport=9) / (b"h" * 8)),
            ip6_raw(a, NH_HOP, ext(NH_UDP) + udp),
            ip6_raw(a, NH_HOP, bytes([NH_UDP, 0, 0xC2, 4, 0, 1, 0, 0]) + udp),  # jumbo option, plen != 0
            ip6_raw(a, NH_HOP, bytes([NH_UDP, 0, 0x80, 4, 0, 0, 0, 0]) + udp),  # unknown, discard+ICMP
            ip6_raw(a, NH_HOP, bytes([NH_UDP, 0, 0x01, 200, 0, 0, 0, 0]) + udp)]  # PadN past the header


@kind("ipv6_hop_by_hop_not_first", "hop-by-hop after dest-opts / routing / itself")
def _hbh_later(a):
    udp = l4_6(a, UDP(sport=9, dport=9) / (b"h" * 8))
    return [ip6_raw(a, NH_DSTOPT, ext(NH_HOP) + ext(NH_UDP) + udp),
            ip6_raw(a, NH_ROUTING, bytes([NH_HOP, 0, 0, 0]) + bytes(4) + ext(NH_UDP) + udp),
            ip6_raw(a, NH_HOP, ext(NH_HOP) + ext(NH_UDP) + udp)]


@kind("ipv6_unknown_next_header", "next header 253, 254, 143, 59 (no next header) with noise; "
      "a chain ending in an unknown header")
def _nh_unknown(a):
    return [ip6_raw(a, nh, b"\x3c" * 16) for nh in (253, 254, 143, NH_NONE)] + \
        [ip6_raw(a, NH_DSTOPT, ext(200) + b"\x11" * 8)]


@kind("ipv6_ah", "authentication header of length 0, legal length, and claiming 1028 bytes")
def _ah(a):
    udp = l4_6(a, UDP(sport=3, dport=4) / b"a")
    return [ip6_raw(a, NH_AH, bytes([NH_UDP, 0, 0, 0]) + bytes(4) + udp),
            ip6_raw(a, NH_AH, bytes([NH_UDP, 4, 0, 0]) + bytes(20) + udp),
            ip6_raw(a, NH_AH, bytes([NH_UDP, 255, 0, 0]) + bytes(20) + udp)]


@kind("ipv6_routing_type0", "a deprecated type-0 routing header with segments left")
def _rh0(a):
    return [bytes(eth(a) / IPv6(src=a.src6, dst=a.dst6) /
                  IPv6ExtHdrRouting(type=0, segleft=1, addresses=["2001:db8:99::7"]) /
                  UDP(sport=1, dport=2) / b"r")]


@kind("ipv6_special_sources", "source multicast, ::, ::1, link-local, the router itself")
def _src6(a):
    return [bytes(eth(a) / IPv6(src=s, dst=a.dst6) / UDP(sport=1, dport=2) / b"s")
            for s in ("ff02::1", "::", "::1", "fe80::1", a.router6)]


@kind("ipv6_special_destinations", "multicast ff02::1 and ff05::2 in unicast MACs, ::, ::1, the router")
def _dst6(a):
    return [udp6(a, dst="ff02::1"), udp6(a, dst="ff05::2"), udp6(a, dst="::"),
            udp6(a, dst="::1"), udp6(a, dst=a.router6)]


# ---- transport -------------------------------------------------------------------

@kind("tcp_truncated", "TCP header cut at 0..19 bytes (IP length matching the cut), IPv4 and IPv6")
def _tcp_cut(a):
    t4 = bytes(IP(src=a.src4, dst=a.dst4) / TCP(sport=10, dport=80, flags="S"))[20:]
    t6 = l4_6(a, TCP(sport=10, dport=80, flags="S"))
    out = [bytes(eth(a) / IP(src=a.src4, dst=a.dst4, proto=6) / Raw(t4[:n])) for n in range(20)]
    out += [ip6_raw(a, NH_TCP, t6[:n]) for n in range(0, 20, 4)]
    return out


@kind("tcp_data_offset_below_5", "TCP data offset 0..4")
def _doff_small(a):
    f = bytes(eth(a) / IP(src=a.src4, dst=a.dst4) / TCP(sport=11, dport=80, flags="S"))
    return [patch(f, 14 + 20 + 12, bytes([d << 4])) for d in range(5)]


@kind("tcp_data_offset_beyond", "TCP data offset 6 and 15 with a bare 20-byte header (v4, v6)")
def _doff_big(a):
    f = bytes(eth(a) / IP(src=a.src4, dst=a.dst4) / TCP(sport=12, dport=80, flags="S"))
    g = bytes(eth(a) / IPv6(src=a.src6, dst=a.dst6) / TCP(sport=12, dport=80, flags="S"))
    return [patch(f, 46, bytes([6 << 4])), patch(f, 46, bytes([15 << 4])),
            patch(g, 66, bytes([15 << 4]))]


@kind("tcp_flags_odd", "TCP with every flag set, no flag, SYN+FIN, RST+data")
def _tcp_flags(a):
    return [bytes(eth(a) / IP(src=a.src4, dst=a.dst4) / TCP(sport=13, dport=80, flags=f) / (b"d" * n))
            for f, n in ((0xFF, 0), (0, 0), ("SF", 0), ("R", 20))] + \
        [bytes(eth(a) / IPv6(src=a.src6, dst=a.dst6) / TCP(sport=13, dport=80, flags=0x1FF))]


@kind("udp_truncated", "UDP header cut at 0..7 bytes (IP length matching the cut), IPv4 and IPv6")
def _udp_cut(a):
    u = l4_6(a, UDP(sport=20, dport=53))
    return [bytes(eth(a) / IP(src=a.src4, dst=a.dst4, proto=17) / Raw(u[:n])) for n in range(8)] + \
        [ip6_raw(a, NH_UDP, u[:n]) for n in range(0, 8, 2)]


@kind("udp_length_zero", "UDP length 0 (IPv4 and IPv6)")
def _udp_len0(a):
    return [bytes(eth(a) / IP(src=a.src4, dst=a.dst4) / UDP(sport=21, dport=53, len=0) / (b"0" * 8)),
            ip6_raw(a, NH_UDP, bytes(UDP(sport=21, dport=53, len=0, chksum=0)) + b"0" * 8)]


@kind("udp_length_below_8", "UDP length 1..7")
def _udp_len_small(a):
    return [bytes(eth(a) / IP(src=a.src4, dst=a.dst4) / UDP(sport=22, dport=53, len=n) / b"s")
            for n in range(1, 8)]


@kind("udp_length_beyond", "UDP length 1000 and 65535 in small packets")
def _udp_len_big(a):
    return [bytes(eth(a) / IP(src=a.src4, dst=a.dst4) / UDP(sport=23, dport=53, len=1000) / b"b"),
            ip6_raw(a, NH_UDP, bytes(UDP(sport=23, dport=53, len=65535, chksum=0)) + b"b")]


@kind("icmp_truncated", "ICMP cut at 0..7 bytes, routed and to the router")
def _icmp_cut(a):
    e = bytes(ICMP(type=8, id=1, seq=1) / b"ping")
    return [bytes(eth(a) / IP(src=a.src4, dst=dst, proto=1) / Raw(e[:n]))
            for dst in (a.dst4, a.router4) for n in (0, 1, 4, 7)]


@kind("icmp_to_router_odd", "echo to the router with a bad checksum, code 99, type 255")
def _icmp_odd(a):
    return [bytes(eth(a) / IP(src=a.src4, dst=a.router4) / ICMP(type=8, chksum=0x1234) / b"x"),
            bytes(eth(a) / IP(src=a.src4, dst=a.router4) / ICMP(type=8, code=99) / b"x"),
            bytes(eth(a) / IP(src=a.src4, dst=a.router4) / ICMP(type=255) / b"x")]


@kind("icmpv6_truncated", "ICMPv6 cut at 0..7 bytes, routed and to the router")
def _icmp6_cut(a):
    out = []
    for dst in (a.dst6, a.router6):
        e = bytes(IPv6(src=a.src6, dst=dst) / ICMPv6EchoRequest(id=1, seq=1))[40:]
        out += [ip6_raw(a, NH_ICMP6, e[:n], dst=dst) for n in (0, 1, 4, 7)]
    return out


@kind("icmpv6_nd_garbage", "NS/NA/RA for the router: wrong hop limit, bad checksum, zero-length "
      "and truncated options, cut target")
def _nd(a):
    sol = "ff02::1:ff00:1"
    mac = "33:33:ff:00:00:01"

    def nd(msg, hlim=255, dst=sol, cut=None, opt=b""):
        f = bytes(eth(a, dst=mac) / IPv6(src=a.src6, dst=dst, hlim=hlim) / msg / Raw(opt))
        return f[:cut] if cut else f
    return [nd(ICMPv6ND_NS(tgt=a.router6) / ICMPv6NDOptSrcLLAddr(lladdr=a.src_mac), hlim=64),
            nd(ICMPv6ND_NS(tgt=a.router6, cksum=0xBEEF)),
            nd(ICMPv6ND_NS(tgt=a.router6), opt=b"\x01\x00" + bytes(6)),       # option length 0
            nd(ICMPv6ND_NS(tgt=a.router6), opt=b"\x01\x05" + bytes(6)),       # option past the end
            nd(ICMPv6ND_NS(tgt=a.router6), cut=54 + 12),                      # target cut
            nd(ICMPv6ND_NA(tgt=a.router6, R=0, S=1, O=1), dst="ff02::1"),
            nd(ICMPv6ND_RA(routerlifetime=0xFFFF), dst="ff02::1")]


# ---- bigger than one mbuf ----------------------------------------------------------

@kind("multiseg_2200", "2200-byte frames (just over one 2048-byte mbuf), IPv4 and IPv6")
def _multiseg(a):
    return [udp4(a, payload=b"M" * (2200 - 42)), udp6(a, payload=b"M" * (2200 - 62))]


@kind("jumbo_9000", "9000-byte frames, IPv4 (DF and not) and IPv6")
def _jumbo(a):
    return [udp4(a, payload=b"J" * (9000 - 42)), udp4(a, payload=b"J" * (9000 - 42), flags="DF"),
            udp6(a, payload=b"J" * (9000 - 62))]


@kind("jumbo_9000_bad_length", "9000-byte frames whose IP length says more (9100, 65535)")
def _jumbo_bad(a):
    f4 = udp4(a, payload=b"K" * (9000 - 42))
    f6 = udp6(a, payload=b"K" * (9000 - 62))
    return [refix4(patch(f4, 16, struct.pack("!H", 9100))), patch(f6, 18, struct.pack("!H", 65535))]
