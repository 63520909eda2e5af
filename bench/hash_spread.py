#!/usr/bin/env python3
"""Flow-table hash flooding: keys crafted to share one bucket, against the old
hash (rte_hash_crc with a random seed) and the keyed one (flowtable.h ft_hash:
NH + fmix64), in one run.

Why CRC with a seed is not keyed: CRC-32C without a final XOR is linear over
GF(2) in (initial value, message), so for keys of one length
    crc(s, a) ^ crc(s, b) == crc(0, a) ^ crc(0, b)      for every seed s.
The map from the bits a sender controls (an IPv4 source address and source
port: 48 bits of the netflow key; an IPv6 source: 128 bits of the ip6flow key)
to the 32-bit hash is linear, so its kernel (>= 16 and >= 96 dimensions) is a
set of key differences that change no hash bit, whatever the seed: every key
x0 ^ d, d in the kernel, has x0's bucket AND signature in every table.

What it does:
  1. builds those keys by Gaussian elimination over GF(2) (CRC-32C is
     reimplemented here for the crafting only);
  2. hashes crafted and random keys with the C hash of each kind (through
     dp_ft_hash_keys: a fresh random seed / key per call, as a new table
     gets), checks that the crafted keys share one CRC hash under several
     seeds, and inserts them, in order, into a model of flowtable.h (8-slot
     buckets, linear overflow to the next bucket, table sized for max_flows)
     to count: keys in the fullest home bucket, how far past its home a key
     ends up, buckets read and keys compared per lookup;
  3. measures TSC cycles per hash of each kind (throughput over 4096
     independent keys, best of --reps), for both key sizes.

No EAL, no devices: python3 bench/hash_spread.py [--keys 3072] [--max-flows 4096]

--stage (root: in-process EAL, --no-huge, one worker on cpu 1) also sends each
set, --passes times over, through a real [netflow (max_flows), xconnect ->
net_null] pipeline (a pcap read once) and reports the netflow stage's cycles
per packet and its table's spread (dp_netflow_table_spread): the hash of the
build in use only (build the old one to compare).
"""
from __future__ import annotations

import argparse
import json
import os
import random
import struct
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from dataplane import native  # noqa: E402

FT_SLOTS = 8
NF_KEY_LEN = 40      # struct nf_key (flowparse.h)
FF_KEY_LEN = 36      # struct ffkey (ip6flow.c)
POLY = 0x82F63B78    # CRC-32C, reflected

_TABLE = []
for _b in range(256):
    _c = _b
    for _ in range(8):
        _c = (_c >> 1) ^ (POLY if _c & 1 else 0)
    _TABLE.append(_c)


def crc32c(data: bytes, init: int = 0) -> int:
    """rte_hash_crc(data, len, init): CRC-32C, no final XOR."""
    c = init
    for b in data:
        c = _TABLE[(c ^ b) & 0xFF] ^ (c >> 8)
    return c


# ---- keys ------------------------------------------------------------------------

def nf_key_v4(src: int, sport: int, dst: int = 0xC0000201, dport: int = 53, in_ifx: int = 1,
              proto: int = 17, tos: int = 0) -> bytes:
    """struct nf_key for an IPv4 UDP packet: addresses and ports as on the
    wire, the ifIndex in host (little-endian) order."""
    return (struct.pack("!I", src) + bytes(12) + struct.pack("!I", dst) + bytes(12) +
            struct.pack("!HH", sport, dport) + struct.pack("<H", in_ifx) + bytes([proto, tos]))


def ff_key_v6(src: bytes, dst: bytes = bytes.fromhex("20010db8000900000000000000000001"),
              flow: int = 0x60000000) -> bytes:
    """struct ffkey: source, destination, the first IPv6 header word as on the wire."""
    return src + dst + struct.pack("!I", flow)


def null_space(columns: list[int]) -> list[int]:
    """A basis (as bit masks over the columns) of the combinations of columns
    whose XOR is 0: Gaussian elimination over GF(2), one row per column."""
    pivots: list[tuple[int, int, int]] = []   # (pivot bit, image, combination)
    out = []
    for i, img in enumerate(columns):
        comb = 1 << i
        for p, pimg, pcomb in pivots:
            if img >> p & 1:
                img, comb = img ^ pimg, comb ^ pcomb
        if img:
            pivots.append((img.bit_length() - 1, img, comb))
        else:
            out.append(comb)
    return out


def craft(base: bytes, positions: list[int], count: int) -> list[bytes]:
    """count distinct keys base ^ d whose CRC-32C differs from base's by 0
    under every seed: d ranges over the kernel of the controlled bits
    (positions: bit offsets into the key, bit 0 = LSB of byte 0)."""
    klen = len(base)
    zero = crc32c(bytes(klen))
    cols = []
    for pos in positions:
        e = bytearray(klen)
        e[pos // 8] |= 1 << (pos % 8)
        cols.append(crc32c(bytes(e)) ^ zero)   # crc(0, .) is linear
    ker = null_space(cols)
    need = max(1, (count - 1).bit_length())
    if len(ker) < need:
        raise SystemExit(f"kernel of dimension {len(ker)} < {need}")
    diffs = []
    for comb in ker[:need]:
        d = 0
        for i, pos in enumerate(positions):
            if comb >> i & 1:
                d ^= 1 << pos
        diffs.append(d)
    base_int = int.from_bytes(base, "little")
    out = []
    for j in range(count):
        x = base_int
        for i, d in enumerate(diffs):
            if j >> i & 1:
                x ^= d
        out.append(x.to_bytes(klen, "little"))
    assert len(set(out)) == count
    return out


def netflow_crafted(count: int) -> list[bytes]:
    base = nf_key_v4(0x0A000001, 40000)
    positions = list(range(0, 32)) + list(range(32 * 8, 32 * 8 + 16))  # src[0:4], sport
    return craft(base, positions, count)


def ip6flow_crafted(count: int) -> list[bytes]:
    base = ff_key_v6(bytes.fromhex("20010db8000100000000000000000002"))
    return craft(base, list(range(0, 128)), count)


def netflow_random(count: int, rng: random.Random) -> list[bytes]:
    return [nf_key_v4(0x0A000000 | rng.getrandbits(24), rng.randrange(1024, 65536))
            for _ in range(count)]


def ip6flow_random(count: int, rng: random.Random) -> list[bytes]:
    return [ff_key_v6(bytes.fromhex("20010db80001") + rng.randbytes(10)) for _ in range(count)]


# ---- a model of flowtable.h ---------------------------------------------------------

def buckets_for(entries: int) -> int:
    need = max((entries * 4 // 3 + FT_SLOTS - 1) // FT_SLOTS, 2)
    return 1 << (need - 1).bit_length()


def sig(h: int) -> int:
    return (h >> 16) & 0xFFFF | 1


def spread(hashes: list[int], max_flows: int) -> dict:
    """Insert in order (ft_insert), then per key: home, displacement, buckets
    read and key compares of its lookup (FT_LOOKUP) - as dp_netflow_table_spread."""
    nb = buckets_for(max_flows)
    mask = nb - 1
    slots: list[list[int]] = [[] for _ in range(nb)]     # sigs in slot order
    overflow = [0] * nb
    where = []
    for h in hashes:
        b = h & mask
        while len(slots[b]) == FT_SLOTS:
            overflow[b] += 1
            b = (b + 1) & mask
        slots[b].append(sig(h))
        where.append((b, len(slots[b]) - 1))
    home_load: dict[int, int] = {}
    probes = compares = max_d = max_cmp = displaced = 0
    for h, (b, i) in zip(hashes, where):
        home, s = h & mask, sig(h)
        home_load[home] = home_load.get(home, 0) + 1
        d = (b - home) & mask
        cmp = 0
        for c in range(d + 1):
            row = slots[(home + c) & mask]
            cmp += sum(1 for x in (row[:i + 1] if c == d else row) if x == s)
        probes += d + 1
        compares += cmp
        max_d, max_cmp = max(max_d, d), max(max_cmp, cmp)
        displaced += d != 0
    n = len(hashes)
    return {"buckets": nb, "keys": n, "distinct_hashes": len(set(hashes)),
            "max_home_load": max(home_load.values()), "max_displacement": max_d,
            "displaced": displaced, "max_overflow": max(overflow),
            "probes_per_lookup": probes / n, "compares_per_lookup": compares / n,
            "max_compares": max_cmp}



# ---- through a real netflow stage (--stage) -------------------------------------------

STAGE_TOML = """
[eal]
workers = [1]
main_core = 0
hugepages = false
memory_mb = 256
file_prefix = "{prefix}"
log_level = "warning"
[mempool]
mbufs = 8191
[run]
poll_budget_ms = 20
cycle_sample_shift = 0
[[ports]]
name = "in"
device = "net_pcap0,rx_pcap={pcap}"
[[ports]]
name = "out"
device = "net_null0,no-rx=1"
poll = false
[[pipeline]]
stage = "netflow"
max_flows = {max_flows}
active_timeout = 3600
inactive_timeout = 3600
[[pipeline]]
stage = "xconnect"
map = {{ in = "out" }}
"""


def _frame(key: bytes) -> bytes:
    """The IPv4/UDP packet a netflow key (nf_key_v4 layout) is metered from."""
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 46, 0, 0, 64, 17, 0, key[0:4], key[16:20])
    return (bytes.fromhex("020000000002020000000001") + b"\x08\x00" + ip + key[32:34] +
            struct.pack("!HHH", 53, 26, 0) + b"x" * 18)


def stage_run(keys: list[bytes], passes: int, max_flows: int) -> dict:
    """One dataplane in a child process (EAL once per process)."""
    import subprocess
    import tempfile
    with tempfile.TemporaryDirectory(prefix="dp_hash_spread_") as d:
        pcap = Path(d) / "keys.pcap"
        with open(pcap, "wb") as f:
            f.write(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1))
            frames = [_frame(k) for k in keys]
            i = 0
            for _ in range(passes):
                for fr in frames:
                    f.write(struct.pack("<IIII", 0, i % 1_000_000, len(fr), len(fr)) + fr)
                    i += 1
        cfg = Path(d) / "c.toml"
        cfg.write_text(STAGE_TOML.format(prefix=f"hs{os.getpid()}", pcap=pcap, max_flows=max_flows))
        out = subprocess.run([sys.executable, __file__, "--stage-child", str(cfg), str(i)],
                             capture_output=True, text=True, timeout=600)
        line = [ln for ln in out.stdout.splitlines() if ln.startswith("STAGE ")]
        if out.returncode != 0 or not line:
            raise RuntimeError(out.stdout[-2000:] + out.stderr[-2000:])
        return json.loads(line[0][6:])


def stage_child(cfg_path: str, packets: int) -> None:
    import time
    from dataplane import config
    from dataplane.eal import Eal
    from dataplane.engine import Dataplane
    from dataplane.view import runtime_rows
    cfg = config.load(cfg_path)
    eal = Eal(cfg)
    dp = Dataplane(cfg)
    try:
        dp.start()
        deadline = time.monotonic() + 300
        while dp.snapshot().totals["tx"] < packets and time.monotonic() < deadline:
            time.sleep(0.01)
        snap = dp.snapshot()
        [sp] = dp.on_stage(0, lambda st, w: native.netflow_table_spread(st))
    finally:
        dp.stop()
        eal.close()
    row = next(r for r in runtime_rows(snap) if r["stage"] == "netflow")
    print("STAGE " + json.dumps({"cycles_per_pkt": row["cycles_per_pkt"], "packets": row["packets"],
                                 "spread": sp}), flush=True)


def cycles_per_hash(kind: int, key_len: int, reps: int) -> float:
    keys = os.urandom(key_len * 4096)
    return min(native.ft_hash_keys(kind, keys, key_len)[1] for _ in range(reps)) / 4096


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--keys", type=int, default=3072, help="keys per set (3/4 of the cache)")
    ap.add_argument("--max-flows", type=int, default=4096, help="the modelled cache size")
    ap.add_argument("--reps", type=int, default=300, help="timing repetitions (best is kept)")
    ap.add_argument("--seeds", type=int, default=8, help="CRC seeds the crafted keys are checked under")
    ap.add_argument("--stage", action="store_true", help="also through a real netflow stage (root)")
    ap.add_argument("--passes", type=int, default=10, help="--stage: times each key is sent")
    ap.add_argument("--json-out")
    ap.add_argument("--stage-child", nargs=2, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.stage_child:
        stage_child(args.stage_child[0], int(args.stage_child[1]))
        return
    rng = random.Random(7)
    n = args.keys
    sets = {
        ("netflow", NF_KEY_LEN): {"crafted": netflow_crafted(n), "random": netflow_random(n, rng)},
        ("ip6flow", FF_KEY_LEN): {"crafted": ip6flow_crafted(n), "random": ip6flow_random(n, rng)},
    }
    kinds = {"crc (before)": native.FT_HASH_CRC, "keyed (after)": native.FT_HASH_KEYED}
    res: dict = {"keys": n, "max_flows": args.max_flows, "buckets": buckets_for(args.max_flows),
                 "tables": {}, "cycles_per_hash": {}}
    print(f"{n} keys per set into a table for {args.max_flows} flows "
          f"({buckets_for(args.max_flows)} buckets of {FT_SLOTS}); random keys: a random "
          f"source (and port) each; crafted: one CRC-32C hash for every seed")
    hdr = (f"{'table':8} {'hash':14} {'keys':8} {'distinct h':>10} {'max home':>8} {'max disp':>8} "
           f"{'max ovf':>7} {'probes/lookup':>13} {'compares/lookup':>15} {'max compares':>12}")
    print(hdr)
    for (table, klen), ksets in sets.items():
        seeds_distinct = {}
        for kname, kind in kinds.items():
            for sname, keys in ksets.items():
                packed = b"".join(keys)
                hashes, _ = native.ft_hash_keys(kind, packed, klen)
                if sname == "crafted":   # under several fresh seeds/keys: how many hashes?
                    seeds_distinct[kname] = [len(set(native.ft_hash_keys(kind, packed, klen)[0]))
                                             for _ in range(args.seeds)]
                s = spread(hashes, args.max_flows)
                res["tables"].setdefault(table, {}).setdefault(kname, {})[sname] = s
                print(f"{table:8} {kname:14} {sname:8} {s['distinct_hashes']:>10} {s['max_home_load']:>8} "
                      f"{s['max_displacement']:>8} {s['max_overflow']:>7} {s['probes_per_lookup']:>13.2f} "
                      f"{s['compares_per_lookup']:>15.2f} {s['max_compares']:>12}")
        res["tables"][table]["crafted_distinct_hashes_per_seed"] = seeds_distinct
        print(f"{'':8} crafted keys, distinct hashes under {args.seeds} fresh seeds/keys: "
              + "; ".join(f"{k}: {v}" for k, v in seeds_distinct.items()))
    print("\ncycles per hash (TSC, best of %d runs over 4096 independent keys):" % args.reps)
    for table, klen in (("netflow", NF_KEY_LEN), ("ip6flow", FF_KEY_LEN)):
        row = {kname: cycles_per_hash(kind, klen, args.reps) for kname, kind in kinds.items()}
        res["cycles_per_hash"][f"{table} ({klen} B)"] = row
        print(f"  {table} key ({klen} B): " + ", ".join(f"{k} {v:.1f}" for k, v in row.items()))
    if args.stage:
        print(f"\nthrough a netflow stage (this build's hash), each key {args.passes} times:")
        res["stage"] = {}
        for sname, keys in sets[("netflow", NF_KEY_LEN)].items():
            r = stage_run(keys, args.passes, args.max_flows)
            res["stage"][sname] = r
            sp = r["spread"]
            print(f"  {sname:8} netflow {r['cycles_per_pkt']:.0f} cycles/packet over {r['packets']:,} packets; "
                  f"table: max home {sp['max_home_load']}, max displacement {sp['max_displacement']}, "
                  f"compares/lookup {sp['compares_per_lookup']:.2f}")
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
