#!/usr/bin/env python3
"""Write the seed corpora of the fuzz targets, frames made with scapy.

    python3 fuzz/seed.py [corpus_dir]       (default: fuzz/corpus)

netflow_parse takes a raw frame; the stage targets take a program of ops
(fuzz/fuzz_env.h): bursts of length-prefixed frames, clock steps, control
ops, rx port switches. Seeds are named seed-*; what the fuzzers add next to
them is theirs. Rerunning rewrites the seeds and leaves the rest.
"""
from __future__ import annotations

import struct
import sys
from pathlib import Path

from scapy.layers.inet import ICMP, IP, TCP, UDP
from scapy.layers.inet6 import (
    ICMPv6EchoRequest, IPv6, IPv6ExtHdrDestOpt, IPv6ExtHdrFragment,
    IPv6ExtHdrHopByHop, IPv6ExtHdrRouting,
)
from scapy.layers.ipsec import AH
from scapy.layers.l2 import ARP, Dot1AD, Dot1Q, Ether
from scapy.packet import Raw

# fuzz_env.c: the router's port MACs and its route table
PORT_MAC = ["02:00:00:00:00:01", "02:00:00:00:00:02"]
PEER = "02:00:00:00:00:99"


def eth(port: int = 0, dst: str | None = None):
    return Ether(src=PEER, dst=dst or PORT_MAC[port])


def b(p) -> bytes:
    return bytes(p)


def parse_frames() -> dict[str, bytes]:
    """Frames for nf_parse: every branch, and their truncations."""
    pay = Raw(b"x" * 20)
    f = {
        "v4_tcp": eth() / IP(src="10.0.0.2", dst="10.1.2.3", tos=0x10) / TCP(sport=1234, dport=80, flags="S") / pay,
        "v4_udp": eth() / IP(src="10.0.0.2", dst="10.1.2.3") / UDP(sport=53, dport=5353) / pay,
        "v4_icmp": eth() / IP(src="10.0.0.2", dst="10.1.2.3") / ICMP() / pay,
        "v4_opts": eth() / IP(src="10.0.0.2", dst="10.1.2.3", options=b"\x01\x01\x01\x00") / TCP() / pay,
        "v4_frag1": eth() / IP(src="10.0.0.2", dst="10.1.2.3", flags="MF", frag=0) / UDP() / pay,
        "v4_frag2": eth() / IP(src="10.0.0.2", dst="10.1.2.3", frag=10, proto=17) / pay,
        "v4_vlan": Ether(src=PEER, dst=PORT_MAC[0]) / Dot1Q(vlan=10) / IP(dst="10.1.2.3") / TCP() / pay,
        "v4_qinq": Ether(src=PEER, dst=PORT_MAC[0]) / Dot1AD(vlan=20) / Dot1Q(vlan=10) / IP(dst="10.1.2.3") / UDP() / pay,
        "v6_tcp": eth() / IPv6(src="2001:db8:9::2", dst="2001:db8:1::5", tc=0x20, fl=7) / TCP(flags="PA") / pay,
        "v6_udp": eth() / IPv6(src="2001:db8:9::2", dst="2001:db8:1::5") / UDP() / pay,
        "v6_icmp": eth() / IPv6(src="2001:db8:9::2", dst="2001:db8:1::5") / ICMPv6EchoRequest() / pay,
        "v6_hbh": eth() / IPv6(dst="2001:db8:1::5") / IPv6ExtHdrHopByHop() / UDP() / pay,
        "v6_chain": eth() / IPv6(dst="2001:db8:1::5") / IPv6ExtHdrHopByHop() / IPv6ExtHdrDestOpt()
        / IPv6ExtHdrRouting() / TCP() / pay,
        "v6_frag1": eth() / IPv6(dst="2001:db8:1::5") / IPv6ExtHdrFragment(offset=0, m=1) / UDP() / pay,
        "v6_frag2": eth() / IPv6(dst="2001:db8:1::5") / IPv6ExtHdrFragment(offset=5, nh=17) / pay,
        "v6_ah": eth() / IPv6(dst="2001:db8:1::5") / AH(nh=6, payloadlen=4, icv=b"\0" * 12) / TCP() / pay,
        "arp": eth(dst="ff:ff:ff:ff:ff:ff") / ARP(pdst="10.0.0.1"),
    }
    out = {k: b(v) for k, v in f.items()}
    # truncations and lies about lengths
    t = out["v4_tcp"]
    out["v4_trunc_l4"] = t[:14 + 20 + 10]
    out["v4_trunc_ip"] = t[:14 + 12]
    out["v4_bad_ihl"] = t[:14] + bytes([0x44]) + t[15:]
    out["v4_long_len"] = t[:16] + struct.pack("!H", 1500) + t[18:]
    v6 = out["v6_tcp"]
    out["v6_trunc_l4"] = v6[:14 + 40 + 8]
    out["v6_long_len"] = v6[:18] + struct.pack("!H", 1400) + v6[20:]
    out["v6_bad_version"] = v6[:14] + bytes([0x40]) + v6[15:]
    out["runt"] = t[:10]
    return out


def burst(frames: list[bytes], split: int = 0) -> bytes:
    """One burst op: up to 32 frames."""
    assert 1 <= len(frames) <= 32
    out = bytes([len(frames) - 1])
    for f in frames:
        out += struct.pack("<HB", len(f), split) + f
    return out


def bursts(frames: list[bytes], split: int = 0) -> bytes:
    return b"".join(burst(frames[i:i + 32], split) for i in range(0, len(frames), 32))


def clock(ms: int) -> bytes:
    """Advance the clock by about ms milliseconds, then tick."""
    return bytes([0x80]) + struct.pack("<H", max(ms // 10 - 1, 0))


def ctrl(k: int, *args: int) -> bytes:
    return bytes([0xa0 | k]) + bytes(args)


def port(p: int) -> bytes:
    return bytes([0xc0 | p])


TICK = bytes([0xe0])


def route_frames() -> dict[str, bytes]:
    """Frames for the ip6flow stage, one per route kind of fuzz_env.c."""
    pay = Raw(b"p" * 32)
    big = Raw(b"B" * 1400)
    v6 = lambda dst, **kw: eth() / IPv6(src="2001:db8:9::2", dst=dst, **kw)  # noqa: E731
    v4 = lambda dst, **kw: eth() / IP(src="10.9.0.2", dst=dst, **kw)  # noqa: E731
    f = {
        "v6_fwd": v6("2001:db8:1::5") / UDP(sport=1000, dport=2000) / pay,
        "v6_fwd_flow2": v6("2001:db8:1::6", fl=5) / TCP() / pay,
        "v6_default": v6("2001:db8:77::1") / UDP() / pay,
        "v6_resolve": v6("2001:db8:2::5") / UDP() / pay,
        "v6_local": v6("2001:db8:1::fe") / ICMPv6EchoRequest() / pay,
        "v6_blackhole": v6("2001:db8:dead::1") / UDP() / pay,
        "v6_reject": v6("2001:db8:bad::1") / UDP() / pay,
        "v6_too_big": v6("2001:db8:3::1") / UDP() / big,
        "v6_hop1": v6("2001:db8:1::5", hlim=1) / UDP() / pay,
        "v6_mcast": eth(dst="33:33:00:00:00:01") / IPv6(dst="ff02::1") / ICMPv6EchoRequest(),
        "v6_l2bcast": eth(dst="ff:ff:ff:ff:ff:ff") / IPv6(dst="2001:db8:1::5") / UDP() / pay,
        "v6_hbh": v6("2001:db8:1::5") / IPv6ExtHdrHopByHop() / UDP() / pay,
        "v6_icmp_fwd": v6("2001:db8:1::5") / ICMPv6EchoRequest() / pay,
        "v6_toggle": v6("2001:d00::1") / UDP() / pay,
        "v6_2001": v6("2001:1234::1") / UDP() / pay,
        "v4_fwd": v4("10.1.2.3") / UDP(sport=1000, dport=2000) / pay,
        "v4_fwd_host": v4("10.1.1.1") / TCP() / pay,
        "v4_fwd_24": v4("10.1.1.9") / TCP() / pay,
        "v4_too_big": v4("10.2.0.1") / UDP() / Raw(b"B" * 700),
        "v4_local": v4("10.0.0.1") / ICMP() / pay,
        "v4_resolve": v4("10.3.0.1") / UDP() / pay,
        "v4_blackhole": v4("10.66.0.1") / UDP() / pay,
        "v4_reject": v4("10.99.0.1") / UDP() / pay,
        "v4_noroute": v4("10.200.0.1") / UDP() / pay,
        "v4_ttl1": v4("10.1.2.3", ttl=1) / UDP() / pay,
        "v4_opts": v4("10.1.2.3", options=b"\x01\x01\x01\x00") / UDP() / pay,
        "v4_mcast": eth(dst="01:00:5e:00:00:05") / IP(dst="224.0.0.5") / UDP() / pay,
        "v4_bcast": eth(dst="ff:ff:ff:ff:ff:ff") / IP(dst="255.255.255.255") / UDP() / pay,
        "arp": eth(dst="ff:ff:ff:ff:ff:ff") / ARP(pdst="10.0.0.1"),
        "other_host": eth(dst="02:00:00:00:00:55") / IPv6(dst="2001:db8:1::5") / UDP() / pay,
        "lldp": eth(dst="01:80:c2:00:00:0e") / Raw(b"\x02\x07\x04" + b"\0" * 40),
    }
    out = {k: b(v) for k, v in f.items()}
    v4f = out["v4_fwd"]
    out["v4_bad_csum"] = v4f[:24] + b"\xde\xad" + v4f[26:]
    out["v4_trunc"] = v4f[:14 + 12]
    out["v6_trunc"] = out["v6_fwd"][:14 + 30]
    out["v6_long_len"] = out["v6_fwd"][:18] + struct.pack("!H", 1400) + out["v6_fwd"][20:]
    return out


def ip6flow_seeds() -> dict[str, bytes]:
    fr = route_frames()
    allf = list(fr.values())
    fwd = [fr["v6_fwd"], fr["v6_fwd_flow2"], fr["v4_fwd"], fr["v4_fwd_host"], fr["v4_fwd_24"]]
    return {
        "every_kind": bursts(allf),
        "every_kind_split": bursts(allf, split=20),
        "cache_hits": burst(fwd) + burst(fwd) + burst(fwd * 4),
        "generation": burst(fwd) + ctrl(0) + burst(fwd) + ctrl(1) + burst(fwd) + ctrl(2) + burst(fwd)
        + ctrl(3) + burst(fwd + [fr["v6_toggle"], fr["v6_2001"]]),
        "link_flap": burst(fwd) + ctrl(4) + burst(fwd) + ctrl(5) + burst(fwd) + ctrl(4) + ctrl(5) + burst(fwd),
        "idle": burst(fwd) + clock(3000) + burst(fwd) + TICK + clock(600_000) + burst(fwd),
        "reconfig": burst(fwd) + ctrl(6, 2, 1, 0x85, 3) + burst(fwd * 3) + ctrl(6, 0, 0, 0, 0) + burst(fwd)
        + ctrl(6, 64, 64, 0x8f, 255) + burst(fwd) + ctrl(7) + burst(fwd),
        "reap": burst([b(eth() / IPv6(src="2001:db8:9::2", dst=f"2001:db8:1::{i:x}") / UDP()) for i in range(1, 33)])
        + burst([b(eth() / IP(src="10.9.0.2", dst=f"10.1.3.{i}") / UDP()) for i in range(1, 33)]),
        "ports": port(1) + burst(fwd) + port(0) + burst(fwd),
        "show": burst(fwd) + ctrl(8) + ctrl(9),
    }


def netflow_seeds() -> dict[str, bytes]:
    pf = parse_frames()
    allf = list(pf.values())

    def tcp(sport: int, flags: str, n: int = 20) -> bytes:
        return b(eth() / IP(src="10.0.0.2", dst="10.1.2.3") / TCP(sport=sport, dport=80, flags=flags) / Raw(b"d" * n))

    conv = [tcp(4000, "S"), tcp(4000, "A"), tcp(4000, "PA", 500), tcp(4000, "FA")]
    many = [b(eth() / IPv6(src="2001:db8:9::2", dst=f"2001:db8:1::{i:x}") / UDP(sport=i)) for i in range(1, 33)]
    many4 = [b(eth() / IP(src="10.0.0.2", dst=f"10.1.{i}.1") / UDP(sport=i)) for i in range(1, 33)]
    return {
        "every_kind": bursts(allf),
        "every_kind_split": bursts(allf, split=30),
        "conversation": burst(conv[:1]) + clock(100) + burst(conv[1:3]) + clock(100) + burst(conv[3:]) + ctrl(7),
        "timeouts": burst(conv[:2]) + clock(6000) + burst(conv[1:2]) + clock(31_000) + burst(conv[1:2])
        + clock(600_000) + ctrl(7) + ctrl(10),
        "full_cache": burst(many) + burst(many4) + burst([tcp(5000 + i, "A") for i in range(32)]) + ctrl(10)
        + ctrl(8) + ctrl(6, 10) + ctrl(7),
        "export_full": burst(many) + burst(many4) + ctrl(6, 255) + ctrl(6, 255) + ctrl(7),
        "setconfig": ctrl(5, 0) + burst(conv) + ctrl(5, 2) + burst(conv) + ctrl(9, 1, 7, 0) + port(1) + burst(conv),
        "settimeouts": burst(conv[:2]) + ctrl(4, 0, 0) + clock(1500) + burst(conv[1:2]) + clock(2500) + ctrl(7),
        "routed": ctrl(0) + ctrl(1) + ctrl(2) + burst(many[:4] + many4[:4]) + ctrl(3) + ctrl(7),
        "big_bytes": burst([tcp(6000, "A", 1400)] * 32) + burst([tcp(6000, "A", 1400)] * 32) + ctrl(7),
    }


def main() -> None:
    root = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).resolve().parent / "corpus"
    sets = {
        "netflow_parse": parse_frames(),
        "netflow_burst": netflow_seeds(),
        "ip6flow_burst": ip6flow_seeds(),
    }
    for target, seeds in sets.items():
        d = root / target
        d.mkdir(parents=True, exist_ok=True)
        for name, data in seeds.items():
            (d / f"seed-{name}").write_bytes(data)
        print(f"{d}: {len(seeds)} seeds")


if __name__ == "__main__":
    main()
