"""Property test: the C flow cache against a dict model of ng_netflow.

Hypothesis draws sequences of packets (few flows, any TCP flags) and clock
steps; each packet is injected one at a time through a net_ring port that
loops back into the pipeline, so arrival times are exact under the manual
clock. Everything the cache exported (IPFIX, decoded independently) plus
what the final flush exported must equal what the model expired, with the
same end reasons; allocation failures (cache full) must match too.
"""
from __future__ import annotations

import socket
import time
from collections import Counter

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from scapy.layers.inet import IP, TCP

from dataplane import config, native
from dataplane.eal import Eal
from dataplane.engine import Dataplane
from tests.conftest import unique_prefix
from tests.flowmodel import FlowModel, observe
from tests.nfdecode import TemplateCache, decode
from tests.traffic import eth

pytestmark = [pytest.mark.eal, pytest.mark.timeout(600)]

MAX_FLOWS, ACTIVE, INACTIVE = 8, 60, 15
END = {"inactive": 1, "active": 2, "fin_rst": 3, "flush": 4}
FLAGS = {"S": 0x02, "A": 0x10, "F": 0x11, "R": 0x04}


class SeedModel(FlowModel):
    """FlowModel plus what it leaves out: a bounded cache (allocation
    failures) and the seed's scan rule (INACTIVE && (SMALL || used > lowat))
    || AGED, with lowat = max so only SMALL idle flows go."""

    def __init__(self):
        super().__init__(ACTIVE, INACTIVE)
        self.alloc_failed = 0

    def add(self, ts, pkt, ifx):
        obs = observe(pkt, ifx)
        if obs.key not in self.cache and len(self.cache) >= MAX_FLOWS:
            self.alloc_failed += 1
            return
        super().add(ts, pkt, ifx)

    def expire(self, now):
        for fl in list(self.cache.values()):
            if now - fl.last > INACTIVE and fl.packets <= 4:
                self._expire(fl, "inactive")
            elif now - fl.first > ACTIVE:
                self._expire(fl, "active")


# A few busy flows (so flows cross the 4-packet "small" line) and enough
# others to overflow the 8-flow cache; ACK-heavy so flows live long enough.
flow_ids = st.one_of(st.integers(0, 2), st.integers(0, 2), st.integers(0, 11))
events = st.lists(st.one_of(
    st.tuples(st.just("pkt"), flow_ids, st.sampled_from("SAAAAAAFR")),
    st.tuples(st.just("pkt"), flow_ids, st.sampled_from("SAAAAAAFR")),
    st.tuples(st.just("wait"), st.sampled_from([1, 2, 7, 14, 16, 31, 61]))), min_size=1, max_size=50)


@pytest.fixture(scope="module")
def eal():
    cfg = config.loads(f'[eal]\nworkers = [1]\nhugepages = false\nmemory_mb = 256\n'
                       f'file_prefix = "{unique_prefix("prop")}"\nlog_level = "warning"\n'
                       '[[ports]]\nname = "x"\ndevice = "net_null9,no-rx=1"\n'
                       '[[pipeline]]\nstage = "xconnect"\nmap = {}\n', check_drivers=False)
    e = Eal(cfg)
    yield
    e.close()


def run_dataplane(evts, collector_port: int) -> tuple[SeedModel, dict]:
    t0 = 10_000 * 10**9
    native.clock_set_manual(t0)
    cfg = config.loads(f"""
[eal]
workers = [1]
hugepages = false
memory_mb = 256
[mempool]
mbufs = 2047
cache = 32
[[ports]]
name = "loop"
device = "net_ring0"
[[ports]]
name = "sink"
device = "net_null0,no-rx=1"
poll = false
[[pipeline]]
stage = "netflow"
max_flows = {MAX_FLOWS}
lowat = {MAX_FLOWS}
active_timeout = {ACTIVE}
inactive_timeout = {INACTIVE}
export = {{ version = 10, collectors = ["127.0.0.1:{collector_port}"], flush_interval_s = 0.01 }}
[[pipeline]]
stage = "xconnect"
map = {{ loop = "sink" }}
""", check_drivers=False)
    model = SeedModel()
    dp = Dataplane(cfg)
    dp.start()
    try:
        nf = dp.netflow[0]
        now, sent = 0, 0
        for ev in evts:
            if ev[0] == "pkt":
                _, flow, flags = ev
                pkt = eth() / IP(src="10.0.0.1", dst=f"10.0.1.{flow}") / TCP(sport=1000 + flow, dport=80,
                                                                         flags=FLAGS[flags])
                dp.inject("loop", bytes(pkt))
                sent += 1
                model.add(now, pkt, 1)
                assert wait(lambda: nf.info()["packets"] == sent)
            else:
                now += ev[1]
                native.clock_advance(ev[1] * 10**9)
                model.expire(now)
                # the scan has decided everything due up to now
                assert wait(lambda: nf.info()["scanned_to_ms"] > now * 1000)
        info = nf.info()
        dp.quiesce()
    finally:
        dp.stop()
    model.flush()
    return model, info


def wait(pred, timeout=10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(0.0005)
    return pred()


@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
@given(evts=events)
@example(evts=[("pkt", 0, "S"), ("pkt", 0, "A"), ("pkt", 0, "A"), ("pkt", 0, "A"), ("wait", 16)])  # small: 4
@example(evts=[("pkt", 0, "S")] + [("pkt", 0, "A")] * 4 + [("wait", 16), ("wait", 61)])  # big, then aged
@example(evts=[("pkt", i, "S") for i in range(10)] + [("pkt", 0, "F"), ("pkt", 9, "A")])  # full cache
def test_cache_behaves_like_the_seed(eal, evts):
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.settimeout(0.3)
    try:
        model, info = run_dataplane(evts, sock.getsockname()[1])
        cache, records = TemplateCache(), []
        while True:
            try:
                records += decode(sock.recv(65535), cache).records
            except socket.timeout:
                break
    finally:
        sock.close()
    assert info["alloc_failed"] == model.alloc_failed
    got = Counter((r.dport, r.packets, r.tcp_flags, r.end_reason) for r in records)
    want = Counter((f.dport, f.packets, f.tcp_flags, END[f.expired_by]) for f in model.expired)
    assert got == want
