"""The router's tables on the Python side: interfaces and their addresses,
routes, neighbours and the next hops the C route table points at.

Python owns the truth here and writes it into the C router (native/router.c)
as next hops plus FIB prefixes, then commits: the workers switch to the new
table at a quiescent point, and every cached flow revalidates.

Next hops: every route has its own next-hop id (so the flow cache and
netflow see the route's prefix length), and every resolved neighbour has a
host route (/32, /128) with its own id, so an on-link destination resolves to
its MAC in one lookup. A route whose gateway has no MAC yet points at a
RESOLVE next hop: its packets are punted and the slow path resolves it.

Learnt neighbours are bounded (max_neighbours, like Linux's gc_thresh3): a
new one past the bound takes the place of the least recently heard-from
learnt neighbour that no route goes through; a neighbour that cannot be
added (no next hop, no room in the FIB for its host route) changes nothing
and leaks nothing, and says so in a rate-limited log line.
"""
from __future__ import annotations

import collections
import ipaddress
import logging
import threading
import time
from dataclasses import dataclass, field

from . import native
from .config import Ip6flowStage

log = logging.getLogger(__name__)

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class RateLimitedLog:
    """A warning at most every `interval` seconds, with how many were held back."""

    def __init__(self, logger: logging.Logger, interval: float = 10.0):
        self.logger, self.interval = logger, interval
        self._last = -interval
        self._held = 0

    def warning(self, msg: str, *args) -> None:
        now = time.monotonic()
        if now - self._last < self.interval:
            self._held += 1
            return
        more = f" (and {self._held} more like it)" if self._held else ""
        self.logger.warning(msg + more, *args)
        self._last, self._held = now, 0


class RouteError(ValueError):
    """A rejected route/neighbour change; the tables are unchanged."""


@dataclass(frozen=True)
class Interface:
    port_id: int
    name: str
    mac: str
    mtu: int
    addresses: tuple  # IPv4Interface / IPv6Interface, the link-local included


@dataclass(frozen=True)
class Lookup:
    kind: str                 # forward | resolve | local | blackhole | reject | none
    port_id: int | None
    mtu: int
    neighbour: Address | None  # where to send: the gateway, or the destination on-link
    dst_mac: str | None
    src_mac: str | None


@dataclass
class Route:
    network: Network
    via: Address | None
    port_id: int | None
    action: str               # forward | blackhole | reject | connected | local
    nh: int = 0
    static: bool = True


@dataclass
class Neighbour:
    address: Address
    port_id: int
    mac: str
    static: bool
    nh: int = 0               # the host route's next hop
    host_route: bool = field(default=False)


def link_local(mac: str) -> ipaddress.IPv6Interface:
    """fe80::/64 with the modified EUI-64 interface id of ``mac`` (RFC 4291)."""
    b = bytearray(bytes.fromhex(mac.replace(":", "")))
    b[0] ^= 0x02
    iid = bytes(b[:3]) + b"\xff\xfe" + bytes(b[3:])
    return ipaddress.IPv6Interface((b"\xfe\x80" + bytes(6) + iid, 64))


def _family(addr) -> int:
    return addr.version


class RouteTable:
    """Routes, neighbours and interfaces of one ip6flow stage. Every change
    goes through one lock and ends in one commit to the C router."""

    def __init__(self, dp, cfg: Ip6flowStage):
        self.cfg = cfg
        self._lock = threading.RLock()
        self.router = native.router_create(
            cfg.max_nexthops, cfg.max_routes, cfg.ipv4_tbl8, cfg.max_routes, cfg.ipv6_tbl8)
        self._free_nh = list(range(cfg.max_nexthops - 1, 0, -1))
        self.routes: dict[Network, Route] = {}
        self.neighbours: dict[tuple[int, Address], Neighbour] = {}
        self.ifaces: dict[int, Interface] = {}
        self._port_names = {p.port_id: p.name for p in dp.all_ports}
        # A bundle's state is known before its links start; a device's link
        # comes up with the port, after this table is installed.
        self._initial_up = {b.port_id: dp.link_up(b.port_id) for b in dp.bundles}
        self._local_nh: dict[int, int] = {}
        # learnt neighbours, the least recently heard from first
        self._learnt: collections.OrderedDict[tuple[int, Address], None] = collections.OrderedDict()
        self.max_neighbours = cfg.neighbour_limit
        self.neighbour_events: collections.Counter = collections.Counter()
        # next-hop ids of removed neighbours, with the generation they left
        # in, until a bump (see _del_neighbour); a bump at most every
        # _quarantine_max removals, as many as the spare ids allow
        self._quarantine: collections.deque[tuple[int, int]] = collections.deque()
        self._generation = 0
        self._quarantine_max = max(1, min(4096, (cfg.max_nexthops - cfg.nexthops_reserved
                                                 - self.max_neighbours) // 2))
        self._routes_version = 0
        self._gateway_cache: tuple[int, set] = (-1, set())
        self._refusals = RateLimitedLog(log)
        self.commits = 0
        self.link_up: dict[int, bool] = {}
        for itf in cfg.interfaces:
            p = dp.port(itf.port)
            mac = p.info.mac
            mtu = p.cfg.mtu or p.info.mtu or 1500
            addrs = tuple(ipaddress.ip_interface(a) for a in itf.addresses) + (link_local(mac),)
            self.ifaces[p.port_id] = Interface(p.port_id, p.name, mac, mtu, addrs)
        for p in dp.all_ports:
            if p.port_id not in self.ifaces:  # routes may still point out of it
                self.ifaces[p.port_id] = Interface(p.port_id, p.name, p.info.mac,
                                                   p.cfg.mtu or p.info.mtu or 1500, ())

    def close(self) -> None:
        if self.router is not None:
            native.router_free(self.router)
            self.router = None

    # ---- building --------------------------------------------------------------

    def install(self, port_ids_by_name: dict[str, int]) -> None:
        """The configured tables: addresses, connected subnets, static
        neighbours and routes, in one commit."""
        with self._lock:
            for itf in self.ifaces.values():
                up = self._initial_up.get(itf.port_id, True)
                native.router_set_port(self.router, itf.port_id, itf.mac, up)
                self.link_up[itf.port_id] = up
                for a in itf.addresses:
                    self._add_local(a.ip)
                    if not a.ip.is_link_local:
                        self._set_route(Route(a.network, None, itf.port_id, "connected",
                                              static=False))
            for n in self.cfg.neighbours:
                self._set_neighbour(port_ids_by_name[n.port], ipaddress.ip_address(n.address),
                                    n.mac, static=True)
            for r in self.cfg.routes:
                self._set_route(Route(ipaddress.ip_network(r.prefix),
                                      ipaddress.ip_address(r.via) if r.via else None,
                                      port_ids_by_name[r.port] if r.port else None, r.action))
            self._commit()

    def _alloc_nh(self) -> int:
        if not self._free_nh and self._quarantine:
            self._release_quarantine()
        if not self._free_nh:
            raise RouteError(f"out of next hops (max_nexthops = {self.cfg.max_nexthops})")
        return self._free_nh.pop()

    def _add_local(self, ip: Address) -> None:
        fam = _family(ip)
        if fam not in self._local_nh:
            self._local_nh[fam] = self._alloc_nh()
            native.router_nh_set(self.router, self._local_nh[fam], "local", fam)
        plen = ip.max_prefixlen
        native.router_route_add(self.router, fam, ip.packed, plen, self._local_nh[fam])
        self.routes[ipaddress.ip_network((ip, plen))] = Route(
            ipaddress.ip_network((ip, plen)), None, None, "local", self._local_nh[fam], False)

    def _egress(self, r: Route) -> int | None:
        """The port a route leaves by: given, or the connected subnet of via."""
        if r.port_id is not None or r.via is None:
            return r.port_id
        for itf in self.ifaces.values():
            for a in itf.addresses:
                if a.version == r.via.version and r.via in a.network and not a.ip.is_link_local:
                    return itf.port_id
        return None

    def _nh_for(self, r: Route) -> tuple[str, dict]:
        """The next-hop contents a route should have now."""
        if r.action in ("blackhole", "reject"):
            return r.action, {}
        port = self._egress(r)
        if port is None:
            return "reject", {}
        itf = self.ifaces[port]
        base = {"port": port, "mtu": itf.mtu, "src_mac": itf.mac, "plen": r.network.prefixlen}
        if r.via is None:        # on-link: each destination is its own neighbour
            return "resolve", base
        base["gateway"] = r.via.packed
        n = self.neighbours.get((port, r.via))
        if n is None:
            return "resolve", base
        return "forward", dict(base, dst_mac=n.mac)

    def _write_nh(self, nh: int, kind: str, fam: int, args: dict) -> None:
        native.router_nh_set(self.router, nh, kind, fam, **args)

    def _set_route(self, r: Route) -> None:
        fam = r.network.version
        old = self.routes.get(r.network)
        if old is not None and old.action == "local":
            raise RouteError(f"{r.network} is one of the router's own addresses")
        r.nh = old.nh if old is not None else self._alloc_nh()
        kind, args = self._nh_for(r)
        self._write_nh(r.nh, kind, fam, args)
        if old is None:
            native.router_route_add(self.router, fam, r.network.network_address.packed,
                                    r.network.prefixlen, r.nh)
        self.routes[r.network] = r
        self._routes_version += 1

    def _set_neighbour(self, port: int, addr: Address, mac: str, static: bool) -> bool:
        key = (port, addr)
        old = self.neighbours.get(key)
        if old is not None and not old.static and key in self._learnt:
            self._learnt.move_to_end(key)  # heard from
        if old is not None and old.mac == mac and (old.static or not static):
            return False
        if old is not None and old.static and not static:
            return False  # configured entries win over what the wire says
        itf = self.ifaces[port]
        fam = addr.version
        host = ipaddress.ip_network((addr, addr.max_prefixlen))
        if host in self.routes and self.routes[host].action == "local":
            return False  # never let a neighbour claim our own address
        if old is None and not static and len(self._learnt) >= self.max_neighbours \
                and not self._evict_one():
            raise RouteError(f"neighbour table full ({self.max_neighbours} learnt, every one "
                             "a route's gateway): max_neighbours")
        n = Neighbour(addr, port, mac, static, nh=old.nh if old else 0)
        fresh_nh = not n.nh
        if fresh_nh:
            n.nh = self._alloc_nh()
        self._write_nh(n.nh, "forward", fam, {"port": port, "mtu": itf.mtu, "src_mac": itf.mac,
                                              "dst_mac": mac, "gateway": addr.packed,
                                              "plen": addr.max_prefixlen})
        if old is None and host not in self.routes:
            try:
                native.router_route_add(self.router, fam, addr.packed, addr.max_prefixlen, n.nh)
            except native.DataplaneError as e:
                self._free_nh.append(n.nh)  # no route points at it: free at once
                raise RouteError(f"no room in the FIB for the host route of {addr} "
                                 f"(max_routes, ipv{fam}_tbl8): {e}") from None
            n.host_route = True
        else:
            n.host_route = old.host_route if old else False
        self.neighbours[key] = n
        if static:
            self._learnt.pop(key, None)
        else:
            self._learnt[key] = None
            self._learnt.move_to_end(key)
        # routes through this neighbour now forward
        for r in self.routes.values():
            if r.via == addr and r.action == "forward" and self._egress(r) == port:
                kind, args = self._nh_for(r)
                self._write_nh(r.nh, kind, fam, args)
        return True

    def _gateways(self) -> set[tuple[int | None, Address]]:
        """(port, address) of every route's gateway, kept until the routes change."""
        if self._gateway_cache[0] != self._routes_version:
            self._gateway_cache = (self._routes_version, {
                (self._egress(r), r.via) for r in self.routes.values() if r.via is not None})
        return self._gateway_cache[1]

    def _evict_one(self) -> bool:
        """Make room for a learnt neighbour: the least recently heard-from one
        that no route goes through. False: every one is a gateway."""
        gateways = self._gateways()
        for key in self._learnt:
            if key not in gateways:
                self._del_neighbour(self.neighbours[key])
                self.neighbour_events["evicted"] += 1
                return True
        return False

    def _del_neighbour(self, n: Neighbour) -> None:
        """Remove a neighbour. Its next hop first stops forwarding (a flow
        cached through it is routed again), so removing its host route needs
        no generation bump, which would make every worker revalidate every
        cached flow: a neighbour flood at the table's bound would do that a
        thousand times a second. The id waits in quarantine until a bump (a
        flow cached through it must never find another neighbour's MAC)."""
        key = (n.port_id, n.address)
        self.neighbours.pop(key, None)
        self._learnt.pop(key, None)
        fam = n.address.version
        self._write_nh(n.nh, "none", fam, {})
        if n.host_route:
            native.router_route_del(self.router, fam, n.address.packed, n.address.max_prefixlen)
        for r in self.routes.values():
            if r.via == n.address and self._egress(r) == n.port_id:
                kind, args = self._nh_for(r)
                self._write_nh(r.nh, kind, fam, args)
        self._commit()
        self._quarantine.append((self._generation, n.nh))
        if len(self._quarantine) >= self._quarantine_max:
            self._release_quarantine()

    def _release_quarantine(self) -> None:
        """One generation bump gives every quarantined next-hop id back."""
        native.router_invalidate(self.router)
        self._commit()

    def _commit(self) -> None:
        self._generation = native.router_commit(self.router)
        self.commits += 1
        # ids quarantined before a bump are unreachable from any cached flow now
        while self._quarantine and self._quarantine[0][0] < self._generation:
            self._free_nh.append(self._quarantine.popleft()[1])

    # ---- runtime changes (control path) -------------------------------------------

    def route_add(self, prefix: str, via: str | None = None, port_id: int | None = None,
                  action: str = "forward") -> dict:
        try:
            net = ipaddress.ip_network(prefix)
            gw = ipaddress.ip_address(via) if via else None
        except ValueError as e:
            raise RouteError(str(e)) from None
        if action not in ("forward", "blackhole", "reject"):
            raise RouteError(f"unknown action {action!r} (forward, blackhole, reject)")
        if gw is not None and gw.version != net.version:
            raise RouteError(f"via {gw} and prefix {net} are different IP versions")
        if action == "forward" and gw is None and port_id is None:
            raise RouteError("give via (a next hop) or port (on-link)")
        r = Route(net, gw, port_id, action)
        if action == "forward" and self._egress(r) is None:
            raise RouteError(f"via {gw} is on no connected subnet")
        with self._lock:
            self._set_route(r)
            self._commit()
        return self.route_dict(r)

    def route_del(self, prefix: str) -> None:
        try:
            net = ipaddress.ip_network(prefix)
        except ValueError as e:
            raise RouteError(str(e)) from None
        with self._lock:
            r = self.routes.get(net)
            if r is None:
                raise RouteError(f"no route {net}")
            if r.action in ("local", "connected"):
                raise RouteError(f"{net} is {r.action}: change the interface addresses instead")
            native.router_route_del(self.router, net.version, net.network_address.packed,
                                    net.prefixlen)
            del self.routes[net]
            self._routes_version += 1
            self._commit()
            # the id is only reused after the commit made it unreachable
            self._free_nh.append(r.nh)

    def neighbour_add(self, port_id: int, address: str, mac: str, static: bool = True) -> bool:
        try:
            addr = ipaddress.ip_address(address)
        except ValueError as e:
            raise RouteError(str(e)) from None
        if port_id not in self.ifaces:
            raise RouteError(f"port {port_id} is not a router interface")
        with self._lock:
            changed = self._set_neighbour(port_id, addr, mac.lower(), static)
            if changed:
                self._commit()
            return changed

    def neighbour_del(self, port_id: int, address: str) -> None:
        addr = ipaddress.ip_address(address)
        with self._lock:
            n = self.neighbours.get((port_id, addr))
            if n is None:
                raise RouteError(f"no neighbour {addr} on port {port_id}")
            self._del_neighbour(n)

    def set_link(self, port_id: int, up: bool) -> None:
        with self._lock:
            if self.link_up.get(port_id) != up:
                self.link_up[port_id] = up
                native.router_set_port(self.router, port_id, None, up)

    # ---- the slow path's view (dataplane.slowpath.RouterView) ---------------------

    def interface(self, port_id: int) -> Interface | None:
        itf = self.ifaces.get(port_id)
        return itf if itf is not None and itf.addresses else None

    def interfaces(self) -> list[Interface]:
        return [i for i in self.ifaces.values() if i.addresses]

    def is_local(self, addr) -> bool:
        addr = ipaddress.ip_address(addr)
        return any(a.ip == addr for i in self.ifaces.values() for a in i.addresses)

    def lookup(self, addr) -> Lookup:
        addr = ipaddress.ip_address(addr)
        nh_id = native.router_lookup(self.router, addr.version, addr.packed)
        if nh_id == 0:
            return Lookup("none", None, 0, None, None, None)
        nh = native.router_nh_get(self.router, nh_id)
        if nh["kind"] in ("local", "blackhole", "reject", "none"):
            return Lookup(nh["kind"], None, 0, None, None, None)
        gw = nh["gateway"][:4 if addr.version == 4 else 16]
        neighbour = ipaddress.ip_address(gw) if any(gw) else addr
        return Lookup(nh["kind"], nh["port"], nh["mtu"], neighbour,
                      nh["dst_mac"] if nh["kind"] == "forward" else None, nh["src_mac"])

    def neighbour_mac(self, port_id: int, addr) -> str | None:
        n = self.neighbours.get((port_id, ipaddress.ip_address(addr)))
        return n.mac if n else None

    def learn(self, port_id: int, addr, mac: str) -> bool:
        """A neighbour seen on the wire (NDP, ARP): only on-link addresses of
        that port are believed."""
        addr = ipaddress.ip_address(addr)
        itf = self.ifaces.get(port_id)
        if itf is None or not (addr.is_link_local or any(
                a.version == addr.version and addr in a.network and not a.ip.is_link_local
                for a in itf.addresses)):
            return False
        if self.is_local(addr) or addr.is_multicast or addr.is_unspecified:
            return False
        with self._lock:
            try:
                changed = self._set_neighbour(port_id, addr, mac.lower(), static=False)
            except RouteError as e:
                self.neighbour_events["refused"] += 1
                self._refusals.warning("neighbour %s on %s not learnt: %s", addr, itf.name, e)
                return False
            if changed:
                self._commit()
                log.info("neighbour %s is at %s on %s", addr, mac, itf.name)
            return changed

    def neighbour_counts(self) -> dict[str, int]:
        """The table against its bound, what made room, what was refused, and
        the next hops left (a leak shows here)."""
        with self._lock:
            return {"learnt": len(self._learnt), "static": len(self.neighbours) - len(self._learnt),
                    "max_neighbours": self.max_neighbours,
                    "nexthops_free": len(self._free_nh) + len(self._quarantine),
                    "nexthops_quarantined": len(self._quarantine),
                    **{k: self.neighbour_events[k] for k in ("evicted", "refused")}}

    def learnt_neighbours(self) -> list[tuple[int, Address, str]]:
        with self._lock:
            return [(n.port_id, n.address, n.mac) for n in self.neighbours.values() if not n.static]

    def forget(self, port_id: int, addr) -> bool:
        """Drop a learnt neighbour (unreachable); static ones stay."""
        n = self.neighbours.get((port_id, ipaddress.ip_address(addr)))
        if n is None or n.static:
            return False
        self.neighbour_del(port_id, str(n.address))
        return True

    # ---- show ---------------------------------------------------------------------

    def route_dict(self, r: Route) -> dict:
        nh = native.router_nh_get(self.router, r.nh) if r.nh else {"kind": "none"}
        port = self._egress(r) if r.action not in ("local",) else None
        return {"prefix": str(r.network), "via": str(r.via) if r.via else None,
                "port": self._port_names.get(port) if port is not None else None,
                "action": r.action, "nexthop": nh["kind"], "nh_id": r.nh,
                "mac": nh.get("dst_mac") if nh["kind"] == "forward" else None}

    def show_routes(self) -> list[dict]:
        with self._lock:
            return [self.route_dict(r) for r in sorted(
                self.routes.values(), key=lambda r: (r.network.version, r.network))]

    def show_neighbours(self) -> list[dict]:
        with self._lock:
            return [{"address": str(n.address), "port": self._port_names.get(n.port_id),
                     "mac": n.mac, "static": n.static}
                    for n in sorted(self.neighbours.values(),
                                    key=lambda n: (n.address.version, n.address))]

    def show_interfaces(self) -> list[dict]:
        return [{"port": i.name, "mac": i.mac, "mtu": i.mtu, "up": self.link_up.get(i.port_id),
                 "addresses": [str(a) for a in i.addresses]} for i in self.interfaces()]
