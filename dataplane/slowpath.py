"""The router's slow path: what the C fast path (native/router.c) punts.

The fast path forwards what it can in one FIB lookup and punts the rest,
unmodified (hop limit not yet decremented), with its rx port and a reason
(dp.h DP_PUNT_*). Here, in Python:

* neighbour discovery (RFC 4861) and ARP (RFC 826): answer solicitations for
  our addresses, learn neighbours, and resolve next hops for RESOLVE punts,
  holding a few packets per neighbour until the answer comes;
* ICMPv6 (RFC 4443) and ICMP (RFC 792, RFC 1812) errors: time exceeded,
  packet too big / fragmentation needed, destination and port unreachable,
  all through one token bucket;
* echo replies for pings to our addresses;
* forwarding what the fast path does not: hop-by-hop options and IPv4
  options (processed by ipoptions.py first: Parameter Problem for bad ones,
  record route and timestamps filled in, source routes refused), IPv4
  fragmentation.

The reason only says why the fast path gave up; the decision is made again
here from the frame and the current route table (a route may have changed
since), in the fast path's order, except that the hop limit is checked
before a packet is held for resolution (no point resolving for a packet
that dies here).

Every handled frame ends in exactly one outcome counter (``OUTCOMES``), so
``sum(stats[o] for o in OUTCOMES) == handled``. Everything else in ``stats``
is an event that is not about one handled frame (see ``EVENTS``), plus
``punted_<reason>`` per punt reason and ``released_<outcome>`` for packets
that leave the hold queue (resolved and routed again, or given up on).

Not thread safe: call ``handle`` and ``tick`` from one thread.
"""
from __future__ import annotations

import collections
import dataclasses
import ipaddress
import logging
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property
from typing import TYPE_CHECKING, NamedTuple, Protocol

from scapy.layers.inet import ICMP, IP
from scapy.layers.inet6 import (
    ICMPv6DestUnreach,
    ICMPv6EchoReply,
    ICMPv6EchoRequest,
    ICMPv6ND_NA,
    ICMPv6ND_NS,
    ICMPv6NDOptDstLLAddr,
    ICMPv6NDOptSrcLLAddr,
    ICMPv6PacketTooBig,
    ICMPv6ParamProblem,
    ICMPv6TimeExceeded,
    IPv6,
)
from scapy.layers.l2 import ARP
from scapy.packet import Packet as ScapyPacket
from scapy.packet import Raw

from .ipoptions import OptionsRefused, Problem, process_hop_by_hop, process_ipv4

if TYPE_CHECKING:
    from .routing import Interface, Lookup

log = logging.getLogger(__name__)

Address = ipaddress.IPv4Address | ipaddress.IPv6Address

# dp.h DP_PUNT_*: why the fast path handed a frame to us.
PUNT_OTHER = 0
PUNT_LOCAL = 1
PUNT_RESOLVE = 2
PUNT_NO_ROUTE = 3
PUNT_HOP_LIMIT = 4
PUNT_TOO_BIG = 5
PUNT_HBH = 6
PUNT_IP4_OPTIONS = 7
PUNT_L2_MULTICAST = 8
PUNT_MULTICAST = 9
PUNT_ARP = 10
PUNT_SCOPE = 11
PUNT_REASONS = ("other", "local", "resolve", "no_route", "hop_limit", "too_big", "hbh",
                "ip4_options", "l2_multicast", "multicast", "arp", "scope")

# Exactly one of these per handled frame.
OUTCOMES = (
    # neighbour discovery and ARP
    "na_sent",               # a neighbour solicitation for our address answered
    "na_received",           # a neighbour advertisement learnt from
    "ndp_ignored",           # NDP not for us (other targets, RS, RA, redirects)
    "ndp_invalid",           # NDP failing RFC 4861 validation (hop limit != 255, checksum...)
    "arp_replies_sent",      # an ARP request for our address answered
    "arp_learned",           # an ARP reply (or other ARP) learnt from
    "arp_ignored",           # ARP not for us / not Ethernet+IPv4
    # to us
    "echo_replies",
    "port_unreachable",      # UDP to us: ICMP port unreachable sent
    "local_dropped",         # anything else to us (TCP, fragments, other protocols)
    "multicast_dropped",     # IP multicast / broadcast other than NDP
    "l2_multicast_dropped",  # unicast IP in a link-layer multicast/broadcast: not routed
    # routed
    "slow_forwarded",        # forwarded here (options, hop-by-hop, L2 multicast, resolved meanwhile)
    "fragmented",            # forwarded as IPv4 fragments (event fragments_sent counts them)
    "held",                  # waiting for neighbour resolution (see released_*)
    "resolve_table_full",    # a next hop to resolve while max_neighbours resolutions are under way
    "blackholed",
    "icmp_time_exceeded",
    "icmp_too_big",          # ICMPv6 packet too big
    "icmp_frag_needed",      # ICMP fragmentation needed (DF set)
    "icmp_unreachable",      # no route / reject route / beyond scope / refused source route
    "icmp_parameter_problem",  # a malformed IPv4 option or hop-by-hop option (ipoptions.py)
    "icmp_rate_limited",     # an error was due but the token bucket was empty
    "icmp_suppressed",       # an error was due but is never sent (about an error, multicast...)
    "no_source_address",     # no address of that family to send an error or solicitation from
    # bad input
    "malformed",
    "bad_checksum",
    "bad_options_dropped",   # hop-by-hop options past their header, or an unknown one to discard
    "ignored",               # punt reason other/unknown, non-IP ethertype, link-local not ours
    "no_interface",          # an answer was due out of a port that is no router interface
    "internal_error",        # a bug: logged with its traceback
)

# Counters that are not about one handled frame.
EVENTS = (
    "ns_sent",               # neighbour solicitations sent (first tries and retransmits)
    "arp_requests_sent",
    "neighbours_learned",    # router.learn() said the neighbour table changed
    "hold_dropped",          # oldest held packet dropped for a newer one
    "resolution_failed",     # neighbours given up on after RESOLVE_TRIES solicitations
    "fragments_sent",
    "nud_probes_sent",       # unicast NS / ARP polls of a learnt neighbour not heard from
    "neighbours_expired",    # learnt neighbours forgotten after unanswered polls
)

ETHERTYPE_IPV4 = 0x0800
ETHERTYPE_ARP = 0x0806
ETHERTYPE_IPV6 = 0x86DD
ETHERNET_HEADER_LEN = 14
BROADCAST_MAC = b"\xff" * 6

IPPROTO_ICMP = 1
IPPROTO_UDP = 17
IPPROTO_ICMPV6 = 58
IPV6_HOP_BY_HOP, IPV6_ROUTING, IPV6_FRAGMENT, IPV6_AH, IPV6_DEST_OPTS = 0, 43, 44, 51, 60
IPV6_EXTENSION_HEADERS = {IPV6_HOP_BY_HOP, IPV6_ROUTING, IPV6_FRAGMENT, IPV6_AH, IPV6_DEST_OPTS}

ICMPV6_ECHO_REQUEST = 128
ICMPV6_RS, ICMPV6_RA, ICMPV6_NS, ICMPV6_NA, ICMPV6_REDIRECT = 133, 134, 135, 136, 137
ICMPV6_FIRST_INFORMATIONAL = 128     # types below are errors (RFC 4443 2.1)
ICMP_ECHO_REQUEST = 8
ICMP_ERROR_TYPES = {3, 4, 5, 11, 12}  # RFC 1812 4.3.2.7: never an error about these
NDP_OPTION_SOURCE_LLA, NDP_OPTION_TARGET_LLA = 1, 2
ARP_REQUEST, ARP_REPLY = 1, 2

NDP_HOP_LIMIT = 255                  # RFC 4861: proves the sender is on-link
DEFAULT_HOP_LIMIT = 64               # for what we originate (errors, echo replies)
IPV6_MIN_MTU = 1280                  # an ICMPv6 error must fit in it (RFC 4443 2.4 c)
IPV4_DONT_FRAGMENT, IPV4_MORE_FRAGMENTS, IPV4_OFFSET_MASK = 0x4000, 0x2000, 0x1FFF

HOLD_PER_NEIGHBOUR = 3               # packets held per unresolved neighbour
RESOLVE_RETRANSMIT_S = 1.0           # RFC 4861 RETRANS_TIMER
RESOLVE_TRIES = 3                    # RFC 4861 MAX_MULTICAST_SOLICIT
NUD_PROBES = 3                       # RFC 4861 MAX_UNICAST_SOLICIT
SOURCE_BUCKETS = 4096                # ICMP error buckets kept per source address


class RouterView(Protocol):
    """What the slow path needs from the route table (routing.RouteTable)."""

    def interface(self, port_id: int) -> Interface | None: ...
    def interfaces(self) -> list[Interface]: ...
    def is_local(self, addr) -> bool: ...
    def lookup(self, addr) -> Lookup: ...
    def neighbour_mac(self, port_id: int, addr) -> str | None: ...
    def learn(self, port_id: int, addr, mac: str) -> bool: ...
    def learnt_neighbours(self) -> list[tuple[int, Address, str]]: ...
    def forget(self, port_id: int, addr) -> bool: ...


@dataclass(frozen=True)
class IcmpError:
    """One kind of error, as ICMPv6 and as ICMP (None: not sent for that family)."""
    v6: tuple[int, int] | None      # (type, code)
    v4: tuple[int, int] | None
    counter: str


TIME_EXCEEDED = IcmpError((3, 0), (11, 0), "icmp_time_exceeded")
NO_ROUTE = IcmpError((1, 0), (3, 0), "icmp_unreachable")              # ICMP: net unreachable
ADMIN_PROHIBITED = IcmpError((1, 1), (3, 13), "icmp_unreachable")     # a reject route
BEYOND_SCOPE = IcmpError((1, 2), None, "icmp_unreachable")            # link-local source
ADDRESS_UNREACHABLE = IcmpError((1, 3), (3, 1), "icmp_unreachable")   # ICMP: host unreachable
PORT_UNREACHABLE = IcmpError((1, 4), (3, 3), "port_unreachable")
PACKET_TOO_BIG = IcmpError((2, 0), None, "icmp_too_big")
PARAMETER_PROBLEM = IcmpError((4, 0), (12, 0), "icmp_parameter_problem")
UNRECOGNIZED_OPTION = IcmpError((4, 2), None, "icmp_parameter_problem")
SOURCE_ROUTE_REFUSED = IcmpError(None, (3, 9), "icmp_unreachable")   # NetBSD: allowsrcrt = 0
FRAG_NEEDED = IcmpError(None, (3, 4), "icmp_frag_needed")

ICMPV6_ERROR_LAYERS = {1: ICMPv6DestUnreach, 2: ICMPv6PacketTooBig, 3: ICMPv6TimeExceeded,
                       4: ICMPv6ParamProblem}


class Discard(Exception):
    """Stop handling a frame; ``outcome`` says why."""

    def __init__(self, outcome: str):
        super().__init__(outcome)
        self.outcome = outcome


class UpperLayer(NamedTuple):
    proto: int | None       # None: unknown (a non-first fragment, or a truncated header chain)
    offset: int             # where its header starts in the datagram
    fragmented: bool


@dataclass
class IpPacket:
    """An IP datagram from a punted frame, without Ethernet header or padding."""
    rx_port: int
    eth_src: bytes
    l2_multicast: bool      # the frame was sent to a multicast/broadcast MAC
    data: bytes
    src: Address
    dst: Address

    @property
    def version(self) -> int:
        return self.src.version

    @property
    def hop_limit(self) -> int:
        return self.data[7] if self.version == 6 else self.data[8]

    @property
    def header_len(self) -> int:
        return 40 if self.version == 6 else (self.data[0] & 0x0F) * 4

    @property
    def has_options(self) -> bool:
        """IPv4 options, or an IPv6 hop-by-hop header."""
        return self.header_len > 20 if self.version == 4 else self.data[6] == IPV6_HOP_BY_HOP

    @property
    def ethertype(self) -> int:
        return ETHERTYPE_IPV6 if self.version == 6 else ETHERTYPE_IPV4

    @property
    def ipv4_flags_offset(self) -> int:
        return struct.unpack_from("!H", self.data, 6)[0]

    @cached_property
    def upper_layer(self) -> UpperLayer:
        if self.version == 4:
            fragmented = bool(self.ipv4_flags_offset & (IPV4_MORE_FRAGMENTS | IPV4_OFFSET_MASK))
            first = not self.ipv4_flags_offset & IPV4_OFFSET_MASK
            return UpperLayer(self.data[9] if first else None, self.header_len, fragmented)
        return ipv6_upper_layer(self.data)

    def upper_byte(self, index: int) -> int | None:
        """Byte `index` of the upper-layer header, None if not there."""
        at = self.upper_layer.offset + index
        return self.data[at] if self.upper_layer.proto is not None and at < len(self.data) else None

    def decremented(self) -> bytes:
        """The datagram with hop limit / TTL one less (IPv4: checksum redone)."""
        data = bytearray(self.data)
        if self.version == 6:
            data[7] -= 1
            return bytes(data)
        data[8] -= 1
        return ipv4_with_checksum(data[:self.header_len]) + bytes(data[self.header_len:])


@dataclass
class Reachability:
    """Neighbour unreachability detection for one learnt neighbour (RFC 4861
    7.3, as NetBSD's ARP refresh does it): heard from at `confirmed`; past
    the reachable time it is polled by unicast, then forgotten."""
    confirmed: float
    probes: int = 0
    last_probe: float = 0.0


@dataclass
class PendingNeighbour:
    """A next hop being resolved, and the packets waiting for it."""
    port_id: int
    address: Address
    tries: int = 0
    last_solicit: float = 0.0
    held: collections.deque = field(default_factory=collections.deque)


class SlowPath:
    """Handles the frames the fast path punts; see the module docstring.

    router: the route table's view. inject(port_id, frame): send a frame.
    clock: monotonic seconds. icmp_rate / icmp_burst: the token bucket for
    all ICMP/ICMPv6 errors (per second, and how many may go at once).
    reachable_s: a learnt neighbour not heard from for this long is polled
    (NUD_PROBES unicast solicitations a second apart) and forgotten if it
    stays silent; 0 keeps learnt neighbours until changed or deleted.
    """

    def __init__(self, router: RouterView, inject: Callable[[int, bytes], None],
                 clock: Callable[[], float] = time.monotonic, icmp_rate: float = 100,
                 icmp_burst: int = 10, reachable_s: float = 30.0, source_share: float = 1.0,
                 max_pending: int = 1024):
        self.router = router
        self.inject = inject
        self.clock = clock
        self.icmp_rate = icmp_rate
        self.icmp_burst = icmp_burst
        self.source_share = source_share
        self.max_pending = max_pending  # neighbours being resolved at once
        self.stats: collections.Counter = collections.Counter()
        self.handled = 0
        self._tokens = float(icmp_burst)
        self._tokens_at = clock()
        # per source address: (tokens, when), the least recently used first
        self._source_tokens: collections.OrderedDict[Address, tuple[float, float]] = \
            collections.OrderedDict()
        self._pending: dict[tuple[int, Address], PendingNeighbour] = {}
        self.reachable_s = reachable_s
        self._reachability: dict[tuple[int, Address], Reachability] = {}

    def set_icmp_rate(self, rate: float, burst: int, source_share: float | None = None) -> None:
        """A new token bucket (live reload); tokens kept up to the new burst."""
        self._take_token_refill()
        self.icmp_rate, self.icmp_burst = rate, burst
        self._tokens = min(self._tokens, float(burst))
        if source_share is not None:
            self.source_share = source_share
            self._source_tokens.clear()

    # ---- entry points -------------------------------------------------------------

    def handle(self, port_id: int, reason: int, frame: bytes) -> None:
        """One punted frame, as received on `port_id`. Never raises."""
        self.handled += 1
        name = PUNT_REASONS[reason] if 0 <= reason < len(PUNT_REASONS) else "unknown"
        self.stats[f"punted_{name}"] += 1
        try:
            outcome = self._dispatch(port_id, reason, bytes(frame))
        except Discard as discard:
            outcome = discard.outcome
        except Exception:  # a slow-path bug must not stop the punt loop
            log.exception("slow path failed on a %s punt from port %d", name, port_id)
            outcome = "internal_error"
        if outcome not in OUTCOMES:
            log.error("slow path: unknown outcome %r", outcome)
            outcome = "internal_error"
        self.stats[outcome] += 1

    def tick(self) -> None:
        """Retransmit solicitations and give up on silent neighbours; call it
        a few times a second."""
        now = self.clock()
        for key, pending in list(self._pending.items()):
            if now - pending.last_solicit < RESOLVE_RETRANSMIT_S:
                continue
            if pending.tries < RESOLVE_TRIES and self._solicit(pending):
                continue
            del self._pending[key]
            self.stats["resolution_failed"] += 1
            log.debug("no answer from %s on port %d", pending.address, pending.port_id)
            for pkt in pending.held:
                outcome = self._outcome_of(self._send_error, pkt, ADDRESS_UNREACHABLE)
                self.stats["released_" + outcome] += 1
        self._unreachability(now)

    def _unreachability(self, now: float) -> None:
        """Poll learnt neighbours not heard from in reachable_s; forget those
        that stay silent, so their routes resolve again."""
        learnt = {(port, addr): mac for port, addr, mac in self.router.learnt_neighbours()}
        for key in self._reachability.keys() - learnt.keys():
            del self._reachability[key]  # deleted or made static meanwhile
        if not self.reachable_s:
            return
        for key, mac in learnt.items():
            state = self._reachability.setdefault(key, Reachability(confirmed=now))
            if now - state.confirmed < self.reachable_s:
                continue
            if now - state.last_probe < RESOLVE_RETRANSMIT_S:
                continue
            if state.probes < NUD_PROBES:
                if self._probe(key[0], key[1], mac):
                    state.probes += 1
                    state.last_probe = now
                continue
            if self.router.forget(*key):
                self.stats["neighbours_expired"] += 1
                log.info("neighbour %s on port %d did not answer: forgotten", key[1], key[0])
            del self._reachability[key]

    def _probe(self, port_id: int, address: Address, mac: str) -> bool:
        """One unicast NS or ARP request straight to the neighbour's MAC."""
        iface = self.router.interface(port_id)
        source = source_address(iface, address, any_global=False)
        if iface is None or source is None:
            return False
        if address.version == 6:
            ns = (IPv6(src=str(source), dst=str(address), hlim=NDP_HOP_LIMIT)
                  / ICMPv6ND_NS(tgt=str(address)) / ICMPv6NDOptSrcLLAddr(lladdr=iface.mac))
            self._emit(port_id, mac, iface.mac, ETHERTYPE_IPV6, bytes(ns))
        else:
            request = ARP(op=ARP_REQUEST, hwsrc=iface.mac, psrc=str(source),
                          hwdst=mac, pdst=str(address))
            self._emit(port_id, mac, iface.mac, ETHERTYPE_ARP, bytes(request))
        self.stats["nud_probes_sent"] += 1
        return True

    @staticmethod
    def _outcome_of(step: Callable[..., str], *args) -> str:
        """`step`'s outcome for a held packet, which is no handled frame's."""
        try:
            return step(*args)
        except Discard as discard:
            return discard.outcome

    def outcome_counts(self) -> dict[str, int]:
        return {name: self.stats[name] for name in OUTCOMES}

    @property
    def pending_neighbours(self) -> int:
        return len(self._pending)

    @property
    def held_packets(self) -> int:
        return sum(len(p.held) for p in self._pending.values())

    # ---- dispatch -----------------------------------------------------------------

    def _dispatch(self, port_id: int, reason: int, frame: bytes) -> str:
        if not PUNT_OTHER < reason < len(PUNT_REASONS):
            return "ignored"  # not punted by the router stage: not ours to judge
        if len(frame) < ETHERNET_HEADER_LEN:
            return "malformed"
        # A port without addresses (interface() is None) may still carry routed
        # traffic: only what needs our address or MAC there ends in no_interface.
        ethertype = struct.unpack_from("!H", frame, 12)[0]
        if ethertype == ETHERTYPE_ARP:
            return self._handle_arp(port_id, frame)
        if ethertype not in (ETHERTYPE_IPV4, ETHERTYPE_IPV6):
            return "ignored"
        pkt = parse_ip(port_id, frame)
        if pkt.version == 6 and pkt.dst.is_multicast:
            return self._handle_multicast6(pkt)
        if pkt.version == 4 and (pkt.dst.is_multicast or self._is_broadcast(pkt.dst)):
            return "multicast_dropped"
        if reason == PUNT_L2_MULTICAST and not self.router.is_local(pkt.dst):
            # RFC 1812 5.3.4 / NetBSD ip_input: a unicast packet that came as
            # a link-layer broadcast or multicast is not forwarded.
            return "l2_multicast_dropped"
        if pkt.has_options:
            # ip_input / ip6_input: options first, for us or to forward
            try:
                pkt = self._with_options_processed(pkt)
            except OptionsRefused as refused:
                return self._refuse_options(pkt, refused.problem)
        return self._route(pkt)

    def _with_options_processed(self, pkt: IpPacket) -> IpPacket:
        if pkt.version == 6:
            process_hop_by_hop(pkt.data, pkt.dst.is_multicast)
            return pkt
        iface = self.router.interface(pkt.rx_port)
        header = process_ipv4(pkt.data[:pkt.header_len], self._egress_address4,
                              source_address(iface, pkt.src, any_global=True),
                              self.router.is_local)
        return dataclasses.replace(pkt, data=header + pkt.data[pkt.header_len:])

    def _egress_address4(self, dst: ipaddress.IPv4Address) -> ipaddress.IPv4Address | None:
        route = self.router.lookup(dst)
        if route.kind not in ("forward", "resolve") or route.port_id is None:
            return None
        return source_address(self.router.interface(route.port_id), dst, any_global=True)

    def _refuse_options(self, pkt: IpPacket, problem: Problem) -> str:
        if problem.kind == "parameter":
            error = UNRECOGNIZED_OPTION if problem.code == 2 else PARAMETER_PROBLEM
            return self._send_error(pkt, error, pointer=problem.pointer)
        if problem.kind == "source_route":
            return self._send_error(pkt, SOURCE_ROUTE_REFUSED)
        if problem.kind == "unreachable":
            return self._send_error(pkt, ADDRESS_UNREACHABLE)
        return "bad_options_dropped"

    def _route(self, pkt: IpPacket) -> str:
        """Decide as the fast path does, with the table as it is now."""
        if self.router.is_local(pkt.dst):
            return self._deliver_local(pkt)
        if pkt.version == 6 and pkt.dst.is_link_local:
            return "ignored"  # never forwarded (RFC 4291 2.5.6), and not ours
        route = self.router.lookup(pkt.dst)
        if route.kind == "local":
            return self._deliver_local(pkt)
        if route.kind == "blackhole":
            return "blackholed"
        if route.kind == "reject":
            return self._send_error(pkt, ADMIN_PROHIBITED)
        if route.kind not in ("forward", "resolve") or route.port_id is None:
            return self._send_error(pkt, NO_ROUTE)
        if pkt.version == 6 and pkt.src.is_link_local:
            return self._send_error(pkt, BEYOND_SCOPE)
        if pkt.hop_limit <= 1:
            return self._send_error(pkt, TIME_EXCEEDED)
        if route.kind == "resolve" or not route.dst_mac:
            return self._hold(pkt, route)
        return self._forward(pkt, route)

    # ---- forwarding -----------------------------------------------------------------

    def _forward(self, pkt: IpPacket, route: Lookup) -> str:
        src_mac = route.src_mac or self._mac(route.port_id)
        if len(pkt.data) <= route.mtu:
            self._emit(route.port_id, route.dst_mac, src_mac, pkt.ethertype, pkt.decremented())
            return "slow_forwarded"
        if pkt.version == 6:
            return self._send_error(pkt, PACKET_TOO_BIG, mtu=route.mtu)
        if pkt.ipv4_flags_offset & IPV4_DONT_FRAGMENT:
            return self._send_error(pkt, FRAG_NEEDED, mtu=route.mtu)
        fragments = fragment_ipv4(pkt.decremented(), route.mtu)
        if not fragments:  # an MTU too small to carry 8 bytes of payload
            return self._send_error(pkt, FRAG_NEEDED, mtu=route.mtu)
        for fragment in fragments:
            self._emit(route.port_id, route.dst_mac, src_mac, ETHERTYPE_IPV4, fragment)
        self.stats["fragments_sent"] += len(fragments)
        return "fragmented"

    # ---- neighbour resolution -------------------------------------------------------

    def _hold(self, pkt: IpPacket, route: Lookup) -> str:
        if route.neighbour is None:
            return self._send_error(pkt, NO_ROUTE)
        key = (route.port_id, route.neighbour)
        pending = self._pending.get(key)
        if pending is None:
            if len(self._pending) >= self.max_pending:
                return "resolve_table_full"  # a scan of the subnet: no unbounded state
            pending = PendingNeighbour(route.port_id, route.neighbour)
            if not self._solicit(pending):
                return "no_source_address"
            self._pending[key] = pending
        elif (pending.tries < RESOLVE_TRIES
              and self.clock() - pending.last_solicit >= RESOLVE_RETRANSMIT_S):
            self._solicit(pending)
        if len(pending.held) >= HOLD_PER_NEIGHBOUR:
            pending.held.popleft()
            self.stats["hold_dropped"] += 1
        pending.held.append(pkt)
        return "held"

    def _solicit(self, pending: PendingNeighbour) -> bool:
        """Send one NS (to the solicited-node group) or ARP request (broadcast)."""
        iface = self.router.interface(pending.port_id)
        target = pending.address
        source = source_address(iface, target, any_global=False)
        if iface is None or source is None:
            return False
        if target.version == 6:
            group = solicited_node_group(target)
            ns = (IPv6(src=str(source), dst=str(group), hlim=NDP_HOP_LIMIT)
                  / ICMPv6ND_NS(tgt=str(target)) / ICMPv6NDOptSrcLLAddr(lladdr=iface.mac))
            self._emit(pending.port_id, multicast_mac(group), iface.mac, ETHERTYPE_IPV6, bytes(ns))
            self.stats["ns_sent"] += 1
        else:
            request = ARP(op=ARP_REQUEST, hwsrc=iface.mac, psrc=str(source),
                          hwdst="00:00:00:00:00:00", pdst=str(target))
            self._emit(pending.port_id, BROADCAST_MAC, iface.mac, ETHERTYPE_ARP, bytes(request))
            self.stats["arp_requests_sent"] += 1
        pending.tries += 1
        pending.last_solicit = self.clock()
        return True

    def _learn(self, port_id: int, address: Address, mac: bytes | str) -> None:
        """Tell the route table, then route what was waiting for this neighbour."""
        mac = mac if isinstance(mac, str) else mac_str(mac)
        if not is_unicast_mac(mac):
            return
        if self.router.learn(port_id, address, mac):
            self.stats["neighbours_learned"] += 1
        if self.router.neighbour_mac(port_id, address) == mac:
            # heard from: reachable again (RFC 4861 7.3.3)
            self._reachability[(port_id, address)] = Reachability(confirmed=self.clock())
        pending = self._pending.pop((port_id, address), None)
        for pkt in pending.held if pending else ():
            # routed again: usually forwarded now, but the route may have changed
            self.stats["released_" + self._outcome_of(self._route, pkt)] += 1

    def _knows(self, port_id: int, address: Address) -> bool:
        """A neighbour we have, or are resolving: worth updating from any message
        (RFC 826's merge flag, RFC 4861 7.2.3)."""
        return ((port_id, address) in self._pending
                or self.router.neighbour_mac(port_id, address) is not None)

    # ---- NDP ------------------------------------------------------------------------

    def _handle_multicast6(self, pkt: IpPacket) -> str:
        if pkt.upper_layer.proto == IPPROTO_ICMPV6 and not pkt.upper_layer.fragmented:
            icmp_type = pkt.upper_byte(0)
            if icmp_type in (ICMPV6_NS, ICMPV6_NA):
                return self._handle_ndp(pkt)
            if icmp_type in (ICMPV6_RS, ICMPV6_RA, ICMPV6_REDIRECT):
                return "ndp_ignored"  # we are not a router advertiser, nor redirected
        return "multicast_dropped"

    def _handle_ndp(self, pkt: IpPacket) -> str:
        message = pkt.data[pkt.upper_layer.offset:]
        # RFC 4861 7.1.1 / 7.1.2: hop limit 255 proves the sender is on this link
        if (pkt.hop_limit != NDP_HOP_LIMIT or len(message) < 24 or message[1] != 0
                or not icmp_checksum_ok(pkt)):
            return "ndp_invalid"
        options = ndp_options(message[24:])
        if options is None:
            return "ndp_invalid"
        if message[0] == ICMPV6_NS:
            return self._handle_ns(pkt, dissect(ICMPv6ND_NS, message), options)
        return self._handle_na(pkt, dissect(ICMPv6ND_NA, message), options)

    def _handle_ns(self, pkt: IpPacket, ns: ICMPv6ND_NS, options: dict) -> str:
        target = ipaddress.IPv6Address(ns.tgt)
        sender_mac = options.get(NDP_OPTION_SOURCE_LLA)
        dad = pkt.src.is_unspecified  # duplicate address detection
        if target.is_multicast or (dad and (sender_mac or pkt.dst != solicited_node_group(target))):
            return "ndp_invalid"
        iface = self.router.interface(pkt.rx_port)
        ours = owns(iface, target)
        if sender_mac and not dad and (ours or self._knows(pkt.rx_port, pkt.src)):
            self._learn(pkt.rx_port, pkt.src, sender_mac)
        if not ours:
            return "ndp_ignored"
        if dad:  # RFC 4861 7.2.4: to all nodes, not solicited
            dst, dst_mac, solicited = ALL_NODES, multicast_mac(ALL_NODES), 0
        else:
            dst, dst_mac, solicited = pkt.src, sender_mac or pkt.eth_src, 1
        # R: we are a router (hosts that see it cleared drop us as a default router)
        na = (IPv6(src=str(target), dst=str(dst), hlim=NDP_HOP_LIMIT)
              / ICMPv6ND_NA(R=1, S=solicited, O=1, tgt=str(target))
              / ICMPv6NDOptDstLLAddr(lladdr=iface.mac))
        self._emit(pkt.rx_port, dst_mac, iface.mac, ETHERTYPE_IPV6, bytes(na))
        return "na_sent"

    def _handle_na(self, pkt: IpPacket, na: ICMPv6ND_NA, options: dict) -> str:
        target = ipaddress.IPv6Address(na.tgt)
        if target.is_multicast or (na.S and pkt.dst.is_multicast):
            return "ndp_invalid"
        if self.router.is_local(target):
            log.warning("%s claims our address %s on port %d",
                        mac_str(pkt.eth_src), target, pkt.rx_port)
            return "ndp_ignored"
        self._learn(pkt.rx_port, target, options.get(NDP_OPTION_TARGET_LLA) or pkt.eth_src)
        return "na_received"

    # ---- ARP ------------------------------------------------------------------------

    def _handle_arp(self, port_id: int, frame: bytes) -> str:
        if len(frame) < ETHERNET_HEADER_LEN + 8:
            return "malformed"
        hardware, protocol, hardware_len, protocol_len, op = struct.unpack_from(
            "!HHBBH", frame, ETHERNET_HEADER_LEN)
        if (hardware, protocol, hardware_len, protocol_len) != (1, ETHERTYPE_IPV4, 6, 4):
            return "arp_ignored"  # not Ethernet / IPv4
        if op not in (ARP_REQUEST, ARP_REPLY):
            return "arp_ignored"
        if len(frame) < ETHERNET_HEADER_LEN + 28:
            return "malformed"
        arp = dissect(ARP, frame[ETHERNET_HEADER_LEN:ETHERNET_HEADER_LEN + 28])
        sender, target = ipaddress.IPv4Address(arp.psrc), ipaddress.IPv4Address(arp.pdst)
        if self.router.is_local(sender):
            return "arp_ignored"  # our own, reflected, or a conflict: believe nothing
        iface = self.router.interface(port_id)
        for_us = owns(iface, target)
        learnable = not sender.is_unspecified and (for_us or self._knows(port_id, sender))
        if learnable:
            self._learn(port_id, sender, arp.hwsrc)
        if arp.op == ARP_REQUEST and for_us:
            reply = ARP(op=ARP_REPLY, hwsrc=iface.mac, psrc=str(target), hwdst=arp.hwsrc,
                        pdst=str(sender))
            self._emit(port_id, arp.hwsrc, iface.mac, ETHERTYPE_ARP, bytes(reply))
            return "arp_replies_sent"
        return "arp_learned" if learnable else "arp_ignored"

    # ---- to us ----------------------------------------------------------------------

    def _deliver_local(self, pkt: IpPacket) -> str:
        upper = pkt.upper_layer
        if upper.fragmented or upper.proto is None:
            return "local_dropped"  # no reassembly here
        first_byte = pkt.upper_byte(0)
        if pkt.version == 6 and upper.proto == IPPROTO_ICMPV6:
            if first_byte == ICMPV6_ECHO_REQUEST:
                return self._echo_reply(pkt)
            if first_byte in (ICMPV6_NS, ICMPV6_NA):
                return self._handle_ndp(pkt)
            if first_byte in (ICMPV6_RS, ICMPV6_RA, ICMPV6_REDIRECT):
                return "ndp_ignored"
        if pkt.version == 4 and upper.proto == IPPROTO_ICMP and first_byte == ICMP_ECHO_REQUEST:
            return self._echo_reply(pkt)
        if upper.proto == IPPROTO_UDP:
            return self._send_error(pkt, PORT_UNREACHABLE)
        return "local_dropped"

    def _echo_reply(self, pkt: IpPacket) -> str:
        message = pkt.data[pkt.upper_layer.offset:]
        if len(message) < 8:
            return "malformed"
        if not icmp_checksum_ok(pkt):
            return "bad_checksum"
        if not self._is_unicast(pkt.src):
            return "local_dropped"
        if pkt.version == 6:
            request = dissect(ICMPv6EchoRequest, message)
            reply = (IPv6(src=str(pkt.dst), dst=str(pkt.src), hlim=DEFAULT_HOP_LIMIT)
                     / ICMPv6EchoReply(id=request.id, seq=request.seq, data=request.data))
        else:
            request = dissect(ICMP, message)
            reply = (IP(src=str(pkt.dst), dst=str(pkt.src), ttl=DEFAULT_HOP_LIMIT, tos=pkt.data[1])
                     / ICMP(type=0, code=0, id=request.id, seq=request.seq) / Raw(message[8:]))
        self._send_back(pkt, reply)
        return "echo_replies"

    # ---- errors ---------------------------------------------------------------------

    def _send_error(self, pkt: IpPacket, error: IcmpError, mtu: int = 0, pointer: int = 0) -> str:
        """An ICMP(v6) error about `pkt`, back to its source; returns the outcome."""
        type_code = error.v6 if pkt.version == 6 else error.v4
        if type_code is None or not self._may_send_error(pkt, error):
            return "icmp_suppressed"
        source = source_address(self.router.interface(pkt.rx_port), pkt.src, any_global=True)
        if source is None:
            return "no_source_address"
        if not self._take_token(pkt.src):
            return "icmp_rate_limited"
        icmp_type, code = type_code
        if pkt.version == 6:
            layer = ICMPV6_ERROR_LAYERS[icmp_type](code=code)
            if icmp_type == 2:
                layer.mtu = mtu
            elif icmp_type == 4:
                layer.ptr = pointer
            quote = pkt.data[:IPV6_MIN_MTU - 40 - 8]  # the whole error fits in 1280 bytes
            message = IPv6(src=str(source), dst=str(pkt.src), hlim=DEFAULT_HOP_LIMIT) / layer
        else:
            layer = ICMP(type=icmp_type, code=code)
            if error is FRAG_NEEDED:
                layer.nexthopmtu = mtu  # RFC 1191
            elif error is PARAMETER_PROBLEM:
                layer.ptr = pointer
            quote = pkt.data[:pkt.header_len + 8]  # RFC 792: the IP header and 8 bytes
            message = IP(src=str(source), dst=str(pkt.src), ttl=DEFAULT_HOP_LIMIT) / layer
        self._send_back(pkt, message / Raw(quote))
        return error.counter

    def _may_send_error(self, pkt: IpPacket, error: IcmpError) -> bool:
        """RFC 4443 2.4 (e) and RFC 1812 4.3.2.7: the errors never to send."""
        if pkt.l2_multicast and error is not PACKET_TOO_BIG:
            return False
        if not (self._is_unicast(pkt.src) and self._is_unicast(pkt.dst)):
            return False
        if self.router.is_local(pkt.src):
            return False  # spoofed or looped: it would come back to us
        upper = pkt.upper_layer
        if pkt.version == 6:
            icmp_type = pkt.upper_byte(0) if upper.proto == IPPROTO_ICMPV6 else None
            return icmp_type is None or icmp_type >= ICMPV6_FIRST_INFORMATIONAL
        if upper.proto is None:
            return False  # a non-first fragment
        return upper.proto != IPPROTO_ICMP or pkt.upper_byte(0) not in ICMP_ERROR_TYPES

    def _take_token_refill(self) -> None:
        now = self.clock()
        self._tokens = min(float(self.icmp_burst),
                           self._tokens + (now - self._tokens_at) * self.icmp_rate)
        self._tokens_at = now

    def _take_token(self, source: Address) -> bool:
        """One error's token: the source's own (a burst, then source_share of
        the rate: one host's storm leaves the rest to the others, and a
        traceroute's three probes find a burst), then the router's."""
        if self.source_share < 1 and not self._take_source_token(source):
            return False
        self._take_token_refill()
        if self._tokens < 1:
            return False
        self._tokens -= 1
        return True

    def _take_source_token(self, source: Address) -> bool:
        now = self.clock()
        burst = float(self.icmp_burst)
        tokens, at = self._source_tokens.pop(source, (burst, now))
        tokens = min(burst, tokens + (now - at) * self.icmp_rate * self.source_share)
        ok = tokens >= 1
        self._source_tokens[source] = (tokens - 1 if ok else tokens, now)
        if len(self._source_tokens) > SOURCE_BUCKETS:
            self._source_tokens.popitem(last=False)  # the least recently heard from
        return ok

    def _is_unicast(self, address: Address) -> bool:
        if address.is_multicast or address.is_unspecified:
            return False
        if address.version == 6:
            return True
        return not (address.is_loopback or address.is_reserved or self._is_broadcast(address))

    def _is_broadcast(self, address: ipaddress.IPv4Address) -> bool:
        """The limited broadcast, or the directed broadcast of one of our subnets."""
        return address == BROADCAST_IPV4 or any(
            address == a.network.broadcast_address and a.network.prefixlen < 31
            for iface in self.router.interfaces() for a in iface.addresses if a.version == 4)

    # ---- sending --------------------------------------------------------------------

    def _send_back(self, pkt: IpPacket, reply: ScapyPacket) -> None:
        """Something we originate in answer to `pkt`: routed to its source, or
        (no usable route: link-local, unresolved) back out of the rx port to
        the frame's sender."""
        if not (pkt.version == 6 and pkt.src.is_link_local):
            route = self.router.lookup(pkt.src)
            if route.kind == "forward" and route.port_id is not None and route.dst_mac:
                self._emit(route.port_id, route.dst_mac, route.src_mac or self._mac(route.port_id),
                           pkt.ethertype, bytes(reply))
                return
        self._emit(pkt.rx_port, pkt.eth_src, self._mac(pkt.rx_port), pkt.ethertype, bytes(reply))

    def _emit(self, port_id: int, dst_mac: bytes | str, src_mac: bytes | str, ethertype: int,
              payload: bytes) -> None:
        self.inject(port_id, mac_bytes(dst_mac) + mac_bytes(src_mac)
                    + struct.pack("!H", ethertype) + payload)

    def _mac(self, port_id: int) -> str:
        iface = self.router.interface(port_id)
        if iface is None:
            raise Discard("no_interface")
        return iface.mac


# ---- helpers (no state) --------------------------------------------------------------

ALL_NODES = ipaddress.IPv6Address("ff02::1")
BROADCAST_IPV4 = ipaddress.IPv4Address("255.255.255.255")


def parse_ip(port_id: int, frame: bytes) -> IpPacket:
    """The IP datagram in an Ethernet frame, checked and trimmed to its length."""
    data = frame[ETHERNET_HEADER_LEN:]
    ethertype = struct.unpack_from("!H", frame, 12)[0]
    if ethertype == ETHERTYPE_IPV6:
        if len(data) < 40 or data[0] >> 4 != 6:
            raise Discard("malformed")
        length = 40 + struct.unpack_from("!H", data, 4)[0]
        if length > len(data):
            raise Discard("malformed")
        src, dst = ipaddress.IPv6Address(data[8:24]), ipaddress.IPv6Address(data[24:40])
    else:
        if len(data) < 20 or data[0] >> 4 != 4:
            raise Discard("malformed")
        header_len = (data[0] & 0x0F) * 4
        length = struct.unpack_from("!H", data, 2)[0]
        if header_len < 20 or length < header_len or length > len(data):
            raise Discard("malformed")
        if internet_checksum(data[:header_len]) != 0:
            raise Discard("bad_checksum")
        src, dst = ipaddress.IPv4Address(data[12:16]), ipaddress.IPv4Address(data[16:20])
    return IpPacket(port_id, frame[6:12], bool(frame[0] & 1), data[:length], src, dst)


def ipv6_upper_layer(data: bytes) -> UpperLayer:
    """Walk the extension headers to the upper-layer protocol."""
    proto, offset, fragmented = data[6], 40, False
    while proto in IPV6_EXTENSION_HEADERS:
        if offset + 8 > len(data):
            return UpperLayer(None, offset, fragmented)
        next_proto = data[offset]
        if proto == IPV6_FRAGMENT:
            fragmented = True
            if struct.unpack_from("!H", data, offset + 2)[0] >> 3:
                return UpperLayer(None, offset + 8, True)  # not the first fragment
            offset += 8
        elif proto == IPV6_AH:
            offset += (data[offset + 1] + 2) * 4
        else:
            offset += (data[offset + 1] + 1) * 8
        proto = next_proto
    if offset >= len(data):
        return UpperLayer(None, offset, fragmented)
    return UpperLayer(proto, offset, fragmented)


def internet_checksum(data: bytes) -> int:
    """RFC 1071; 0 over data that includes a correct checksum."""
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def icmp_checksum_ok(pkt: IpPacket) -> bool:
    message = pkt.data[pkt.upper_layer.offset:]
    if pkt.version == 4:
        return internet_checksum(message) == 0
    pseudo_header = (pkt.src.packed + pkt.dst.packed + struct.pack("!I", len(message))
                     + bytes(3) + bytes([IPPROTO_ICMPV6]))
    return internet_checksum(pseudo_header + message) == 0


def ipv4_with_checksum(header: bytes | bytearray) -> bytes:
    header = bytearray(header)
    header[10:12] = b"\0\0"
    header[10:12] = struct.pack("!H", internet_checksum(bytes(header)))
    return bytes(header)


def fragment_ipv4(datagram: bytes, mtu: int) -> list[bytes]:
    """RFC 791 fragmentation: every fragment fits in `mtu`, payload splits on
    8-byte boundaries, and only options with the copied flag go past the first
    fragment. Re-fragmenting a fragment keeps its offset and last MF flag.
    Empty when the MTU cannot carry 8 bytes of payload."""
    header_len = (datagram[0] & 0x0F) * 4
    header, payload = datagram[:header_len], datagram[header_len:]
    flags_offset = struct.unpack_from("!H", header, 6)[0]
    later_header = header[:20] + copied_options(header[20:])
    if (mtu - header_len) // 8 < 1:
        return []
    fragments, position = [], 0
    while position < len(payload):
        frag_header = header if position == 0 else later_header
        chunk = payload[position:position + (mtu - len(frag_header)) // 8 * 8]
        last = position + len(chunk) >= len(payload)
        more = flags_offset & IPV4_MORE_FRAGMENTS if last else IPV4_MORE_FRAGMENTS
        offset = (flags_offset & IPV4_OFFSET_MASK) + position // 8
        new_header = bytearray(frag_header)
        new_header[0] = 0x40 | len(frag_header) // 4
        struct.pack_into("!H", new_header, 2, len(frag_header) + len(chunk))
        struct.pack_into("!H", new_header, 6, more | offset)
        fragments.append(ipv4_with_checksum(new_header) + chunk)
        position += len(chunk)
    return fragments


def copied_options(options: bytes) -> bytes:
    """The IPv4 options with the copied flag (RFC 791), padded to 32 bits."""
    kept, position = b"", 0
    while position < len(options):
        option_type = options[position]
        if option_type == 0:  # end of options
            break
        if option_type == 1:  # no-op, single byte
            position += 1
            continue
        if position + 1 >= len(options) or options[position + 1] < 2:
            break  # malformed: keep what was whole
        length = options[position + 1]
        if option_type & 0x80:
            kept += options[position:position + length]
        position += length
    return kept + bytes(-len(kept) % 4)


def ndp_options(data: bytes) -> dict[int, bytes] | None:
    """NDP options by type (the first of each); the link-layer address options
    give their MAC. None if an option is malformed (RFC 4861 4.6: length 0)."""
    options: dict[int, bytes] = {}
    position = 0
    while position < len(data):
        if position + 2 > len(data) or data[position + 1] == 0:
            return None
        length = data[position + 1] * 8
        if position + length > len(data):
            return None
        option_type = data[position]
        if option_type in (NDP_OPTION_SOURCE_LLA, NDP_OPTION_TARGET_LLA):
            options.setdefault(option_type, data[position + 2:position + 8])
        position += length
    return options


def dissect(layer: type[ScapyPacket], data: bytes) -> ScapyPacket:
    try:
        return layer(data)
    except Exception:  # noqa: BLE001 - scapy raises assorted errors on short or odd input
        raise Discard("malformed") from None


def owns(iface: Interface | None, address: Address) -> bool:
    return iface is not None and any(a.ip == address for a in iface.addresses)


def source_address(iface: Interface | None, towards: Address, any_global: bool) -> Address | None:
    """Our address on `iface` to send to `towards` from: link-local for a
    link-local peer, else one in the peer's subnet, else (any_global) any
    other global one, else (IPv6) the link-local one."""
    if iface is None:
        return None
    mine = [a for a in iface.addresses if a.version == towards.version]
    link_local = [a.ip for a in mine if a.ip.is_link_local]
    scoped = [a for a in mine if not a.ip.is_link_local]
    if towards.is_link_local:
        candidates = link_local
    else:
        candidates = [a.ip for a in scoped if towards in a.network]
        if any_global or towards.version == 4:
            candidates += [a.ip for a in scoped]
        candidates += link_local
    return candidates[0] if candidates else None


def solicited_node_group(address: ipaddress.IPv6Address) -> ipaddress.IPv6Address:
    """ff02::1:ffXX:XXXX with the low 24 bits of `address` (RFC 4291 2.7.1)."""
    return ipaddress.IPv6Address(b"\xff\x02" + bytes(9) + b"\x01\xff" + address.packed[13:])


def multicast_mac(group: ipaddress.IPv6Address) -> bytes:
    """33:33 and the group's low 32 bits (RFC 2464 7)."""
    return b"\x33\x33" + group.packed[12:]


def mac_bytes(mac: bytes | str) -> bytes:
    return mac if isinstance(mac, bytes) else bytes.fromhex(mac.replace(":", ""))


def mac_str(mac: bytes) -> str:
    return ":".join(f"{b:02x}" for b in mac)


def is_unicast_mac(mac: str) -> bool:
    raw = mac_bytes(mac)
    return len(raw) == 6 and not raw[0] & 1 and any(raw)
