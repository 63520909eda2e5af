"""Exporter send failures other than ECONNREFUSED, in network namespaces.

    ns dpt-fx-<id> (the dataplane)                ns dpt-fc-<id> (the collector)
    ex<id> 10.98.0.1/30  <------ veth ------>  ec<id> 10.98.0.2/30, UDP 2055
    tc tbf 1 Mbit/s on ex<id>

The dataplane (pcap replayed forever, netflow, xconnect to net_null) runs in
the first namespace and exports NetFlow v5 across the veth to a raw datagram
recorder in the second. A token bucket slower than the export holds
datagrams in the qdisc; each holds its socket's send buffer until it leaves,
so once the buffer is full the non-blocking send() fails with EAGAIN. The
bucket's queue (4 MB) is larger than any send buffer, so nothing is dropped
silently in the qdisc: every datagram is either refused by send() (and
counted) or delivered.
"""
from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
import uuid
from pathlib import Path

import pytest

from dataplane.control import request
from tests import nfdecode
from tests.conftest import unique_prefix
from tests.e2e.test_faults import CliProc, probe_config, runtime_leftovers, tx, wait_for, write_flows_pcap
from tests.helpers import sh

pytestmark = [pytest.mark.netns, pytest.mark.timeout(180)]
PORT = 2055

RECORDER = textwrap.dedent("""
    import signal, socket, struct, sys
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setsockopt(socket.SOL_SOCKET, 33, 32 << 20)   # SO_RCVBUFFORCE
    s.bind((sys.argv[1], int(sys.argv[2])))
    out = open(sys.argv[3], "wb", buffering=0)
    signal.signal(signal.SIGTERM, lambda *a: sys.exit(0))
    while True:
        d = s.recv(65535)
        out.write(struct.pack("!I", len(d)) + d)
""")


def read_datagrams(path: Path) -> list[bytes]:
    data, out, off = path.read_bytes(), [], 0
    while off + 4 <= len(data):
        n = int.from_bytes(data[off:off + 4], "big")
        out.append(data[off + 4:off + 4 + n])
        off += 4 + n
    return out


@pytest.fixture
def export_link():
    uid = uuid.uuid4().hex[:6]
    nsx, nsc, ex, ec = f"dpt-fx-{uid}", f"dpt-fc-{uid}", f"ex{uid}", f"ec{uid}"
    try:
        for ns in (nsx, nsc):
            sh("ip", "netns", "add", ns)
            sh("ip", "-n", ns, "link", "set", "lo", "up")
        sh("ip", "-n", nsx, "link", "add", ex, "type", "veth", "peer", "name", ec, "netns", nsc)
        sh("ip", "-n", nsx, "addr", "add", "10.98.0.1/30", "dev", ex)
        sh("ip", "-n", nsc, "addr", "add", "10.98.0.2/30", "dev", ec)
        sh("ip", "-n", nsx, "link", "set", ex, "up")
        sh("ip", "-n", nsc, "link", "set", ec, "up")
        yield nsx, nsc, ex
    finally:
        for ns in (nsx, nsc):
            sh("ip", "netns", "del", ns, check=False)


def test_eagain_from_a_slow_export_path_is_counted_and_does_not_stall(tmp_path, export_link):
    """EAGAIN on the export socket: counted per datagram and per record, the
    sequence numbers advance over what was refused (the collector sees the gap:
    missing records by sequence == records the exporter counted as failed,
    exactly), and forwarding goes on (the forwarded count grows between every
    two samples while sends fail; nothing dropped)."""
    nsx, nsc, ex = export_link
    rec_file = tmp_path / "datagrams.bin"
    recorder = subprocess.Popen(["ip", "netns", "exec", nsc, sys.executable, "-c", RECORDER,
                                 "10.98.0.2", str(PORT), str(rec_file)],
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    wait_for("recorder bound", lambda: f":{PORT}" in sh("ip", "netns", "exec", nsc, "ss", "-Hlun").stdout)
    pcap = write_flows_pcap(tmp_path / "flows.pcap", 8000)
    prefix = unique_prefix("eagain")
    cfg = probe_config(tmp_path, prefix, pcap, [f"10.98.0.2:{PORT}"],
                       extra="[mempool]\nmbufs = 32767\n")
    sock = tmp_path / "run" / f"{prefix}.sock"
    dp = CliProc(tmp_path, cfg, sock, "dp", wrap=("ip", "netns", "exec", nsx))
    samples = []
    try:
        dp.started()  # ip netns exec execs into python: same pid
        coll = lambda: request(sock, "netflow.info")["export"]["collectors"][0]  # noqa: E731
        wait_for("exporting", lambda: coll()["datagrams"] >= 100)
        assert coll()["errors"] == 0
        samples.append(tx(sock))
        sh("ip", "netns", "exec", nsx, "tc", "qdisc", "add", "dev", ex, "root", "tbf",
           "rate", "1mbit", "burst", "4kb", "limit", "4mb")
        samples.append(tx(sock))
        wait_for("EAGAIN counted", lambda: coll()["errors"] >= 10)
        samples.append(tx(sock))
        at = coll()["errors"]
        wait_for("more EAGAIN", lambda: coll()["errors"] >= at + 100)
        samples.append(tx(sock))
        rc = dp.stop()
        assert rc == 0, dp.stderr()
        # let the bucket empty fast (`change` keeps what it queued), then stop the recorder
        sh("ip", "netns", "exec", nsx, "tc", "qdisc", "change", "dev", ex, "root", "tbf",
           "rate", "10gbit", "burst", "1mb", "limit", "4mb")
        sizes = [-1]

        def unchanged() -> bool:
            sizes.append(rec_file.stat().st_size)
            return sizes[-1] == sizes[-2]
        wait_for("recorder quiet", unchanged, step=0.5)
    finally:
        dp.kill()
        recorder.send_signal(signal.SIGTERM)
        recorder.wait(10)
    out = dp.result()
    assert all(b > a for a, b in zip(samples, samples[1:])), f"forwarding stalled: {samples}"
    assert out["totals"]["dropped"] == 0 and out["totals"]["rx"] == out["totals"]["tx"]
    nf = out["netflow"][0]
    c = nf["export"]["collectors"][0]
    assert c["last_error"] == "EAGAIN"
    assert nf["exported"] == nf["flows_created"] and nf["export"]["lost_records"] == 0

    templates, checker = nfdecode.TemplateCache(), nfdecode.SequenceChecker()
    got = 0
    dgs = read_datagrams(rec_file)
    for d in dgs:
        dg = nfdecode.decode(d, templates, "dp")
        checker.feed(dg, "dp")
        got += len(dg.records)
    # Every datagram is delivered or counted, and the sequence says so.
    assert len(dgs) == c["datagrams"] and len(dgs) + c["errors"] == nf["export"]["datagrams"]
    assert got + c["error_records"] == nf["exported"]
    assert checker.backward == 0
    assert checker.missing_records == c["error_records"] - _tail_refused(dgs, nf, c)
    print(f"EAGAIN: {c['errors']} datagrams / {c['error_records']} records refused, "
          f"{len(dgs)} datagrams / {got} records delivered, {len(checker.gaps)} gaps seen "
          f"({checker.missing_records} records); tx samples {samples}; "
          f"worker max_gap_us {out['totals']['max_gap_us']:.0f}")
    assert runtime_leftovers(tmp_path, prefix) == []


def _tail_refused(dgs: list[bytes], nf: dict, c: dict) -> int:
    """Records refused after the last delivered datagram: no later datagram
    carries a sequence number that reveals them (a collector cannot see a gap
    at the very end of a stream). v5: next sequence = seq + count."""
    last = nfdecode.decode(dgs[-1], nfdecode.TemplateCache(), "dp")
    return nf["exported"] - (last.sequence + last.count)
