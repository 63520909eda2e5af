"""Hash flooding: keys crafted to share one bucket of the netflow cache.

The keys come from bench/hash_spread.py: IPv4 source address and UDP source
port chosen (linear algebra over GF(2)) so that every key has ONE CRC-32C
hash, bucket and signature under every seed - what the flow tables used
before their hash was keyed (rte_hash_crc with a random seed). They go, as
packets in a pcap read once by net_pcap, through [netflow, xconnect to a
net_null sink]; then the cache's table is read on the worker's thread
(dp_netflow_table_spread) and must look like a random hash's. Random keys get
the same bounds, which a random hash meets with overwhelming probability (see
the bounds below). With the CRC hash the crafted keys all sit in one home
bucket, chained over 384 buckets: the first assertion fails.
"""
from __future__ import annotations

import functools
import random
import struct
import sys
from pathlib import Path

import pytest

from dataplane import native
from tests.helpers import conserved, port, running, vdev_config, wait_for

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
import hash_spread  # noqa: E402

pytestmark = [pytest.mark.eal, pytest.mark.timeout(120)]

MAX_FLOWS = 4096          # 1024 buckets of 8 slots
N_KEYS = 3072             # 3/4 of the cache: mean 3 keys per home bucket

# Bounds for a random hash, N_KEYS keys in 1024 buckets (Poisson, mean 3):
# P(some bucket is home to >= 20 keys) < 1e-9; a key pushed >= 4 buckets past
# its home needs ~5 adjacent buckets holding >= 40 keys (mean 15): < 1e-8; a
# lookup compares more than its own key only on a signature (15 random bits)
# shared in its path: ~0.1 such keys expected, so a mean above 1.02 or any
# lookup making 4 compares is out of reach.
MAX_HOME_LOAD = 20
MAX_DISPLACEMENT = 3
MAX_COMPARES = 3
MAX_COMPARES_PER_LOOKUP = 1.02


def frame(src: int, sport: int) -> bytes:
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 28 + 18, 0, 0, 64, 17, 0,
                     struct.pack("!I", src), bytes([192, 0, 2, 1]))
    udp = struct.pack("!HHHH", sport, 53, 8 + 18, 0)
    return bytes.fromhex("020000000002020000000001") + b"\x08\x00" + ip + udp + b"x" * 18


def write_pcap(path: Path, frames: list[bytes]) -> None:
    with open(path, "wb") as f:
        f.write(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1))
        for i, fr in enumerate(frames):
            f.write(struct.pack("<IIII", i // 1_000_000, i % 1_000_000, len(fr), len(fr)) + fr)


def keys_to_frames(keys: list[bytes]) -> list[bytes]:
    """struct nf_key -> the packet it is metered from (source, source port)."""
    return [frame(struct.unpack("!I", k[0:4])[0], struct.unpack("!H", k[32:34])[0]) for k in keys]


wait_for = functools.partial(wait_for, timeout=30.0)  # a hang guard, not a timing


@pytest.mark.parametrize("keyset", ["crafted", "random"])
def test_crafted_keys_spread_like_random_ones(file_prefix, tmp_path, keyset):
    if keyset == "crafted":
        keys = hash_spread.netflow_crafted(N_KEYS)
        # the premise: one CRC hash for all, whatever the seed
        assert len({hash_spread.crc32c(k, s) for k in keys for s in (0, 0x1234567, 0xFFFFFFFF)}) == 3
        assert len({hash_spread.crc32c(k, 0xDEADBEEF) for k in keys}) == 1
    else:
        keys = hash_spread.netflow_random(N_KEYS, random.Random(11))
    pcap = tmp_path / "keys.pcap"
    write_pcap(pcap, keys_to_frames(keys))
    body = (port("in", f"net_pcap0,rx_pcap={pcap}") + port("out", "net_null0,no-rx=1", poll=False) +
            f'[[pipeline]]\nstage = "netflow"\nmax_flows = {MAX_FLOWS}\n'
            'active_timeout = 3600\ninactive_timeout = 3600\n'
            '[[pipeline]]\nstage = "xconnect"\nmap = { in = "out" }\n')
    with running(vdev_config(file_prefix, body)) as dp:
        nf = dp.netflow[0]
        assert wait_for(lambda: nf.info()["packets"] == N_KEYS), nf.info()
        info = nf.info()
        [s] = dp.on_stage(0, lambda st, w: native.netflow_table_spread(st))
        assert wait_for(lambda: dp.snapshot().totals["tx"] == N_KEYS)
        snap = dp.snapshot()
    assert info["flows_created"] == N_KEYS and info["alloc_failed"] == 0, info
    assert s["keys"] == N_KEYS and s["buckets"] == 1024, s
    assert s["max_home_load"] <= MAX_HOME_LOAD, s
    assert s["max_displacement"] <= MAX_DISPLACEMENT, s
    assert s["max_compares"] <= MAX_COMPARES, s
    assert s["compares_per_lookup"] <= MAX_COMPARES_PER_LOOKUP, s
    assert conserved(snap)
