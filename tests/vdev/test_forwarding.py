"""In-process EAL on virtual devices: forwarding, conservation, rings, pools.

Every test here is forked (conftest) so each gets its own EAL and prefix.
Traffic with exact counts comes from net_pcap files built with scapy.
"""
from __future__ import annotations

import time

import pytest
from scapy.layers.inet import IP, UDP
from scapy.layers.l2 import Ether
from scapy.utils import rdpcap, wrpcap

from dataplane import native
from dataplane.errors import ConfigError
from tests.helpers import conserved, port, running, vdev_config, wait_for, xconnect

pytestmark = [pytest.mark.eal, pytest.mark.timeout(60)]


def udp_packets(n: int, size: int = 100) -> list:
    out = []
    for i in range(n):
        p = Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02") / \
            IP(src=f"10.1.{i % 200}.1", dst="10.2.0.1") / UDP(sport=1000 + i % 5000, dport=7)
        out.append(p / (b"%08d" % i).ljust(max(0, size - len(p)), b"."))
    return out


SINK = port("out", "net_null0,no-rx=1", poll=False)


def pcap_in(tmp_path) -> str:
    return port("in", f"net_pcap0,rx_pcap={tmp_path}/in.pcap")




def test_pcap_through_xconnect_is_byte_identical(tmp_path, file_prefix):
    """Golden tier: pcap in through net_pcap, the same frames out, in order."""
    sent = udp_packets(500)
    wrpcap(str(tmp_path / "in.pcap"), sent)
    cfg = vdev_config(file_prefix, pcap_in(tmp_path) +
                          port("out", f"net_pcap1,tx_pcap={tmp_path}/out.pcap", poll=False) +
                          xconnect({"in": "out"}))
    with running(cfg) as dp:
        assert wait_for(lambda: dp.snapshot().totals["tx"] == 500)
        assert dp.wait_idle()
        snap = dp.snapshot()
    got = rdpcap(str(tmp_path / "out.pcap"))  # flushed when the port closed
    assert [bytes(p) for p in got] == [bytes(p) for p in sent]
    assert snap.ports["in"]["rx"] == 500 and snap.ports["out"]["tx"] == 500
    assert snap.totals["dropped"] == 0 and conserved(snap)
    st = snap.stages[0]
    assert st["kind"] == "xconnect" and st["packets"] == 500 and st["calls"] >= 500 // 32


def test_unmapped_port_drops_are_counted_by_reason(tmp_path, file_prefix):
    wrpcap(str(tmp_path / "in.pcap"), udp_packets(300))
    cfg = vdev_config(file_prefix, pcap_in(tmp_path) + SINK + xconnect({"out": "in"}))
    with running(cfg) as dp:
        assert wait_for(lambda: dp.snapshot().totals["dropped"] == 300)
        snap = dp.snapshot()
    assert snap.totals["drops"]["no_egress"] == 300
    assert snap.stages[0]["drops"]["no_egress"] == 300
    assert snap.totals["tx"] == 0 and conserved(snap)


def test_full_egress_counts_tx_full_and_conserves(tmp_path, file_prefix):
    """net_ring's ring fills (nobody reads it): the overflow is tx_full."""
    n = 3000
    wrpcap(str(tmp_path / "in.pcap"), udp_packets(n, 64))
    cfg = vdev_config(file_prefix, pcap_in(tmp_path) +
                          port("ring", "net_ring0", poll=False) +
                          xconnect({"in": "ring"}))
    with running(cfg) as dp:
        assert wait_for(lambda: dp.snapshot().totals["rx"] == n)
        assert dp.wait_idle()
        snap = dp.snapshot()
    assert snap.totals["drops"]["tx_full"] > 0
    assert snap.totals["tx"] + snap.totals["drops"]["tx_full"] == n
    assert snap.ports["ring"]["tx_dropped"] == snap.totals["drops"]["tx_full"]
    assert conserved(snap)


def test_two_workers_share_multiqueue_ports_and_conserve(file_prefix):
    """Two workers on one CPU (oversubscribed: fine for correctness)."""
    cfg = vdev_config(file_prefix, port("a", "net_null0") +
                          port("b", "net_null1") +
                          xconnect({"a": "b", "b": "a"}), workers="[1, 1]")
    with running(cfg) as dp:
        assert [(p.nb_rxq, p.nb_txq) for p in dp.ports] == [(2, 2), (2, 2)]
        time.sleep(1.0)
        dp.stop_workers()
        snap = dp.snapshot()
    assert len(snap.workers) == 2
    assert all(w["rx"] > 0 and w["tx"] > 0 for w in snap.workers)
    assert snap.workers[0]["lcore"] != snap.workers[1]["lcore"]
    assert conserved(snap)
    assert snap.ports["a"]["rx"] + snap.ports["b"]["rx"] == snap.totals["rx"]
    # What the workers counted as sent is what the ports counted as sent.
    for name in ("a", "b"):
        assert snap.ports[name]["eth"]["opackets"] == snap.ports[name]["tx"]
    # Runtime view: every burst counted, cycles measured on a sample of them.
    from dataplane.view import runtime_rows
    for row in runtime_rows(snap):
        assert 0 < row["sampled"] < row["packets"] and row["cycles_per_pkt"] > 0, row
    stage_pkts = sum(s["packets"] for s in snap.stages)
    assert stage_pkts == snap.totals["rx"]


def test_punted_packets_reach_python_intact(tmp_path, file_prefix):
    sent = udp_packets(50)
    wrpcap(str(tmp_path / "in.pcap"), sent)
    cfg = vdev_config(file_prefix, pcap_in(tmp_path) + xconnect({"in": "punt"}))
    got = []
    # The handler is in place before the workers start: a punt that came
    # before it would be counted unhandled, not delivered.
    with running(cfg, before_start=lambda dp: dp.on_punt(
            lambda w, port, data, reason: got.append((port, data)))) as dp:
        assert wait_for(lambda: len(got) == 50)
        snap = dp.snapshot()
    assert [d for _, d in got] == [bytes(p) for p in sent]
    assert len({port for port, _ in got}) == 1
    assert snap.totals["punted"] == 50 and conserved(snap)


def test_injected_packets_leave_on_the_port(tmp_path, file_prefix):
    cfg = vdev_config(file_prefix, port("out", f"net_pcap0,tx_pcap={tmp_path}/out.pcap", poll=False) +
                          xconnect({}))
    frames = [bytes(p) for p in udp_packets(20)]
    with running(cfg) as dp:
        for f in frames:
            dp.inject("out", f)
        assert wait_for(lambda: dp.snapshot().totals["tx"] == 20)
        snap = dp.snapshot()
    assert [bytes(p) for p in rdpcap(str(tmp_path / "out.pcap"))] == frames
    assert snap.totals["injected"] == 20 and conserved(snap)


def test_mempool_returns_to_its_starting_count(tmp_path, file_prefix):
    wrpcap(str(tmp_path / "in.pcap"), udp_packets(2000))
    cfg = vdev_config(file_prefix, pcap_in(tmp_path) + SINK + xconnect({"in": "out"}))
    with running(cfg) as dp:
        before = dp.snapshot().pools[0]["in_use"]
        assert wait_for(lambda: dp.snapshot().totals["tx"] == 2000)
        assert dp.wait_idle()
        dp.stop_workers()
        after = dp.snapshot().pools[0]
    # Every forwarded mbuf came back: what is still out is what was out before
    # traffic (rx descriptors) plus at most one per-core cache.
    assert after["avail"] + after["in_use"] == after["size"]
    assert after["in_use"] <= before + 64 + 32


def test_bad_device_spec_names_the_key(file_prefix):
    cfg = vdev_config(file_prefix, port("x", "net_nosuchdriver0") + xconnect({}))
    with pytest.raises(ConfigError, match=r"ports\[0\]\.device: .*net_nosuchdriver0"):
        with running(cfg):
            pass


def test_manual_clock_is_settable(file_prefix):
    cfg = vdev_config(file_prefix, port("a", "net_null0,no-rx=1") + xconnect({}))
    with running(cfg):
        assert native.clock_ns() > 0
        native.clock_set_manual(1_000_000_000)
        assert native.clock_ns() == 1_000_000_000
        native.clock_advance(2_500)
        assert native.clock_ns() == 1_000_002_500
        native.clock_use_tsc()
        assert native.clock_ns() != 1_000_002_500


def test_commands_run_on_the_worker_thread(file_prefix):
    import threading
    cfg = vdev_config(file_prefix, port("a", "net_null0,no-rx=1") + xconnect({}), workers="[1, 0]")
    with running(cfg) as dp:
        names = dp.on_all_workers(lambda w: threading.current_thread().name)
    assert names == ["dp-worker-0", "dp-worker-1"]


def test_eal_threads_stay_on_the_main_core_off_the_workers_cpus(file_prefix):
    """EAL's interrupt, multi-process and telemetry threads once took the
    CPUs that were not lcores: the workers' own. They run on the main core;
    each worker on its CPU; the slow path thread with the main thread."""
    import os
    cfg = vdev_config(file_prefix, port("a", "net_null0,no-rx=1") + xconnect({}), workers="[1]")
    with running(cfg) as dp:
        threads = {}
        for task in os.listdir("/proc/self/task"):
            with open(f"/proc/self/task/{task}/comm") as f:
                threads.setdefault(f.read().strip(), []).append(os.sched_getaffinity(int(task)))
        worker_tid = dp.workers[0].native_id
        assert os.sched_getaffinity(worker_tid) == {1}
        assert os.sched_getaffinity(dp.slowpath.native_id) == {cfg.eal.main_core}
    eal_threads = {name: cpus for name, cpus in threads.items()
                   if name.startswith(("eal-intr", "rte_mp", "telemetry"))}
    assert eal_threads and all(c == [{0}] for c in eal_threads.values()), threads


def test_workers_starting_together_all_register(file_prefix):
    """Eight workers start at once, and the first of them builds the RCU
    tracker they all register with: none may see it half-built (one once
    failed to start with "register with RCU")."""
    import threading
    cfg = vdev_config(file_prefix, port("a", "net_null0,no-rx=1") + xconnect({}),
                      workers="[1, 0, 1, 0, 1, 0, 1, 0]")
    with running(cfg) as dp:
        names = dp.on_all_workers(lambda w: threading.current_thread().name)
    assert names == [f"dp-worker-{i}" for i in range(8)]


def test_counters_appear_in_dpdk_telemetry(file_prefix):
    """dpdk-telemetry.py's socket answers /dataplane/stats and /dataplane/workers."""
    import json
    import socket

    cfg = vdev_config(file_prefix, port("a", "net_null0") + port("b", "net_null1") +
                      xconnect({"a": "b", "b": "a"}))
    def query(cmd: str) -> dict:
        with socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET) as s:
            s.connect(f"/var/run/dpdk/{file_prefix}/dpdk_telemetry.v2")
            json.loads(s.recv(16384))  # the greeting
            s.send(cmd.encode())
            return json.loads(s.recv(65536))[cmd]

    with running(cfg) as dp:
        time.sleep(0.3)
        live = query("/dataplane/stats")
        assert live["workers"] == 1 and live["tx"] > 0
        dp.stop_workers()  # final counters: telemetry and Python must agree exactly
        stats, workers = query("/dataplane/stats"), query("/dataplane/workers")
        ours = dp.snapshot().totals
    assert (stats["rx"], stats["tx"], stats["dropped"]) == (ours["rx"], ours["tx"], ours["dropped"])
    assert stats["rx"] == stats["tx"] + stats["dropped"]
    assert set(workers) == {"worker0"} and workers["worker0"]["rx"] == ours["rx"]
    assert "drop_tx_full" in stats and "drop_no_egress" in stats
