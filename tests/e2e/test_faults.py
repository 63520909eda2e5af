"""Faults and lifecycle (issue 7): the `dataplane` CLI as a subprocess, under
load, exporting to a real nfcapd, when it is stopped, restarted, killed,
reloaded, when its collector goes away, and when it runs without root.

Nothing here asserts a time: every check is a count (flows, packets,
sequence numbers, errors, files, fds, pages), read after the fact. Loops that
wait for something have a deadline that only guards against a hang.
"""
from __future__ import annotations

import json
import os
import pwd
import re
import shutil
import signal
import site
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from dataplane.control import request
from tests import collectors
from tests.conftest import unique_prefix
from tests.helpers import RunningCli, eal_toml, probe_toml

pytestmark = pytest.mark.timeout(180)
DPDK_RUN = Path("/var/run/dpdk")
HANG_GUARD_S = 30.0


# ---- traffic: N distinct UDP flows, one 60-byte frame each -------------------------

PCAP_GLOBAL = struct.Struct("<IHHiIII")
PCAP_RECORD = struct.Struct("<IIII")
FRAME = struct.Struct("!6s6sH BBHHHBBHII HHHH 18s")   # Ethernet / IPv4 / UDP / 18 B
IP_LEN = FRAME.size - 14


def flow_frame(i: int) -> bytes:
    """Flow i: 10.<i>:(1024 + i % 60000) -> 192.168.<i>:53, UDP, checksum right."""
    src, dst = 0x0A000000 | i, 0xC0A80000 | (i & 0xFFFF)
    c = 0x4500 + IP_LEN + (64 << 8 | 17) + (src >> 16) + (src & 0xFFFF) + (dst >> 16) + (dst & 0xFFFF)
    c = (c & 0xFFFF) + (c >> 16)
    c = (c & 0xFFFF) + (c >> 16)
    return FRAME.pack(b"\x02\0\0\0\0\x02", b"\x02\0\0\0\0\x01", 0x0800, 0x45, 0, IP_LEN, 0, 0,
                      64, 17, ~c & 0xFFFF, src, dst, 1024 + i % 60000, 53, IP_LEN - 20, 0, bytes(18))


def write_flows_pcap(path: Path, flows: int) -> Path:
    with open(path, "wb") as f:
        f.write(PCAP_GLOBAL.pack(0xA1B2C3D4, 2, 4, 0, 0, 65535, 1))
        for i in range(flows):
            f.write(PCAP_RECORD.pack(0, i, FRAME.size, FRAME.size) + flow_frame(i))
    return path


# ---- configs ---------------------------------------------------------------------

def probe_config(tmp_path: Path, prefix: str, pcap: Path, collectors_: list[str], *,
                 version: int = 5, active: int = 1, forever: bool = True,
                 name: str = "dp.toml", extra: str = "") -> Path:
    """pcap in (replayed forever), netflow exporting to `collectors_`, xconnect
    to a net_null sink. active_timeout 1 s: every flow expires every second
    while it is replayed, so records leave all the time, and about one
    second's worth of flows is still cached at any instant."""
    coll = ", ".join(f'"{c}"' for c in collectors_)
    cfg = tmp_path / name
    export = (f"active_timeout = {active}\ninactive_timeout = 15\n"
              f"export = {{ version = {version}, collectors = [{coll}], source_id = 7 }}")
    cfg.write_text(eal_toml(prefix) + probe_toml(pcap, export, forever) + f"""
[run]
runtime_dir = "{tmp_path / 'run'}"
[metrics]
enabled = false
{extra}""")
    return cfg


def null_config(tmp_path: Path, prefix: str, name: str = "null.toml") -> Path:
    cfg = tmp_path / name
    cfg.write_text(eal_toml(prefix) + f"""
[[ports]]
name = "a"
device = "net_null0"
[[ports]]
name = "b"
device = "net_null1"
[[pipeline]]
stage = "xconnect"
map = {{ a = "b", b = "a" }}
[run]
runtime_dir = "{tmp_path / 'run'}"
[metrics]
enabled = false
""")
    return cfg


def sock_of(tmp_path: Path, prefix: str) -> Path:
    return tmp_path / "run" / f"{prefix}.sock"


def wait_for(what: str, cond, guard: float = HANG_GUARD_S, step: float = 0.05):
    """Poll `cond()` until truthy; the deadline only guards against a hang."""
    deadline = time.monotonic() + guard
    while not (v := cond()):
        assert time.monotonic() < deadline, f"hang guard: never {what}"
        time.sleep(step)
    return v


def tx(sock: Path) -> int:
    return request(sock, "stats")["totals"]["tx"]


def nf_info(sock: Path) -> dict:
    return request(sock, "netflow.info")


# ---- 1. SIGTERM under load: every flow reaches the collector ---------------------

@pytest.mark.skipif(not collectors.available(), reason="nfdump not installed")
@pytest.mark.parametrize("version", [5, 10])
def test_sigterm_under_load_loses_no_flow(tmp_path, version):
    """SIGTERM while 4000 flows are replayed at full rate and exported: what
    nfdump reads back equals the final counters exactly (flows created ==
    exported == nfdump flows, packets metered == nfdump packets), no sequence
    failure, no send error, nothing lost on a ring."""
    pcap = write_flows_pcap(tmp_path / "flows.pcap", 4000)
    prefix = unique_prefix("sigterm")
    with collectors.Nfcapd(tmp_path / "nfcapd") as cap:
        cfg = probe_config(tmp_path, prefix, pcap, [f"127.0.0.1:{cap.port}"], version=version)
        with RunningCli(cfg, sock_of(tmp_path, prefix)) as dp:
            # Under load: flows have expired and been exported already, and the
            # cache is full of live ones at the moment the signal lands.
            wait_for("exported a flow", lambda: nf_info(dp.socket)["exported"] >= 4000)
            before = nf_info(dp.socket)
            assert before["flows_used"] > 0
            t0 = tx(dp.socket)
            wait_for("forwarding", lambda: tx(dp.socket) > t0)
            rc = dp.stop(signal.SIGTERM)
            assert rc == 0, dp.stderr
            out = dp.result
        cap.drain()
    assert out["signals"] == [signal.SIGTERM]
    nf = out["netflow"][0]
    export = nf["export"]
    print(f"v{version}: {out['totals']['rx']} packets, {nf['flows_created']} flows created, "
          f"{before['flows_used']} cached a moment before SIGTERM, {export['datagrams']} datagrams")
    assert nf["alloc_failed"] == 0 and nf["export_failed"] == 0
    assert export["lost_records"] == 0 and export["pending"] == 0
    assert export["collectors"][0]["errors"] == 0, export["collectors"][0]
    assert nf["flows_used"] == 0                      # the cache was flushed ...
    assert nf["exported"] == nf["flows_created"]      # ... and every flow went out
    assert nf["packets"] == out["totals"]["rx"]       # every frame was metered
    stats = cap.stats()
    assert stats["sequence_failures"] == 0
    assert stats["flows"] == nf["flows_created"]      # flows lost on SIGTERM: 0
    assert stats["packets"] == nf["packets"]
    assert stats["bytes"] == nf["bytes"]
    assert not (DPDK_RUN / prefix).exists()


# ---- 2. start/stop cycles and reload cycles: nothing left, nothing grows -----------

def host_counts() -> dict:
    """Host-wide figures a leak across processes would move: allocated file
    handles, shared memory (tmpfs, memfd, SysV) and SysV IPC objects."""
    meminfo = dict(line.split(":", 1) for line in Path("/proc/meminfo").read_text().splitlines())
    ipcs = subprocess.run(["ipcs"], capture_output=True, text=True).stdout
    return {"file_handles": int(Path("/proc/sys/fs/file-nr").read_text().split()[0]),
            "shmem_kb": int(meminfo["Shmem"].split()[0]),
            "sysv_objects": sum(1 for ln in ipcs.splitlines() if ln[:2] == "0x")}


def runtime_leftovers(tmp_path: Path, prefix: str) -> list[str]:
    """Every file a run may leave behind: DPDK's runtime dir (as root and as a
    user), /dev/shm entries, our control runtime dir, processes still holding
    the prefix."""
    left = []
    for d in (DPDK_RUN / prefix, Path("/tmp/dpdk") / prefix):
        if d.exists():
            left.append(f"{d}: {sorted(os.listdir(d))}")
    left += [f"/dev/shm/{n}" for n in os.listdir("/dev/shm") if prefix in n or "dpdk" in n.lower()]
    run = tmp_path / "run"
    if run.exists():
        left += [str(p) for p in run.iterdir()]
    for pid in (p for p in os.listdir("/proc") if p.isdigit()):
        try:
            if prefix.encode() in Path(f"/proc/{pid}/cmdline").read_bytes():
                left.append(f"process {pid} still running")
        except OSError:
            pass
    return left


@pytest.mark.parametrize("cycles", [5, pytest.param(20, marks=pytest.mark.slow)])
def test_start_stop_cycles_leave_nothing(tmp_path, cycles):
    """`dataplane run` started and stopped (SIGTERM, after it forwarded) over
    and over on the same prefix: after each run no runtime file is left, and
    over all runs the host's file handles and shared memory do not grow."""
    prefix = unique_prefix("cycles")
    cfg = null_config(tmp_path, prefix)
    before = host_counts()
    seen = []
    for i in range(cycles):
        with RunningCli(cfg, sock_of(tmp_path, prefix)) as dp:
            t0 = tx(dp.socket)
            wait_for("forwarding", lambda: tx(dp.socket) > t0)
            assert dp.stop() == 0, dp.stderr
            assert dp.result["totals"]["tx"] > 0
        assert runtime_leftovers(tmp_path, prefix) == [], f"cycle {i}"
        seen.append(host_counts())
    after = seen[-1]
    print(f"{cycles} cycles: before {before}, after first {seen[0]}, after last {after}")
    # A leak of one run's handles or memory per cycle would be `cycles` times
    # that; the bounds leave room for other processes on the host.
    assert after["sysv_objects"] <= before["sysv_objects"]
    assert after["shmem_kb"] - before["shmem_kb"] < 64 * 1024
    assert after["file_handles"] - before["file_handles"] < 500


def proc_resources(pid: int) -> tuple[int, int]:
    """(open fds, RSS in kB) of a process."""
    fds = len(os.listdir(f"/proc/{pid}/fd"))
    status = Path(f"/proc/{pid}/status").read_text()
    rss = int(next(ln for ln in status.splitlines() if ln.startswith("VmRSS:")).split()[1])
    return fds, rss


def test_reload_cycles_keep_fds_and_rss_steady(tmp_path):
    """20 `ctl reload`s in one process under load, each one replacing the
    exporter (another collector: new sockets), the timeouts and the xconnect
    map: the process's fd count comes back to where it was and RSS stays
    within a bound (a leaked exporter per reload would add a socket and its
    ~94 KB datagram buffer each time)."""
    pcap = write_flows_pcap(tmp_path / "flows.pcap", 1000)
    prefix = unique_prefix("reloads")
    ports = [collectors.free_udp_port() for _ in range(2)]
    sinks = [collectors.UdpTap(port=p) for p in ports]
    try:
        cfg = probe_config(tmp_path, prefix, pcap, [f"127.0.0.1:{ports[0]}"], active=60)
        with RunningCli(cfg, sock_of(tmp_path, prefix)) as dp:
            pid = dp.proc.pid
            samples = []
            for i in range(1, 21):
                probe_config(tmp_path, prefix, pcap, [f"127.0.0.1:{ports[i % 2]}"],
                             active=60 + i)
                applied = request(dp.socket, "reload")["applied"]
                assert applied == ["pipeline[0] timeouts", "pipeline[0].export"], applied
                t0 = tx(dp.socket)
                wait_for("forwarding", lambda: tx(dp.socket) > t0)
                samples.append(proc_resources(pid))
            assert nf_info(dp.socket)["active_timeout"] == 80
            assert dp.stop() == 0, dp.stderr
            out = dp.result
    finally:
        for s in sinks:
            s.close()
    print("fds, RSS kB after each reload:", samples)
    fds = [s[0] for s in samples]
    rss = [s[1] for s in samples]
    # After the first few (lazy imports, thread pool, allocator arenas) the
    # counts are flat: compare the last reload with the fifth.
    assert max(fds[4:]) - fds[4] <= 2, fds
    assert rss[-1] - rss[4] < 1024, rss
    assert out["totals"]["dropped"] == 0
    export = out["netflow"][0]["export"]
    assert export["collectors"][0]["errors"] == 0


# ---- 3. SIGKILL under load, then a restart on the same config ----------------------

class CliProc:
    """`dataplane run CONFIG --json`, output to files (a full pipe never
    stalls it); started() waits until ITS control socket answers (a stale
    socket file from a killed run may already be there)."""

    def __init__(self, tmp_path: Path, cfg: Path, sock: Path, tag: str, wrap: tuple = ()):
        """wrap: a command that execs the rest (`ip netns exec NS`): same pid."""
        self.sock = sock
        self.out_path, self.err_path = tmp_path / f"{tag}.stdout", tmp_path / f"{tag}.stderr"
        with open(self.out_path, "w") as out, open(self.err_path, "w") as err:
            self.proc = subprocess.Popen([*wrap, sys.executable, "-m", "dataplane", "run", str(cfg),
                                          "--json"], stdout=out, stderr=err, stdin=subprocess.DEVNULL)

    def started(self) -> "CliProc":
        def answers():
            if self.proc.poll() is not None:
                pytest.fail(f"dataplane exited with {self.proc.returncode}: {self.stderr()}")
            try:
                return request(self.sock, "status", timeout=2)["pid"] == self.proc.pid
            except OSError:
                return False
        wait_for("control socket answering", answers)
        return self

    def stderr(self) -> str:
        return self.err_path.read_text(errors="replace")

    def stop(self, sig: int = signal.SIGTERM) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            return self.proc.wait(HANG_GUARD_S)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            pytest.fail(f"hang guard: no exit after signal {sig}: {self.stderr()}")

    def result(self) -> dict:
        return json.loads(self.out_path.read_text())

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def test_sigkill_under_load_then_restart_forwards(tmp_path):
    """SIGKILL while forwarding and exporting leaves a stale control socket and
    a stale DPDK runtime dir (its lock held by nobody); the same config then
    starts again, takes both over, forwards and exports, and stops clean."""
    pcap = write_flows_pcap(tmp_path / "flows.pcap", 2000)
    prefix = unique_prefix("sigkill")
    sock = sock_of(tmp_path, prefix)
    with collectors.UdpTap() as tap:
        cfg = probe_config(tmp_path, prefix, pcap, [f"127.0.0.1:{tap.port}"])
        first = CliProc(tmp_path, cfg, sock, "first").started()
        try:
            wait_for("exporting", lambda: tap.received > 0)
            t0 = tx(sock)
            wait_for("forwarding", lambda: tx(sock) > t0)
        finally:
            first.kill()
        assert first.proc.returncode == -signal.SIGKILL
        # What a crash leaves: the scenario under test is real.
        assert sock.is_socket(), "no stale control socket to take over"
        assert (DPDK_RUN / prefix / "config").exists(), "no stale DPDK runtime dir"
        seen_before = tap.received

        second = CliProc(tmp_path, cfg, sock, "second")
        try:
            second.started()
            t0 = tx(sock)
            wait_for("forwarding after restart", lambda: tx(sock) > t0)
            wait_for("exporting after restart", lambda: tap.received > seen_before)
        finally:
            rc = second.stop()
        assert rc == 0, second.stderr()
        tap.wait_quiet()
    out = second.result()
    assert out["totals"]["tx"] > 0 and out["totals"]["dropped"] == 0
    nf = out["netflow"][0]
    assert nf["exported"] == nf["flows_created"] and nf["export"]["collectors"][0]["errors"] == 0
    # The restarted exporter starts a new sequence at 0 (a collector sees a
    # new stream, not a gap); within it nothing is missing.
    restarted = [dg for dg in tap.datagrams if dg.sequence == 0]
    assert len(restarted) == 2, "expected two streams starting at sequence 0"
    assert runtime_leftovers(tmp_path, prefix) == []


# ---- 4. collector down and up under load ---------------------------------------------

def _multiset(recs) -> dict:
    from collections import Counter
    return Counter((str(r["src"]), str(r["dst"]), r["sport"], r["dport"], r["proto"], r["tos"],
                    r["packets"], r["bytes"]) if isinstance(r, dict) else
                   (str(r.src), str(r.dst), r.sport, r.dport, r.proto, r.tos, r.packets, r.bytes)
                   for r in recs)


@pytest.mark.skipif(not collectors.available(), reason="nfdump not installed")
def test_collector_down_and_up_under_load(tmp_path):
    """nfcapd stopped, then started again on the same port, while traffic and
    export run. A second collector (UdpTap, always up) receives the whole v5
    stream. Checked, by count:

    - forwarding never stops: the forwarded-packet counter grows between every
      two samples taken across the outage, nothing is dropped;
    - the exporter's sequence numbers advance through the outage: the tap's
      stream has no gap, and it holds every flow exported;
    - what nfcapd misses is exactly one contiguous run of datagrams: its
      first life has the records of the stream's first k datagrams, its
      second life those from datagram j on (as multisets), so the gap it
      would see spans exactly the missing records;
    - the send errors (ECONNREFUSED) are counted, at most one per missing
      datagram (Linux reports the ICMP port unreachable a datagram provokes
      on the next send, which it then does not send: the missing datagrams
      are the refused ones plus those that provoked the refusals, so the
      count cannot be exact from send() alone)."""
    pcap = write_flows_pcap(tmp_path / "flows.pcap", 2000)
    prefix = unique_prefix("collector")
    port = collectors.free_udp_port()
    sock = sock_of(tmp_path, prefix)
    samples = []
    with collectors.UdpTap() as tap:
        cfg = probe_config(tmp_path, prefix, pcap, [f"127.0.0.1:{port}", f"127.0.0.1:{tap.port}"])
        first = collectors.Nfcapd(tmp_path / "nfcapd-1", port=port).start()
        dp = CliProc(tmp_path, cfg, sock, "dp")
        try:
            dp.started()
            errors = lambda: nf_info(sock)["export"]["collectors"][0]["errors"]  # noqa: E731
            wait_for("exporting", lambda: tap.received >= 50)
            samples.append(tx(sock))
            first.stop()                                    # the collector goes away
            samples.append(tx(sock))
            wait_for("send errors counted", lambda: errors() >= 5)
            samples.append(tx(sock))
            down_at = tap.received
            wait_for("more export while down", lambda: tap.received >= down_at + 20)
            samples.append(tx(sock))
            second = collectors.Nfcapd(tmp_path / "nfcapd-2", port=port).start()  # back
            samples.append(tx(sock))
            errors_up = errors()
            up_at = tap.received
            wait_for("export to the new collector", lambda: tap.received >= up_at + 50)
            samples.append(tx(sock))
            # At most one more: the refusal a datagram sent just before nfcapd
            # bound provoked is reported by the next send, after it is back.
            assert errors() <= errors_up + 1, "send errors while the collector was up"
            rc = dp.stop()
        finally:
            dp.kill()
        assert rc == 0, dp.stderr()
        tap.wait_quiet()
        second.drain()
        second.stop()
    out = dp.result()
    assert all(b > a for a, b in zip(samples, samples[1:])), f"forwarding stalled: {samples}"
    assert out["totals"]["dropped"] == 0 and out["totals"]["rx"] == out["totals"]["tx"]

    nf = out["netflow"][0]
    exp_nfcapd, exp_tap = nf["export"]["collectors"]
    assert exp_tap["errors"] == 0 and nf["export"]["lost_records"] == 0
    assert nf["exported"] == nf["flows_created"]
    # The tap: every flow exported, sequence numbers contiguous.
    assert tap.errors == [] and tap.checker.gaps == []
    assert len(tap.records) == nf["exported"]
    dgs = tap.datagrams
    assert len(dgs) == nf["export"]["datagrams"]

    # nfcapd: a prefix and a suffix of that stream, nothing else.
    life1, life2 = first.records(), second.records()
    n1, n2 = len(life1), len(life2)
    prefix_sums = [0]
    for dg in dgs:
        prefix_sums.append(prefix_sums[-1] + dg.count)
    assert n1 in prefix_sums and (prefix_sums[-1] - n2) in prefix_sums, (n1, n2, prefix_sums[-1])
    k = prefix_sums.index(n1)
    j = prefix_sums.index(prefix_sums[-1] - n2)
    assert _multiset(life1) == _multiset(r for dg in dgs[:k] for r in dg.records)
    assert _multiset(life2) == _multiset(r for dg in dgs[j:] for r in dg.records)
    missing_dgs = j - k
    missing_records = nf["exported"] - n1 - n2
    assert missing_records == prefix_sums[j] - prefix_sums[k] > 0
    # The gap is in the sequence numbers: datagram j says what came before it.
    assert dgs[j].sequence - dgs[k].sequence == missing_records
    assert first.stats()["sequence_failures"] == 0 and second.stats()["sequence_failures"] == 0
    assert 1 <= exp_nfcapd["errors"] <= missing_dgs, (exp_nfcapd, missing_dgs)
    assert exp_nfcapd["errors"] <= exp_nfcapd["error_records"] <= missing_records
    assert exp_nfcapd["datagrams"] + exp_nfcapd["errors"] == len(dgs)
    assert exp_nfcapd["last_error"] == "ECONNREFUSED"
    gap_us = out["totals"]["max_gap_us"]
    print(f"outage: {missing_dgs} datagrams / {missing_records} flows missing at nfcapd, "
          f"{exp_nfcapd['errors']} send errors counted; {n1} + {n2} flows received; "
          f"tx samples {samples}; worker max_gap_us {gap_us:.0f}")


# ---- 5. as an unprivileged user -----------------------------------------------------

NOBODY = "nobody"


def _editable_ninja() -> Path | None:
    """The ninja the package's editable loader runs on import (its path is
    fixed at install time), if the package is an editable install."""
    for d in site.getsitepackages():
        for loader in Path(d).glob("_dataplane_editable_loader.py"):
            m = re.search(r"\['(/[^']*ninja[^']*)'\]", loader.read_text())
            if m:
                return Path(m.group(1))
    return None


def _as_user_command(base: Path, uid: int, gid: int, xdg: Path, argv: list[str]) -> list[str]:
    """argv run as uid:gid in a private mount namespace, where /root (0700
    here, and this Python lives under it) is replaced by a 0755 tmpfs holding
    only bind mounts of what the child runs (the Python install, the editable
    loader's ninja): the user gets those, nothing else of root's. MESONPY_EDITABLE_VERBOSE: the editable loader
    then only dry-runs ninja instead of writing a build log into root's
    build dir (the parent has already built the package)."""
    prefix_dir = Path(sys.base_prefix)
    script = ""
    hidden = next((p for p in reversed(prefix_dir.parents)
                   if p != Path("/") and not os.stat(p).st_mode & 0o001), None)
    if hidden is not None:  # e.g. /root/.pyenv/versions/X under a 0700 /root
        # What the child needs from under it: the interpreter, and the ninja
        # the editable loader runs (a pyenv shim needs all of pyenv's tree).
        needed = [prefix_dir] + [p for p in (_editable_ninja(),) if p is not None]
        tops = sorted({hidden / p.relative_to(hidden).parts[0] for p in needed if hidden in p.parents})
        for i, top in enumerate(tops):
            hold = base / f"hold-{i}"
            hold.mkdir(exist_ok=True)
            script += f"mount --bind {top} {hold} && "
        script += f"mount -t tmpfs -o mode=0755 tmpfs {hidden} && "
        for i, top in enumerate(tops):
            script += f"mkdir -p {top} && mount --bind {base / f'hold-{i}'} {top} && "
    env = (f"env -i PATH=/usr/bin:/bin HOME={base} XDG_RUNTIME_DIR={xdg} "
           f"MESONPY_EDITABLE_VERBOSE=1")
    inner = " ".join(map(str, argv))
    return ["unshare", "-m", "--propagation", "private", "sh", "-c",
            f"{script}exec setpriv --reuid={uid} --regid={gid} --clear-groups {env} {inner}"]


def _owned_by(uid: int, roots: list[Path]) -> list[str]:
    found = []
    for root in roots:
        if not root.exists():
            continue
        r = subprocess.run(["find", str(root), "-xdev", "-uid", str(uid)], capture_output=True,
                           text=True)
        found += r.stdout.split()
    return found


@pytest.fixture
def reachable_dir():
    """A directory under /tmp every user can reach. Not pytest's: its base
    temp is 0700, and any pytest session started meanwhile makes its root
    0700 again, under a running test."""
    d = Path(tempfile.mkdtemp(prefix="dp-nonroot-"))
    d.chmod(0o755)
    yield d
    shutil.rmtree(d, ignore_errors=True)


@pytest.mark.skipif(os.geteuid() != 0, reason="switching to an unprivileged user needs root")
def test_runs_as_unprivileged_user_with_files_only_in_its_runtime_dir(reachable_dir):
    """`dataplane run` as `nobody` on virtual devices (pcap in, netflow,
    export, control socket): it forwards and exports, its control socket is
    under $XDG_RUNTIME_DIR (0600, its own), DPDK's runtime files went to
    $XDG_RUNTIME_DIR/dpdk/<prefix> and are gone after a SIGTERM, and nothing
    it owns is left under /var/run/dpdk, /run, /tmp, /dev/shm."""
    for tool in ("unshare", "setpriv", "find"):
        if subprocess.run(["which", tool], capture_output=True).returncode:
            pytest.skip(f"{tool} not installed")
    try:
        pw = pwd.getpwnam(NOBODY)
    except KeyError:
        pytest.skip("no user 'nobody' on this host")
    uid, gid = pw.pw_uid, pw.pw_gid
    base = reachable_dir
    xdg = base / "xdg"
    xdg.mkdir(mode=0o700)
    os.chown(xdg, uid, gid)
    pcap = write_flows_pcap(base / "flows.pcap", 500)
    os.chmod(pcap, 0o644)
    prefix = unique_prefix("nonroot")
    with collectors.UdpTap() as tap:
        cfg = probe_config(base, prefix, pcap, [f"127.0.0.1:{tap.port}"])
        # no runtime_dir key: the default for a user, $XDG_RUNTIME_DIR/dataplane
        cfg.write_text(cfg.read_text().replace(f'runtime_dir = "{base / "run"}"\n', ""))
        os.chmod(cfg, 0o644)
        sock = xdg / "dataplane" / f"{prefix}.sock"
        out_path, err_path = base / "dp.stdout", base / "dp.stderr"
        argv = [sys.executable, "-m", "dataplane", "run", str(cfg), "--json"]
        with open(out_path, "w") as out, open(err_path, "w") as err:
            proc = subprocess.Popen(_as_user_command(base, uid, gid, xdg, argv), stdout=out,
                                    stderr=err, stdin=subprocess.DEVNULL)
        try:
            def answers():
                if proc.poll() is not None:
                    pytest.fail(f"exited {proc.returncode}: {err_path.read_text()}")
                try:
                    return request(sock, "status", timeout=2)
                except OSError:
                    return None
            status = wait_for("control socket answering", answers)
            assert status["pid"] == proc.pid  # unshare and sh exec'd into it
            st = sock.stat()
            assert (st.st_uid, st.st_mode & 0o777) == (uid, 0o600)
            dpdk_dir = xdg / "dpdk" / prefix
            assert (dpdk_dir / "config").exists() and dpdk_dir.stat().st_uid == uid
            assert not (DPDK_RUN / prefix).exists()
            t0 = tx(sock)
            wait_for("forwarding", lambda: tx(sock) > t0)
            wait_for("exporting", lambda: tap.received > 0)
            proc.send_signal(signal.SIGTERM)
            rc = proc.wait(HANG_GUARD_S)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        assert rc == 0, err_path.read_text()
        tap.wait_quiet()
    res = json.loads(out_path.read_text())
    nf = res["netflow"][0]
    assert res["totals"]["tx"] > 0 and nf["exported"] == nf["flows_created"] == len(tap.records)
    # What it leaves: only its own (empty) control runtime dir, under XDG.
    assert sorted(str(p.relative_to(xdg)) for p in xdg.rglob("*")) == ["dataplane"]
    elsewhere = _owned_by(uid, [Path("/var/run/dpdk"), Path("/run"), Path("/dev/shm"),
                                Path("/tmp/dpdk"), Path("/tmp/dataplane-%d" % uid)])
    assert elsewhere == [], elsewhere
