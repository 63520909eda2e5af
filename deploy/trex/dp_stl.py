"""Stream builders shared by the dataplane's TRex stateless profiles.

TRex puts a profile's directory on sys.path while it loads it, so the
profiles next to this file import it as ``dp_stl``. Sizes are frame sizes on
the wire *including* the 4-byte FCS (RFC 2544's convention; TRex adds the FCS
itself, so the packets built here are 4 bytes shorter).

Flows are made by TRex's field engine: the source address (IPv4, or the low
32 bits of the IPv6 source) counts up over ``flows`` values, so every flow is
a different (source, destination) pair for netflow's and ip6flow's caches.
With ``fin=N`` the flows are TCP and every flow's N-th packet carries FIN:
a value list of TCP flags (N-1 x ACK, then FIN|ACK) drives the source
address as its ``next_var``, so the address moves on only after the FIN.
L4 checksums are not rewritten (the dataplane does not check them); the
IPv4 header checksum is.
"""
from __future__ import annotations

import argparse
import ipaddress

try:  # the name TRex's own profiles use (TRex keeps it as a compatibility alias)
    from trex_stl_lib.api import STLVM, STLPktBuilder, STLStream, STLTXCont
except ImportError:  # pragma: no cover - TRex without the alias
    from trex.stl.api import STLVM, STLPktBuilder, STLStream, STLTXCont

from scapy.layers.inet import IP, TCP, UDP
from scapy.layers.inet6 import IPv6
from scapy.layers.l2 import Ether
from scapy.packet import Raw

# "Simple IMIX": 64, 594 and 1518-byte frames, 7:4:1 by packet count.
IMIX = ((64, 7), (594, 4), (1518, 1))
TCP_ACK, TCP_FIN = 0x10, 0x01

DEFAULTS = {
    # family: (source, destination) of direction 0; direction 1 swaps them
    4: ("16.0.0.1", "48.0.0.1"),
    6: ("2001:db8:10::1", "2001:db8:30::1"),
}


def parse(tunables, name: str, **defaults) -> argparse.Namespace:
    """Tunables as TRex passes them (``-t size=64,flows=10`` becomes
    ``["--size", "64", "--flows", "10"]``); ``defaults`` set each profile's."""
    p = argparse.ArgumentParser(prog=name, description=f"tunables of {name}",
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--size", default=str(defaults.get("size", "64")),
                   help="frame size in bytes incl. FCS, or 'imix' (64/594/1518 at 7:4:1)")
    p.add_argument("--flows", type=int, default=defaults.get("flows", 1),
                   help="source addresses the field engine counts through")
    p.add_argument("--ipv", default=str(defaults.get("ipv", "4")), choices=("4", "6", "46"),
                   help="IPv4, IPv6, or both (46: half the packets each)")
    p.add_argument("--fin", type=int, default=defaults.get("fin", 0),
                   help="0: UDP; N >= 2: TCP flows of N packets, the last with FIN")
    p.add_argument("--src", default=defaults.get("src"), help="first source address (one family)")
    p.add_argument("--dst", default=defaults.get("dst"), help="destination address (one family)")
    p.add_argument("--sport", type=int, default=1025)
    p.add_argument("--dport", type=int, default=12)
    args = p.parse_args(list(tunables or []))
    if args.size != "imix":
        try:
            args.size = int(args.size)
        except ValueError:
            p.error(f"--size: a number of bytes or 'imix' (got {args.size!r})")
        if not 64 <= args.size <= 9216:
            p.error("--size: 64 .. 9216")
    if not 1 <= args.flows <= 1 << 32:
        p.error("--flows: 1 .. 2^32")
    if args.fin == 1 or not 0 <= args.fin <= 65535:
        p.error("--fin: 0 (UDP) or the packets per TCP flow, 2 .. 65535")
    return args


def sizes(size) -> list:
    """[(frame size, share)]"""
    return list(IMIX) if size == "imix" else [(int(size), 1)]


def families(ipv: str) -> list:
    return [4, 6] if ipv == "46" else [int(ipv)]


def addresses(fam: int, direction: int, src=None, dst=None) -> tuple:
    s, d = DEFAULTS[fam]
    if direction % 2:
        s, d = d, s
    return src or s, dst or d


def packet(fam: int, src: str, dst: str, size: int, *, fin: int = 0, sport: int = 1025,
           dport: int = 12):
    """A scapy packet of ``size - 4`` bytes (TRex adds the FCS). IPv6 UDP
    frames under 66 bytes have no room for UDP: they carry No Next Header
    (59) instead, as bench/ip6flow.py; TCP frames below the headers' size are
    made as small as the headers allow."""
    # TRex writes its ports' MAC addresses over these (trex_cfg.yaml: src_mac /
    # dest_mac, or the gateway it resolved); set here so scapy looks nothing up
    eth = Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02")
    l3 = IP(src=src, dst=dst, ttl=64) if fam == 4 else IPv6(src=src, dst=dst, hlim=64)
    if fin:
        base = eth / l3 / TCP(sport=sport, dport=dport, flags="A")
    else:
        base = eth / l3 / UDP(sport=sport, dport=dport)
        if fam == 6 and size - 4 < len(base):
            base = eth / IPv6(src=src, dst=dst, hlim=64, nh=59)
    pad = max(0, size - 4 - len(base))
    return base / Raw(b"x" * pad) if pad else base


def flow_vm(fam: int, src: str, flows: int, fin: int = 0, tuple_ports: int = 0):
    """The field engine program: source address over ``flows`` values, and
    FIN on every flow's last packet when ``fin``; ``tuple_ports`` > 0 also
    counts the source port (TRex's tuple generator: addresses x ports)."""
    if flows <= 1 and not fin:
        return None
    vm = STLVM()
    if fam == 4:
        first = int(ipaddress.IPv4Address(src))
        where, fixup = "IP.src", 0
    else:
        first = int(ipaddress.IPv6Address(src)) & 0xFFFFFFFF  # low 32 bits
        where, fixup = "IPv6.src", 12
    last = min(first + flows - 1, 0xFFFFFFFF)
    if tuple_ports and not fin:
        vm.tuple_var(name="tuple", ip_min=first, ip_max=last, port_min=1025,
                     port_max=1025 + tuple_ports - 1, limit_flows=flows)
        vm.write(fv_name="tuple.ip", pkt_offset=where, offset_fixup=fixup)
        vm.write(fv_name="tuple.port", pkt_offset="UDP.sport")
    elif fin:
        # one flow = fin packets: ACK ... ACK, FIN|ACK; then the next source.
        # Not split over TRex's cores (each core would skip flags otherwise):
        # run FIN profiles on one core per port for exact flows.
        vm.var(name="flags", min_value=None, max_value=None, size=1, op="inc",
               value_list=[TCP_ACK] * (fin - 1) + [TCP_FIN | TCP_ACK],
               next_var="src" if last > first else None, split_to_cores=False)
        if last > first:
            vm.var(name="src", min_value=first, max_value=last, size=4, op="inc",
                   split_to_cores=False)
            vm.write(fv_name="src", pkt_offset=where, offset_fixup=fixup)
        # the flags byte: 13 bytes into the TCP header (TRex names fields as
        # layer.field; scapy's flags are a 9-bit field, so go from sport)
        vm.write(fv_name="flags", pkt_offset="TCP.sport", offset_fixup=13)
    else:
        vm.var(name="src", min_value=first, max_value=last, size=4, op="inc")
        vm.write(fv_name="src", pkt_offset=where, offset_fixup=fixup)
    if fam == 4:
        vm.fix_chksum()
    return vm


def streams(args, direction: int = 0, *, weight: float = 1.0, tuple_ports: int = 0,
            fin=None) -> list:
    """Continuous streams for the parsed tunables: one per frame size and
    family, their pps the IMIX and family shares of ``weight`` (1 pps in all
    for one call; TRex scales them to the rate asked for with -m)."""
    fin = args.fin if fin is None else fin
    fams = families(args.ipv)
    out = []
    for fam in fams:
        src, dst = addresses(fam, direction, args.src if len(fams) == 1 else None,
                             args.dst if len(fams) == 1 else None)
        mix = sizes(args.size)
        whole = sum(share for _, share in mix)
        for size, share in mix:
            pkt = packet(fam, src, dst, size, fin=fin, sport=args.sport, dport=args.dport)
            ports = tuple_ports if pkt.haslayer(UDP) else 0  # a 64-byte IPv6 frame has no UDP
            vm = flow_vm(fam, src, args.flows, fin, ports)
            builder = STLPktBuilder(pkt=pkt, vm=vm) if vm is not None else STLPktBuilder(pkt=pkt)
            out.append(STLStream(packet=builder,
                                 mode=STLTXCont(pps=weight * share / whole / len(fams))))
    return out
