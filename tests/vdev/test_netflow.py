"""netflow stage on virtual devices: metering, expiry, export, bad input.

Traffic is scapy-built and replayed through net_pcap; the manual clock drives
timeouts; exported datagrams are caught on a local UDP socket, decoded by the
project's independent decoder (tests/nfdecode.py) and compared field by field
with flows computed independently from the same packets (tests/flowmodel.py).
"""
from __future__ import annotations

import socket
import time

import pytest
from scapy.layers.inet import IP, TCP, UDP
from scapy.layers.inet6 import IPv6, IPv6ExtHdrDestOpt
from scapy.layers.l2 import ARP, Dot1Q
from scapy.packet import Raw
from scapy.utils import wrpcap

from dataplane import native
from dataplane.eal import Eal
from dataplane.engine import Dataplane
from tests.flowmodel import model_flows
from tests.helpers import conserved, port, running, vdev_config, wait_for, xconnect
from tests.nfdecode import SequenceChecker, TemplateCache, decode
from tests.traffic import eth, mixed_traffic

pytestmark = [pytest.mark.eal, pytest.mark.timeout(60)]

T0_NS = 1_000_000_000_000  # manual clock start: 1000 s


def netflow_cfg(tmp_path, file_prefix, collector_port: int, version: int, extra: str = ""):
    return vdev_config(file_prefix,
                       port("in", f"net_pcap0,rx_pcap={tmp_path}/in.pcap") +
                       port("out", "net_null0,no-rx=1", poll=False) +
                       f"""[[pipeline]]
stage = "netflow"
{extra}
export = {{ version = {version}, collectors = ["127.0.0.1:{collector_port}"], flush_interval_s = 0.05 }}
""" + xconnect({"in": "out"}))


@pytest.fixture
def collector():
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
    s.bind(("127.0.0.1", 0))
    s.settimeout(0.5)
    yield s
    s.close()


def receive_all(sock) -> list[bytes]:
    out = []
    while True:
        try:
            out.append(sock.recv(65535))
        except socket.timeout:
            return out




@pytest.mark.parametrize("version", [5, 9, 10])
def test_exported_flows_match_an_independent_model(tmp_path, file_prefix, collector, version):
    pkts = mixed_traffic()
    wrpcap(str(tmp_path / "in.pcap"), pkts)
    native.clock_set_manual(T0_NS)
    cfg = netflow_cfg(tmp_path, file_prefix, collector.getsockname()[1], version)
    with running(cfg) as dp:
        assert wait_for(lambda: dp.snapshot().totals["tx"] == len(pkts))
        dp.quiesce()  # flush: every cached flow is exported
        snap = dp.snapshot()
    info = snap.netflow[0]
    assert conserved(snap) and snap.totals["tx"] == len(pkts)  # metering never drops

    cache, seq, records = TemplateCache(), SequenceChecker(), []
    for d in receive_all(collector):
        dg = decode(d, cache)
        seq.feed(dg)
        records += dg.records
    assert seq.gaps == []

    expected = model_flows([(T0_NS / 1e9, p, 1) for p in pkts])
    if version == 5:  # v5 carries IPv4 only
        assert info["export"]["v5_skipped_ipv6"] == sum(1 for f in expected if f.ip_version == 6)
        expected = [f for f in expected if f.ip_version == 4]
    got = {r.key: r for r in records}
    assert len(got) == len(records), "a flow was exported twice"
    assert set(got) == {f.key for f in expected}
    for f in expected:
        r = got[f.key]
        assert (r.packets, r.bytes, r.tcp_flags) == (f.packets, f.bytes, f.tcp_flags), f.key
    assert info["skipped"] == 1 and info["skips"]["not_ip"] == 1
    assert info["flows_created"] == len(model_flows([(0, p, 1) for p in pkts]))
    assert info["act_exp"] == 2                 # the FIN and the RST flow
    assert info["flows_used"] == 0              # all flushed at shutdown


def test_fin_flow_leaves_at_once_and_a_new_flow_is_not_expired_by_its_first_fin(
        tmp_path, file_prefix, collector):
    pkts = [eth() / IP(src="1.1.1.1", dst="2.2.2.2") / TCP(sport=1, dport=2, flags="S"),
            eth() / IP(src="1.1.1.1", dst="2.2.2.2") / TCP(sport=1, dport=2, flags="F"),
            eth() / IP(src="3.3.3.3", dst="4.4.4.4") / TCP(sport=1, dport=2, flags="F")]
    wrpcap(str(tmp_path / "in.pcap"), pkts)
    native.clock_set_manual(T0_NS)
    with running(netflow_cfg(tmp_path, file_prefix, collector.getsockname()[1], 5)) as dp:
        assert wait_for(lambda: dp.snapshot().netflow[0]["export"]["datagrams"] == 1)
        info = dp.snapshot().netflow[0]
        assert info["act_exp"] == 1 and info["flows_used"] == 1  # the seed's rule (hash hits only)
        first = decode(receive_all(collector)[0], TemplateCache())
        assert [str(r.src) for r in first.records] == ["1.1.1.1"]


def test_flows_of_the_first_burst_carry_the_time_they_arrived(tmp_path, file_prefix, collector):
    """The clock moves on between the stage's configuration and its first
    burst (ports starting, a slow host): the first packets are stamped with
    the time they were metered, not the time the cache was configured."""
    pkts = [eth() / IP(src="10.5.0.1", dst="10.5.0.2") / UDP(sport=1, dport=2) for _ in range(3)]
    wrpcap(str(tmp_path / "in.pcap"), pkts)
    native.clock_set_manual(T0_NS)
    late_ms = 7000

    class LateFirstBurst(Dataplane):
        def _build_workers(self):
            super()._build_workers()                    # the stage is configured at T0
            native.clock_advance(late_ms * 10**6)       # the workers start 7 s later

    cfg = netflow_cfg(tmp_path, file_prefix, collector.getsockname()[1], 9)
    eal, dp = Eal(cfg), LateFirstBurst(cfg)
    try:
        dp.start()
        assert wait_for(lambda: dp.snapshot().netflow[0]["packets"] == 3)
        dp.quiesce()
    finally:
        dp.stop()
        eal.close()
    cache = TemplateCache()
    [r] = [r for d in receive_all(collector) for r in decode(d, cache).records]
    assert r.time_kind == "uptime_ms" and r.packets == 3
    # The exporter's boot (sysUpTime 0) is T0 + 7 s, when the packets came:
    # configure time would be 7000 ms before boot (2**32 - 7000).
    assert (r.first, r.last) == (0, 0)


def test_the_stop_flush_through_a_small_ring_loses_no_flow(tmp_path, file_prefix, collector):
    """3000 cached flows leave through a 64-record ring at the stop: the flush
    takes only what the ring has room for, so every flow is exported once."""
    flows = 3000
    pkts = [eth() / IP(src=f"10.4.{i >> 8}.{i & 255}", dst="10.4.255.1") / UDP(sport=i, dport=53)
            for i in range(flows)]
    wrpcap(str(tmp_path / "in.pcap"), pkts)
    cfg = netflow_cfg(tmp_path, file_prefix, collector.getsockname()[1], 10, "export_ring = 64")
    with running(cfg) as dp:
        assert wait_for(lambda: dp.snapshot().netflow[0]["flows_used"] == flows)
        dp.quiesce()
        info = dp.snapshot().netflow[0]
    assert (info["exported"], info["export_failed"], info["flows_used"]) == (flows, 0, 0)
    cache = TemplateCache()
    records = [r for d in receive_all(collector) for r in decode(d, cache).records]
    assert sorted(r.sport for r in records) == list(range(flows))


def test_scan_expires_small_inactive_flows_first_then_aged_ones(tmp_path, file_prefix, collector):
    """Manual clock: past the inactive timeout only flows of <= 4 packets go
    (cache below low-water); past the active timeout the big one goes too."""
    pkts = [eth() / IP(src="10.9.0.1", dst="10.9.0.2") / UDP(sport=1, dport=1) for _ in range(10)]
    pkts += [eth() / IP(src="10.9.1.1", dst=f"10.9.1.{i}") / UDP(sport=1, dport=1) for i in range(5)]
    wrpcap(str(tmp_path / "in.pcap"), pkts)
    native.clock_set_manual(T0_NS)
    cfg = netflow_cfg(tmp_path, file_prefix, collector.getsockname()[1], 5,
                      "active_timeout = 60\ninactive_timeout = 15")
    with running(cfg) as dp:
        nf = lambda: dp.snapshot().netflow[0]  # noqa: E731
        assert wait_for(lambda: nf()["packets"] == 15)
        native.clock_advance(14 * 10**9)       # 14 s: nothing is inactive yet
        time.sleep(0.2)
        assert nf()["inact_exp"] == 0
        native.clock_advance(3 * 10**9)        # 17 s: the five 1-packet flows go
        assert wait_for(lambda: nf()["inact_exp"] == 5)
        assert nf()["flows_used"] == 1         # the 10-packet flow stays (below low-water)
        native.clock_advance(45 * 10**9)       # 62 s: past the active timeout
        assert wait_for(lambda: nf()["inact_exp"] == 6)
        assert wait_for(lambda: nf()["export"]["pending"] == 0 and nf()["export"]["datagrams"] >= 1)
        w = dp.snapshot().workers[0]
        assert 0 < w["tick_cycles"] < w["total_cycles"]  # the scans ran in timers, counted apart
    records = [r for d in receive_all(collector) for r in decode(d, TemplateCache()).records]
    assert sorted(r.packets for r in records) == [1, 1, 1, 1, 1, 10]


def test_full_cache_counts_alloc_failures_and_forwards_everything(tmp_path, file_prefix, collector):
    pkts = [eth() / IP(src="10.8.0.1", dst=f"10.8.{i // 200}.{i % 200}") / UDP(sport=1, dport=1)
            for i in range(20)]
    wrpcap(str(tmp_path / "in.pcap"), pkts)
    cfg = netflow_cfg(tmp_path, file_prefix, collector.getsockname()[1], 5, "max_flows = 8")
    with running(cfg) as dp:
        assert wait_for(lambda: dp.snapshot().totals["tx"] == 20)
        info = dp.snapshot().netflow[0]
    assert info["flows_used"] == 8 and info["alloc_failed"] == 12
    assert info["packets"] == 20  # metered (counted) even when not cached, as the seed does


def test_malformed_frames_are_counted_by_reason_and_still_forwarded(tmp_path, file_prefix, collector):
    good = eth() / IP(src="10.7.0.1", dst="10.7.0.2") / UDP(sport=1, dport=2) / (b"g" * 20)
    raw = bytes(good)
    bad = {
        "truncated_l2": [raw[:10], bytes(eth() / Dot1Q())[:16]],
        "truncated_ip": [raw[:14 + 12], bytes(eth() / IP(ihl=15, options=[]) / (b"x" * 4))[:14 + 30]],
        "bad_ihl": [raw[:14] + bytes([0x43]) + raw[15:]],
        "bad_ip_length": [raw[:14] + bytes(IP(src="1.1.1.1", dst="2.2.2.2", len=1400) / UDP()),
                          bytes(eth() / IPv6(plen=900) / UDP())],
        "bad_ip_version": [raw[:14] + bytes([0x65]) + raw[15:]],
        "truncated_l4": [bytes(eth() / IP(src="1.1.1.1", dst="2.2.2.2", proto=6) / (b"\x00" * 8))],
        "bad_ext_chain": [bytes(eth() / IPv6(src="::1", dst="::2") /
                                (IPv6ExtHdrDestOpt() / IPv6ExtHdrDestOpt()) /
                                IPv6ExtHdrDestOpt() / IPv6ExtHdrDestOpt() / IPv6ExtHdrDestOpt() /
                                IPv6ExtHdrDestOpt() / IPv6ExtHdrDestOpt() / IPv6ExtHdrDestOpt() /
                                IPv6ExtHdrDestOpt() / UDP())],
        "not_ip": [bytes(eth() / ARP())],
    }
    frames = [f for fs in bad.values() for f in fs]
    frames = [x for pair in zip(frames, [raw] * len(frames)) for x in pair]  # interleave good ones
    wrpcap(str(tmp_path / "in.pcap"), [Raw(f) for f in frames], linktype=1)  # bytes as they are
    cfg = netflow_cfg(tmp_path, file_prefix, collector.getsockname()[1], 5)
    with running(cfg) as dp:
        assert wait_for(lambda: dp.snapshot().totals["tx"] == len(frames))
        info = dp.snapshot().netflow[0]
    assert {k: v for k, v in info["skips"].items() if v} == {k: len(v) for k, v in bad.items()}
    assert info["packets"] == len(frames) - info["skipped"]
    assert info["flows_used"] == 1  # all the good frames are one flow


def test_unreachable_collector_is_counted_and_never_stalls(tmp_path, file_prefix, collector):
    dead = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    dead.bind(("127.0.0.1", 0))
    dead_port = dead.getsockname()[1]
    dead.close()  # nobody listens there now: ICMP port unreachable
    pkts = [eth() / IP(src="10.6.0.1", dst="10.6.0.2") / TCP(sport=i, dport=80, flags=f)
            for i in range(1, 200) for f in ("S", "F")]
    wrpcap(str(tmp_path / "in.pcap"), pkts)
    cfg = netflow_cfg(tmp_path, file_prefix, dead_port, 9)
    with running(cfg) as dp:
        assert wait_for(lambda: dp.snapshot().totals["tx"] == len(pkts))
        assert wait_for(lambda: dp.snapshot().netflow[0]["export"]["datagrams"] >= 2)
        dp.quiesce()
        export = dp.snapshot().netflow[0]["export"]
    c = export["collectors"][0]
    assert c["errors"] >= 1 and c["last_error"] == "ECONNREFUSED"
    assert c["datagrams"] + c["errors"] == export["datagrams"]


def test_show_and_settimeouts_run_on_the_workers(tmp_path, file_prefix, collector):
    pkts = [eth() / IP(src="10.5.0.1", dst=f"10.5.0.{i}") / UDP(sport=1, dport=2) for i in range(1, 41)]
    wrpcap(str(tmp_path / "in.pcap"), pkts)
    cfg = netflow_cfg(tmp_path, file_prefix, collector.getsockname()[1], 5)
    with running(cfg) as dp:
        assert wait_for(lambda: dp.snapshot().netflow[0]["flows_used"] == 40)
        flows = dp.netflow[0].show()
        assert sorted(f["dst"] for f in flows) == sorted(f"10.5.0.{i}" for i in range(1, 41))
        assert all(f["packets"] == 1 and f["in_ifx"] == 1 for f in flows)
        assert len(dp.netflow[0].show(limit=7)) == 7
        dp.netflow[0].settimeouts(120, 5)
        info = dp.snapshot().netflow[0]
        assert (info["active_timeout"], info["inactive_timeout"]) == (120, 5)
        with pytest.raises(native.DataplaneError, match="timeouts must be > 0"):
            dp.netflow[0].settimeouts(0, 5)


def test_show_pages_through_every_flow_without_the_worker_leaving_its_loop(tmp_path, file_prefix,
                                                                          collector):
    """5000 flows (a sparse 65536-slot cache: short pages), shown 333 at a
    time from each answer's `next`: every flow exactly once, and the worker
    never came back to Python for it (its poll count did not move: with
    poll_budget_ms = 0 it leaves C only for commands and stop)."""
    pkts = [eth() / IP(src="10.6.0.1", dst=f"10.{7 + i // 65536}.{i // 256 % 256}.{i % 256}")
            / UDP(sport=1, dport=2) for i in range(5000)]
    wrpcap(str(tmp_path / "in.pcap"), pkts)
    cfg = netflow_cfg(tmp_path, file_prefix, collector.getsockname()[1], 5, "max_flows = 65536")
    cfg = cfg.model_copy(update={"run": cfg.run.model_copy(update={"poll_budget_ms": 0.0})})
    with running(cfg) as dp:
        assert wait_for(lambda: dp.snapshot().netflow[0]["flows_used"] == 5000)
        polls = dp.snapshot().workers[0]["polls"]
        seen, after, pages = [], (0, 0), 0
        while after is not None:
            rows, after = dp.netflow[0].page(333, after)
            assert len(rows) <= 333
            seen += [r["dst"] for r in rows]
            pages += 1
        assert sorted(seen) == sorted(p[IP].dst for p in pkts) and pages >= 5000 // 333
        # control commands too run inside the loop, errors and all
        commands = dp.snapshot().workers[0]["commands"]
        assert commands >= pages  # a page the caller asked for may take several reads
        dp.netflow[0].settimeouts(120, 5)
        with pytest.raises(native.DataplaneError, match="timeouts must be > 0"):
            dp.netflow[0].settimeouts(0, 5)
        w = dp.snapshot().workers[0]
        assert (w["polls"], w["commands"]) == (polls, commands + 2), "a command brought the worker back to Python"
        assert dp.snapshot().netflow[0]["inactive_timeout"] == 5


def test_every_collector_gets_every_datagram_over_ipv4_and_ipv6(tmp_path, file_prefix, collector):
    v6 = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    v6.bind(("::1", 0))
    v6.settimeout(0.5)
    pkts = [eth() / IP(src="10.4.0.1", dst=f"10.4.0.{i}") / UDP(sport=1, dport=2) for i in range(1, 100)]
    wrpcap(str(tmp_path / "in.pcap"), pkts)
    cfg = netflow_cfg(tmp_path, file_prefix, collector.getsockname()[1], 10)
    text = cfg.model_dump()
    text["pipeline"][0]["export"]["collectors"].append(f"[::1]:{v6.getsockname()[1]}")
    from dataplane import config
    cfg = config.parse(text, check_drivers=False)
    with running(cfg) as dp:
        assert wait_for(lambda: dp.snapshot().netflow[0]["packets"] == 99)
        dp.quiesce()
    got4, got6 = receive_all(collector), receive_all(v6)
    v6.close()
    assert got4 == got6 and len(got4) >= 1
    cache = TemplateCache()  # templates come in the first datagram, not in every one
    records = [r for d in got6 for r in decode(d, cache).records]
    assert sorted(str(r.dst) for r in records) == sorted(f"10.4.0.{i}" for i in range(1, 100))
    assert {r.end_reason for r in records} == {4}  # forced end: flushed at shutdown


def test_setconfig_turns_metering_off_per_port_and_setifindex_renames(tmp_path, file_prefix, collector):
    cfg = vdev_config(file_prefix, port("loop", "net_ring0") + port("out", "net_null0,no-rx=1", poll=False) +
                      f'[[pipeline]]\nstage = "netflow"\nexport = {{ version = 9, collectors = '
                      f'["127.0.0.1:{collector.getsockname()[1]}"] }}\n' + xconnect({"loop": "out"}))
    pkt = bytes(eth() / IP(src="10.3.0.1", dst="10.3.0.2") / UDP(sport=1, dport=2))
    with running(cfg) as dp:
        nf = dp.netflow[0]
        dp.inject("loop", pkt)
        assert wait_for(lambda: nf.info()["packets"] == 1)
        nf.setconfig("loop", ingress=False)
        dp.inject("loop", pkt)
        assert wait_for(lambda: nf.info()["unmetered"] == 1)
        nf.setconfig("loop", ingress=True)
        nf.setifindex("loop", 42)
        dp.inject("loop", pkt)  # a new key: the ifIndex is part of it
        assert wait_for(lambda: nf.info()["packets"] == 2)
        assert sorted(f["in_ifx"] for f in nf.show()) == [1, 42]
        assert wait_for(lambda: dp.snapshot().ports["out"]["tx"] == 3)  # metered or not, all forwarded
