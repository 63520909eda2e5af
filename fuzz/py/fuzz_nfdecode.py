#!/usr/bin/env python3
"""atheris: the tests' NetFlow v5 / v9 / IPFIX decoder (tests/nfdecode.py).

An input is a sequence of datagrams, each a 2-byte big-endian length and
its bytes, decoded in order with one template cache (so a template in one
datagram applies to data sets in the next). DecodeError is the decoder's
contract for a broken datagram; any other exception is a finding.

    python fuzz/py/fuzz_nfdecode.py --seed DIR
    python fuzz/py/fuzz_nfdecode.py [libFuzzer flags] CORPUS_DIR...
"""
from __future__ import annotations

import struct
import sys
from pathlib import Path

import atheris
import harness

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

with atheris.instrument_imports(include=["tests.nfdecode"]):
    from tests.nfdecode import DecodeError, SequenceChecker, TemplateCache, decode


def frame(*datagrams: bytes) -> bytes:
    return b"".join(struct.pack("!H", len(d)) + d for d in datagrams)


def seeds() -> dict[str, bytes]:
    # the unit tests' independent encoder
    from tests.unit import test_nfdecode as t

    v9_t = t.fset(0, t.template(256, t.V4_FIELDS) + t.template(257, t.V6_FIELDS))
    v9_d4 = t.fset(256, t.values(t.V4_FIELDS, t.V4_VALUES) * 2)
    v9_d6 = t.fset(257, t.values(t.V6_FIELDS, t.V6_VALUES))
    var = t.V6_FIELDS + [(1234, 65535, 9), (82, 65535), (11, 2, 29305)]
    ipfix_t = t.fset(2, t.template(256, var, ipfix=True) + t.template(257, t.V4_FIELDS, ipfix=True))
    ipfix_d = t.fset(256, t.values(var, t.V6_VALUES + [b"ab", b"x" * 300, 77]), align=1)
    opt_t = struct.pack("!HHHHHHHHH", 300, 4, 8, 1, 4, 34, 4, 35, 1)
    ipfix_opt = struct.pack("!HHH", 400, 3, 1) + struct.pack("!HHHHHH", 149, 4, 41, 8, 42, 8)
    return {
        "v5": frame(t.v5([t.v5_record(), t.v5_record(src="10.9.9.9")], secs=1_700_000_000)),
        "v9_one": frame(t.v9([v9_t, v9_d4, v9_d6], count=5)),
        "v9_split": frame(t.v9([v9_t], count=2), t.v9([v9_d6], count=1, seq=8)),
        "v9_options": frame(t.v9([t.fset(1, opt_t), t.fset(300, struct.pack("!IIB", 0, 100, 1))], count=2)),
        "ipfix": frame(t.ipfix([ipfix_t, ipfix_d, t.fset(257, t.values(t.V4_FIELDS, t.V4_VALUES))])),
        "ipfix_options_withdraw": frame(
            t.ipfix([t.fset(3, ipfix_opt), t.fset(400, struct.pack("!IQQ", 42, 10, 20))]),
            t.ipfix([t.fset(2, struct.pack("!HH", 256, 0))]),
            t.ipfix([t.fset(3, struct.pack("!HH", 3, 0))])),
    }


def TestOneInput(data: bytes) -> None:
    cache = TemplateCache()
    seq = SequenceChecker()
    off = 0
    while off + 2 <= len(data):
        (n,) = struct.unpack_from("!H", data, off)
        dg = data[off + 2:off + 2 + n]
        off += 2 + n
        try:
            d = decode(dg, cache, exporter="fuzz", strict_count=bool(n & 1))
        except DecodeError:
            continue
        seq.feed(d, "fuzz")


if __name__ == "__main__":
    harness.main(seeds, TestOneInput)
