"""Flow-table flood in CI: bench/flood.py, short.

SOURCES distinct sources (packet i from 10.0.0.0+i, source port 1024 + i %
60000: every packet a new key) are read once by net_pcap into
[netflow (max_flows 4096, timeouts 3600 s: nothing expires by time),
xconnect -> net_null]. Checked:
  - forwarding never stops: every packet leaves, nothing is dropped;
  - created + alloc_failed == new keys offered; resident == max_flows;
    exported + resident == created before the stop, exported == created and
    nothing resident after its flush;
  - memory stays bounded: the cache never holds more than max_flows, its hash
    table keeps its size, and replaying the whole flood a second time (the
    cached 4096 keys hit, every other one fails to allocate, nothing is
    created) leaves the resident set where it was;
  - every mbuf is back in the pool.
"""
from __future__ import annotations

import functools
import re
import struct
from pathlib import Path

import pytest

from dataplane import native
from tests.helpers import conserved, port, running, vdev_config, wait_for

pytestmark = [pytest.mark.eal, pytest.mark.timeout(180)]

SOURCES = 200_000
MAX_FLOWS = 4096
RSS_SLACK_KIB = 8 * 1024    # a second flood may not grow the process by more


def write_flood(path: Path, n: int) -> None:
    head = bytes.fromhex("020000000002020000000001") + b"\x08\x00"
    rec = struct.Struct("<IIII")
    ip = struct.Struct("!BBHHHBBHII")
    udp = struct.Struct("!HHHH")
    with open(path, "wb") as f:
        f.write(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1))
        chunk = []
        for i in range(n):
            fr = (head + ip.pack(0x45, 0, 46, 0, 0, 64, 17, 0, 0x0A000000 + i, 0xC0000201) +
                  udp.pack(1024 + i % 60000, 53, 26, 0) + b"f" * 18)
            chunk.append(rec.pack(i // 1_000_000, i % 1_000_000, 60, 60) + fr)
            if len(chunk) == 65536:
                f.write(b"".join(chunk))
                chunk = []
        f.write(b"".join(chunk))


def rss_kib() -> int:
    return int(re.search(r"^VmRSS:\s+(\d+) kB", Path("/proc/self/status").read_text(), re.M).group(1))


wait_for = functools.partial(wait_for, timeout=60.0)  # a hang guard, not a timing


def test_flood_of_new_sources_against_a_small_cache(file_prefix, tmp_path):
    pcap = tmp_path / "flood.pcap"
    write_flood(pcap, SOURCES)
    body = (port("in", f"net_pcap0,rx_pcap={pcap}") + port("out", "net_null0,no-rx=1", poll=False) +
            f'[[pipeline]]\nstage = "netflow"\nmax_flows = {MAX_FLOWS}\n'
            'active_timeout = 3600\ninactive_timeout = 3600\n'
            '[[pipeline]]\nstage = "xconnect"\nmap = { in = "out" }\n')
    with running(vdev_config(file_prefix, body)) as dp:
        nf = dp.netflow[0]
        [t0] = dp.on_stage(0, lambda st, w: native.netflow_table_spread(st))  # (flood under way)
        peak = 0

        def done(total: int) -> bool:
            nonlocal peak
            peak = max(peak, nf.info()["flows_used"])
            return dp.snapshot().totals["tx"] == total

        # the flood, once
        assert wait_for(lambda: done(SOURCES)), dp.snapshot().totals
        a = nf.info()
        [t1] = dp.on_stage(0, lambda st, w: native.netflow_table_spread(st))
        rss1 = rss_kib()

        # the same flood again (a pcap port re-reads its file when restarted)
        pid = dp.port("in").port_id
        dp.on_all_workers(lambda w: (native.port_stop(pid), native.port_start(pid)))
        assert wait_for(lambda: done(2 * SOURCES)), dp.snapshot().totals
        assert dp.wait_idle(settle=0.1)
        b = nf.info()
        [t2] = dp.on_stage(0, lambda st, w: native.netflow_table_spread(st))
        rss2 = rss_kib()
        snap = dp.snapshot()
        in_use = snap.pools[0]["in_use"]
        dp.quiesce()                     # workers stop; every cached flow is exported
        c = nf.info()

    print(f"flood: 2 x {SOURCES:,} new sources against {MAX_FLOWS} flows: created {b['flows_created']:,}, "
          f"alloc_failed {b['alloc_failed']:,}, resident {b['flows_used']:,}, peak {peak:,}, "
          f"RSS {rss1 // 1024} -> {rss2 // 1024} MiB over the second flood, exported at stop {c['exported']:,}")
    # forwarding went on through both floods
    assert snap.totals["rx"] == snap.totals["tx"] == snap.ports["out"]["tx"] == 2 * SOURCES
    assert snap.totals["dropped"] == 0 and conserved(snap)
    # first flood: every packet a new key
    assert a["packets"] == SOURCES
    assert a["flows_created"] + a["alloc_failed"] == SOURCES, a
    assert a["flows_created"] == MAX_FLOWS and a["flows_used"] == MAX_FLOWS, a
    assert a["exported"] + a["export_failed"] + a["flows_used"] == a["flows_created"], a
    # second flood: the cached keys hit, the others fail again, nothing new
    assert b["packets"] - a["packets"] == SOURCES
    assert b["flows_created"] == a["flows_created"], b
    assert b["alloc_failed"] - a["alloc_failed"] == SOURCES - MAX_FLOWS, b
    assert b["exported"] + b["flows_used"] == b["flows_created"], b
    # bounded: never more than max_flows, the table kept its size
    assert peak <= MAX_FLOWS
    assert t0["buckets"] == t1["buckets"] == t2["buckets"] == 1024
    assert t1["keys"] == t2["keys"] == MAX_FLOWS
    assert rss2 - rss1 <= RSS_SLACK_KIB, (rss1, rss2)
    assert in_use == 0          # every mbuf back in the pool (no port holds any)
    # after the stop's flush
    assert c["exported"] == c["flows_created"] == MAX_FLOWS and c["flows_used"] == 0, c
    assert c["export_failed"] == 0
