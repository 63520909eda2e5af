"""NDR/PDR search (dataplane/ndr.py) without DPDK, and the deploy artifacts
that go with it.

- The search against a simulated lab of known capacity: a DUT that forwards
  up to C pps and loses the rest at its NIC, its tx ring and a stage, with
  the DUT's counters kept as its control socket reports them. The search
  must bracket C (NDR) and the rate where the loss ratio crosses the
  tolerance (PDR) within the resolution, and every trial's loss must be
  attributed, reason by reason, to what the simulation lost.
- Loss attribution on hand-made counter deltas (veth, slow path, fanout).
- The AF_PACKET source's frames, parsed back with scapy.
- TrexSource's use of TRex's client API, against a recording fake.
- deploy/trex profiles: compiled, and loaded with a tiny stand-in for
  trex_stl_lib.api whose field engine is interpreted here, so the flows,
  FINs, sizes and families they generate are checked packet by packet.
- deploy/grafana/dataplane.json: every metric and label a panel uses is one
  dataplane/metrics.py emits (from its SnapshotCollector on a snapshot shaped
  like the engine's), and every metric it emits has a panel.
"""
from __future__ import annotations

import copy
import importlib.util
import ipaddress
import json
import math
import py_compile
import re
import sys
import types
from pathlib import Path

import pytest
from scapy.layers.inet import IP, TCP, UDP
from scapy.layers.inet6 import IPv6
from scapy.layers.l2 import Ether

from dataplane import native, ndr
from dataplane.ndr import SourceCounts, attribute, build_frames, search

ROOT = Path(__file__).resolve().parents[2]
TREX_DIR = ROOT / "deploy" / "trex"
DASHBOARD = ROOT / "deploy" / "grafana" / "dataplane.json"
REASONS = native.drop_reasons()
ETH = ("ipackets", "opackets", "ibytes", "obytes", "imissed", "ierrors", "oerrors", "rx_nombuf")


# ---- a simulated lab ---------------------------------------------------------------------


class SimLab:
    """The source and a DUT of known capacity. Offered packets beyond what
    the DUT forwards are lost in fixed shares at its NIC (imissed), its tx
    ring (tx_full) and a stage (no_egress); its counters move as the real
    control socket's `stats` would show them. Also a DutCounters."""

    def __init__(self, capacity: float, *, soft: float = 0.0, source_max: float = math.inf,
                 shares=(0.5, 0.3), glitch_at: int | None = None):
        self.capacity, self.soft, self.source_max = capacity, soft, source_max
        self.shares, self.glitch_at = shares, glitch_at
        self.trials = 0
        self.split: list[dict] = []  # what the simulation lost, per trial
        port = {"rx": 0, "tx": 0, "tx_dropped": 0, "eth": dict.fromkeys(ETH, 0), "link": {"up": True}}
        self.stats = {"time": 0.0, "ports": {"in": copy.deepcopy(port), "out": copy.deepcopy(port)},
                      "workers": [], "stages": [], "pools": [], "netflow": [], "one2many": [],
                      "ip6flow": [],
                      "totals": {"rx": 0, "tx": 0, "injected": 0, "punted": 0, "dropped": 0,
                                 "drops": dict.fromkeys(REASONS, 0), "max_gap_us": 0.0}}

    def loss_fraction(self, r: float) -> float:
        """Hard knee (soft = 0): forwards exactly min(r, C). Soft: the loss
        ratio grows by `soft` per capacity above C."""
        if r <= self.capacity:
            return 0.0
        return self.soft * (r - self.capacity) / self.capacity if self.soft else 1 - self.capacity / r

    # TrafficSource
    def start(self, rate_pps: float, duration_s: float) -> SourceCounts:
        r = min(rate_pps, self.source_max)
        offered = round(r * duration_s)
        lost = min(offered, round(offered * self.loss_fraction(r)))
        if self.glitch_at == self.trials:
            lost = max(lost, 1)
        self.trials += 1
        imissed = round(lost * self.shares[0])
        tx_full = round(lost * self.shares[1])
        no_egress = lost - imissed - tx_full
        rx = offered - imissed
        fwd = rx - tx_full - no_egress
        s = self.stats
        s["time"] += duration_s
        pin, pout, t = s["ports"]["in"], s["ports"]["out"], s["totals"]
        pin["eth"]["ipackets"] += rx
        pin["eth"]["imissed"] += imissed
        pin["rx"] += rx
        pout["tx"] += fwd
        pout["tx_dropped"] += tx_full
        pout["eth"]["opackets"] += fwd
        t["rx"] += rx
        t["tx"] += fwd
        t["dropped"] += tx_full + no_egress
        t["drops"]["tx_full"] += tx_full
        t["drops"]["no_egress"] += no_egress
        self.split.append({"nic_miss:imissed": imissed, "ring_full:tx_full": tx_full,
                           "stage:no_egress": no_egress})
        return SourceCounts(requested_pps=rate_pps, duration_s=duration_s, offered=offered,
                            received=fwd, offered_bytes=offered * 64)

    def close(self) -> None:
        pass

    # DutCounters
    def read(self) -> dict:
        return copy.deepcopy(self.stats)

    def settled(self, **_) -> dict:
        return self.read()


def run(lab: SimLab, **kw) -> ndr.SearchResult:
    kw.setdefault("duration", 1.0)
    return search(lab, lab, in_ports=["in"], out_ports=["out"], **kw)


def max_trials_for(max_rate: float, resolution: float) -> int:
    """Two binary searches sharing trials: the first at max, then at most
    log2(max/res) + 1 halvings each."""
    return 1 + 2 * (math.ceil(math.log2(max_rate / resolution)) + 1)


@pytest.mark.parametrize("capacity,max_rate,res", [
    (400_000, 1_000_000, 1_000), (123_456, 10_000_000, 5_000), (999_000, 1_000_000, 100),
    (1_000, 14_880_952, 500)])
def test_ndr_brackets_a_hard_capacity(capacity, max_rate, res):
    lab = SimLab(capacity)
    r = run(lab, max_rate=max_rate, resolution=res, max_trials=60)
    assert capacity - res <= r.ndr.rate_pps <= capacity
    assert r.ndr.fail_pps is not None and capacity < r.ndr.fail_pps <= r.ndr.rate_pps + res
    assert r.ndr.limited_by == "dut"
    assert r.trials[r.ndr.trial].lost == 0
    assert len(r.trials) <= max_trials_for(max_rate, res)
    # the first trial is at the maximum rate (RFC 2544: start at the medium's maximum)
    assert r.trials[0].rate_pps == max_rate


@pytest.mark.parametrize("tol", [0.001, 0.005, 0.02])
def test_pdr_respects_the_loss_tolerance(tol):
    cap, soft, res = 400_000, 0.1, 500
    lab = SimLab(cap, soft=soft)
    r = run(lab, max_rate=1_000_000, resolution=res, loss_tolerance=tol, max_trials=60)
    exact_pdr = cap * (1 + tol / soft)  # loss ratio soft*(r-C)/C == tol
    assert exact_pdr - res <= r.pdr.rate_pps <= exact_pdr
    best = r.trials[r.pdr.trial]
    assert best.loss_ratio <= tol and best.pdr_pass
    assert r.pdr.fail_pps - r.pdr.rate_pps <= res
    for t in r.trials:  # pass/fail is the tolerance, nothing else
        assert t.pdr_pass == (t.loss_ratio <= tol)
        assert t.ndr_pass == (t.lost == 0)
    assert cap - res <= r.ndr.rate_pps <= cap * 1.0001
    assert r.ndr.rate_pps <= r.pdr.rate_pps


def test_every_trial_loss_is_attributed_to_what_the_dut_lost():
    lab = SimLab(250_000, shares=(0.6, 0.25))
    r = run(lab, max_rate=1_000_000, resolution=2_000)
    assert any(t.lost for t in r.trials)
    for t, truth in zip(r.trials, lab.split):
        assert sum(t.lost_by_reason.values()) + t.unattributed == t.lost
        assert t.unattributed == 0
        assert t.lost_by_reason == {k: v for k, v in truth.items() if v}
        assert t.dut["conserved"]
        assert t.received == t.dut["tx_out"]


def test_max_rate_passing_ends_the_search_at_once():
    r = run(SimLab(2_000_000), max_rate=1_000_000)
    assert len(r.trials) == 1
    assert r.ndr.rate_pps == r.pdr.rate_pps == 1_000_000
    assert r.ndr.limited_by == r.pdr.limited_by == "max_rate" and r.ndr.fail_pps is None


def test_a_source_that_cannot_reach_the_rate_bounds_the_result():
    lab = SimLab(5_000_000, source_max=300_000)
    r = run(lab, max_rate=1_000_000)
    assert r.trials[0].source_limited and r.trials[0].offered_pps == pytest.approx(300_000)
    assert r.ndr.rate_pps == pytest.approx(300_000) and r.ndr.limited_by == "source"
    assert len(r.trials) == 1


def test_source_limit_below_a_failing_dut():
    lab = SimLab(100_000, source_max=300_000)
    r = run(lab, max_rate=1_000_000, resolution=1_000)
    assert r.trials[0].source_limited and not r.trials[0].ndr_pass
    assert 99_000 <= r.ndr.rate_pps <= 100_000


def test_nothing_passes():
    r = run(SimLab(0), max_rate=1_000_000, resolution=10_000)
    assert r.ndr.rate_pps == r.pdr.rate_pps == 0 and r.ndr.trial is None
    assert r.ndr.fail_pps <= 10_000 and r.ndr.limited_by == "dut"


def test_a_failure_below_a_pass_is_trusted():
    # trial 2 loses one packet although the DUT could carry the rate: a glitch.
    # Failures cap the result (conservative); NDR <= PDR still holds.
    lab = SimLab(400_000, glitch_at=2)
    r = run(lab, max_rate=1_000_000, resolution=1_000, max_trials=60)
    glitch = r.trials[2]
    assert not glitch.ndr_pass
    assert r.ndr.rate_pps < glitch.offered_pps
    assert r.ndr.rate_pps <= r.pdr.rate_pps


def test_max_trials_stops_the_search():
    r = run(SimLab(400_000), max_rate=1_000_000, resolution=1, max_trials=4)
    assert len(r.trials) == 4
    assert "trials" in (r.ndr.limited_by, r.pdr.limited_by)


def test_result_json_round_trips(tmp_path):
    r = run(SimLab(400_000), max_rate=1_000_000, resolution=20_000)
    ndr.write_json(r, tmp_path / "r.json")
    d = json.loads((tmp_path / "r.json").read_text())
    assert d["ndr"]["rate_pps"] == r.ndr.rate_pps
    assert len(d["trials"]) == len(r.trials)
    assert {"offered", "received", "lost", "lost_by_reason", "unattributed",
            "loss_ratio"} <= set(d["trials"][0])
    assert d["params"]["loss_tolerance"] == 0.005
    assert ndr.summary_lines(r)[0].startswith("NDR: ")


def test_bad_parameters():
    with pytest.raises(ValueError):
        search(SimLab(1), max_rate=0)
    with pytest.raises(ValueError):
        search(SimLab(1), max_rate=10, loss_tolerance=1.5)


# ---- attribution on hand-made deltas ---------------------------------------------------------


def stats(ports: dict, drops: dict | None = None, **totals) -> dict:
    t = {"rx": 0, "tx": 0, "injected": 0, "punted": 0, "dropped": 0,
         "drops": dict.fromkeys(REASONS, 0)}
    t.update(totals)
    t["drops"].update(drops or {})
    return {"ports": {n: {"rx": p.get("rx", 0), "tx": p.get("tx", 0),
                          "eth": {k: p.get(k, 0) for k in ETH}} for n, p in ports.items()},
            "totals": t}


ZERO = stats({"in": {}, "out": {}, "mgmt": {}})


def test_veth_losses_split_between_link_socket_ring_and_return_path():
    # 1000 sent; the veth backlog took 990 (10 dropped), the kernel delivered 990
    # to the DUT's interface, the PMD read 900 (90 overflowed its socket ring),
    # the DUT sent 895 (5 tx_full) and 890 came back (5 lost on the way back).
    after = stats({"in": {"rx": 900, "ipackets": 900}, "out": {"tx": 895}, "mgmt": {}},
                  {"tx_full": 5}, rx=900, tx=895, dropped=5)
    c = SourceCounts(1000, 1.0, offered=1000, received=890, link={"veth_backlog": 10}, delivered=990)
    a = attribute(c, ZERO, after, in_ports=["in"], out_ports=["out"])
    assert a.reasons == {"link:veth_backlog": 10, "nic_miss:socket_ring": 90,
                         "ring_full:tx_full": 5, "return_path": 5}
    assert a.lost == 110 and a.unattributed == 0 and a.dut["conserved"]


def test_slow_path_other_ports_and_background_are_reasons():
    # 1000 in: 20 punted (the slow path sent 5 back out on `out`), 30 blackholed,
    # 10 forwarded to `mgmt`; 7 packets arrived on `mgmt` from elsewhere and
    # went out on `out` too.
    after = stats({"in": {"rx": 1000, "ipackets": 1000, "imissed": 4, "rx_nombuf": 3},
                   "out": {"tx": 952}, "mgmt": {"rx": 7, "tx": 10}},
                  {"blackhole": 30}, rx=1007, tx=962, injected=5, punted=20, dropped=30)
    c = SourceCounts(1004, 1.0, offered=1004, received=952)
    a = attribute(c, ZERO, after, in_ports=["in"], out_ports=["out"])
    assert a.reasons == {"nic_miss:imissed": 4, "stage:blackhole": 30, "slow_path": 15,
                         "egress:other_ports": 10, "ingress:other_ports": -7}
    assert a.unattributed == 0 and a.lost == 52 and a.dut["conserved"]
    assert a.nic["rx_nombuf"] == 3  # reported, not summed (a NIC shows it as imissed)


def test_count_at_dut_and_fanout():
    # a probe: nothing comes back; forwarded = what the DUT sent on its sink
    after = stats({"in": {"rx": 100, "ipackets": 100}, "out": {"tx": 98}, "mgmt": {}},
                  {"no_egress": 2}, rx=100, tx=98, dropped=2)
    a = attribute(SourceCounts(100, 1.0, 100, received=0), ZERO, after, in_ports=["in"],
                  out_ports=["out"], count_at="dut")
    assert (a.received, a.lost, a.reasons, a.unattributed) == (98, 2, {"stage:no_egress": 2}, 0)
    # a broker: 3 copies of each packet expected; 2 missed at the NIC cost 6
    after = stats({"in": {"rx": 98, "ipackets": 98, "imissed": 2}, "out": {"tx": 294}, "mgmt": {}},
                  rx=98, tx=294)
    a = attribute(SourceCounts(100, 1.0, 100, received=294), ZERO, after, in_ports=["in"],
                  out_ports=["out"], fanout=3)
    assert (a.expected, a.lost, a.reasons) == (300, 6, {"nic_miss:imissed": 6})


def test_without_dut_counters_only_the_source_speaks():
    a = attribute(SourceCounts(100, 1.0, 100, received=90, link={"x": 4}), None, None)
    assert a.reasons == {"link:x": 4} and a.unattributed == 6 and a.dut == {}


# ---- frames of the AF_PACKET source ------------------------------------------------------


def test_ipv4_frames_are_valid_and_count_through_sources():
    frames = build_frames(size=64, flows=300, ipv=4, src="10.0.0.250", dst="48.0.0.1",
                          src_mac="02:00:00:00:00:0a", dst_mac="02:00:00:00:00:0b")
    assert len(frames) == 300 and all(len(f) == 60 for f in frames)
    srcs = []
    for f in frames:
        p = Ether(f)
        ck = p[IP].chksum
        del p[IP].chksum
        assert IP(bytes(p[IP]))[IP].chksum == ck  # scapy recomputes the same checksum
        assert p[IP].ttl == 64 and p[UDP].dport == 12 and p.dst == "02:00:00:00:00:0b"
        srcs.append(ipaddress.ip_address(p[IP].src))
    assert srcs[0] == ipaddress.ip_address("10.0.0.250") and srcs[-1] == srcs[0] + 299
    assert len(set(srcs)) == 300


def test_ipv6_frames_carry_valid_udp_or_no_next_header():
    frames = build_frames(size=78, flows=70000, ipv=6, src="2001:db8::ffff:fff0")
    assert len(frames) == 70000 and all(len(f) == 74 for f in frames)
    for f in (frames[0], frames[15], frames[16], frames[-1]):  # across the 32-bit carry
        p = Ether(f)
        ck = p[UDP].chksum
        del p[UDP].chksum
        assert IPv6(bytes(p[IPv6]))[UDP].chksum == ck
    assert ipaddress.ip_address(Ether(frames[16])[IPv6].src) == ipaddress.ip_address("2001:db8::1:0:0")
    small = build_frames(size=64, flows=2, ipv=6)
    p = Ether(small[1])
    assert len(small[1]) == 60 and p[IPv6].nh == 59 and p[IPv6].plen == 6
    with pytest.raises(ValueError):
        build_frames(size=40, ipv=4)


def test_device_iface_and_tunables():
    assert ndr.device_iface("net_af_packet0,iface=veth1,qpairs=1") == "veth1"
    assert ndr.device_iface("net_null0") is None
    assert ndr.parse_tunables("size=64,flows=1000000") == {"size": "64", "flows": "1000000"}
    with pytest.raises(ValueError):
        ndr.parse_tunables("size")


# ---- TrexSource against a recording fake of TRex's client API --------------------------------


class FakeTrex:
    """STLClient/STLProfile with the documented signatures; records calls."""

    def __init__(self):
        self.calls = []
        fake = self

        class STLClient:
            def __init__(self, server="localhost", sync_port=4501, async_port=4500):
                fake.calls.append(("client", server, sync_port, async_port))

            def connect(self):
                fake.calls.append(("connect",))

            def reset(self, ports=None, restart=False):
                fake.calls.append(("reset", ports))

            def set_port_attr(self, ports=None, promiscuous=None, **kw):
                fake.calls.append(("set_port_attr", ports, promiscuous))

            def add_streams(self, streams, ports=None):
                fake.calls.append(("add_streams", streams, ports))

            def clear_stats(self, ports=None, **kw):
                fake.calls.append(("clear_stats", ports))

            def start(self, ports=None, mult="1", force=False, duration=-1, total=False, **kw):
                fake.calls.append(("start", ports, mult, duration, total))
                fake.pps = float(mult.removesuffix("pps"))

            def wait_on_traffic(self, ports=None, timeout=None, rx_delay_ms=None):
                fake.calls.append(("wait", ports, rx_delay_ms))

            def get_stats(self, ports=None, sync_now=True):
                sent = int(fake.pps * fake.calls[-2][3])
                return {0: {"opackets": sent, "obytes": sent * 64, "ipackets": 0},
                        1: {"opackets": 0, "ipackets": min(sent, 250_000)},
                        "global": {"queue_full": 0}, "total": {}}

            def disconnect(self, stop_traffic=True, release_ports=True):
                fake.calls.append(("disconnect",))

        class STLProfile:
            @staticmethod
            def load_py(python_file, direction=0, port_id=0, **kwargs):
                fake.calls.append(("load_py", python_file, direction, port_id, kwargs))
                return types.SimpleNamespace(get_streams=lambda: [f"streams-{port_id}"])

        self.STLClient, self.STLProfile = STLClient, STLProfile


def test_trex_source_drives_the_documented_api():
    fake = FakeTrex()
    src = ndr.TrexSource(str(TREX_DIR / "router.py"), server="trex1", tx_ports=[0], rx_ports=[1],
                         tunables={"size": "64", "flows": "1000"}, api=fake).connect()
    c = src.start(500_000, 1.0)
    assert src.recount(c).received == 250_000  # read again once the DUT is idle
    src.close()
    names = [x[0] for x in fake.calls]
    assert names == ["client", "connect", "reset", "set_port_attr", "load_py", "add_streams",
                     "clear_stats", "start", "wait", "disconnect"]
    assert fake.calls[0] == ("client", "trex1", 4501, 4500)
    assert fake.calls[4][1:] == (str(TREX_DIR / "router.py"), 0, 0, {"size": "64", "flows": "1000"})
    assert fake.calls[5] == ("add_streams", ["streams-0"], [0])
    assert fake.calls[7] == ("start", [0], "500000pps", 1.0, True)
    assert (c.offered, c.received, c.offered_pps) == (500_000, 250_000, 500_000)


# ---- deploy/trex profiles -------------------------------------------------------------------

PROFILES = ["dp_bench.py", "flow_probe.py", "router.py", "bonded_uplink.py", "packet_broker.py"]


def test_profiles_compile(tmp_path):
    for f in sorted(TREX_DIR.glob("*.py")):
        py_compile.compile(str(f), doraise=True, cfile=str(tmp_path / (f.name + "c")))
    assert {p for p in PROFILES} <= {f.name for f in TREX_DIR.glob("*.py")}


class StubVM:
    def __init__(self):
        self.cmds = []

    def var(self, name, min_value, max_value, size, op, step=1, split_to_cores=True,
            next_var=None, **k):
        self.cmds.append(dict(kind="var", name=name, min=min_value, max=max_value, size=size,
                              op=op, step=step, next_var=next_var, values=k.get("value_list")))

    def tuple_var(self, name, ip_min, ip_max, port_min, port_max, limit_flows=0, **k):
        self.cmds.append(dict(kind="tuple", name=name, ip_min=ip_min, ip_max=ip_max,
                              port_min=port_min, port_max=port_max, limit=limit_flows))

    def write(self, fv_name, pkt_offset, offset_fixup=0, add_val=0, byte_order="big"):
        # TRex resolves a name as layer[:n].field (get_field_offet_by_str) or takes an int
        assert isinstance(pkt_offset, int) or len(pkt_offset.split(".")) == 2, pkt_offset
        self.cmds.append(dict(kind="write", var=fv_name, where=pkt_offset, fixup=offset_fixup))

    def fix_chksum(self, offset="IP"):
        self.cmds.append(dict(kind="fix_ipv4", where=offset))


def trex_stub() -> types.ModuleType:
    """The few names of trex_stl_lib.api the profiles use, as plain records."""
    api = types.ModuleType("trex_stl_lib.api")
    api.STLVM = StubVM
    api.STLPktBuilder = lambda pkt, vm=None: types.SimpleNamespace(pkt=pkt, vm=vm)
    api.STLTXCont = lambda pps=1, **k: types.SimpleNamespace(pps=pps)
    api.STLStream = lambda packet, mode, **k: types.SimpleNamespace(packet=packet, mode=mode, **k)
    return api


@pytest.fixture
def load_profile(monkeypatch):
    pkg = types.ModuleType("trex_stl_lib")
    pkg.api = trex_stub()
    monkeypatch.setitem(sys.modules, "trex_stl_lib", pkg)
    monkeypatch.setitem(sys.modules, "trex_stl_lib.api", pkg.api)
    monkeypatch.delitem(sys.modules, "dp_stl", raising=False)
    monkeypatch.syspath_prepend(str(TREX_DIR))

    def load(name: str, tunables: str = "", direction: int = 0, port_id: int = 0):
        spec = importlib.util.spec_from_file_location(f"profile_{name[:-3]}", TREX_DIR / name)
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
        # as TRex's console does with -t size=64,flows=10: ["--size", "64", "--flows", "10"]
        argv = [x for k, v in ndr.parse_tunables(tunables).items() for x in (f"--{k}", v)]
        get = mod.register().get_streams
        # STLProfile.get_module_tunables: every argument of get_streams has a default
        assert len(get.__defaults__) == get.__code__.co_argcount - 1
        return get(tunables=argv, direction=direction, port_id=port_id)
    return load


def layer_offset(pkt, layer) -> int:
    return len(bytes(pkt)) - len(bytes(pkt[layer]))


FIELD = {"IP.src": (IP, 12), "IPv6.src": (IPv6, 8), "UDP.sport": (UDP, 0), "TCP.sport": (TCP, 0)}


def run_field_engine(stream, n: int) -> list[bytes]:
    """Interprets the recorded field engine program for n packets: 'inc' vars
    (bounds or value lists) step once per packet unless another var names
    them as next_var, in which case they step when that one wraps; tuple vars
    count the address, then the port; writes are big-endian at the field."""
    pkt, vm = stream.packet.pkt, stream.packet.vm
    base = bytes(pkt)
    if vm is None:
        return [base] * n
    vars_ = {}
    writes = []
    for c in vm.cmds:
        if c["kind"] == "var":
            vals = c["values"] or list(range(c["min"], c["max"] + 1, c["step"]))
            vars_[c["name"]] = dict(vals=vals, i=0, next=c["next_var"], size=c["size"])
        elif c["kind"] == "tuple":
            ips = list(range(c["ip_min"], c["ip_max"] + 1))
            ports = list(range(c["port_min"], c["port_max"] + 1))
            combos = [(ip, p) for p in ports for ip in ips][:c["limit"] or None]
            vars_[c["name"]] = dict(vals=combos, i=0, next=None, size=None)
        elif c["kind"] == "write":
            name, _, part = c["var"].partition(".")
            layer, off = FIELD[c["where"]]
            size = {"ip": 4, "port": 2}.get(part) or vars_[name]["size"]
            writes.append((name, part, layer_offset(pkt, layer) + off + c["fixup"], size))
    driven = {v["next"] for v in vars_.values() if v["next"]}

    def step(name):
        v = vars_[name]
        v["i"] = (v["i"] + 1) % len(v["vals"])
        if v["i"] == 0 and v["next"]:
            step(v["next"])
    out = []
    for _ in range(n):
        b = bytearray(base)
        for name, part, at, size in writes:
            val = vars_[name]["vals"][vars_[name]["i"]]
            if part:
                val = val[0] if part == "ip" else val[1]
            b[at:at + size] = val.to_bytes(size, "big")
        out.append(bytes(b))
        for name in vars_:
            if name not in driven:
                step(name)
    return out


def wire_sizes(streams) -> list[int]:
    return [len(bytes(s.packet.pkt)) + 4 for s in streams]


def test_dp_bench_64_bytes_ipv4_one_flow(load_profile):
    (s,) = load_profile("dp_bench.py", "size=64")
    assert wire_sizes([s]) == [64]
    p = s.packet.pkt
    assert p.haslayer(IP) and p.haslayer(UDP) and s.packet.vm is None
    assert (p[IP].src, p[IP].dst) == ("16.0.0.1", "48.0.0.1")
    (back,) = load_profile("dp_bench.py", "size=64", direction=1)
    assert (back.packet.pkt[IP].src, back.packet.pkt[IP].dst) == ("48.0.0.1", "16.0.0.1")


def test_dp_bench_imix(load_profile):
    st = load_profile("dp_bench.py", "size=imix,flows=10")
    assert wire_sizes(st) == [64, 594, 1518]
    pps = [s.mode.pps for s in st]
    assert [x / pps[2] for x in pps] == pytest.approx([7, 4, 1])
    assert sum(pps) == pytest.approx(1)


def test_dp_bench_many_flows_vary_the_source(load_profile):
    (s,) = load_profile("dp_bench.py", "size=64,flows=1000")
    pkts = [Ether(b) for b in run_field_engine(s, 2500)]
    srcs = [int(ipaddress.IPv4Address(p[IP].src)) for p in pkts]
    first = int(ipaddress.IPv4Address("16.0.0.1"))
    assert srcs[:1000] == list(range(first, first + 1000)) and srcs[1000:2000] == srcs[:1000]
    assert {c["kind"] for c in s.packet.vm.cmds} >= {"var", "write", "fix_ipv4"}


def test_dp_bench_ipv6_sizes_and_flows(load_profile):
    (s64,) = load_profile("dp_bench.py", "size=64,ipv=6")
    assert wire_sizes([s64]) == [64] and s64.packet.pkt[IPv6].nh == 59
    (s,) = load_profile("dp_bench.py", "size=78,ipv=6,flows=70000")
    assert wire_sizes([s]) == [78] and s.packet.pkt.haslayer(UDP)
    raw = run_field_engine(s, 70001)
    srcs = [int(ipaddress.IPv6Address(Ether(raw[i])[IPv6].src)) for i in (0, 1, 69999, 70000)]
    base = int(ipaddress.IPv6Address("2001:db8:10::1"))
    assert srcs == [base, base + 1, base + 69999, base]


def test_dp_bench_flows_end_with_fin(load_profile):
    (s,) = load_profile("dp_bench.py", "size=128,flows=50,fin=5")
    p = s.packet.pkt
    assert p.haslayer(TCP) and wire_sizes([s]) == [128]
    pkts = [Ether(b) for b in run_field_engine(s, 5 * 50 + 5)]
    first = int(ipaddress.IPv4Address("16.0.0.1"))
    for k, q in enumerate(pkts):
        assert int(ipaddress.IPv4Address(q[IP].src)) == first + (k // 5) % 50
        assert bool(q[TCP].flags & 0x01) == (k % 5 == 4), k  # FIN on each flow's last packet
        assert q[TCP].flags & 0x10  # ACK on all
    # the same over IPv6: TCP frames are at least the headers' size
    (s6,) = load_profile("dp_bench.py", "size=64,ipv=6,flows=3,fin=2")
    assert wire_sizes([s6]) == [78]
    q = [Ether(b) for b in run_field_engine(s6, 6)]
    assert [bool(x[TCP].flags & 1) for x in q] == [False, True] * 3
    assert len({x[IPv6].src for x in q}) == 3


def test_bad_tunables_are_refused(load_profile):
    for bad in ("size=big", "size=20", "fin=1", "ipv=5", "flows=0"):
        with pytest.raises(SystemExit):
            load_profile("dp_bench.py", bad)


def test_flow_probe_profile(load_profile):
    st = load_profile("flow_probe.py", "flows=1000,ppf=4")
    tcp = [s for s in st if s.packet.pkt.haslayer(TCP)]
    udp = [s for s in st if s.packet.pkt.haslayer(UDP)]
    assert len(tcp) == 6 and len(udp) >= 3  # IMIX x (IPv4, IPv6); small IPv6 UDP has no UDP
    assert {4, 6} == {4 if s.packet.pkt.haslayer(IP) else 6 for s in st}
    share = sum(s.mode.pps for s in tcp) / sum(s.mode.pps for s in st)
    assert share == pytest.approx(0.6)
    q = [Ether(b) for b in run_field_engine(tcp[0], 8)]
    assert [bool(x[TCP].flags & 1) for x in q] == [False, False, False, True] * 2


def test_router_profile_addresses(load_profile):
    st = load_profile("router.py", "size=64,flows=100,ipv=46")
    assert len(st) == 2 and wire_sizes(st) == [64, 64]
    v4 = next(s.packet.pkt for s in st if s.packet.pkt.haslayer(IP))
    v6 = next(s.packet.pkt for s in st if s.packet.pkt.haslayer(IPv6))
    assert v4[IP].dst == "203.0.113.1" and v4[IP].ttl == 64
    assert v6[IPv6].dst == "2001:db8:9::1" and v6[IPv6].hlim == 64
    assert ipaddress.IPv6Address(v6[IPv6].src) in ipaddress.IPv6Network("2001:db8:1::/64")
    back = load_profile("router.py", "size=64,ipv=6", direction=1)
    assert back[0].packet.pkt[IPv6].dst == "2001:db8:1::2"
    srcs = {Ether(b)[IPv6].src for b in run_field_engine(st[1], 300)}
    assert len(srcs) == 100


def test_bonded_uplink_profile_varies_address_and_port(load_profile):
    st = load_profile("bonded_uplink.py", "size=128,flows=4,ipv=4,ports=3")
    (s,) = st
    pkts = [Ether(b) for b in run_field_engine(s, 12)]
    assert len({(p[IP].src, p[UDP].sport) for p in pkts}) == 4  # limit_flows
    st = load_profile("bonded_uplink.py", "size=128,flows=100,ipv=4,ports=3")
    pkts = [Ether(b) for b in run_field_engine(st[0], 300)]
    assert len({(p[IP].src, p[UDP].sport) for p in pkts}) == 100
    assert len({p[UDP].sport for p in pkts}) == 1  # ports move after all addresses
    back = load_profile("bonded_uplink.py", "size=128,ipv=4", port_id=1)
    assert back[0].packet.pkt[IP].src == "48.0.0.1"


def test_packet_broker_profile(load_profile):
    st = load_profile("packet_broker.py", "")
    assert set(wire_sizes(st)) == {64, 78, 594, 1518}  # IPv6 TCP: 78 at least
    assert any(s.packet.pkt.haslayer(TCP) for s in st) and any(s.packet.pkt.haslayer(UDP) for s in st)
    assert sum(s.mode.pps for s in st) == pytest.approx(1.0)


# ---- the Grafana dashboard against what metrics.py emits -------------------------------------


def engine_like_snapshot():
    """A Snapshot shaped as Dataplane._snapshot() and the controllers' info()
    make it (the e2e test scrapes a real one)."""
    from dataplane.engine import Snapshot
    from dataplane.metrics import IP6FLOW_COUNTERS, NETFLOW_COUNTERS, O2M_COUNTERS, WORKER_COUNTERS
    eth = dict.fromkeys(ETH, 1)
    w = {k: 1 for k in WORKER_COUNTERS}
    w.update(id=0, drops=dict.fromkeys(REASONS, 0), max_gap_us=3.0, busy_cycles=10, total_cycles=20,
             tick_cycles=2, punts=dict.fromkeys(native.punt_reason_names(), 1),
             punt_policed=dict.fromkeys(native.punt_reason_names(), 1))
    nf = {k: 1 for k in NETFLOW_COUNTERS}
    nf.update(pipeline_index=0, flows_used=5, skips=dict.fromkeys(native.netflow_skip_reasons(), 0),
              export={"datagrams": 3, "collectors": [{"collector": "127.0.0.1:9995", "errors": 0}]})
    o2m_link = {k: 1 for k in O2M_COUNTERS}
    o2m = {"pipeline_index": 1, "config": {"one": "lan"}, "one": dict(o2m_link),
           "many": {"wan0": dict(o2m_link), "wan1": dict(o2m_link)}, "active_mask": 3,
           "notifications": {"down": 0, "up": 1}}
    fam = {k: 1 for k in IP6FLOW_COUNTERS}
    fam.update(flows=2, punts={"resolve": 1, "local": 0})
    r = {"pipeline_index": 2, "ipv6": dict(fam), "ipv4": dict(fam), "generation": 4,
         "slowpath": {"ndp_answered": 1, "icmp_sent": 0}}
    pcap_file = {"packets": 1, "bytes": 1, "passes": 1, "nombuf": 1, "bad_tail": 0, "done": 1,
                 "path": "x.pcap"}
    return Snapshot(time=0.0, ports={"lan": {"eth": eth, "link": {"up": True, "speed_mbps": 10000},
                                             "pcap_file": pcap_file},
                                     "wan0": {"eth": eth, "link": {"up": False, "speed_mbps": 0}}},
                    workers=[w], stages=[{"worker": 0, "kind": "netflow", "index": 0, "calls": 2,
                                          "packets": 64, "cycles": 640, "sampled_packets": 8}],
                    netflow=[nf], one2many=[o2m], ip6flow=[r], slowpath={"handled": 2, "pending": 0})


def emitted_metrics(exposition: str) -> dict[str, set[str]]:
    """{sample name: label names} from a Prometheus text exposition; a family
    without samples counts under the name its samples would have."""
    from prometheus_client.parser import text_string_to_metric_families
    out: dict[str, set[str]] = {}
    for fam in text_string_to_metric_families(exposition):
        out.setdefault(fam.name + ("_total" if fam.type == "counter" else ""), set())
        for s in fam.samples:
            out.setdefault(s.name, set()).update(s.labels)
    return out


def scrape_collector(snap) -> str:
    from prometheus_client import generate_latest
    from prometheus_client.core import CollectorRegistry

    from dataplane.metrics import SnapshotCollector
    col = SnapshotCollector(dp=None, interval=1.0)
    col._snap = snap
    reg = CollectorRegistry()
    reg.register(col)
    return generate_latest(reg).decode()


METRIC = re.compile(r"\b(dataplane_[a-z0-9_]+)\b")
BY = re.compile(r"\b(?:by|without)\s*\(([^)]*)\)")
MATCHER = re.compile(r"([a-zA-Z_][a-zA-Z0-9_]*)\s*(?:=~|!~|!=|=)\s*\"")
LEGEND = re.compile(r"\{\{\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*\}\}")
PROM_LABELS = {"instance", "job"}  # added by Prometheus at scrape time


def dashboard_queries(board: dict) -> list[tuple[str, str, str]]:
    """(where, expression, legend) for every panel target and variable query."""
    out = []

    def walk(panels):
        for p in panels:
            for t in p.get("targets", []):
                out.append((p["title"], t["expr"], t.get("legendFormat", "")))
            walk(p.get("panels", []))
    walk(board["panels"])
    for v in board["templating"]["list"]:
        if v["type"] == "query":
            q = v["query"]["query"] if isinstance(v["query"], dict) else v["query"]
            out.append((f"variable {v['name']}", q, ""))
    return out


def check_dashboard(board: dict, emitted: dict[str, set[str]], *, all_used: bool) -> None:
    used = set()
    problems = []
    for where, expr, legend in dashboard_queries(board):
        names = set(METRIC.findall(expr))
        if not names:
            problems.append(f"{where}: no dataplane metric in {expr!r}")
        for n in names - set(emitted):
            problems.append(f"{where}: {n} is not emitted by dataplane/metrics.py")
        used |= names
        known = PROM_LABELS.union(*(emitted.get(n, set()) for n in names))
        labels = set(MATCHER.findall(expr)) | set(LEGEND.findall(legend))
        for group in BY.findall(expr):
            labels |= {x.strip() for x in group.split(",") if x.strip()}
        m = re.search(r"label_values\([^,]+,\s*(\w+)\)", expr)
        if m:
            labels.add(m.group(1))
        if all(emitted.get(n) for n in names):  # label sets known
            for lab in labels - known:
                problems.append(f"{where}: label {lab!r} is not on {sorted(names)}")
        for n in names:  # counters only through rate()/increase()
            if n.endswith("_total") and not expr.startswith("label_values("):
                for m in re.finditer(re.escape(n), expr):
                    head = expr[:m.start()]
                    if not re.search(r"(rate|increase)\(\s*$", head):
                        problems.append(f"{where}: counter {n} used without rate()/increase()")
    if all_used:
        for n in sorted(set(emitted) - used):
            problems.append(f"no panel shows {n}")
    assert not problems, "\n".join(problems)


def test_dashboard_is_the_generator_output_and_importable():
    spec = importlib.util.spec_from_file_location("make_dashboard", DASHBOARD.with_name("make_dashboard.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    assert DASHBOARD.read_text() == mod.render(), "run python3 deploy/grafana/make_dashboard.py"
    board = json.loads(DASHBOARD.read_text())
    ds = [v for v in board["templating"]["list"] if v["name"] == "DS_PROMETHEUS"]
    assert ds and ds[0]["type"] == "datasource" and ds[0]["query"] == "prometheus"
    ids = []

    def walk(panels):
        for p in panels:
            ids.append(p["id"])
            if p["type"] != "row":
                assert p["datasource"] == {"type": "prometheus", "uid": "${DS_PROMETHEUS}"}
                assert p["targets"] and all(t["datasource"]["uid"] == "${DS_PROMETHEUS}"
                                            for t in p["targets"])
                g = p["gridPos"]
                assert g["x"] + g["w"] <= 24
            walk(p.get("panels", []))
    walk(board["panels"])
    assert len(ids) == len(set(ids))
    for _, expr, _ in dashboard_queries(board):
        assert expr.count("(") == expr.count(")") and expr.count("{") == expr.count("}"), expr


def test_dashboard_uses_only_what_metrics_py_emits_and_shows_all_of_it():
    emitted = emitted_metrics(scrape_collector(engine_like_snapshot()))
    # the collector's families are all there (ports, workers, stages, netflow, one2many, ip6flow)
    for prefix in ("port_", "worker_", "stage_", "netflow_", "one2many_", "ip6flow_"):
        assert any(n.startswith("dataplane_" + prefix) for n in emitted), prefix
    check_dashboard(json.loads(DASHBOARD.read_text()), emitted, all_used=True)


def test_the_dashboard_check_catches_rot():
    emitted = emitted_metrics(scrape_collector(engine_like_snapshot()))
    board = json.loads(DASHBOARD.read_text())
    bad = copy.deepcopy(board)
    bad["panels"][1]["targets"][0]["expr"] = 'sum(rate(dataplane_port_rx_packets_total[5m]))'
    with pytest.raises(AssertionError, match="not emitted"):
        check_dashboard(bad, emitted, all_used=False)
    bad = copy.deepcopy(board)
    bad["panels"][1]["targets"][0]["expr"] = 'sum by (queue) (rate(dataplane_port_imissed_total[5m]))'
    with pytest.raises(AssertionError, match="label 'queue'"):
        check_dashboard(bad, emitted, all_used=False)
    bad = copy.deepcopy(board)
    bad["panels"][1]["targets"][0]["expr"] = 'sum(dataplane_port_imissed_total)'
    with pytest.raises(AssertionError, match="without rate"):
        check_dashboard(bad, emitted, all_used=False)
