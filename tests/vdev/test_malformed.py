"""The malformed-packet corpus (tests/malformed.py) through every stage.

One forked test per pipeline: netflow -> xconnect, one2many (hash), and the
router (netflow -> ip6flow, with addresses, routes and neighbours so that
valid packets route). Each runs two phases in one EAL:

A. pcap: the whole corpus, every frame followed by a valid packet (marked
   VALID#seq), through a net_pcap rx port: bursts mix malformed and valid
   frames, and the frames bigger than one mbuf (2200 and 9000 bytes) arrive
   as net_pcap builds them: chained mbufs (multi-segment; the PMD would count
   a frame it could not chain in ierrors, and the test allows for that).
   Checked: the process survives; per worker rx + injected == tx + punted +
   dropped; netflow metered + skipped == packets it saw; ip6flow drops +
   punts + forwarded == packets it saw; the slow path handled every punt,
   none with an internal error; every valid packet left, in order (read back
   from the output pcaps); no mbuf leaked. Per pipeline: netflow -> xconnect
   puts out exactly the input, byte for byte, in order; one2many's links
   together carry exactly the input; everything the router sends has the
   next hop's and the port's MACs and a right IPv4 header checksum.
B. per kind: each kind's frames (those that fit one mbuf) are injected into
   a looped net_ring port, then one CANARY# valid packet; the counters that
   moved are the kind's landing (the table), the same equations hold for
   the kind alone, and every kind's frames are counted exactly once where
   they entered. Every canary must come out. The slow path's answers back
   out of the ring port are recorded, not sent (they would loop in again).

The kinds only pcap can deliver get one combined landing row: phase A's
counters less phase B's kinds and the valid packets.

Each test writes its table and numbers to .pytest_cache/d/malformed/ and
tests/vdev/conftest.py prints the combined table and the summary line
(`kinds covered`, `packets sent`, `crashes`, `mismatches`) at the end.
"""
from __future__ import annotations

import json
import struct
import time
from collections import Counter
from pathlib import Path

import pytest

from dataplane.slowpath import OUTCOMES
from tests.helpers import conserved, port, running, vdev_config, xconnect
from tests.malformed import (
    INJECT_MAX,
    MARKS,
    Addrs,
    corpus,
    marks_in,
    read_pcap,
    valid,
    write_pcap,
)

pytestmark = [pytest.mark.eal, pytest.mark.timeout(60)]

PCAP0_MAC = "02:70:63:61:70:00"  # net_pcap's address for its first device (checked at start)
RING_MAC = "00:00:00:00:00:00"   # net_ring ports have none
VALID, CANARY = MARKS


def summary_dir(config) -> Path:
    cache = getattr(config, "cache", None)
    d = Path(cache.mkdir("malformed")) if cache else Path(config.rootpath) / ".pytest_cache/malformed"
    d.mkdir(parents=True, exist_ok=True)
    return d


# ---- counters ------------------------------------------------------------------------

def flat(snap) -> Counter:
    """Every counter of a snapshot that says where packets went, flattened."""
    c = Counter()
    t = snap.totals
    for k in ("rx", "injected", "tx", "punted", "dropped"):
        c[k] = t[k]
    for r, v in t["drops"].items():
        c[f"drop:{r}"] = v
    for name, p in snap.ports.items():
        c[f"rx@{name}"] = p["rx"]
        c[f"tx@{name}"] = p["tx"]
    for st in snap.stages:
        for k in ("packets", "passed", "dropped"):
            c[f"stage:{st['kind']}:{k}"] += st[k]
    for nf in snap.netflow:
        c["nf:metered"] += nf["packets"]
        c["nf:skipped"] += nf["skipped"]
        c["nf:unmetered"] += nf["unmetered"]
        for r, v in nf["skips"].items():
            c[f"nf:skip:{r}"] += v
    for ff in snap.ip6flow:
        for fam in ("ipv6", "ipv4"):
            c[f"ff:{fam}:forward"] += ff[fam]["forward"] + ff[fam]["fastforward"]
            for r, v in ff[fam]["punts"].items():
                c[f"ff:{fam}:punt:{r}"] += v
        for o in OUTCOMES:
            c[f"sp:{o}"] += ff["slowpath"].get(o, 0)
    return c


def delta(after: Counter, before: Counter) -> Counter:
    return Counter({k: after[k] - before[k] for k in set(after) | set(before)
                    if after[k] != before[k]})


HIDDEN = ("rx", "injected", "tx", "punted", "dropped", "nf:skipped", "nf:unmetered")


def landing(d: Counter, ring: str = "ring") -> str:
    """Where a kind's packets went, as `counter=n`, biggest first (the
    injection's own transmit on the ring port left out)."""
    items = [(k, v) for k, v in d.items()
             if v and k not in HIDDEN and k != f"tx@{ring}" and not k.startswith(("rx@", "stage:"))]
    return " ".join(f"{k}={v}" for k, v in sorted(items, key=lambda kv: (-kv[1], kv[0])))


def accounting(d: Counter, handled: int) -> list[str]:
    """The equations every packet set must satisfy; what fails, as text."""
    bad = []

    def eq(what, lhs, rhs):
        if lhs != rhs:
            bad.append(f"{what}: {lhs} != {rhs}")
    eq("rx + injected == tx + punted + dropped", d["rx"] + d["injected"],
       d["tx"] + d["punted"] + d["dropped"])
    if "stage:netflow:packets" in d or d["nf:metered"] or d["nf:skipped"]:
        eq("netflow metered + skipped + unmetered == seen",
           d["nf:metered"] + d["nf:skipped"] + d["nf:unmetered"], d["stage:netflow:packets"])
        eq("netflow skipped == sum of its reasons", d["nf:skipped"],
           sum(v for k, v in d.items() if k.startswith("nf:skip:")))
    if any(k.startswith("ff:") for k in d) or d["stage:ip6flow:packets"]:
        forwarded = d["ff:ipv6:forward"] + d["ff:ipv4:forward"]
        punts = sum(v for k, v in d.items() if k.startswith("ff:") and ":punt:" in k)
        eq("ip6flow drops + punts + forwarded == seen",
           d["stage:ip6flow:dropped"] + punts + forwarded, d["stage:ip6flow:packets"])
        eq("ip6flow passes nothing on", d["stage:ip6flow:passed"], 0)
        if "stage:netflow:packets" in d:
            eq("netflow hands ip6flow all it saw", d["stage:netflow:passed"],
               d["stage:ip6flow:packets"])
        eq("slow path handled == punted", handled, d["punted"])
        eq("slow path internal errors", d["sp:internal_error"], 0)
    eq("drops == sum of reasons", d["dropped"],
       sum(v for k, v in d.items() if k.startswith("drop:")))
    return bad


# ---- the harness -----------------------------------------------------------------------

class Run:
    """A running pipeline with a pcap input (`in`) for phase A and a looped
    ring (`ring_port`) for phase B."""

    def __init__(self, dp, name: str, ring_port: str):
        self.dp, self.name, self.ring = dp, name, ring_port
        self.injected = 0            # by the test, into the ring
        self.slow_passed = 0         # slow path frames that went into the dataplane
        self.slow_out = Counter()    # slow path frames by egress port name
        self.looped_back = 0         # slow path frames for the ring port, held back
        self.phase = "A"
        self.mismatches: list[str] = []
        self.rows: dict[str, dict] = {}
        self.ctl = dp.ip6flow[0] if dp.ip6flow else None
        names = {p.port_id: p.name for p in dp.ports}
        if self.ctl:
            sp = self.ctl.slowpath
            real = sp.inject

            def spy(port_id: int, frame: bytes) -> None:
                self.slow_out[names.get(port_id, str(port_id))] += 1
                if self.phase == "B" and names.get(port_id) == self.ring:
                    self.looped_back += 1   # an answer to the sender: it would come back in
                    return
                self.slow_passed += 1
                real(port_id, frame)
            sp.inject = spy

    def handled(self) -> int:
        return sum(self.ctl.slowpath.stats[o] for o in OUTCOMES) if self.ctl else 0

    def counters(self) -> tuple[bool, Counter]:
        """(quiet, counters) of one snapshot: quiet when everything injected
        went round the ring and through the pipeline and the slow path has
        handled every punt and its answers have gone out."""
        handled = self.handled()
        s = self.dp.snapshot()
        c = flat(s)
        c["sp:handled"] = handled
        for name, n in self.slow_out.items():
            c[f"sp_out@{name}"] = n
        inject_failed = self.ctl.inject_failed if self.ctl else 0
        quiet = (conserved(s) and c["punted"] == handled
                 and c[f"rx@{self.ring}"] == c[f"tx@{self.ring}"]
                 and c["injected"] == self.injected + self.slow_passed - inject_failed)
        return quiet, c

    def settle(self, what: str, timeout=10.0) -> Counter:
        """Counters once quiet, the same on two reads in a row (a snapshot
        is not atomic: one read could catch a worker between counters)."""
        deadline = time.monotonic() + timeout
        last = None
        while True:
            quiet, c = self.counters()
            if quiet and c == last:
                return c
            last = c if quiet else None
            assert time.monotonic() < deadline, f"{self.name}: {what} did not settle: {c}"
            time.sleep(0.001)


def phase_a(run: Run, frames: list[bytes], big: int) -> tuple[Counter, dict]:
    """Wait until net_pcap has delivered every frame (or stopped delivering:
    a PMD may drop a frame it cannot chain, `big` of them may be such) and
    all of it went somewhere; returns the counters and what the PMD did."""
    n = len(frames)
    seen, last_change = -1, time.monotonic()
    deadline = last_change + 15.0
    while time.monotonic() < deadline:
        s = run.dp.snapshot()
        got = s.ports["in"]["rx"]
        if got >= n:
            break
        if got != seen:
            seen, last_change = got, time.monotonic()
        elif got and time.monotonic() - last_change > 0.5:
            break   # nothing more is coming
        time.sleep(0.002)
    c = run.settle("phase A")
    eth = run.dp.snapshot().ports["in"]["eth"]
    pmd = {"frames": n, "received": c["rx@in"], "ierrors": eth.get("ierrors", 0),
           "rx_nombuf": eth.get("rx_nombuf", 0), "dropped_by_pmd": n - c["rx@in"]}
    for problem in accounting(c, c["sp:handled"]):
        run.mismatches.append(f"phase A: {problem}")
    if not 0 <= n - c["rx@in"] <= big:
        run.mismatches.append(f"phase A: net_pcap delivered {c['rx@in']} of {n} frames ({pmd})")
    return c, pmd


def same_frames(out: list[bytes], sent: list[bytes], pmd_dropped: int) -> bool:
    """out is sent, unchanged and in order, except for frames bigger than an
    mbuf that the PMD dropped on the way in (counted in pmd_dropped)."""
    if not pmd_dropped:
        return out == sent
    small = [f for f in sent if len(f) <= INJECT_MAX]
    big_out = [f for f in out if len(f) > INJECT_MAX]
    it = iter(f for f in sent if len(f) > INJECT_MAX)
    return ([f for f in out if len(f) <= INJECT_MAX] == small
            and all(any(f == g for g in it) for f in big_out))


def phase_b(run: Run, kinds, addrs: Addrs) -> int:
    """Each kind alone through the ring, a canary after it; returns how
    many canaries went in (seq 0, 2, 4, ...)."""
    run.phase = "B"
    before = run.settle("start of phase B")
    # what a canary alone does, to take it out of every kind's landing
    run.dp.inject(run.ring, valid(addrs, 0, CANARY))
    run.injected += 1
    after = run.settle("first canary")
    canary = delta(after, before)
    canaries = 1
    for k in kinds:
        before = after
        loops0 = run.looped_back
        for f in k.frames:
            run.dp.inject(run.ring, f)
        run.dp.inject(run.ring, valid(addrs, 2 * canaries, CANARY))  # IPv4, as the first
        canaries += 1
        run.injected += len(k.frames) + 1
        after = run.settle(k.name)
        d = delta(after, before)
        for problem in accounting(d, d["sp:handled"]):
            run.mismatches.append(f"{k.name}: {problem}")
        entered = d[f"rx@{run.ring}"]
        if entered != len(k.frames) + 1:
            run.mismatches.append(f"{k.name}: {entered} frames entered for {len(k.frames)} + canary")
        d.subtract(canary)
        d = Counter({key: v for key, v in d.items() if v})
        run.rows[k.name] = {"packets": len(k.frames), "landing": landing(d),
                            "short": short(d, run.name),
                            "answers_held_back": run.looped_back - loops0, "counters": dict(d)}
    return canaries


def pcap_only_row(run: Run, a_counters: Counter, b_kinds, pcap_only, valid_landing: Counter,
                  pmd_dropped: int) -> None:
    """Phase A less phase B's kinds and the valid packets: the landing of
    the frames only the pcap could deliver."""
    rest = Counter(a_counters)
    for k in b_kinds:
        rest.subtract(run.rows[k.name]["counters"])
    rest.subtract(valid_landing)
    rest = Counter({k: v for k, v in rest.items() if v and not k.startswith(("sp_out@", "tx@"))})
    n = sum(len(k.frames) for k in pcap_only)
    names = "+".join(k.name for k in pcap_only)
    for k in pcap_only:
        run.rows[k.name] = {"packets": len(k.frames), "landing": f"(pcap only: see {names})",
                            "short": "(pcap only, below)", "counters": {}}
    note = f" ({pmd_dropped} dropped by the PMD)" if pmd_dropped else ""
    run.rows[names] = {"packets": n, "landing": "phase A by difference" + note + ": " + landing(rest),
                       "short": "by difference" + note + ": " + short(rest, run.name),
                       "counters": dict(rest)}


def short(d: Counter, stage: str) -> str:
    """The landing in a table cell: what this stage decided, no echoes."""
    out = []
    for k, v in sorted(d.items(), key=lambda kv: (-kv[1], kv[0])):
        if not v or k in HIDDEN or k.startswith(("rx@", "stage:", "sp_out@")) or k == "sp:handled":
            continue
        if stage == "netflow_xconnect":
            if k.startswith("nf:"):
                out.append(f"{k[3:]}={v}")
            elif k.startswith("drop:"):
                out.append(f"{k}={v}")
        elif stage == "one2many":
            if k.startswith(("tx@", "drop:")) and k != "tx@ring":
                out.append(f"{k.replace('tx@', '')}={v}")
        else:
            if k.startswith("nf:") or k.startswith("tx@"):
                continue
            k = (k.replace("ff:ipv4:forward", "fwd4").replace("ff:ipv6:forward", "fwd6")
                  .replace("ff:ipv4:punt:", "punt4:").replace("ff:ipv6:punt:", "punt6:"))
            out.append(f"{k}={v}")
    return " ".join(out)


def report(request, run: Run, extra: dict) -> None:
    data = {"stage": run.name, "kinds": run.rows, "mismatches": run.mismatches, **extra}
    (summary_dir(request.config) / f"{run.name}.json").write_text(json.dumps(data, indent=1))
    width = max(len(k) for k in run.rows)
    print(f"\n{run.name}: kind -> packets -> counters")
    for name, row in run.rows.items():
        print(f"  {name:<{width}} {row['packets']:>4}  {row['landing']}")
    for m in run.mismatches:
        print(f"  MISMATCH {m}")


def build_inputs(tmp_path: Path, a: Addrs):
    """Phase A's pcap: every corpus frame followed by a valid packet."""
    kinds = corpus(a)
    frames, n_valid = [], 0
    for k in kinds:
        for f in k.frames:
            frames.append(f)
            frames.append(valid(a, n_valid))
            n_valid += 1
    write_pcap(tmp_path / "in.pcap", frames)
    return kinds, frames, n_valid


def check_mac(dp, name: str, want: str) -> None:
    got = dp.port(name).info.mac
    assert got == want, f"the corpus was built for {name} = {want}, the port has {got}"


def pool_in_use(dp) -> int:
    """mbufs out of the pool (after stop_workers: counters stay readable)."""
    return sum(p["in_use"] for p in dp._snapshot().pools)


# ---- netflow -> xconnect -------------------------------------------------------------------

def test_corpus_through_netflow_and_xconnect(request, tmp_path, file_prefix):
    t0 = time.monotonic()
    a = Addrs(dst_mac=PCAP0_MAC)
    kinds, frames, n_valid = build_inputs(tmp_path, a)
    b_addrs = Addrs(dst_mac=RING_MAC)
    b_kinds = [k for k in corpus(b_addrs) if not k.pcap_only]
    body = (port("in", f"net_pcap0,rx_pcap={tmp_path}/in.pcap")
            + port("out", f"net_pcap1,tx_pcap={tmp_path}/out.pcap", poll=False)
            + port("ring", "net_ring0")
            + port("rout", f"net_pcap2,tx_pcap={tmp_path}/rout.pcap", poll=False)
            + '[[pipeline]]\nstage = "netflow"\n'
            + xconnect({"in": "out", "ring": "rout"}))
    with running(vdev_config(file_prefix, body)) as dp:
        run = Run(dp, "netflow_xconnect", "ring")
        a_counters, pmd = phase_a(run, frames, sum(len(k.frames) for k in kinds if k.pcap_only))
        canaries = phase_b(run, b_kinds, b_addrs)
        pcap_only_row(run, a_counters, b_kinds, [k for k in kinds if k.pcap_only],
                      Counter({"nf:metered": n_valid}), pmd["dropped_by_pmd"])
        final = run.settle("the end")
        dp.stop_workers()
        leaked = pool_in_use(dp)  # nothing holds an mbuf once the workers stopped
    out, rout = read_pcap(tmp_path / "out.pcap"), read_pcap(tmp_path / "rout.pcap")
    # netflow meters and never drops; xconnect forwards: every frame, unchanged, in order
    if not same_frames(out, frames, pmd["dropped_by_pmd"]):
        diff = next((i for i, (x, y) in enumerate(zip(out, frames)) if x != y), min(len(out), len(frames)))
        run.mismatches.append(f"out.pcap differs from the input: {len(out)} vs {len(frames)} "
                              f"frames, first difference at frame {diff}")
    if marks_in(out) != list(range(n_valid)):
        run.mismatches.append("valid packets missing or out of order in out.pcap")
    if marks_in(rout, CANARY) != [2 * i for i in range(canaries)]:
        run.mismatches.append("canaries missing or out of order in rout.pcap")
    if final["drop:no_egress"] or final["dropped"]:
        run.mismatches.append(f"drops in a pipeline that never drops: {final['dropped']}")
    if leaked:
        run.mismatches.append(f"{leaked} mbufs not returned to the pool")
    sent = len(frames) + sum(len(k.frames) + 1 for k in b_kinds) + 1
    report(request, run, {"packets_sent": sent, "kinds_covered": len(kinds), "pmd": pmd,
                          "valid": {"sent": n_valid, "forwarded": len(marks_in(out))},
                          "canaries": canaries, "seconds": round(time.monotonic() - t0, 2)})
    assert not run.mismatches, "\n".join(run.mismatches)


# ---- one2many --------------------------------------------------------------------------

def test_corpus_through_one2many_hash(request, tmp_path, file_prefix):
    t0 = time.monotonic()
    a = Addrs(dst_mac=PCAP0_MAC)
    kinds, frames, n_valid = build_inputs(tmp_path, a)
    b_addrs = Addrs(dst_mac=RING_MAC)
    b_kinds = [k for k in corpus(b_addrs) if not k.pcap_only]
    body = port("in", f"net_pcap0,rx_pcap={tmp_path}/in.pcap")
    for i, name in enumerate(("a0", "a1", "b0", "b1")):
        body += port(name, f"net_pcap{i + 1},tx_pcap={tmp_path}/{name}.pcap", poll=False)
    body += port("ring", "net_ring0")
    for one, links in (("in", ["a0", "a1"]), ("ring", ["b0", "b1"])):
        body += (f'[[pipeline]]\nstage = "one2many"\none = "{one}"\n'
                 f'many = {json.dumps(links)}\nxmit = "hash"\n')
    with running(vdev_config(file_prefix, body)) as dp:
        run = Run(dp, "one2many", "ring")
        a_counters, pmd = phase_a(run, frames, sum(len(k.frames) for k in kinds if k.pcap_only))
        canaries = phase_b(run, b_kinds, b_addrs)
        per_link = {name: a_counters[f"tx@{name}"] for name in ("a0", "a1")}
        pcap_only_row(run, a_counters, b_kinds, [k for k in kinds if k.pcap_only],
                      Counter(), pmd["dropped_by_pmd"])
        run.settle("the end")
        dp.stop_workers()
        leaked = pool_in_use(dp)  # nothing holds an mbuf once the workers stopped
    outs = {name: read_pcap(tmp_path / f"{name}.pcap") for name in ("a0", "a1", "b0", "b1")}
    # hash spreads but never drops or changes: the links together carry the input
    if not same_frames(sorted(outs["a0"] + outs["a1"]), sorted(frames), pmd["dropped_by_pmd"]):
        run.mismatches.append("a0 + a1 do not carry exactly the input frames")
    got = sorted(marks_in(outs["a0"]) + marks_in(outs["a1"]))
    if got != list(range(n_valid)):
        run.mismatches.append(f"valid packets: {len(got)} of {n_valid} came out")
    for name in ("a0", "a1"):  # one flow per family: each stays in order on its link
        seqs = marks_in(outs[name])
        if seqs != sorted(seqs):
            run.mismatches.append(f"valid packets out of order on {name}")
    # the frames only pcap delivers: which link each took, read from the links
    big = {name: sum(1 for f in outs[name] if len(f) > INJECT_MAX) for name in ("a0", "a1")}
    row = run.rows["+".join(k.name for k in kinds if k.pcap_only)]
    row["counters"] = {f"tx@{name}": n for name, n in big.items() if n}
    row["landing"] = row["short"] = "from the link pcaps: " + " ".join(
        f"{name}={n}" for name, n in big.items() if n)
    seen = sorted(marks_in(outs["b0"], CANARY) + marks_in(outs["b1"], CANARY))
    if seen != [2 * i for i in range(canaries)]:
        run.mismatches.append("canaries missing in b0/b1")
    if leaked:
        run.mismatches.append(f"{leaked} mbufs not returned to the pool")
    sent = len(frames) + sum(len(k.frames) + 1 for k in b_kinds) + 1
    report(request, run, {"packets_sent": sent, "kinds_covered": len(kinds), "pmd": pmd,
                          "valid": {"sent": n_valid, "forwarded": len(got)}, "links": per_link,
                          "canaries": canaries, "seconds": round(time.monotonic() - t0, 2)})
    assert not run.mismatches, "\n".join(run.mismatches)


# ---- the router: netflow -> ip6flow ------------------------------------------------------

A_MAC, BACK_MAC = "02:00:00:00:22:22", "02:00:00:00:77:77"


def router_toml() -> str:
    itf = [("in", "2001:db8:1::1/64", "192.0.2.1/24"), ("ring", "2001:db8:5::1/64", "192.0.5.1/24"),
           ("wan", "2001:db8:2::1/64", "198.51.100.1/24"), ("back", "2001:db8:3::1/64", "203.0.113.1/24")]
    out = ('[[pipeline]]\nstage = "netflow"\n'
           '[[pipeline]]\nstage = "ip6flow"\nmaxflows = 64\nhashsize = 64\nmaxflows4 = 64\n'
           'hashsize4 = 64\nicmp_rate = 1000000\nicmp_burst = 1000000\nmax_routes = 64\n'
           'max_nexthops = 64\n')
    for p, six, four in itf:
        out += f'[[pipeline.interfaces]]\nport = "{p}"\naddresses = ["{six}", "{four}"]\n'
    for addr, mac, p in (("2001:db8:2::2", A_MAC, "wan"), ("198.51.100.2", A_MAC, "wan"),
                         ("2001:db8:3::2", BACK_MAC, "back"), ("203.0.113.2", BACK_MAC, "back")):
        out += f'[[pipeline.neighbours]]\naddress = "{addr}"\nmac = "{mac}"\nport = "{p}"\n'
    for prefix, via in (("2001:db8:99::/48", "2001:db8:2::2"), ("10.99.0.0/16", "198.51.100.2"),
                        ("2001:db8:77::/48", "2001:db8:3::2"), ("10.77.0.0/16", "203.0.113.2")):
        out += f'[[pipeline.routes]]\nprefix = "{prefix}"\nvia = "{via}"\n'
    return out


def mac_bytes(mac: str) -> bytes:
    return bytes.fromhex(mac.replace(":", ""))


def ip4_header_ok(frame: bytes) -> bool:
    ihl = (frame[14] & 0xF) * 4
    words = struct.unpack("!%dH" % (ihl // 2), frame[14:14 + ihl])
    s = sum(words)
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return s == 0xFFFF


def routed_out_problems(frames: list[bytes], port_name: str, dst_mac: str, src_mac: str) -> list[str]:
    """What the router sent out of a port: addressed to the next hop, from
    the port, and every IPv4 header checksum right (fast path: the RFC 1624
    update after the TTL decrement; slow path: its own)."""
    bad = Counter()
    for f in frames:
        if f[:6] != mac_bytes(dst_mac) or f[6:12] != mac_bytes(src_mac):
            bad["Ethernet addresses not rewritten"] += 1
        if f[12:14] == b"\x08\x00" and not ip4_header_ok(f):
            bad["IPv4 header checksum wrong"] += 1
    return [f"{port_name}: {n} frames: {what}" for what, n in bad.items()]


def test_corpus_through_the_router(request, tmp_path, file_prefix):
    t0 = time.monotonic()
    a = Addrs(dst_mac=PCAP0_MAC)    # in: 2001:db8:1::1, 192.0.2.1 (the defaults)
    kinds, frames, n_valid = build_inputs(tmp_path, a)
    b_addrs = Addrs(dst_mac=RING_MAC, router6="2001:db8:5::1", router4="192.0.5.1")
    b_kinds = [k for k in corpus(b_addrs) if not k.pcap_only]
    body = (port("in", f"net_pcap0,rx_pcap={tmp_path}/in.pcap")
            + port("ring", "net_ring0")
            + port("wan", f"net_pcap1,tx_pcap={tmp_path}/wan.pcap", poll=False)
            + port("back", f"net_pcap2,tx_pcap={tmp_path}/back.pcap", poll=False)
            + router_toml())
    with running(vdev_config(file_prefix, body)) as dp:
        check_mac(dp, "in", PCAP0_MAC)
        check_mac(dp, "ring", RING_MAC)
        run = Run(dp, "ip6flow", "ring")
        a_counters, pmd = phase_a(run, frames, sum(len(k.frames) for k in kinds if k.pcap_only))
        canaries = phase_b(run, b_kinds, b_addrs)
        v6, v4 = n_valid // 2, n_valid - n_valid // 2
        pcap_only_row(run, a_counters, b_kinds, [k for k in kinds if k.pcap_only],
                      Counter({"nf:metered": n_valid, "ff:ipv6:forward": v6, "ff:ipv4:forward": v4,
                               "tx@wan": n_valid}), pmd["dropped_by_pmd"])
        final = run.settle("the end")
        sp = dict(run.ctl.slowpath.stats)
        macs = {name: dp.port(name).info.mac for name in ("wan", "back")}
        dp.stop_workers()
        leaked = pool_in_use(dp)  # nothing holds an mbuf once the workers stopped
    wan = read_pcap(tmp_path / "wan.pcap")
    run.mismatches += routed_out_problems(wan, "wan", A_MAC, macs["wan"])
    run.mismatches += routed_out_problems(read_pcap(tmp_path / "back.pcap"), "back", BACK_MAC,
                                          macs["back"])
    if marks_in(wan) != list(range(n_valid)):
        got = marks_in(wan)
        run.mismatches.append(f"valid packets: {len(got)} of {n_valid} forwarded to wan "
                              f"(missing {sorted(set(range(n_valid)) - set(got))[:10]})")
    if marks_in(wan, CANARY) != [2 * i for i in range(canaries)]:
        run.mismatches.append("canaries missing or out of order on wan")
    if final["sp:internal_error"]:
        run.mismatches.append(f"slow path internal errors: {final['sp:internal_error']}")
    if leaked:
        run.mismatches.append(f"{leaked} mbufs not returned to the pool")
    sent = len(frames) + sum(len(k.frames) + 1 for k in b_kinds) + 1
    report(request, run, {"packets_sent": sent, "kinds_covered": len(kinds), "pmd": pmd,
                          "valid": {"sent": n_valid, "forwarded": len(marks_in(wan))},
                          "canaries": canaries, "slowpath": {k: v for k, v in sp.items() if v},
                          "seconds": round(time.monotonic() - t0, 2)})
    assert not run.mismatches, "\n".join(run.mismatches)
