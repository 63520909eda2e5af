"""An independent model of ng_netflow metering, computed with scapy layers.

Input: (timestamp_seconds, scapy packet, in_ifindex) tuples. Output: the flows
ng_netflow would export, each tagged with why it ended. The model follows
FreeBSD's netflow.c rather than the dataplane's code:

* key = (src, dst, sport, dport, proto, tos, in_ifx); ports only for TCP/UDP
  and only on unfragmented packets or first fragments (IPv4 offset 0; IPv6
  Fragment header offset 0), 0 otherwise. IPv6 tos = traffic class; the IPv6
  protocol is the upper-layer one, found by walking extension headers.
* bytes = IPv4 total length, or IPv6 payload length + 40; tcp_flags OR'ed.
* Expiry on a hash hit (ng_netflow_flow_add): the packet is counted first, then
  the flow ends if that packet has FIN or RST, or if now - first > active.
  A flow created by a FIN packet is not expired at once (only hits are checked).
* Inactive expiry happens in ng_netflow's periodic scan, whose timing the model
  cannot know; model_flows only flushes at the end. FlowModel.expire(now) runs
  one scan explicitly for tests that drive the clock.
"""
from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Iterable, Optional, Union

from scapy.layers.inet import IP, TCP, UDP
from scapy.layers.inet6 import (IPv6, IPv6ExtHdrDestOpt, IPv6ExtHdrFragment, IPv6ExtHdrHopByHop,
                                IPv6ExtHdrRouting)
from scapy.layers.l2 import Dot1Q, Ether  # Dot1AD (0x88a8) is a Dot1Q subclass
from scapy.packet import Packet

IPAddress = Union[ipaddress.IPv4Address, ipaddress.IPv6Address]
TH_FIN, TH_RST = 0x01, 0x04
IPPROTO_TCP, IPPROTO_UDP = 6, 17
# Extension headers ng_netflow walks through to reach the upper-layer protocol.
IPV6_EXT = (IPv6ExtHdrHopByHop, IPv6ExtHdrRouting, IPv6ExtHdrDestOpt)


@dataclass
class ModelFlow:
    src: IPAddress
    dst: IPAddress
    sport: int
    dport: int
    proto: int
    tos: int
    in_ifx: int
    ip_version: int
    packets: int = 0
    bytes: int = 0
    tcp_flags: int = 0
    first: float = 0.0
    last: float = 0.0
    expired_by: str = ""  # "fin_rst" | "active" | "inactive" | "flush"

    @property
    def key(self) -> tuple:
        return (self.src, self.dst, self.sport, self.dport, self.proto, self.tos, self.in_ifx)


class ModelFlows(list):
    """list[ModelFlow] in expiry order, plus `skipped`: frames that were not IP."""
    skipped: int = 0


@dataclass(frozen=True)
class Observation:
    """What metering extracts from one packet."""
    key: tuple
    ip_version: int
    length: int
    tcp_flags: int


def observe(pkt: Packet, in_ifx: int) -> Optional[Observation]:
    """Metering view of one frame, or None if it carries no IPv4/IPv6 packet."""
    # Re-dissect from the wire bytes so lengths left as None on a freshly built
    # packet are the real ones, and layers are what a receiver would see.
    pkt = pkt.__class__(bytes(pkt))
    layer = pkt
    if isinstance(layer, Ether):
        layer = layer.payload
        while isinstance(layer, Dot1Q):  # 802.1Q and QinQ (802.1ad) tags
            layer = layer.payload
    ports_ok = True
    if isinstance(layer, IP):
        src, dst, tos, proto, length = layer.src, layer.dst, layer.tos, layer.proto, layer.len
        ports_ok = layer.frag == 0
        upper = layer.payload
    elif isinstance(layer, IPv6):
        src, dst, tos, proto, length = layer.src, layer.dst, layer.tc, layer.nh, layer.plen + 40
        upper = layer.payload
        while isinstance(upper, IPV6_EXT):
            proto, upper = upper.nh, upper.payload
        if isinstance(upper, IPv6ExtHdrFragment):
            proto, ports_ok, upper = upper.nh, upper.offset == 0, upper.payload
    else:
        return None
    sport = dport = flags = 0
    if ports_ok and proto == IPPROTO_TCP and isinstance(upper, TCP):
        sport, dport, flags = upper.sport, upper.dport, int(upper.flags)
    elif ports_ok and proto == IPPROTO_UDP and isinstance(upper, UDP):
        sport, dport = upper.sport, upper.dport
    key = (ipaddress.ip_address(src), ipaddress.ip_address(dst), sport, dport, proto, tos, in_ifx)
    return Observation(key, 4 if isinstance(layer, IP) else 6, length, flags)


class FlowModel:
    """Incremental ng_netflow flow cache (unbounded: the real cache's overflow
    behaviour is not modelled)."""

    def __init__(self, active: float = 1800, inactive: float = 15) -> None:
        self.active, self.inactive = active, inactive
        self.cache: dict[tuple, ModelFlow] = {}
        self.expired = ModelFlows()

    @property
    def skipped(self) -> int:
        return self.expired.skipped

    def add(self, ts: float, pkt: Packet, in_ifx: int) -> None:
        obs = observe(pkt, in_ifx)
        if obs is None:
            self.expired.skipped += 1
            return
        fl = self.cache.get(obs.key)
        if fl is None:  # new flow: no expiry check, even for FIN/RST
            src, dst, sport, dport, proto, tos, ifx = obs.key
            self.cache[obs.key] = ModelFlow(src, dst, sport, dport, proto, tos, ifx, obs.ip_version,
                                            1, obs.length, obs.tcp_flags, ts, ts)
            return
        fl.packets += 1
        fl.bytes += obs.length
        fl.tcp_flags |= obs.tcp_flags
        fl.last = ts
        if obs.tcp_flags & (TH_FIN | TH_RST):
            self._expire(fl, "fin_rst")
        elif ts - fl.first > self.active:
            self._expire(fl, "active")

    def expire(self, now: float) -> None:
        """One periodic scan: expire inactive, then aged flows (ng_netflow_expire)."""
        for fl in list(self.cache.values()):
            if now - fl.last > self.inactive:
                self._expire(fl, "inactive")
            elif now - fl.first > self.active:
                self._expire(fl, "active")

    def flush(self) -> ModelFlows:
        for fl in sorted(self.cache.values(), key=lambda f: f.first):
            self._expire(fl, "flush")
        return self.expired

    def _expire(self, fl: ModelFlow, why: str) -> None:
        del self.cache[fl.key]
        fl.expired_by = why
        self.expired.append(fl)


def model_flows(packets: Iterable[tuple[float, Packet, int]], active: float = 1800,
                inactive: float = 15) -> ModelFlows:
    """All flows for `packets` (in time order): expired by FIN/RST or active
    timeout on a hit, the rest flushed at the end. `.skipped` counts non-IP frames."""
    m = FlowModel(active, inactive)
    for ts, pkt, ifx in packets:
        m.add(ts, pkt, ifx)
    return m.flush()
