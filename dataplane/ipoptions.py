"""IPv4 options and IPv6 hop-by-hop options, as a router processes them.

IPv4 follows NetBSD's ``ip_dooptions`` (sys/netinet/ip_input.c), run before
the packet is delivered or forwarded:

* a malformed option (length < 2 or past the header, pointer below its
  minimum, an unknown timestamp flag, a timestamp overflow count wrapping)
  gets ICMP Parameter Problem pointing at the bad octet (RFC 1812 4.3.2.4);
* source routes (LSRR/SSRR) are refused with ICMP "communication
  administratively prohibited" (NetBSD's default ``allowsrcrt = 0``);
* Record Route gets the address of the interface the packet leaves by,
  while there is room;
* Timestamp gets milliseconds since midnight UT (RFC 791), with our address
  first where the flag asks for it; a full option counts an overflow.

IPv6 follows RFC 8200 4.2 as NetBSD's ``ip6_process_hopopts`` and
``ip6_unknown_opt`` do: Pad1/PadN skipped, Router Alert and Jumbo Payload
checked, an unknown option handled by the two high bits of its type
(skip / discard / discard + Parameter Problem / the same unless the
destination is multicast), and an option running past its header discarded.

Pure functions of bytes: the slow path (slowpath.py) turns a ``Problem``
into the ICMP error or the discard.
"""
from __future__ import annotations

import ipaddress
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass

IPV4_HEADER_LEN = 20
IPV6_HEADER_LEN = 40

# RFC 791 option types
IPOPT_EOL, IPOPT_NOP = 0, 1
IPOPT_RR, IPOPT_TS, IPOPT_LSRR, IPOPT_SSRR = 7, 68, 131, 137
IPOPT_MINOFF = 4                       # the lowest valid pointer of RR / source routes
IPOPT_TS_TSONLY, IPOPT_TS_TSANDADDR, IPOPT_TS_PRESPEC = 0, 1, 3

# RFC 8200 / RFC 2711 / RFC 2675 hop-by-hop options
IP6OPT_PAD1, IP6OPT_PADN, IP6OPT_ROUTER_ALERT, IP6OPT_JUMBO = 0x00, 0x01, 0x05, 0xC2
IP6OPT_ACTION_SKIP, IP6OPT_ACTION_DISCARD, IP6OPT_ACTION_ICMP_ALWAYS, IP6OPT_ACTION_ICMP = 0, 1, 2, 3


@dataclass(frozen=True)
class Problem:
    """Why options stop a packet.

    kind: ``parameter`` (Parameter Problem, ``code`` and ``pointer`` into the
    IP header), ``source_route`` (refused source route), ``unreachable`` (no
    interface to record), or ``discard`` (silently, ``reason`` saying why).
    """
    kind: str
    pointer: int = 0
    code: int = 0
    reason: str = ""


class OptionsRefused(Exception):
    def __init__(self, problem: Problem):
        super().__init__(problem)
        self.problem = problem


def _param(pointer: int, code: int = 0) -> OptionsRefused:
    return OptionsRefused(Problem("parameter", pointer=pointer, code=code))


def ms_since_midnight_ut(now: float | None = None) -> int:
    """RFC 791's timestamp: milliseconds since midnight UT."""
    now = time.time() if now is None else now
    return int(now * 1000) % 86_400_000


def process_ipv4(header: bytes,
                 egress_address: Callable[[ipaddress.IPv4Address], ipaddress.IPv4Address | None],
                 rx_address: ipaddress.IPv4Address | None,
                 is_ours: Callable[[ipaddress.IPv4Address], bool],
                 now_ms: int | None = None) -> bytes:
    """The IPv4 header with its options processed (checksum NOT redone), or
    OptionsRefused. egress_address(dst): our address on the interface the
    route to dst leaves by (None: no route). rx_address: our address on the
    receiving interface (timestamps with address). is_ours(addr): a local
    address."""
    h = bytearray(header)
    dst = ipaddress.IPv4Address(bytes(h[16:20]))
    position, end = IPV4_HEADER_LEN, len(h)
    while position < end:
        option = h[position]
        if option == IPOPT_EOL:
            break
        if option == IPOPT_NOP:
            position += 1
            continue
        length_at = position + 1
        if length_at >= end or h[length_at] < 2 or h[length_at] > end - position:
            raise _param(length_at)
        length = h[length_at]
        if option in (IPOPT_LSRR, IPOPT_SSRR):
            raise OptionsRefused(Problem("source_route"))
        if option == IPOPT_RR:
            _record_route(h, position, length, dst, egress_address, is_ours)
        elif option == IPOPT_TS:
            _timestamp(h, position, length, rx_address, is_ours,
                       ms_since_midnight_ut() if now_ms is None else now_ms)
        position += length
    return bytes(h)


def _record_route(h: bytearray, at: int, length: int, dst, egress_address, is_ours) -> None:
    if length < 3:
        raise _param(at + 1)
    pointer = h[at + 2]
    if pointer < IPOPT_MINOFF:
        raise _param(at + 2)
    slot = at + pointer - 1
    if pointer - 1 + 4 > length:
        return  # full: nothing more is recorded
    # NetBSD: our address the packet is for, else the route's interface's
    address = dst if is_ours(dst) else egress_address(dst)
    if address is None:
        raise OptionsRefused(Problem("unreachable"))
    h[slot:slot + 4] = address.packed
    h[at + 2] = pointer + 4


def _timestamp(h: bytearray, at: int, length: int, rx_address, is_ours, now_ms: int) -> None:
    if length < 4 or length > 40:
        raise _param(at + 1)
    pointer = h[at + 2]
    if pointer < 5:
        raise _param(at + 2)
    flag = h[at + 3] & 0x0F
    if pointer > length - 4:
        overflow = (h[at + 3] >> 4) + 1
        if overflow > 0x0F:
            raise _param(at + 2)
        h[at + 3] = overflow << 4 | flag
        return
    slot = at + pointer - 1
    if flag == IPOPT_TS_TSONLY:
        pass
    elif flag in (IPOPT_TS_TSANDADDR, IPOPT_TS_PRESPEC):
        if pointer - 1 + 8 > length:
            raise _param(at + 2)
        if flag == IPOPT_TS_TSANDADDR:
            if rx_address is None:
                return
            h[slot:slot + 4] = rx_address.packed
        elif not is_ours(ipaddress.IPv4Address(bytes(h[slot:slot + 4]))):
            return  # prespecified for another hop
        slot += 4
        pointer += 4
    else:
        raise _param(at + 3)
    h[slot:slot + 4] = struct.pack("!I", now_ms)
    h[at + 2] = pointer + 4


def process_hop_by_hop(data: bytes, dst_multicast: bool) -> None:
    """Check the hop-by-hop header right after the IPv6 header of `data`
    (the datagram); OptionsRefused says what to do with a bad one. Nothing
    is rewritten: a router forwards the options it understands unchanged."""
    if len(data) < IPV6_HEADER_LEN + 8:
        raise OptionsRefused(Problem("discard", reason="truncated"))
    end = IPV6_HEADER_LEN + (data[IPV6_HEADER_LEN + 1] + 1) * 8
    if end > len(data):
        raise OptionsRefused(Problem("discard", reason="truncated"))
    payload_len = struct.unpack_from("!H", data, 4)[0]
    position = IPV6_HEADER_LEN + 2
    while position < end:
        option = data[position]
        if option == IP6OPT_PAD1:
            position += 1
            continue
        if position + 2 > end or position + 2 + data[position + 1] > end:
            raise OptionsRefused(Problem("discard", reason="truncated"))
        length = data[position + 1]
        if option == IP6OPT_PADN:
            pass
        elif option == IP6OPT_ROUTER_ALERT:
            if length != 2:
                raise _param(position + 1)
        elif option == IP6OPT_JUMBO:
            if length != 4:
                raise _param(position + 1)
            if payload_len != 0:
                raise _param(position)
            if struct.unpack_from("!I", data, position + 2)[0] <= 0xFFFF:
                raise _param(position + 2)
        else:
            action = option >> 6
            if action == IP6OPT_ACTION_DISCARD or (action == IP6OPT_ACTION_ICMP and dst_multicast):
                raise OptionsRefused(Problem("discard", reason="unknown_option"))
            if action in (IP6OPT_ACTION_ICMP_ALWAYS, IP6OPT_ACTION_ICMP):
                raise _param(position, code=2)
        position += 2 + length
