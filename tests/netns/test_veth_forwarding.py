"""Network-namespace tier: real traffic between two "hosts" through the dataplane.

Topology (built per test, removed afterwards even on failure)::

    ns dpt-a-<id>                root namespace                  ns dpt-b-<id>
    va<id> 10.77.0.1  <-veth->  da<id> ==[dataplane]== db<id>  <-veth->  vb<id> 10.77.0.2
           fd00:77::1           net_af_packet0   net_af_packet1           fd00:77::2

The dataplane runs as `python3 -m dataplane run CONFIG --duration D --json` in a
subprocess with an ``xconnect`` stage {a="b", b="a"}: an L2 wire between the
two root-side veths. ARP, neighbour discovery, ICMP and UDP all have to cross
it; the root-side veths carry no IP configuration (IPv6 is disabled on them)
so the only packets on them are the namespaces' and the dataplane's (the
topology and process helpers are tests/netns/topology.py).
"""
from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from tests.helpers import kill_proc, sh, vdev_toml
from tests.netns.topology import (
    DPDK_RUN_ROOT,
    DataplaneProc,
    Host,
    Topo,
    assert_no_loss,
    assert_runtime_dir_gone,
    ping,
    veth_topology,
)

pytestmark = [pytest.mark.netns]

N_STREAM = 2000
UDP_PORT = 9999
READY_TIMEOUT_S = 20.0   # process start + EAL init + first ping crossing the wire


# ---- topology -------------------------------------------------------------------

@pytest.fixture
def topo():
    with veth_topology(Host("10.77.0.1/24", "fd00:77::1/64"),
                       Host("10.77.0.2/24", "fd00:77::2/64")) as t:
        yield t


# ---- the dataplane process ----------------------------------------------------------

def write_config(tmp_path: Path, topo: Topo, file_prefix: str) -> Path:
    path = tmp_path / "netns.toml"
    path.write_text(vdev_toml(file_prefix) + textwrap.dedent(f"""
        [[ports]]
        name = "a"
        device = "net_af_packet0,iface={topo.da}"

        [[ports]]
        name = "b"
        device = "net_af_packet1,iface={topo.db}"

        [[pipeline]]
        stage = "xconnect"
        map = {{ a = "b", b = "a" }}
        """))
    return path


@pytest.fixture
def dataplane(tmp_path, topo, file_prefix):
    """Factory: start the dataplane on the topology; killed and cleaned up after."""
    procs: list[DataplaneProc] = []

    def start(duration: float = 90.0) -> DataplaneProc:
        p = DataplaneProc(tmp_path, write_config(tmp_path, topo, file_prefix), duration)
        procs.append(p)
        return p

    yield start
    for p in procs:
        p.kill()
    # Only after a crash/kill; the tests assert the clean exit removed it.
    shutil.rmtree(DPDK_RUN_ROOT / file_prefix, ignore_errors=True)


def wait_forwarding(dp: DataplaneProc, topo: Topo, timeout: float = READY_TIMEOUT_S) -> float:
    """Ping A -> B once a time until the dataplane carries it; seconds waited."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        dp.check_alive()
        if ping(topo, topo.ip_b, 1, timeout=5).returncode == 0:
            return time.monotonic() - dp.started
        time.sleep(0.1)
    pytest.fail(f"no ping crossed the dataplane within {timeout:.0f} s\nstderr:\n{dp.stderr()}")


# ---- traffic helpers (run inside the namespaces) ---------------------------------

RECEIVER = r'''
import json, socket, sys, time
bind_ip, port, n, out, ready = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], sys.argv[5]
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
# 8 MB so the receiver's own socket can never be where packets drop (as root:
# FORCE ignores the namespace's rmem_max). Loss left over is on the wire.
s.setsockopt(socket.SOL_SOCKET, getattr(socket, "SO_RCVBUFFORCE", 33), 8 << 20)
s.bind((bind_ip, port))
open(ready, "w").write("ready")
seqs, count, bad = set(), 0, 0
s.settimeout(60.0)           # before the first datagram: wait for the sender
while len(seqs) < n:
    try:
        data = s.recv(2048)
    except socket.timeout:
        break                 # 2 s with nothing: the stream is over
    s.settimeout(2.0)
    count += 1
    if data[:4] == b"SEQ:" and data[4:12].isdigit():
        seqs.add(int(data[4:12]))
    else:
        bad += 1
json.dump({"count": count, "bad": bad, "seqs": sorted(seqs)}, open(out + ".tmp", "w"))
import os; os.rename(out + ".tmp", out)
'''

SENDER = r'''
import sys, time
from scapy.all import Ether, IP, UDP, Raw, sendp, conf
conf.verb = 0
iface, src_mac, dst_mac, src_ip, dst_ip, dport, n, inter = sys.argv[1:9]
n, dport, inter = int(n), int(dport), float(inter)
base = Ether(src=src_mac, dst=dst_mac) / IP(src=src_ip, dst=dst_ip) / UDP(sport=40000, dport=dport)
if n > 0:
    pkts = [base / Raw(b"SEQ:%08d:" % i + b"x" * 50) for i in range(n)]
    t0 = time.monotonic()
    sendp(pkts, iface=iface, inter=inter, verbose=False)
    print("sent %d in %.3f s" % (n, time.monotonic() - t0), flush=True)
else:                          # flood until killed
    sendp(base / Raw(b"FLOOD" + b"x" * 50), iface=iface, loop=1, inter=inter, verbose=False)
'''


def write_scripts(tmp_path: Path) -> tuple[Path, Path]:
    rx, tx = tmp_path / "udp_receiver.py", tmp_path / "udp_sender.py"
    rx.write_text(RECEIVER)
    tx.write_text(SENDER)
    return rx, tx


def sender_args(topo: Topo, script: Path, n: int, inter: float = 0.0) -> list[str]:
    return topo.in_a(sys.executable, str(script), topo.va, topo.mac(topo.ns_a, topo.va),
                     topo.mac(topo.ns_b, topo.vb), topo.ip_a, topo.ip_b, str(UDP_PORT),
                     str(n), str(inter))


# ---- tests --------------------------------------------------------------------------

@pytest.mark.timeout(120)
def test_ping_ping6_and_counted_udp_stream(tmp_path, topo, dataplane, file_prefix):
    dp = dataplane(duration=90.0)   # stopped with SIGINT long before it expires
    up = wait_forwarding(dp, topo)
    print(f"\n[netns] first ping crossed {up:.2f} s after the dataplane started")

    # 1. ICMP both ways, ARP and ND resolved across the dataplane.
    rtt4 = assert_no_loss(ping(topo, topo.ip_b, 20), 20, "ping 10.77.0.2")
    rtt6 = assert_no_loss(ping(topo, topo.ip6_b, 20, v6=True), 20, "ping -6 fd00:77::2")
    print(f"[netns] ping rtt avg through the dataplane: IPv4 {rtt4} ms, IPv6 {rtt6} ms")

    # 2. Exactly N UDP datagrams A -> B, each with a sequence number.
    rx_script, tx_script = write_scripts(tmp_path)
    result, ready = tmp_path / "received.json", tmp_path / "receiver.ready"
    receiver = subprocess.Popen(
        topo.in_b(sys.executable, str(rx_script), topo.ip_b, str(UDP_PORT), str(N_STREAM),
                  str(result), str(ready)),
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 15
        while not ready.exists():
            assert receiver.poll() is None, f"receiver died: {receiver.communicate()[0]}"
            assert time.monotonic() < deadline, "receiver never bound its socket"
            time.sleep(0.05)
        # Unpaced: veth + af_packet + one polling worker keep up with scapy's
        # sendp rate, so the stream is expected to be lossless as is.
        sent = sh(*sender_args(topo, tx_script, N_STREAM), timeout=60)
        print(f"[netns] scapy: {sent.stdout.strip()}")
        out, _ = receiver.communicate(timeout=30)
        assert receiver.returncode == 0, f"receiver failed:\n{out}"
    finally:
        kill_proc(receiver)
    got = json.loads(result.read_text())
    missing = sorted(set(range(N_STREAM)) - set(got["seqs"]))
    assert got["bad"] == 0, got
    assert not missing, (f"{len(missing)} of {N_STREAM} datagrams lost "
                         f"(first missing: {missing[:20]}); received {got['count']}")
    assert len(got["seqs"]) == N_STREAM and got["count"] == N_STREAM, \
        f"duplicates or extra datagrams: count={got['count']} distinct={len(got['seqs'])}"

    # 3. Stop early with SIGINT: clean exit, counters account for the stream.
    time.sleep(0.5)   # let the last poll and snapshot (every 0.25 s) settle
    rc, stop_s = dp.stop(signal.SIGINT)
    print(f"[netns] SIGINT -> exit {rc} in {stop_s:.2f} s")
    assert rc == 0, f"exit code {rc}\nstderr:\n{dp.stderr()}"
    res = dp.result()
    ports, totals = res["ports"], res["totals"]
    print(f"[netns] totals {json.dumps({k: v for k, v in totals.items() if k != 'drops'})}")
    assert res["signals"] == [signal.SIGINT], res["signals"]
    assert ports["a"]["rx"] >= N_STREAM, ports["a"]
    assert ports["b"]["tx"] >= N_STREAM, ports["b"]
    assert ports["a"]["eth"]["ipackets"] >= N_STREAM, ports["a"]["eth"]
    assert ports["b"]["eth"]["opackets"] >= N_STREAM, ports["b"]["eth"]
    # Replies (ICMP, ARP, NA) went the other way.
    assert ports["b"]["rx"] >= 40 and ports["a"]["tx"] >= 40, (ports["a"], ports["b"])
    assert totals["rx"] + totals["injected"] == \
        totals["tx"] + totals["dropped"] + totals["punted"], totals

    # 4. EAL's runtime files removed on exit.
    assert_runtime_dir_gone(file_prefix)


@pytest.mark.timeout(120)
def test_sigterm_under_flood_exits_cleanly(tmp_path, topo, dataplane, file_prefix):
    dp = dataplane(duration=90.0)
    wait_forwarding(dp, topo)
    _, tx_script = write_scripts(tmp_path)
    floods = [
        subprocess.Popen(topo.in_a("ping", "-f", "-q", "-n", topo.ip_b),
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True),
        subprocess.Popen(sender_args(topo, tx_script, 0),
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True),
    ]
    try:
        time.sleep(3.0)   # scapy takes ~1 s to import; then both floods run
        for f in floods:
            assert f.poll() is None, f"flood exited early: {f.communicate()[0]}"
        rc, stop_s = dp.stop(signal.SIGTERM)
    finally:
        for f in floods:
            kill_proc(f)
    print(f"\n[netns] SIGTERM under flood -> exit {rc} in {stop_s:.2f} s")
    assert rc == 0, f"exit code {rc}\nstderr:\n{dp.stderr()}"
    res = dp.result()   # fails the test unless stdout is valid JSON
    totals = res["totals"]
    print(f"[netns] totals {json.dumps({k: v for k, v in totals.items() if k != 'drops'})}")
    assert res["signals"] == [signal.SIGTERM], res["signals"]
    # Traffic was really flowing when the signal landed, and the final counters
    # (read after the workers left their loops) still conserve every packet.
    assert res["ports"]["a"]["rx"] > 1000 and res["ports"]["b"]["tx"] > 1000, res["ports"]
    assert totals["rx"] + totals["injected"] == \
        totals["tx"] + totals["dropped"] + totals["punted"], totals
    assert_runtime_dir_gone(file_prefix)
