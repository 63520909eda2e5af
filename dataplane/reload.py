"""Live reload: a new config applied to a running dataplane without stopping
traffic.

The new file is validated first; then it is compared with the running config.
What can change at run time is applied through the same paths control
messages use (atomic words the workers read per burst, commands each worker
runs between two bursts); anything structural (EAL, pools, ports, the shape
of the pipeline, cache sizes) is refused with the key that would need a
restart, and the running config is left untouched. The plan is complete
before anything is applied, so a rejected file changes nothing.
"""
from __future__ import annotations

import logging
from typing import Callable

from . import native
from .config import Config, Ip6flowStage, NetflowStage, One2ManyStage, XconnectStage
from .errors import ConfigError

log = logging.getLogger(__name__)

# Per stage kind: keys that can change live (everything else needs a restart).
LIVE_KEYS = {
    "xconnect": {"map"},
    "netflow": {"active_timeout", "inactive_timeout", "export"},
    "one2many": {"xmit", "failure", "enabled", "monitor_interval_ms", "updelay_ms", "downdelay_ms"},
    "ip6flow": {"maxflows", "hashsize", "maxflows4", "hashsize4", "idle_timeout_s", "icmp_rate",
                "icmp_burst", "neighbour_reachable_s", "routes", "neighbours"},
}
# Top-level sections that can change live, and how.
LIVE_SECTIONS = {"pipeline", "slowpath"}


class RestartRequired(ConfigError):
    """The new config changes something only a restart can change."""


def _dump(value):
    if isinstance(value, list):
        return [_dump(v) for v in value]
    return value.model_dump(mode="json") if hasattr(value, "model_dump") else value


def plan(dp, new: Config, source: str) -> list[tuple[str, Callable[[], None]]]:
    """The steps that turn the running config into `new` (nothing applied yet)."""
    old = dp.cfg
    for section in type(old).model_fields:
        if section in LIVE_SECTIONS:
            continue
        a, b = _dump(getattr(old, section)), _dump(getattr(new, section))
        if a != b:
            key = _first_difference(section, a, b)
            raise RestartRequired(f"{source}: {key}: changing this needs a restart "
                                  f"(running {_get(a, key, section)!r}, file {_get(b, key, section)!r})")
    if len(old.pipeline) != len(new.pipeline) or any(
            o.stage != n.stage for o, n in zip(old.pipeline, new.pipeline)):
        raise RestartRequired(f"{source}: pipeline: adding, removing or reordering stages needs a "
                              f"restart (running {[s.stage for s in old.pipeline]}, "
                              f"file {[s.stage for s in new.pipeline]})")
    steps: list[tuple[str, Callable[[], None]]] = []
    if old.slowpath != new.slowpath:
        steps.append(("slowpath", lambda: dp.set_punt_police(new.slowpath)))
        for c in dp.ip6flow:  # the ICMP errors' per-source share
            if c.slowpath is not None and old.slowpath.source_share != new.slowpath.source_share:
                steps.append(("slowpath.source_share", lambda c=c: c.set_source_share(
                    new.slowpath.source_share)))
    for i, (o, n) in enumerate(zip(old.pipeline, new.pipeline)):
        a, b = _dump(o), _dump(n)
        changed = {k for k in a if a[k] != b[k]}
        fixed = changed - LIVE_KEYS[o.stage]
        if fixed:
            k = sorted(fixed)[0]
            raise RestartRequired(f"{source}: pipeline[{i}].{k}: changing this needs a restart "
                                  f"(running {a[k]!r}, file {b[k]!r})")
        if not changed:
            continue
        if isinstance(n, XconnectStage):
            steps.append((f"pipeline[{i}].map", _xconnect_step(dp, i, n)))
        elif isinstance(n, NetflowStage):
            c = next(c for c in dp.netflow if c.index == i)
            if {"active_timeout", "inactive_timeout"} & changed:
                steps.append((f"pipeline[{i}] timeouts",
                              lambda c=c, n=n: c.settimeouts(n.active_timeout, n.inactive_timeout)))
            if "export" in changed:
                steps.append((f"pipeline[{i}].export", lambda c=c, n=n: c.reconfigure_export(n.export)))
        elif isinstance(n, One2ManyStage):
            c = next(c for c in dp.one2many if c.index == i)
            steps.append((f"pipeline[{i}] one2many", lambda c=c, n=n: c.reconfigure(n)))
        elif isinstance(n, Ip6flowStage):
            c = next(c for c in dp.ip6flow if c.index == i)
            steps.append((f"pipeline[{i}] ip6flow {', '.join(sorted(changed))}",
                          lambda c=c, n=n: c.reconfigure(n)))
    return steps


def _xconnect_step(dp, index: int, sc: XconnectStage) -> Callable[[], None]:
    pairs = {dp.port(p).port_id: native.PORT_PUNT if q == "punt" else dp.port(q).port_id
             for p, q in sc.map.items()}
    removed = [p.port_id for p in dp.ports if p.port_id not in pairs]

    def step() -> None:
        for src, dst in [*pairs.items(), *((src, native.PORT_NONE) for src in removed)]:
            dp.stage_command(index, native.CMD_XCONNECT_SET, src, dst, what="xconnect")
    return step


def apply(dp, new: Config, source: str) -> list[str]:
    """Validate-and-plan, then apply; returns what changed."""
    steps = plan(dp, new, source)
    for what, step in steps:
        step()
        log.warning("reload: applied %s", what)
    object.__setattr__(dp, "cfg", new)
    return [what for what, _ in steps]


def _first_difference(prefix: str, a, b) -> str:
    if isinstance(a, dict) and isinstance(b, dict):
        for k in sorted(set(a) | set(b)):
            if a.get(k) != b.get(k):
                return _first_difference(f"{prefix}.{k}", a.get(k), b.get(k))
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        for i, (x, y) in enumerate(zip(a, b)):
            if x != y:
                return _first_difference(f"{prefix}[{i}]", x, y)
    return prefix


def _get(d, key: str, section: str):
    import re
    cur = d
    for part in re.findall(r"\.(\w+)|\[(\d+)\]", key[len(section):]):
        name, idx = part
        try:
            cur = cur[int(idx)] if idx else cur[name]
        except (KeyError, IndexError, TypeError):
            return None
    return cur
