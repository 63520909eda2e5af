"""Human views of counter snapshots: rates between two snapshots, rich tables."""
from __future__ import annotations

from rich.console import Group
from rich.table import Table

from .engine import Snapshot


def rates(prev: Snapshot, cur: Snapshot) -> dict:
    """Packets per second between two snapshots, per port and per worker."""
    dt = max(cur.time - prev.time, 1e-9)
    out = {"interval_s": dt, "ports": {}, "workers": [], "totals": {}}
    for name, p in cur.ports.items():
        q = prev.ports.get(name, {})
        out["ports"][name] = {k: (p[k] - q.get(k, 0)) / dt for k in ("rx", "tx", "tx_dropped")}
    for w, v in zip(cur.workers, prev.workers):
        busy = (w["busy_cycles"] - v["busy_cycles"]) / max(w["total_cycles"] - v["total_cycles"], 1)
        out["workers"].append({"id": w["id"], "rx": (w["rx"] - v["rx"]) / dt,
                               "tx": (w["tx"] - v["tx"]) / dt,
                               "dropped": (w["dropped"] - v["dropped"]) / dt,
                               "busy": min(busy, 1.0)})
    for k in ("rx", "tx", "dropped", "punted"):
        out["totals"][k] = (cur.totals[k] - prev.totals[k]) / dt
    return out


def _mpps(v: float) -> str:
    return f"{v / 1e6:8.3f}"


def render(prev: Snapshot, cur: Snapshot, title: str = "dataplane") -> Group:
    r = rates(prev, cur)
    ports = Table(title=f"{title}: ports", expand=False)
    for col in ("port", "driver", "link", "rx Mpps", "tx Mpps", "rx total", "tx total", "imissed"):
        ports.add_column(col, justify="right" if col not in ("port", "driver") else "left")
    for name, p in cur.ports.items():
        link = p.get("link") or {}
        ports.add_row(name, p["driver"], "up" if link.get("up") else "down",
                      _mpps(r["ports"][name]["rx"]), _mpps(r["ports"][name]["tx"]),
                      f"{p['rx']:,}", f"{p['tx']:,}", f"{p.get('eth', {}).get('imissed', 0):,}")
    workers = Table(title="workers", expand=False)
    for col in ("worker", "cpu", "rx Mpps", "tx Mpps", "busy", "max gap us", "dropped"):
        workers.add_column(col, justify="right")
    for w, wr in zip(cur.workers, r["workers"]):
        workers.add_row(str(w["id"]), str(w["cpu"]), _mpps(wr["rx"]), _mpps(wr["tx"]),
                        f"{wr['busy'] * 100:5.1f}%", f"{w['max_gap_us']:.0f}", f"{w['dropped']:,}")
    drops = {k: v for k, v in cur.totals["drops"].items() if v}
    parts = [ports, workers]
    for nf in cur.netflow:
        parts.append(netflow_table(nf))
    for rt in cur.ip6flow:
        parts.append(ip6flow_table(rt))
    if drops:
        t = Table(title="drops by reason")
        t.add_column("reason")
        t.add_column("packets", justify="right")
        for k, v in drops.items():
            t.add_row(k, f"{v:,}")
        parts.append(t)
    return Group(*parts)


def netflow_table(nf: dict) -> Table:
    """ng_netflow's `info`: the cache, its expiries and the export."""
    ex = nf.get("export") or {}
    t = Table(title=f"netflow (export v{ex.get('version', '?')})")
    cols = {"flows": f"{nf['flows_used']:,}/{nf['max_flows']:,}", "created": f"{nf['flows_created']:,}",
            "packets": f"{nf['packets']:,}", "active exp": f"{nf['act_exp']:,}",
            "inactive exp": f"{nf['inact_exp']:,}", "alloc failed": f"{nf['alloc_failed']:,}",
            "export failed": f"{nf['export_failed']:,}", "not metered": f"{nf['skipped']:,}",
            "datagrams": f"{ex.get('datagrams', 0):,}",
            "send errors": f"{sum(c['errors'] for c in ex.get('collectors', [])):,}"}
    for name in cols:
        t.add_column(name, justify="right")
    t.add_row(*cols.values())
    return t


def ip6flow_table(rt: dict) -> Table:
    """The router: fast-forward cache per family and what went to the slow path."""
    t = Table(title=f"ip6flow router (route generation {rt.get('generation', 0)})")
    for col in ("family", "flows", "fastforward", "forward", "created", "reaped", "expired",
                "punted"):
        t.add_column(col, justify="right" if col != "family" else "left")
    for name in ("ipv6", "ipv4"):
        f = rt[name]
        t.add_row(name, f"{f['flows']:,}/{f['maxflows']:,}", f"{f['fastforward']:,}",
                  f"{f['forward']:,}", f"{f['created']:,}",
                  f"{f['reaped_invalid'] + f['reaped_lru']:,}", f"{f['expired']:,}",
                  f"{sum(f['punts'].values()):,}")
    return t


def runtime_table(snap: Snapshot) -> Table:
    """Per-stage calls, packets per call and cycles per packet (VPP's show runtime)."""
    t = Table(title="runtime")
    for col in ("worker", "stage", "calls", "packets", "pkts/call", "cycles/pkt", "dropped"):
        t.add_column(col, justify="right" if col not in ("stage",) else "left")
    for s in runtime_rows(snap):
        t.add_row(str(s["worker"]), s["stage"], f"{s['calls']:,}", f"{s['packets']:,}",
                  f"{s['pkts_per_call']:.1f}", f"{s['cycles_per_pkt']:.1f}", f"{s['dropped']:,}")
    return t


def runtime_rows(snap: Snapshot) -> list[dict]:
    """port-rx and port-tx are the driver calls; the rest are pipeline stages."""
    rows = []
    for w in snap.workers:
        for stage, cyc in (("port-rx", w["rx_cycles"]), ("port-tx", w["tx_cycles"])):
            rows.append({"worker": w["id"], "stage": stage, "calls": w["rx_bursts"],
                         "packets": w["rx"], "dropped": w["drops"]["tx_full"] if stage == "port-tx" else 0,
                         "cycles": cyc, "sampled": w["sampled_rx"]})
    for s in snap.stages:
        rows.append({"worker": s["worker"], "stage": s["kind"], "calls": s["calls"],
                     "packets": s["packets"], "dropped": s["dropped"], "cycles": s["cycles"],
                     "sampled": s["sampled_packets"]})
    for r in rows:
        r["pkts_per_call"] = r["packets"] / r["calls"] if r["calls"] else 0.0
        # Cycles are measured in sampled loops only: divide by their packets.
        r["cycles_per_pkt"] = r["cycles"] / r["sampled"] if r["sampled"] else 0.0
    return rows
