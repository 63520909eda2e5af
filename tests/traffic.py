"""Test traffic built with scapy, shared by the tiers."""
from __future__ import annotations

from scapy.layers.inet import ICMP, IP, TCP, UDP, fragment
from scapy.layers.inet6 import IPv6, IPv6ExtHdrDestOpt, IPv6ExtHdrFragment
from scapy.layers.l2 import ARP, Dot1Q, Ether


def eth():
    return Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02")


def mixed_traffic() -> list:
    """TCP ended by FIN and by RST, UDP, ICMP, fragments, IPv6, VLAN-tagged."""
    pkts = []
    for flags in ("S", "A", "PA", "A", "FA"):  # a TCP flow ended by FIN
        pkts.append(eth() / IP(src="10.0.0.1", dst="10.0.0.2", tos=8) /
                    TCP(sport=40000, dport=80, flags=flags) / (b"d" * 40))
    pkts.append(eth() / IP(src="10.0.0.1", dst="10.0.0.2") / TCP(sport=40000, dport=80, flags="A"))
    for flags in ("S", "R"):                   # ended by RST
        pkts.append(eth() / IP(src="10.0.0.3", dst="10.0.0.4") / TCP(sport=1234, dport=22, flags=flags))
    for i in range(7):                         # UDP, 7 packets in one flow
        pkts.append(eth() / IP(src="10.0.1.1", dst="10.0.1.2") / UDP(sport=5353, dport=53) / (b"q" * (10 + i)))
    for i in range(3):                         # three small UDP flows
        pkts.append(eth() / IP(src="10.0.2.1", dst=f"10.0.2.{10 + i}") / UDP(sport=7, dport=7))
    pkts.append(eth() / IP(src="10.0.3.1", dst="10.0.3.2") / ICMP(type=8))
    for frag in fragment(IP(src="10.0.4.1", dst="10.0.4.2") / UDP(sport=9, dport=9) / (b"F" * 3000),
                         fragsize=1000):
        pkts.append(eth() / frag)              # first fragment has ports, the rest 0
    for i in range(2):
        pkts.append(eth() / IPv6(src="2001:db8::1", dst="2001:db8::2", tc=32) /
                    UDP(sport=1000, dport=2000) / (b"6" * 20))
    pkts.append(eth() / IPv6(src="2001:db8::1", dst="2001:db8::3") / IPv6ExtHdrDestOpt() /
                TCP(sport=3, dport=4, flags="S"))
    pkts.append(eth() / IPv6(src="2001:db8::1", dst="2001:db8::4") /
                IPv6ExtHdrFragment(offset=0, m=1, nh=17) / UDP(sport=11, dport=12) / (b"x" * 8))
    pkts.append(eth() / Dot1Q(vlan=10) / IP(src="10.0.5.1", dst="10.0.5.2") / UDP(sport=1, dport=2))
    pkts.append(eth() / ARP())                 # not IP: not metered, still forwarded
    return pkts
