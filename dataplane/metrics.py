"""Prometheus metrics, served from a snapshot.

A background thread takes a counter snapshot every `interval`; scrapes read
only that snapshot, so scraping at any rate never reaches the workers (whose
counters are read lock-free anyway) and costs the packet path nothing.
"""
from __future__ import annotations

import logging
import socket
import threading
from http.server import ThreadingHTTPServer
from typing import Iterator

from prometheus_client.exposition import MetricsHandler
from prometheus_client.core import CollectorRegistry, CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

log = logging.getLogger(__name__)

PORT_COUNTERS = {"ipackets": "received", "opackets": "transmitted", "ibytes": "received bytes",
                 "obytes": "transmitted bytes", "imissed": "dropped by the NIC (rx ring full)",
                 "ierrors": "receive errors", "oerrors": "transmit errors",
                 "rx_nombuf": "receive failures for want of an mbuf"}
WORKER_COUNTERS = ("rx", "tx", "injected", "punted", "dropped", "loops", "empty_polls", "polls")
NETFLOW_COUNTERS = ("packets", "bytes", "flows_created", "alloc_failed", "export_failed",
                    "exported", "act_exp", "inact_exp", "skipped", "unmetered")
O2M_COUNTERS = ("rx_packets", "rx_octets", "tx_packets", "tx_octets", "memory_failures")


def counter(name: str, doc: str, labels: list[str]) -> CounterMetricFamily:
    return CounterMetricFamily(f"dataplane_{name}", doc, labels=labels)


def gauge(name: str, doc: str, labels: list[str]) -> GaugeMetricFamily:
    return GaugeMetricFamily(f"dataplane_{name}", doc, labels=labels)


IP6FLOW_COUNTERS = ("fastforward", "forward", "created", "refreshed", "reaped_invalid",
                    "reaped_lru", "expired", "invalidated")


class SnapshotCollector(Collector):
    def __init__(self, dp, interval: float):
        self.dp = dp
        self.interval = interval
        self._snap = None
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._refresh, name="dp-metrics", daemon=True)

    def start(self) -> None:
        self._take()
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)

    def _take(self) -> None:
        snap = self.dp.snapshot()
        with self._lock:
            self._snap = snap

    def _refresh(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self._take()
            except Exception:  # noqa: BLE001 - the last good snapshot stays
                log.exception("metrics snapshot")

    def collect(self) -> Iterator:
        with self._lock:
            snap = self._snap
        if snap is None:
            return
        yield from self._ports(snap)
        yield from self._workers(snap)
        yield from self._stages(snap)
        yield from self._netflow(snap)
        yield from self._one2many(snap)
        yield from self._ip6flow(snap)

    def _ports(self, snap):
        for key, doc in PORT_COUNTERS.items():
            m = counter(f"port_{key}", f"Port packets/bytes {doc} (NIC counters)", ["port"])
            for name, p in snap.ports.items():
                m.add_metric([name], p.get("eth", {}).get(key, 0))
            yield m
        up = gauge("port_link_up", "1 if the port's link is up", ["port"])
        speed = gauge("port_link_speed_mbps", "Link speed in Mbit/s", ["port"])
        for name, p in snap.ports.items():
            up.add_metric([name], int(bool(p.get("link", {}).get("up"))))
            speed.add_metric([name], p.get("link", {}).get("speed_mbps", 0))
        yield up
        yield speed
        yield from self._pcap_files(snap)

    def _pcap_files(self, snap):
        """pcap_file ports: how far their reader is (native/pcapfile.c)."""
        files = {name: p["pcap_file"] for name, p in snap.ports.items() if "pcap_file" in p}
        fams = [(counter("port_file_records", "Records a pcap_file port read from its file", ["port"]),
                 "packets"),
                (counter("port_file_bytes", "Captured bytes a pcap_file port read", ["port"]), "bytes"),
                (counter("port_file_passes", "Times a looping pcap_file port started over", ["port"]),
                 "passes"),
                (counter("port_file_nombuf", "Reads a pcap_file port cut short for want of mbufs "
                                             "(retried, nothing lost)", ["port"]), "nombuf"),
                (gauge("port_file_done", "1 once a pcap_file port read its file to the end", ["port"]),
                 "done"),
                (gauge("port_file_bad_tail", "1 if the file ended in a cut-off or corrupt record",
                       ["port"]), "bad_tail")]
        for m, key in fams:
            for name, st in files.items():
                m.add_metric([name], st[key])
            yield m

    def _workers(self, snap):
        for key in WORKER_COUNTERS:
            m = counter(f"worker_{key}", f"Worker {key} (packets, or loop iterations)", ["worker"])
            for w in snap.workers:
                m.add_metric([str(w["id"])], w[key])
            yield m
        drops = counter("worker_drops", "Packets dropped, by reason", ["worker", "reason"])
        punts = counter("worker_punts", "Packets handed to the slow path, by punt reason",
                        ["worker", "reason"])
        policed = counter("worker_punt_policed", "Punts over their reason's rate, dropped in C",
                          ["worker", "reason"])
        for w in snap.workers:
            for reason, v in w["drops"].items():
                drops.add_metric([str(w["id"]), reason], v)
            for reason, v in w["punts"].items():
                punts.add_metric([str(w["id"]), reason], v)
            for reason, v in w["punt_policed"].items():
                policed.add_metric([str(w["id"]), reason], v)
        yield from (drops, punts, policed)
        slow = gauge("slowpath_pending", "Punted packets waiting in the workers' punt rings", [])
        handled = counter("slowpath_handled", "Punted packets the slow path thread took", [])
        if snap.slowpath:
            slow.add_metric([], snap.slowpath["pending"])
            handled.add_metric([], snap.slowpath["handled"])
        yield from (slow, handled)
        gap = gauge("worker_max_gap_seconds", "Longest time a worker spent outside its C loop",
                    ["worker"])
        busy = counter("worker_busy_cycles", "TSC cycles in loops that moved packets", ["worker"])
        total = counter("worker_cycles", "TSC cycles inside the C loop", ["worker"])
        ticks = counter("worker_tick_cycles", "TSC cycles in stage timers (expiry scans, link timers)",
                        ["worker"])
        for w in snap.workers:
            gap.add_metric([str(w["id"])], w["max_gap_us"] / 1e6)
            busy.add_metric([str(w["id"])], w["busy_cycles"])
            total.add_metric([str(w["id"])], w["total_cycles"])
            ticks.add_metric([str(w["id"])], w["tick_cycles"])
        yield from (gap, busy, total, ticks)

    def _stages(self, snap):
        calls = counter("stage_calls", "Burst calls of a pipeline stage", ["worker", "stage", "index"])
        pkts = counter("stage_packets", "Packets handed to a pipeline stage", ["worker", "stage", "index"])
        cyc = gauge("stage_cycles_per_packet", "TSC cycles per packet (sampled loops)",
                    ["worker", "stage", "index"])
        for s in snap.stages:
            labels = [str(s["worker"]), s["kind"], str(s["index"])]
            calls.add_metric(labels, s["calls"])
            pkts.add_metric(labels, s["packets"])
            cyc.add_metric(labels, s["cycles"] / s["sampled_packets"] if s["sampled_packets"] else 0)
        yield from (calls, pkts, cyc)

    def _netflow(self, snap):
        if not snap.netflow:
            return
        for key in NETFLOW_COUNTERS:
            m = counter(f"netflow_{key}", f"ng_netflow info: {key}", ["stage"])
            for nf in snap.netflow:
                m.add_metric([str(nf["pipeline_index"])], nf[key])
            yield m
        used = gauge("netflow_flows", "Flows in the cache", ["stage"])
        skips = counter("netflow_skips", "Packets not metered, by reason", ["stage", "reason"])
        dgrams = counter("netflow_export_datagrams", "Export datagrams built", ["stage"])
        export_cpu = counter("netflow_export_cpu_seconds",
                             "CPU time spent draining, building and sending export datagrams",
                             ["stage"])
        errors = counter("netflow_export_send_errors", "Datagrams a collector did not take",
                         ["stage", "collector"])
        error_records = counter("netflow_export_send_error_records",
                                "Flow records in datagrams a collector did not take",
                                ["stage", "collector"])
        for nf in snap.netflow:
            st = str(nf["pipeline_index"])
            used.add_metric([st], nf["flows_used"])
            for reason, v in nf["skips"].items():
                skips.add_metric([st, reason], v)
            ex = nf.get("export") or {}
            dgrams.add_metric([st], ex.get("datagrams", 0))
            export_cpu.add_metric([st], ex.get("cpu_s", 0.0))
            for c in ex.get("collectors", []):
                errors.add_metric([st, c["collector"]], c["errors"])
                error_records.add_metric([st, c["collector"]], c.get("error_records", 0))
        yield from (used, skips, dgrams, export_cpu, errors, error_records)

    def _one2many(self, snap):
        if not snap.one2many:
            return
        stats = {k: counter(f"one2many_link_{k}", f"ng_one2many link stats: {k}",
                            ["stage", "link", "port"]) for k in O2M_COUNTERS}
        enabled = gauge("one2many_link_enabled", "1 if the link is in the active set",
                        ["stage", "link", "port"])
        notes = counter("one2many_notifications", "Active set emptied (down) or refilled (up)",
                        ["stage", "event"])
        for b in snap.one2many:
            st = str(b["pipeline_index"])
            for k in O2M_COUNTERS:
                stats[k].add_metric([st, "-1", b["config"]["one"]], b["one"][k])
            for i, (port, s) in enumerate(b["many"].items()):
                for k in O2M_COUNTERS:
                    stats[k].add_metric([st, str(i), port], s[k])
                enabled.add_metric([st, str(i), port], int(bool(b["active_mask"] >> i & 1)))
            for event, v in b["notifications"].items():
                notes.add_metric([st, event], v)
        yield from stats.values()
        yield enabled
        yield notes


    def _ip6flow(self, snap):
        if not snap.ip6flow:
            return
        fam = ["stage", "family"]
        ctr = {k: counter(f"ip6flow_{k}", f"ip6flow cache: {k}", fam) for k in IP6FLOW_COUNTERS}
        flows = gauge("ip6flow_flows", "Flows in the fast-forward caches (all workers)", fam)
        punts = counter("ip6flow_punts", "Packets handed to the slow path, by reason",
                        fam + ["reason"])
        slow = counter("ip6flow_slowpath", "Slow path outcomes (NDP, ARP, ICMP errors...)",
                       ["stage", "outcome"])
        gen = counter("ip6flow_route_generation", "Route table changes published", ["stage"])
        for r in snap.ip6flow:
            st = str(r["pipeline_index"])
            for name in ("ipv6", "ipv4"):
                f = r[name]
                for k in IP6FLOW_COUNTERS:
                    ctr[k].add_metric([st, name], f[k])
                flows.add_metric([st, name], f["flows"])
                for reason, v in f["punts"].items():
                    punts.add_metric([st, name, reason], v)
            for outcome, v in r["slowpath"].items():
                slow.add_metric([st, outcome], v)
            gen.add_metric([st], r["generation"])
        yield from ctr.values()
        yield from (flows, punts, slow, gen)


class BoundedHTTPServer(ThreadingHTTPServer):
    """prometheus_client's server made safe to face clients that misbehave:
    at most max_connections served at once (more are closed at once, not
    queued behind a thread each), and every connection times out."""
    daemon_threads = True

    def __init__(self, address, handler, max_connections: int):
        self.address_family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
        self._slots = threading.BoundedSemaphore(max_connections)
        self.refused = 0
        super().__init__(address, handler)

    def process_request(self, request, client_address) -> None:
        if not self._slots.acquire(blocking=False):
            self.refused += 1
            self.shutdown_request(request)
            return
        try:
            super().process_request(request, client_address)
        except BaseException:
            self._slots.release()
            raise

    def process_request_thread(self, request, client_address) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._slots.release()


class MetricsServer:
    def __init__(self, dp, host: str, port: int, interval: float, max_connections: int = 16,
                 timeout: float = 5.0):
        self.collector = SnapshotCollector(dp, interval)
        self.registry = CollectorRegistry()
        self.registry.register(self.collector)
        self.host, self.port = host, port
        self.max_connections, self.timeout = max_connections, timeout
        self._server: BoundedHTTPServer | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        # The socket first: if the port is taken nothing has started, so
        # nothing is left running to read a dataplane that is being torn down.
        handler = type("Handler", (MetricsHandler.factory(self.registry),),
                       {"timeout": self.timeout,          # StreamRequestHandler: the socket's timeout
                        "log_message": lambda *a: None})
        self._server = BoundedHTTPServer((self.host, self.port), handler, self.max_connections)
        self.port = self._server.server_port
        self._thread = threading.Thread(target=self._server.serve_forever, name="dp-metrics",
                                        daemon=True)
        self._thread.start()
        self.collector.start()
        log.info("metrics on http://%s:%d/metrics", self.host, self.port)

    def stop(self) -> None:
        self.collector.stop()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
