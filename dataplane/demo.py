"""The embedded default: its config and the demo traffic it replays."""
from __future__ import annotations

import os
from importlib import resources
from pathlib import Path

from . import config

DEMO_PACKETS = 1024
DEMO_VERSION = 1  # bump when the generated traffic changes


def demo_traffic(n: int = DEMO_PACKETS) -> list:
    """A mix of IPv4/IPv6 TCP/UDP/ICMP packets over 64 flows, 64 to 1500 bytes."""
    from scapy.layers.inet import ICMP, IP, TCP, UDP
    from scapy.layers.inet6 import IPv6
    from scapy.layers.l2 import Ether
    from scapy.packet import Raw

    pkts = []
    for i in range(n):
        flow = i % 64
        eth = Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02")
        size = (64, 128, 512, 1500)[i % 4]
        if flow % 4 == 3:
            l3 = IPv6(src=f"2001:db8::{flow + 1:x}", dst="2001:db8:1::1")
        else:
            l3 = IP(src=f"10.0.{flow}.1", dst="192.0.2.1")
        if flow % 8 == 7:
            l4 = ICMP() if isinstance(l3, IP) else UDP(sport=5000 + flow, dport=53)
        elif flow % 2:
            l4 = UDP(sport=5000 + flow, dport=53)
        else:
            l4 = TCP(sport=40000 + flow, dport=443, flags="A", seq=i)
        p = eth / l3 / l4
        pad = max(0, size - 4 - len(p))  # the frame check sequence is not in a pcap
        pkts.append(p / Raw(b"\x00" * pad))
    return pkts


def demo_pcap(directory: Path) -> Path:
    """Write the demo pcap once per version; later runs reuse it."""
    path = directory / f"demo-v{DEMO_VERSION}.pcap"
    if not path.exists():
        from scapy.utils import wrpcap
        directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        tmp = path.with_suffix(f".tmp{os.getpid()}")
        wrpcap(str(tmp), demo_traffic())
        tmp.replace(path)
    return path


def default_config() -> config.Config:
    text = resources.files(__package__).joinpath("default.toml").read_text()
    probe = config.loads(text.replace("${DEMO_PCAP}", "demo.pcap"), "<embedded default>",
                         check_drivers=False)
    pcap = demo_pcap(config.runtime_dir(probe))
    return config.loads(text.replace("${DEMO_PCAP}", str(pcap)), "<embedded default>",
                        check_drivers=False)
