#!/usr/bin/env python3
"""Writes dataplane.json, the Grafana dashboard of the dataplane's Prometheus
metrics (dataplane/metrics.py). Edit the panels here, then run

    python3 deploy/grafana/make_dashboard.py

tests/unit/test_ndr.py checks that the JSON is this script's output and that
every metric and label a panel uses is one the dataplane emits.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

OUT = Path(__file__).with_name("dataplane.json")
DS = {"type": "prometheus", "uid": "${DS_PROMETHEUS}"}
RI = "$__rate_interval"
I = 'instance=~"$instance"'
P = f'{I}, port=~"$port"'
W = f'{I}, worker=~"$worker"'


def rate(metric: str, sel: str = I, by: str = "", scale: str = "") -> str:
    """sum by (<by>) (rate(metric{sel}[$__rate_interval])) [* scale]"""
    inner = f"rate({metric}{{{sel}}}[{RI}])"
    expr = f"sum by ({by}) ({inner})" if by else f"sum({inner})"
    return f"{expr}{scale}"


class Board:
    def __init__(self):
        self.panels: list[dict] = []
        self.y = 0
        self.x = 0
        self.row_h = 0
        self.next_id = 1

    def _id(self) -> int:
        self.next_id += 1
        return self.next_id - 1

    def row(self, title: str) -> None:
        self._newline()
        self.panels.append({"type": "row", "title": title, "collapsed": False, "id": self._id(),
                            "gridPos": {"h": 1, "w": 24, "x": 0, "y": self.y}, "panels": []})
        self.y += 1

    def _newline(self) -> None:
        if self.x:
            self.y += self.row_h
            self.x, self.row_h = 0, 0

    def panel(self, title: str, targets: list[tuple[str, str]], unit: str = "short", *,
              w: int = 12, h: int = 8, kind: str = "timeseries", desc: str = "",
              stack: bool = False) -> None:
        if self.x + w > 24:
            self._newline()
        p = {"type": kind, "title": title, "id": self._id(), "datasource": DS,
             "description": desc,
             "gridPos": {"h": h, "w": w, "x": self.x, "y": self.y},
             "targets": [{"datasource": DS, "expr": e, "legendFormat": leg, "refId": chr(65 + i),
                          "range": True} for i, (e, leg) in enumerate(targets)],
             "fieldConfig": {"defaults": {"unit": unit}, "overrides": []}}
        if kind == "timeseries":
            p["fieldConfig"]["defaults"]["custom"] = {
                "drawStyle": "line", "lineWidth": 1, "fillOpacity": 10, "showPoints": "never",
                "stacking": {"mode": "normal" if stack else "none", "group": "A"}}
            p["options"] = {"legend": {"displayMode": "table", "placement": "bottom",
                                       "calcs": ["mean", "max", "lastNotNull"]},
                            "tooltip": {"mode": "multi", "sort": "desc"}}
        elif kind == "stat":
            p["options"] = {"reduceOptions": {"calcs": ["lastNotNull"], "fields": "",
                                              "values": False},
                            "colorMode": "background", "graphMode": "none", "textMode": "auto"}
        self.panels.append(p)
        self.x += w
        self.row_h = max(self.row_h, h)


def build() -> dict:
    b = Board()

    b.row("Overview")
    b.panel("Packets per second, all ports", [
        (rate("dataplane_port_ipackets_total"), "received"),
        (rate("dataplane_port_opackets_total"), "transmitted"),
        (rate("dataplane_worker_dropped_total"), "dropped by workers"),
        (rate("dataplane_port_imissed_total"), "missed by NICs")], "pps", w=16)
    b.panel("Ports with link up", [(f"sum(dataplane_port_link_up{{{P}}})", "up"),
                                   (f"count(dataplane_port_link_up{{{P}}})", "ports")],
            "none", w=8, kind="stat")
    b.panel("Drops by reason", [(rate("dataplane_worker_drops_total", W, "reason") + " > 0",
                                 "{{reason}}")], "pps", w=24,
            desc="Every packet a worker does not send on is counted once, by reason "
                 "(tx_full: the port did not take it; punt_full: slow path ring full; "
                 "punt_policed: over its punt reason's rate; the router's and one2many's reasons).")
    b.panel("Punts to the slow path, by reason", [
        (rate("dataplane_worker_punts_total", W, "reason") + " > 0", "{{reason}} handed over"),
        (rate("dataplane_worker_punt_policed_total", W, "reason") + " > 0", "{{reason}} policed"),
        (rate("dataplane_slowpath_handled_total"), "taken by the slow path thread"),
        (f"sum(dataplane_slowpath_pending{{{I}}})", "waiting in the punt rings")],
        "pps", w=24,
        desc="What workers hand the slow path thread, and what they drop in C for being over "
             "the reason's rate ([slowpath.police]): a storm shows here, not as lost forwarding.")

    b.row("Ports")
    b.panel("Received packets/s", [(rate("dataplane_port_ipackets_total", P, "port"), "{{port}}")], "pps")
    b.panel("Transmitted packets/s", [(rate("dataplane_port_opackets_total", P, "port"), "{{port}}")], "pps")
    b.panel("Received bits/s", [(rate("dataplane_port_ibytes_total", P, "port", " * 8"), "{{port}}")], "bps")
    b.panel("Transmitted bits/s",
            [(rate("dataplane_port_obytes_total", P, "port", " * 8"), "{{port}}")], "bps")
    b.panel("NIC misses and errors", [
        (rate("dataplane_port_imissed_total", P, "port"), "{{port}} imissed (rx ring full)"),
        (rate("dataplane_port_rx_nombuf_total", P, "port"), "{{port}} rx_nombuf"),
        (rate("dataplane_port_ierrors_total", P, "port"), "{{port}} ierrors"),
        (rate("dataplane_port_oerrors_total", P, "port"), "{{port}} oerrors")], "pps")
    b.panel("Link", [(f"dataplane_port_link_up{{{P}}}", "{{port}} up"),
                     (f"dataplane_port_link_speed_mbps{{{P}}}", "{{port}} Mbit/s")],
            "none", kind="stat")
    b.panel("pcap_file ports: records read/s", [
        (rate("dataplane_port_file_records_total", P, "port"), "{{port}} records"),
        (rate("dataplane_port_file_passes_total", P, "port"), "{{port}} passes (loop)"),
        (rate("dataplane_port_file_nombuf_total", P, "port"), "{{port}} reads short of mbufs")],
            "pps", w=8, desc="Ports reading a pcap file (pcap_file): records copied into mbufs, "
                             "times a looping file started over, reads the pool cut short.")
    b.panel("pcap_file ports: bits/s read",
            [(rate("dataplane_port_file_bytes_total", P, "port", " * 8"), "{{port}}")], "bps", w=8)
    b.panel("pcap_file ports: file", [(f"dataplane_port_file_done{{{P}}}", "{{port}} read to the end"),
                                      (f"dataplane_port_file_bad_tail{{{P}}}", "{{port}} cut-off end")],
            "none", w=8, kind="stat")

    b.row("Workers")
    b.panel("Worker packets/s", [
        (rate(f"dataplane_worker_{k}_total", W, "worker"), "{{worker}} " + k)
        for k in ("rx", "tx", "injected", "punted", "dropped")], "pps")
    b.panel("Busy (cycles in loops that moved packets)", [
        (f"sum by (worker) (rate(dataplane_worker_busy_cycles_total{{{W}}}[{RI}])) / "
         f"sum by (worker) (rate(dataplane_worker_cycles_total{{{W}}}[{RI}]))", "{{worker}}"),
        (f"sum by (worker) (rate(dataplane_worker_tick_cycles_total{{{W}}}[{RI}])) / "
         f"sum by (worker) (rate(dataplane_worker_cycles_total{{{W}}}[{RI}]))", "{{worker}} in timers")],
        "percentunit")
    b.panel("Drops by worker and reason", [
        (rate("dataplane_worker_drops_total", W, "worker, reason") + " > 0", "{{worker}} {{reason}}")],
        "pps")
    b.panel("Longest time outside the C loop", [
        (f"max by (worker) (dataplane_worker_max_gap_seconds{{{W}}})", "{{worker}}")], "s",
        desc="The RX ring must hold this long's worth of packets on a real NIC.")
    b.panel("Empty polls per loop, returns to Python/s", [
        (f"sum by (worker) (rate(dataplane_worker_empty_polls_total{{{W}}}[{RI}])) / "
         f"sum by (worker) (rate(dataplane_worker_loops_total{{{W}}}[{RI}]))", "{{worker}} empty polls/loop"),
        (rate("dataplane_worker_polls_total", W, "worker"), "{{worker}} returns/s")], "short")

    b.row("Pipeline stages")
    b.panel("Cycles per packet", [
        (f"max by (worker, stage, index) (dataplane_stage_cycles_per_packet{{{W}}})",
         "{{worker}} {{stage}}#{{index}}")], "short",
        desc="Sampled loops (run.cycle_sample_shift), as VPP's show runtime.")
    b.panel("Packets per call", [
        (f"sum by (stage, index) (rate(dataplane_stage_packets_total{{{W}}}[{RI}])) / "
         f"sum by (stage, index) (rate(dataplane_stage_calls_total{{{W}}}[{RI}]))",
         "{{stage}}#{{index}}")], "short")
    b.panel("Packets/s into each stage", [
        (rate("dataplane_stage_packets_total", W, "stage, index"), "{{stage}}#{{index}}")], "pps", w=24)

    b.row("NetFlow (ng_netflow)")
    b.panel("Flows in the cache", [(f"sum by (stage) (dataplane_netflow_flows{{{I}}})", "stage {{stage}}")],
            "short")
    b.panel("Flow events/s", [
        (rate(f"dataplane_netflow_{k}_total", I, "stage"), "{{stage}} " + k)
        for k in ("flows_created", "act_exp", "inact_exp", "exported")], "ops")
    b.panel("Metered packets/s and bits/s", [
        (rate("dataplane_netflow_packets_total", I, "stage"), "{{stage}} packets/s"),
        (rate("dataplane_netflow_bytes_total", I, "stage", " * 8"), "{{stage}} bits/s")], "short")
    b.panel("Not metered and failures", [
        (rate(f"dataplane_netflow_{k}_total", I, "stage"), "{{stage}} " + k)
        for k in ("alloc_failed", "export_failed", "skipped", "unmetered")], "pps")
    b.panel("Skipped by reason", [
        (rate("dataplane_netflow_skips_total", I, "stage, reason") + " > 0", "{{stage}} {{reason}}")], "pps")
    b.panel("Export", [
        (rate("dataplane_netflow_export_datagrams_total", I, "stage"), "{{stage}} datagrams/s"),
        (rate("dataplane_netflow_export_send_errors_total", I, "stage, collector"),
         "{{stage}} {{collector}} send errors/s"),
        (rate("dataplane_netflow_export_send_error_records_total", I, "stage, collector"),
         "{{stage}} {{collector}} records lost in them/s")], "short")
    b.panel("Exporter CPU (share of one core)", [
        (rate("dataplane_netflow_export_cpu_seconds_total", I, "stage"), "{{stage}}")],
        "percentunit")

    b.row("one2many (ng_one2many)")
    b.panel("Link packets/s out", [
        (rate("dataplane_one2many_link_tx_packets_total", I, "stage, link, port"),
         "{{stage}} link {{link}} ({{port}})")], "pps")
    b.panel("Link packets/s in", [
        (rate("dataplane_one2many_link_rx_packets_total", I, "stage, link, port"),
         "{{stage}} link {{link}} ({{port}})")], "pps")
    b.panel("Link bits/s", [
        (rate("dataplane_one2many_link_tx_octets_total", I, "stage, link, port", " * 8"),
         "{{port}} out"),
        (rate("dataplane_one2many_link_rx_octets_total", I, "stage, link, port", " * 8"),
         "{{port}} in")], "bps")
    b.panel("Links in the active set", [
        (f"max by (stage, link, port) (dataplane_one2many_link_enabled{{{I}}})",
         "{{stage}} link {{link}} ({{port}})")], "none", kind="stat")
    b.panel("Memory failures and active-set events", [
        (rate("dataplane_one2many_link_memory_failures_total", I, "stage, link, port"),
         "{{port}} memory failures/s"),
        (f"sum by (stage, event) (increase(dataplane_one2many_notifications_total{{{I}}}[{RI}]))",
         "{{stage}} set {{event}}")], "short", w=24)

    b.row("ip6flow (router)")
    b.panel("Fast path and route path, packets/s", [
        (rate("dataplane_ip6flow_fastforward_total", I, "family"), "{{family}} cache hit"),
        (rate("dataplane_ip6flow_forward_total", I, "family"), "{{family}} route lookup")], "pps",
        stack=True)
    b.panel("Cache hit ratio", [
        (f"sum by (family) (rate(dataplane_ip6flow_fastforward_total{{{I}}}[{RI}])) / "
         f"(sum by (family) (rate(dataplane_ip6flow_fastforward_total{{{I}}}[{RI}])) + "
         f"sum by (family) (rate(dataplane_ip6flow_forward_total{{{I}}}[{RI}])))", "{{family}}")],
        "percentunit")
    b.panel("Flows cached", [(f"sum by (family) (dataplane_ip6flow_flows{{{I}}})", "{{family}}")],
            "short")
    b.panel("Cache events/s", [
        (rate(f"dataplane_ip6flow_{k}_total", I, "family"), "{{family}} " + k)
        for k in ("created", "refreshed", "reaped_invalid", "reaped_lru", "expired", "invalidated")],
        "ops")
    b.panel("Punts to the slow path by reason", [
        (rate("dataplane_ip6flow_punts_total", I, "family, reason") + " > 0", "{{family}} {{reason}}")],
        "pps")
    b.panel("Slow path outcomes", [
        (rate("dataplane_ip6flow_slowpath_total", I, "outcome") + " > 0", "{{outcome}}")], "ops")
    b.panel("Route table changes", [
        (f"sum by (stage) (increase(dataplane_ip6flow_route_generation_total{{{I}}}[{RI}]))",
         "stage {{stage}}")], "short", w=24,
        desc="Each published change makes every cached flow stale at once.")

    def var(name: str, label: str, query: str) -> dict:
        return {"type": "query", "name": name, "label": label, "datasource": DS,
                "query": {"query": query, "refId": f"{name}-var"}, "definition": query,
                "refresh": 2, "multi": True, "includeAll": True, "allValue": ".*",
                "current": {"selected": True, "text": ["All"], "value": ["$__all"]},
                "sort": 3, "hide": 0, "options": []}

    return {
        "title": "dataplane",
        "uid": "dataplane-dpdk",
        "description": "DPDK dataplane: ports, workers, drops by reason, stages, netflow, "
                       "one2many, ip6flow (dataplane/metrics.py)",
        "tags": ["dataplane", "dpdk"],
        "editable": True,
        "graphTooltip": 1,
        "schemaVersion": 38,
        "version": 1,
        "time": {"from": "now-1h", "to": "now"},
        "refresh": "10s",
        "timezone": "",
        "annotations": {"list": []},
        "templating": {"list": [
            {"type": "datasource", "name": "DS_PROMETHEUS", "label": "Prometheus",
             "query": "prometheus", "current": {}, "hide": 0, "refresh": 1, "regex": "",
             "options": []},
            var("instance", "instance", "label_values(dataplane_worker_rx_total, instance)"),
            var("port", "port", 'label_values(dataplane_port_ipackets_total{instance=~"$instance"}, port)'),
            var("worker", "worker", 'label_values(dataplane_worker_rx_total{instance=~"$instance"}, worker)'),
        ]},
        "panels": b.panels,
    }


def render() -> str:
    return json.dumps(build(), indent=2) + "\n"


if __name__ == "__main__":
    OUT.write_text(render())
    print(f"wrote {OUT}", file=sys.stderr)
