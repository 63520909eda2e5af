"""Mbuf pool exhaustion: the receive side counts what it cannot take, the
dataplane keeps running, and it recovers when the buffers come back.

A small pool (1023 mbufs, no per-lcore cache, so a test thread can reach every
free mbuf) feeds one worker: [netflow, xconnect in -> out], `in` a net_pcap
port reading a file of N packets once, `out` a net_null sink. The test takes
every free mbuf out of the pool (dp_pool_hold: a fault-injection call), then
restarts `in` on the worker's thread (a pcap port re-reads its file from the
start). net_pcap reads each packet and finds no mbuf for it: it counts
rx_nombuf (rte_eth_stats, our port counters' `eth`) and loses the packet.
Meanwhile the worker keeps looping, control still answers and an injection
fails cleanly. Once the mbufs are given back and the file re-read, every
packet flows again and the pool's free count is back where it started.
"""
from __future__ import annotations

import functools
import struct

import pytest

from dataplane import config, native
from tests.helpers import conserved, port, running, vdev_toml, wait_for

pytestmark = [pytest.mark.eal, pytest.mark.timeout(90)]

N = 3000
POOL = 1023


def frame(i: int) -> bytes:
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 46, 0, 0, 64, 17, 0,
                     struct.pack("!I", 0x0A000000 + i % 500), bytes([192, 0, 2, 1]))
    udp = struct.pack("!HHHH", 1000 + i % 7, 53, 26, 0)
    return bytes.fromhex("020000000002020000000001") + b"\x08\x00" + ip + udp + b"y" * 18


def write_pcap(path, n: int) -> None:
    with open(path, "wb") as f:
        f.write(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1))
        for i in range(n):
            fr = frame(i)
            f.write(struct.pack("<IIII", 0, i, len(fr), len(fr)) + fr)


wait_for = functools.partial(wait_for, timeout=20.0)  # a hang guard, not a timing


def restart_port(dp, name: str) -> None:
    """Stop and start a port on the worker's thread, between two bursts (a
    pcap port reopens its file: every packet is read again)."""
    pid = dp.port(name).port_id

    def fn(w):
        native.port_stop(pid)
        native.port_start(pid)
    dp.on_all_workers(fn)


def test_pool_exhaustion_counts_misses_keeps_running_and_recovers(file_prefix, tmp_path):
    pcap = tmp_path / "in.pcap"
    write_pcap(pcap, N)
    text = (vdev_toml(file_prefix).replace("mbufs = 8191", f"mbufs = {POOL}")
            .replace("cache = 64", "cache = 0") +
            port("in", f"net_pcap0,rx_pcap={pcap}") + port("out", "net_null0,no-rx=1", poll=False) +
            '[[pipeline]]\nstage = "netflow"\nactive_timeout = 3600\ninactive_timeout = 3600\n'
            '[[pipeline]]\nstage = "xconnect"\nmap = { in = "out" }\n')
    cfg = config.loads(text, "<test>", check_drivers=False)
    with running(cfg) as dp:
        pool = dp.pools[0]
        eth = lambda: dp.snapshot().ports["in"]["eth"]  # noqa: E731
        # 1. the file once, normally
        assert wait_for(lambda: dp.snapshot().totals["tx"] == N), dp.snapshot().totals
        assert dp.wait_idle(settle=0.1)
        avail0, in_use0, size = native.pool_counts(pool)
        assert size == POOL and avail0 == POOL and in_use0 == 0
        assert eth()["rx_nombuf"] == 0 and eth()["ipackets"] == N

        # 2. every free mbuf taken; the file again
        hold = native.pool_hold(pool, POOL + 10)
        assert hold.count == avail0
        assert native.pool_counts(pool)[0] == 0
        loops0 = dp.snapshot().workers[0]["loops"]
        restart_port(dp, "in")
        assert wait_for(lambda: eth()["rx_nombuf"] == N), eth()
        snap = dp.snapshot()
        assert snap.ports["in"]["eth"]["ipackets"] == N        # nothing received
        assert snap.totals["rx"] == N and snap.totals["tx"] == N
        # the worker still loops, control still answers, an injection fails cleanly
        assert wait_for(lambda: dp.snapshot().workers[0]["loops"] > loops0 + 1000)
        assert dp.netflow[0].info()["packets"] == N
        with pytest.raises(native.DataplaneError, match="mbuf pool empty"):
            dp.inject("out", frame(0))

        # 3. the mbufs back; the file again: everything flows
        assert hold.release() == avail0
        assert native.pool_counts(pool)[0] == avail0
        restart_port(dp, "in")
        assert wait_for(lambda: dp.snapshot().totals["tx"] == 2 * N), dp.snapshot().totals
        assert dp.wait_idle(settle=0.1)
        snap = dp.snapshot()
        assert snap.ports["in"]["eth"]["ipackets"] == 2 * N
        assert snap.ports["in"]["eth"]["rx_nombuf"] == N          # no new misses
        assert snap.ports["out"]["tx"] == 2 * N
        assert snap.totals["dropped"] == 0 and conserved(snap)
        assert native.pool_counts(pool)[:2] == (avail0, in_use0)
        info = dp.netflow[0].info()
        assert info["packets"] == 2 * N and info["flows_created"] == N   # (i % 500, i % 7): N keys
