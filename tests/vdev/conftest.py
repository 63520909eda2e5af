"""vdev tier: the malformed-corpus summary (tests/vdev/test_malformed.py).

Each test_malformed test (forked) writes its stage's table to
.pytest_cache/d/malformed/<stage>.json; at the end of the session this
prints the combined table (kind -> packets -> where it landed, per stage)
and one summary line, and writes summary.json beside them.
"""
from __future__ import annotations

import json
import time
from pathlib import Path

STAGES = (("netflow_xconnect", "netflow -> xconnect"), ("one2many", "one2many (hash)"),
          ("ip6flow", "router: ip6flow"))
MODULE = "test_malformed.py::"


def pytest_sessionstart(session):
    session.config._malformed_t0 = time.time()


def _dir(config) -> Path | None:
    cache = getattr(config, "cache", None)
    d = Path(cache.mkdir("malformed")) if cache else Path(config.rootpath) / ".pytest_cache/malformed"
    return d if d.is_dir() else None


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    reports = [r for key in ("passed", "failed", "error") for r in terminalreporter.stats.get(key, [])
               if MODULE in getattr(r, "nodeid", "") and r.when == "call"]
    if not reports:
        return
    crashes = sum(1 for r in reports if r.failed and "forked test process died" in str(r.longrepr))
    d = _dir(config)
    t0 = getattr(config, "_malformed_t0", 0)
    stages = {}
    for name, _ in STAGES:
        f = d / f"{name}.json" if d else None
        if f and f.exists() and f.stat().st_mtime >= t0:
            stages[name] = json.loads(f.read_text())
    tr = terminalreporter
    tr.section("malformed corpus: kind -> packets -> where it landed")
    if stages:
        kinds = list(dict.fromkeys(k for s in stages.values() for k in s["kinds"]))
        width = max(len(k) for k in kinds)
        present = [(n, title) for n, title in STAGES if n in stages]
        for name, title in present:
            tr.write_line(f"[{title}]")
            for k in kinds:
                row = stages[name]["kinds"].get(k)
                if row is not None:
                    tr.write_line(f"  {k:<{width}} {row['packets']:>4}  {row.get('short', row['landing'])}")
    mismatches = [f"{name}: {m}" for name, s in stages.items() for m in s["mismatches"]]
    summary = {
        "kinds_covered": max((s["kinds_covered"] for s in stages.values()), default=0),
        "packets_sent": sum(s["packets_sent"] for s in stages.values()),
        "crashes": crashes,
        "mismatches": len(mismatches),
        "stages_run": sorted(stages),
        "stages_missing": [n for n, _ in STAGES if n not in stages],
        "per_stage": {n: {k: s.get(k) for k in ("packets_sent", "valid", "canaries", "pmd", "seconds")}
                      for n, s in stages.items()},
        "mismatch_list": mismatches,
    }
    if d:
        (d / "summary.json").write_text(json.dumps(summary, indent=1))
    for m in mismatches:
        tr.write_line(f"MISMATCH {m}")
    tr.write_line(f"malformed corpus: kinds covered {summary['kinds_covered']}, packets sent "
                  f"{summary['packets_sent']}, crashes {crashes}, mismatches {len(mismatches)}"
                  + (f", stages missing {summary['stages_missing']}" if summary["stages_missing"] else "")
                  + (f" ({d / 'summary.json'})" if d else ""))
