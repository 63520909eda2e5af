"""The ip6flow stage's Python side: the router around NetBSD's fast-forward
cache. It owns the route table (dataplane.routing), runs the slow path on
punted packets (dataplane.slowpath: NDP, ARP, ICMP errors), watches the
egress links, and answers the stage's control messages (show, maxflows,
hashsize, invalidate, routes and neighbours).
"""
from __future__ import annotations

import logging
import threading
import time

from . import native
from .config import Ip6flowStage
from .engine import DUMP_PAGE
from .routing import RouteError, RouteTable
from .slowpath import SlowPath


log = logging.getLogger(__name__)

FAMILIES = {"ipv6": 6, "ipv4": 4, "6": 6, "4": 4}
MONITOR_INTERVAL_S = 0.1
SLOWPATH_TICK_S = 0.5


class Ip6flowError(ValueError):
    """A rejected control request; the running configuration is unchanged."""


def family_of(name: str | int) -> int:
    try:
        return FAMILIES[str(name).lower()]
    except KeyError:
        raise Ip6flowError(f"unknown family {name!r} (ipv6 or ipv4)") from None


class Ip6flowController:
    """One [[pipeline]] ip6flow table: the route table, the workers' caches,
    the slow path and the link monitor."""

    kind = "ip6flow"

    def __init__(self, dp, cfg: Ip6flowStage, index: int):
        self.dp = dp
        self.cfg = cfg
        self.index = index
        self.stages: list = []
        self.table: RouteTable | None = None
        self.slowpath: SlowPath | None = None
        # the sysctls: net.inet6.ip6.maxflows/hashsize and net.inet.ip.maxflows/hashsize
        self.limits = {6: (cfg.maxflows, cfg.hashsize), 4: (cfg.maxflows4, cfg.hashsize4)}
        self.punts_by_reason: dict[str, int] = {}
        self.inject_failed = 0
        self._slow_lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # ---- build / run ---------------------------------------------------------------

    def add_worker_stage(self, st) -> None:
        if self.table is None:
            self.table = RouteTable(self.dp, self.cfg)
        native.ip6flow_attach(st, self.table.router)
        self._configure(st)
        self.stages.append(st)

    def _conf(self):
        (m6, h6), (m4, h4) = self.limits[6], self.limits[4]
        return native.ip6flow_conf(m6, h6, m4, h4, int(self.cfg.idle_timeout_s * 1000), self.cfg.ipv4)

    def _configure(self, st) -> None:
        """Before the workers run: on the caller's thread."""
        native.ip6flow_configure(st, self._conf())

    def _configure_running(self) -> None:
        """On every worker, inside its loop (a new hashsize flushes the cache there)."""
        self.dp.stage_command(self.index, native.CMD_IP6FLOW_CONFIGURE, p=self._conf(),
                              what="ip6flow configure")

    def prepare(self) -> None:
        """Before the ports start: the configured tables, so the first packet
        already finds its route."""
        self.table.install({p.name: p.port_id for p in self.dp.all_ports})

    def start(self) -> None:
        """Ports are started: take punts, watch links."""
        self.slowpath = SlowPath(self.table, self._inject, icmp_rate=self.cfg.icmp_rate,
                                 icmp_burst=self.cfg.icmp_burst,
                                 reachable_s=self.cfg.neighbour_reachable_s,
                                 source_share=self.dp.cfg.slowpath.source_share,
                                 max_pending=self.table.max_neighbours)
        self.dp.on_punt(self._on_punt)
        self._thread = threading.Thread(target=self._monitor, name=f"dp-ip6flow-{self.index}",
                                        daemon=True)
        self._thread.start()

    def shutdown(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

    def close(self) -> None:
        """After the workers are gone: free the shared route table."""
        if self.table is not None:
            self.table.close()

    def _inject(self, port_id: int, frame: bytes) -> None:
        try:
            self.dp.inject_port_id(port_id, frame)
        except native.DataplaneError as e:
            self.inject_failed += 1
            log.debug("slow path: %s", e)

    def _on_punt(self, worker, port_id: int, frame: bytes, reason: int) -> None:
        # One slow path for all workers: NDP state and the ICMP token bucket
        # are shared, and control traffic is rare.
        with self._slow_lock:
            self.slowpath.handle(port_id, reason, frame)

    def _monitor(self) -> None:
        """Egress link state for the fast path, and the slow path's timers."""
        next_tick = 0.0
        while not self._stop.wait(MONITOR_INTERVAL_S):
            for itf in self.table.interfaces():
                try:
                    up = self.dp.link_up(itf.port_id)
                except native.DataplaneError:
                    continue
                if self.table.link_up.get(itf.port_id) != bool(up):
                    log.warning("router: %s link %s", itf.name, "up" if up else "down")
                    self.table.set_link(itf.port_id, bool(up))
            now = time.monotonic()
            if now >= next_tick:
                next_tick = now + SLOWPATH_TICK_S
                with self._slow_lock:
                    self.slowpath.tick()

    # ---- control messages -------------------------------------------------------------

    def stats(self) -> dict:
        """Counters summed over the workers, per family, plus the slow path's."""
        out = {}
        for fam, name in ((6, "ipv6"), (4, "ipv4")):
            per = [native.ip6flow_stats(st, fam) for st in self.stages]
            tot = {k: sum(p[k] for p in per) for k in native.FF_STATS_FIELDS
                   if k not in ("maxflows", "hashsize")}
            tot["punts"] = {r: sum(p["punts"][r] for p in per) for r in per[0]["punts"]} if per else {}
            tot["maxflows"], tot["hashsize"] = self.limits[fam]
            out[name] = tot
        out["slowpath"] = dict(self.slowpath.stats) if self.slowpath else {}
        out["neighbours"] = self.table.neighbour_counts() if self.table else {}
        out["inject_failed"] = self.inject_failed
        out["generation"] = native.router_generation(self.table.router) if self.table else 0
        return out

    def info(self) -> dict:
        return self.stats()

    def show(self, family: str | int = "ipv6", limit: int = 1 << 30) -> list[dict]:
        """The cached flows of one family, per worker (the seed's per-flow view)."""
        return self.page(family, limit)[0]

    def page(self, family: str | int, limit: int,
             after: tuple[int, int] = (0, 0)) -> tuple[list[dict], tuple[int, int] | None]:
        """Up to ``limit`` cached flows from ``after`` (worker, slot) and where to
        go on from (None at the end); each worker reads its own pages inside its
        C loop, so forwarding goes on."""
        return self.dp.read_pages(self.index, native.CMD_DUMP_IP6FLOW, family_of(family),
                                  native.ip6flow_entries(DUMP_PAGE),
                                  native.ip6flow_entry_dict, limit, after)

    def set_maxflows(self, n: int, family: str | int = "ipv6") -> None:
        fam = family_of(family)
        if not isinstance(n, int) or isinstance(n, bool) or not 0 <= n <= 1 << 26:
            raise Ip6flowError(f"maxflows must be an integer 0..{1 << 26} (got {n!r})")
        self._set_limits(fam, n, self.limits[fam][1])

    def set_hashsize(self, n: int, family: str | int = "ipv6") -> None:
        fam = family_of(family)
        if not isinstance(n, int) or isinstance(n, bool) or n < 16 or n & (n - 1):
            raise Ip6flowError(f"hashsize must be a power of two >= 16 (got {n!r})")
        self._set_limits(fam, self.limits[fam][0], n)

    def _set_limits(self, fam: int, maxflows: int, hashsize: int) -> None:
        old = self.limits[fam]
        self.limits[fam] = (maxflows, hashsize)
        try:
            self._configure_running()
        except native.DataplaneError as e:
            self.limits[fam] = old
            raise Ip6flowError(str(e)) from None

    def reconfigure(self, new: Ip6flowStage) -> None:
        """Live reload: cache limits, ICMP rate, and the difference between
        the running and the new routes and static neighbours."""
        old, self.cfg = self.cfg, new
        if (new.maxflows, new.hashsize, new.maxflows4, new.hashsize4, new.idle_timeout_s) != (
                old.maxflows, old.hashsize, old.maxflows4, old.hashsize4, old.idle_timeout_s):
            self.limits = {6: (new.maxflows, new.hashsize), 4: (new.maxflows4, new.hashsize4)}
            self._configure_running()
        if self.slowpath is not None:
            with self._slow_lock:
                self.slowpath.set_icmp_rate(new.icmp_rate, new.icmp_burst)
                self.slowpath.reachable_s = new.neighbour_reachable_s

        old_routes = {r.prefix: r for r in old.routes}
        new_routes = {r.prefix: r for r in new.routes}
        for prefix in old_routes.keys() - new_routes.keys():
            self.table.route_del(prefix)
        for prefix, r in new_routes.items():
            if old_routes.get(prefix) != r:
                self.table.route_add(prefix, r.via, self._port_id(r.port), r.action)
        old_n = {(n.address, n.port): n for n in old.neighbours}
        new_n = {(n.address, n.port): n for n in new.neighbours}
        for address, port in old_n.keys() - new_n.keys():
            self.table.neighbour_del(self._port_id(port), address)
        for (address, port), n in new_n.items():
            if old_n.get((address, port)) != n:
                self.table.neighbour_add(self._port_id(port), address, n.mac)

    def set_source_share(self, share: float) -> None:
        with self._slow_lock:
            self.slowpath.set_icmp_rate(self.cfg.icmp_rate, self.cfg.icmp_burst, share)

    def invalidate(self) -> int:
        """ip6flow_invalidate_all: every worker's cache, both families."""
        return sum(self.dp.stage_command(self.index, native.CMD_IP6FLOW_INVALIDATE,
                                         what="ip6flow invalidate"))

    def _port_id(self, name: str | None) -> int | None:
        if name is None:
            return None
        try:
            return self.dp.port(name).port_id
        except KeyError:
            raise Ip6flowError(f"no port named {name!r}") from None

    def route_add(self, prefix: str, via: str | None = None, port: str | None = None,
                  action: str = "forward") -> dict:
        try:
            return self.table.route_add(prefix, via, self._port_id(port), action)
        except RouteError as e:
            raise Ip6flowError(str(e)) from None

    def route_del(self, prefix: str) -> None:
        try:
            self.table.route_del(prefix)
        except RouteError as e:
            raise Ip6flowError(str(e)) from None

    def neighbour_add(self, address: str, mac: str, port: str) -> None:
        try:
            self.table.neighbour_add(self._port_id(port), address, mac)
        except (RouteError, ValueError) as e:
            raise Ip6flowError(str(e)) from None

    def neighbour_del(self, address: str, port: str) -> None:
        try:
            self.table.neighbour_del(self._port_id(port), address)
        except (RouteError, ValueError) as e:
            raise Ip6flowError(str(e)) from None

    def routes(self) -> list[dict]:
        return self.table.show_routes()

    def neighbours(self) -> list[dict]:
        return self.table.show_neighbours()

    def interfaces(self) -> list[dict]:
        return self.table.show_interfaces()
