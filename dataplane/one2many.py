"""The one2many stage's Python side: ng_one2many's configuration and
statistics messages, and the link monitor behind its `notify` failure mode.

The workers read two atomic words of the bundle (enabled-link mask, transmit
algorithm) once per burst; everything here writes only those words, so a
change reaches every worker at its next burst without stopping anything.
"""
from __future__ import annotations

import logging
import os
import re
import select
import threading
import time
from pathlib import Path

from . import native
from .config import One2ManyStage

log = logging.getLogger(__name__)

ONE = native.O2M_ONE_LINK


class One2ManyError(ValueError):
    """A rejected control request; the running configuration is unchanged."""


def kernel_interface(devargs: str) -> str | None:
    """The kernel interface behind a vdev (net_af_packet/net_pcap iface=...):
    their link state in DPDK does not follow the kernel's, so we read both."""
    m = re.search(r"(?:^|,)(?:iface|rx_iface|tx_iface)=([^,]+)", devargs)
    return m.group(1) if m else None


def kernel_link_up(iface: str) -> bool:
    base = Path("/sys/class/net") / iface
    try:
        flags = int((base / "flags").read_text(), 16)
        carrier = (base / "carrier").read_text().strip() == "1"
    except (OSError, ValueError):  # carrier reads fail while the interface is down
        return False
    return bool(flags & 0x1) and carrier


class One2ManyController:
    """One [[pipeline]] one2many table: its bundle, configuration, statistics
    and link monitor."""

    kind = "one2many"

    def __init__(self, dp, cfg: One2ManyStage, index: int):
        self.dp = dp
        self.cfg = cfg
        self.index = index
        self.stages: list = []
        self.bundle = None
        self.links = list(cfg.many)
        # the seed's conf: xmitAlg, failAlg, enabledLinks[]
        self.xmit = cfg.xmit
        self.failure = cfg.failure
        self.enabled = list(cfg.enabled) if cfg.enabled else [True] * len(self.links)
        self.link_up: list[bool | None] = [None] * len(self.links)
        self._pending: list[float | None] = [None] * len(self.links)
        self.events: list[dict] = []          # link changes the monitor saw
        self.notifications = {"up": 0, "down": 0}
        self._active_before = None
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._ifaces: list[str | None] = []
        self._lsc_ports: list[int] = []
        self._wake: int | None = None   # eventfd written on a link-change interrupt
        self._woken_by = "poll"         # what woke the monitor last: poll | interrupt

    # ---- build / run ---------------------------------------------------------

    def add_worker_stage(self, st) -> None:
        if self.bundle is None:
            one = self.dp.port(self.cfg.one).port_id
            many = [self.dp.port(n).port_id for n in self.links]
            self.bundle = native.o2m_create(one, many)
            native.o2m_set_one_logical(self.bundle, self.dp.port(self.cfg.one).cfg.bundle)
            native.o2m_set_xmit(self.bundle, self.xmit)
            self._ifaces = [kernel_interface(self.dp.port(n).cfg.devargs) for n in self.links]
            self._apply()
        native.one2many_attach(st, self.bundle)
        self.stages.append(st)

    def start(self) -> None:
        """With the ports started: in notify mode links start as they are."""
        if self.failure == "notify":
            with self._lock:
                self._sample_links(initial=True)
                self._apply()
        # Links whose driver raises link-change interrupts wake the monitor at
        # once; the others are polled every monitor_interval_ms.
        self._lsc_ports = [p for p in (self.dp.port(n).port_id for n in self.links)
                           if native.port_lsc(p)["enabled"]]
        if self._lsc_ports:
            self._wake = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
            for p in self._lsc_ports:
                native.port_lsc_notify(p, self._wake)
        self._thread = threading.Thread(target=self._monitor, name=f"dp-o2m-{self.index}",
                                        daemon=True)
        self._thread.start()

    def shutdown(self) -> None:
        self._stop.set()
        if self._wake is not None:
            os.eventfd_write(self._wake, 1)
        if self._thread is not None:
            self._thread.join()
        if self._wake is not None:
            for p in self._lsc_ports:
                native.port_lsc_notify(p, -1)
            os.close(self._wake)
            self._wake = None

    def close(self) -> None:
        """After the workers are gone: free the shared bundle."""
        if self.bundle is not None:
            native.o2m_free(self.bundle)
            self.bundle = None

    # ---- the active set ------------------------------------------------------

    def is_up(self) -> bool:
        """The bundle has an enabled link (what upstream is told)."""
        return self.bundle is not None and native.o2m_enabled(self.bundle) != 0

    def _apply(self) -> None:
        """ng_one2many_update_many(): publish the enabled links; tell
        upstream (log, counters) only when the set empties or stops being empty."""
        mask = sum(1 << i for i, on in enumerate(self.enabled) if on)
        native.o2m_set_enabled(self.bundle, mask)
        active = mask != 0
        if self._active_before is not None and active != self._active_before:
            which = "up" if active else "down"
            self.notifications[which] += 1
            log.warning("one2many %s: bundle %s (%s active links)", self.cfg.one,
                        "UP" if active else "DOWN", bin(mask).count("1"))
        self._active_before = active

    # ---- link monitor (failure = notify) ---------------------------------------

    def _link_state(self, i: int) -> bool:
        port = self.dp.port(self.links[i])
        up = native.port_link(port.port_id)["up"]
        if self._ifaces[i] is not None:
            up = up and kernel_link_up(self._ifaces[i])
        return up

    def _sample_links(self, initial: bool = False) -> bool:
        """Read every link; apply up/down delays; True if a link changed."""
        now = time.monotonic()
        changed = False
        for i in range(len(self.links)):
            up = self._link_state(i)
            if initial or self.link_up[i] is None:
                self.link_up[i] = up
                self.enabled[i] = up
                continue
            if up == self.link_up[i]:
                self._pending[i] = None
                continue
            if self._pending[i] is None:
                self._pending[i] = now
            delay = (self.cfg.updelay_ms if up else self.cfg.downdelay_ms) / 1000
            if now - self._pending[i] >= delay:
                self.link_up[i] = up
                self._pending[i] = None
                self.enabled[i] = up  # NGM_LINK_IS_UP / NGM_LINK_IS_DOWN
                self.events.append({"time": now, "link": i, "port": self.links[i], "up": up,
                                    "via": self._woken_by})
                log.warning("one2many %s: link %d (%s) %s", self.cfg.one, i, self.links[i],
                            "up" if up else "down")
                changed = True
        return changed

    def _wait(self) -> bool:
        """Until the next poll or a link-change interrupt; False: stop."""
        timeout = self.cfg.monitor_interval_ms / 1000
        self._woken_by = "poll"
        if self._wake is None:
            return not self._stop.wait(timeout)
        if select.select([self._wake], [], [], timeout)[0]:
            self._woken_by = "interrupt"
            try:
                os.eventfd_read(self._wake)
            except BlockingIOError:
                pass
        return not self._stop.is_set()

    def _monitor(self) -> None:
        while self._wait():
            if self.failure != "notify":
                continue
            try:
                with self._lock:
                    if self._sample_links():
                        self._apply()
            except Exception:  # noqa: BLE001 - keep monitoring; logged
                log.exception("one2many link monitor")

    # ---- messages (ng_one2many) -----------------------------------------------

    def getconfig(self) -> dict:
        return {"one": self.cfg.one, "links": list(self.links), "xmit": self.xmit,
                "failure": self.failure, "enabled": list(self.enabled)}

    def setconfig(self, xmit: str | None = None, failure: str | None = None,
                  enabled: list[bool] | None = None) -> dict:
        """NGM_ONE2MANY_SET_CONFIG: validated as a whole; a bad algorithm or
        link list changes nothing."""
        new_xmit = self.xmit if xmit is None else xmit
        new_failure = self.failure if failure is None else failure
        if new_xmit not in native.O2M_XMIT:
            raise One2ManyError(f"unknown transmit algorithm {new_xmit!r} "
                                f"(one of {', '.join(native.O2M_XMIT)})")
        if new_failure not in ("manual", "notify"):
            raise One2ManyError(f"unknown failure algorithm {new_failure!r} (manual or notify)")
        if enabled is not None:
            if len(enabled) != len(self.links) or not all(isinstance(e, bool) for e in enabled):
                raise One2ManyError(f"enabled is a list of {len(self.links)} booleans, "
                                    f"one per link (got {enabled!r})")
        with self._lock:
            self.xmit, self.failure = new_xmit, new_failure
            if enabled is not None:
                self.enabled = list(enabled)
            native.o2m_set_xmit(self.bundle, self.xmit)
            self._apply()
        return self.getconfig()

    def reconfigure(self, cfg: One2ManyStage) -> None:
        """Reload: algorithms, enabled links (manual mode) and monitor timing."""
        enabled = None
        if cfg.failure == "manual":
            enabled = list(cfg.enabled) if cfg.enabled else [True] * len(self.links)
        self.setconfig(cfg.xmit, cfg.failure, enabled)
        self.cfg = cfg

    def enable_link(self, link: int, on: bool) -> None:
        self._check_link(link, allow_one=False)
        enabled = list(self.enabled)
        enabled[link] = on
        self.setconfig(enabled=enabled)

    def _check_link(self, link: int, allow_one: bool = True) -> None:
        if not (0 <= link < len(self.links) or (allow_one and link == ONE)):
            raise One2ManyError(f"no link {link}: links are 0..{len(self.links) - 1}"
                                + (f", or {ONE} for the one side" if allow_one else ""))

    def getstats(self, link: int) -> dict:
        """NGM_ONE2MANY_GET_STATS, summed over the workers (read lock-free)."""
        self._check_link(link)
        per = [native.one2many_stats(st, link) for st in self.stages]
        return {k: sum(p[k] for p in per) for k in native.O2M_STATS_FIELDS}

    def getclrstats(self, link: int, clear_only: bool = False) -> dict:
        """NGM_ONE2MANY_GETCLR_STATS: each worker reads and zeroes its own
        counters between two bursts, so no packet is counted twice or lost."""
        self._check_link(link)
        per = [native.o2m_link_stats() for _ in self.dp.workers]
        self.dp.stage_command(self.index, native.CMD_ONE2MANY_STATS, link, 1, per_worker=per.__getitem__,
                              what="one2many stats")
        return {k: sum(getattr(p, k) for p in per) for k in native.O2M_STATS_FIELDS}

    def clrstats(self, link: int) -> None:
        self.getclrstats(link)

    def info(self) -> dict:
        return {"config": self.getconfig(), "link_up": list(self.link_up),
                "active_mask": native.o2m_enabled(self.bundle) if self.bundle else 0,
                "notifications": dict(self.notifications), "link_events": len(self.events),
                "one": self.getstats(ONE),
                "many": {name: self.getstats(i) for i, name in enumerate(self.links)}}
