#!/usr/bin/env python3
"""IPv6 forwarding at N cached flows: the dataplane's ip6flow stage vs DPDK's
l3fwd sample application (LPM and FIB lookup), on the same packets.

Traffic: a pcap of N distinct IPv6 flows, one 60-byte frame (64 on the wire)
per flow, replayed forever by net_pcap (infinite_rx) into ONE forwarding core
(cpu 1) that routes every packet out of a net_null sink. Every peer is a
separate process started with the same devices, pool and memory; after a
warm-up (at least one full pass over the file: ours creates its N flows
there) the sink port's transmit counter is read twice through DPDK telemetry
(/ethdev/stats) and the rate is the delta over the time between the reads.
Peers alternate for --rounds rounds: l3fwd --lookup lpm, l3fwd --lookup fib,
ours. l3fwd is built at bench time from Debian's dpdk-doc sources (patched,
see L3FWD_PATCHES) into a cache directory. See bench/README.md.
"""
from __future__ import annotations

import argparse
import gzip
import hashlib
import ipaddress
import json
import os
import re
import shutil
import signal
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import DPDK_RUN, MAIN_CPU, WORKER_CPU, last_json, remove_runtime_dir, require_hugepages, unique_prefix  # noqa: E402

RESULT_MARK = "IP6FLOW_BENCH_RESULT "
REPO = Path(__file__).resolve().parent.parent
PCAP_DIR = Path("/tmp")
DATA_ROOM = 256                # 128 B headroom + 128 B data: a 60-byte frame fits
POOL_SPARE = 65536             # mbufs beyond the preloaded pcap (rx bursts, caches)
MBUF_BYTES = 64 + 128 + DATA_ROOM  # mempool object header + rte_mbuf + data room
FLOW_BYTES_BUDGET = 256        # EAL memory planned per flow-cache slot
EAL_SLACK_MB = 512
MAX_FLOWS = 1 << 24
HUGEPAGES = False              # --hugepages: every peer on hugepages instead of --no-huge

PEERS = {
    "lpm": "l3fwd --lookup lpm",
    "fib": "l3fwd --lookup fib",
    "ours": "dataplane ip6flow (CLI `run --json`)",
    "nocache": "dataplane ip6flow, cache off (maxflows 0: a FIB lookup per packet)",
    "io": "dataplane xconnect in -> out (no routing: our I/O floor on this source)",
}

# ---- addresses ---------------------------------------------------------------------
# net_pcap names its ports' MACs 02:'p':'c':'a':'p':<n>, n counting the pcap
# devices of the process (DPDK 22.11 drivers/net/pcap: eth_addr + iface index).
# net_pcap0 is the first in both peers; the run checks it (l3fwd prints it;
# ours: every packet must be forwarded, none dropped as l2_other_host).
PCAP0_MAC = "02:70:63:61:70:00"
HOST_MAC = "02:00:00:00:00:01"         # the frames' source: a host on "in"
NEXTHOP_MAC = "02:00:00:00:00:02"      # the neighbour on "out" (l3fwd: --eth-dest=1,...)
IN_ADDR = "2001:db8:1::1/64"
OUT_ADDR = "2001:db8:2::1/64"
NEXTHOP = "2001:db8:2::2"
# l3fwd's compiled-in IPv6 table (main.c ipv6_l3fwd_route_array, used when no
# --rule_ipv6 file is given): 2001:200:0:<p>::/64 -> port p, p = 0..15 (RFC 5180
# benchmarking range). Port 1 is the sink, so every destination is in 2001:200:0:1::/64.
DST_PREFIX = ipaddress.IPv6Network("2001:200:0:1::/64")
SRC_PREFIX = ipaddress.IPv6Network("2001:db8:1::/64")
HOP_LIMIT = 64
NH_NONE = 59                           # IPv6 "No Next Header": 6 bytes of padding follow

CONFIG = """\
[eal]
workers = [{worker}]
main_core = {main}
hugepages = {hugepages}
memory_mb = {memory}
file_prefix = "{prefix}"
log_level = "warning"

[mempool]
mbufs = {mbufs}
data_room = {data_room}

[metrics]
enabled = false

[[ports]]
name = "in"
device = "net_pcap0,rx_pcap={pcap},infinite_rx=1"

[[ports]]
name = "out"
device = "net_null0,no-rx=1"
poll = false

[[pipeline]]
stage = "ip6flow"
maxflows = {maxflows}
hashsize = {hashsize}

[[pipeline.interfaces]]
port = "in"
addresses = ["{in_addr}"]

[[pipeline.interfaces]]
port = "out"
addresses = ["{out_addr}"]

[[pipeline.routes]]
prefix = "{dst_prefix}"
via = "{nexthop}"

[[pipeline.neighbours]]
address = "{nexthop}"
mac = "{nexthop_mac}"
port = "out"
"""


# ---- traffic -----------------------------------------------------------------------

PCAP_GLOBAL = struct.Struct("<IHHiIII")
PCAP_RECORD = struct.Struct("<IIII")
# Ethernet / IPv6 (40 B) / 6 bytes after a No-Next-Header = 60 bytes, 64 on the wire
FRAME = struct.Struct("!6s6sH IHBB16s16s 6s")
FRAME_LEN = FRAME.size
assert FRAME_LEN == 60


def _mac(text: str) -> bytes:
    return bytes.fromhex(text.replace(":", ""))


def flow_frame(i: int) -> bytes:
    """Flow i: 2001:db8:1::1:0:0 + i -> 2001:200:0:1:<i+1 scrambled>, hop limit 64.
    Both addresses differ per flow (the scramble is a bijection mod 2^64)."""
    src = int(SRC_PREFIX.network_address) | (1 << 32) | i
    dst = int(DST_PREFIX.network_address) | ((i + 1) * 0x9E3779B97F4A7C15 & (1 << 64) - 1)
    return FRAME.pack(_mac(PCAP0_MAC), _mac(HOST_MAC), 0x86DD,
                      6 << 28, 6, NH_NONE, HOP_LIMIT,
                      src.to_bytes(16, "big"), dst.to_bytes(16, "big"), bytes(6))


def make_pcap(flows: int) -> Path:
    """N flows, packet i = flow i, 1 us apart; written with struct, cached under /tmp."""
    path = PCAP_DIR / f"dp_ip6flow_bench_{flows}.pcap"
    size = PCAP_GLOBAL.size + flows * (PCAP_RECORD.size + FRAME_LEN)
    if path.exists() and path.stat().st_size == size:
        return path
    t0 = time.monotonic()
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    with open(tmp, "wb") as f:
        f.write(PCAP_GLOBAL.pack(0xA1B2C3D4, 2, 4, 0, 0, 65535, 1))  # usec, Ethernet
        buf = bytearray()
        for i in range(flows):
            buf += PCAP_RECORD.pack(i // 1_000_000, i % 1_000_000, FRAME_LEN, FRAME_LEN)
            buf += flow_frame(i)
            if len(buf) >= 1 << 22:
                f.write(buf)
                buf.clear()
        f.write(buf)
    tmp.rename(path)
    print(f"wrote {path} ({flows:,} IPv6 flows) in {time.monotonic() - t0:.1f} s",
          file=sys.stderr, flush=True)
    return path


def plan(flows: int) -> dict:
    """Sizes shared by every peer: net_pcap infinite_rx copies every packet of
    the file into an mbuf of the rx pool at start, so mbufs = packets + spare."""
    hashsize = 1 << max(flows - 1, 1).bit_length()
    mbufs = flows + POOL_SPARE
    need = mbufs * MBUF_BYTES + hashsize * FLOW_BYTES_BUDGET
    memory_mb = -(-(need + (EAL_SLACK_MB << 20)) // (1 << 30)) * 1024
    return {"hashsize": hashsize, "mbufs": mbufs, "memory_mb": memory_mb}


# ---- l3fwd: fetch, patch, build ------------------------------------------------------

L3FWD_SRC = Path("/usr/share/dpdk/examples")   # Debian package dpdk-doc
# (file, original text, replacement, why). Each must match exactly once.
L3FWD_PATCHES = [
    ("main.c", "\t\t.offloads = RTE_ETH_RX_OFFLOAD_CHECKSUM,\n",
     "\t\t.offloads = 0, /* bench: net_pcap/net_null have no RX checksum offload */\n",
     "l3fwd asks every port for RX IPv4 checksum offload; rte_eth_dev_configure() "
     "rejects offloads a device lacks (net_pcap, net_null: none). IPv6 has no header checksum."),
    ("main.c", "int\ninit_mem(uint16_t portid, unsigned int nb_mbuf)\n",
     "/* bench: pool size and data room from the environment (same pool as the dataplane) */\n"
     "static unsigned int\nbench_env_uint(const char *name, unsigned int dflt)\n{\n"
     "\tconst char *v = getenv(name);\n\n\treturn (v != NULL && *v != '\\0') ? "
     "(unsigned int)strtoul(v, NULL, 10) : dflt;\n}\n\n"
     "int\ninit_mem(uint16_t portid, unsigned int nb_mbuf)\n",
     "helper for the two below"),
    ("main.c", "rte_pktmbuf_pool_create(s, nb_mbuf,",
     "rte_pktmbuf_pool_create(s, bench_env_uint(\"L3FWD_BENCH_MBUFS\", nb_mbuf),",
     "the pool holds >= 8192 mbufs; net_pcap infinite_rx copies all N packets of the "
     "file into it at start: L3FWD_BENCH_MBUFS sets its size"),
    ("main.c", "RTE_MBUF_DEFAULT_BUF_SIZE, socketid);",
     "bench_env_uint(\"L3FWD_BENCH_BUF_SIZE\", RTE_MBUF_DEFAULT_BUF_SIZE), socketid);",
     "2176-byte buffers -> L3FWD_BENCH_BUF_SIZE (the dataplane's data_room, 256)"),
]


def _dpdk_version() -> str:
    p = subprocess.run(["pkg-config", "--modversion", "libdpdk"], capture_output=True, text=True)
    if p.returncode != 0:
        sys.exit("pkg-config cannot find libdpdk (apt-get install -y libdpdk-dev pkg-config)")
    return p.stdout.strip()


def build_l3fwd(src_root: Path, cache: Path) -> Path:
    """Copy examples/{l3fwd,common} (gunzipping *.gz), patch, `make` against the
    system libdpdk (pkg-config). Cached by DPDK version + source + patch hash."""
    src = src_root / "l3fwd"
    if not src.is_dir():
        sys.exit(f"no l3fwd sources in {src}: apt-get install -y dpdk-doc (or --l3fwd-src DIR)")
    h = hashlib.sha256()
    files = sorted(p for d in ("l3fwd", "common") for p in (src_root / d).rglob("*") if p.is_file())
    for p in files:
        h.update(str(p.relative_to(src_root)).encode())
        h.update(p.read_bytes())
    h.update(repr(L3FWD_PATCHES).encode())
    ver = _dpdk_version()
    out = cache / f"l3fwd-{ver}-{h.hexdigest()[:12]}"
    binary = out / "l3fwd" / "build" / "l3fwd"
    if binary.exists():
        return binary
    t0 = time.monotonic()
    cache.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix="l3fwd.", dir=cache))
    try:
        for p in files:
            rel = p.relative_to(src_root)
            dst = tmp / rel
            dst.parent.mkdir(parents=True, exist_ok=True)
            if p.suffix == ".gz":
                dst.with_suffix("").write_bytes(gzip.decompress(p.read_bytes()))
            else:
                shutil.copy2(p, dst)
        for fname, old, new, _why in L3FWD_PATCHES:
            f = tmp / "l3fwd" / fname
            text = f.read_text()
            if text.count(old) != 1:
                raise RuntimeError(f"l3fwd patch does not apply to {fname} "
                                   f"({text.count(old)} matches): {old!r}")
            f.write_text(text.replace(old, new))
        p = subprocess.run(["make", "-C", str(tmp / "l3fwd"), f"-j{os.cpu_count() or 1}"],
                           capture_output=True, text=True)
        if p.returncode != 0:
            raise RuntimeError(f"building l3fwd failed:\n{p.stdout[-3000:]}\n{p.stderr[-3000:]}")
        if out.exists():
            shutil.rmtree(out)
        tmp.rename(out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"built {binary} (DPDK {ver}) in {time.monotonic() - t0:.1f} s", file=sys.stderr, flush=True)
    return binary


# ---- DPDK telemetry ------------------------------------------------------------------

class Telemetry:
    """A client of /var/run/dpdk/<prefix>/dpdk_telemetry.v2 (SOCK_SEQPACKET, JSON)."""

    def __init__(self, prefix: str, proc: subprocess.Popen, timeout: float = 120):
        path = DPDK_RUN / prefix / "dpdk_telemetry.v2"
        deadline = time.monotonic() + timeout
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"the process exited ({proc.returncode}) before its telemetry socket appeared")
            if path.exists():
                try:
                    self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
                    self.sock.connect(str(path))
                    break
                except OSError:
                    self.sock.close()
            if time.monotonic() > deadline:
                raise RuntimeError(f"no telemetry socket at {path} after {timeout:.0f} s")
            time.sleep(0.05)
        self.sock.settimeout(10)
        self.info = json.loads(self.sock.recv(1 << 16))
        self.max_len = self.info.get("max_output_len", 16384)
        self.commands = set(self.query("/")[1] or ())

    def query(self, cmd: str) -> tuple[float, dict]:
        """(mid-time between send and reply, the reply's value)."""
        t0 = time.monotonic()
        self.sock.send(cmd.encode())
        reply = json.loads(self.sock.recv(max(self.max_len, 1 << 16)))
        t1 = time.monotonic()
        return (t0 + t1) / 2, reply.get(cmd.split(",", 1)[0])

    def port_by_name(self, name: str) -> int:
        _, ids = self.query("/ethdev/list")
        for pid in ids:
            _, info = self.query(f"/ethdev/info,{pid}")
            if info and info.get("name") == name:
                return pid
        raise RuntimeError(f"no ethdev named {name} in telemetry (ports {ids})")

    def close(self) -> None:
        self.sock.close()


def _task_cpu_ns(pid: int) -> dict[int, int]:
    """Time on a CPU of every thread of `pid` (schedstat), in ns."""
    out = {}
    for t in Path(f"/proc/{pid}/task").iterdir():
        try:
            out[int(t.name)] = int((t / "schedstat").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            pass
    return out


def _thread_info(pid: int, tid: int) -> tuple[str, str]:
    try:
        comm = Path(f"/proc/{pid}/task/{tid}/comm").read_text().strip()
        m = re.search(r"^Cpus_allowed_list:\s*(\S+)", Path(f"/proc/{pid}/task/{tid}/status").read_text(), re.M)
        return comm, m.group(1) if m else "?"
    except OSError:
        return "?", "?"


def measure(proc: subprocess.Popen, prefix: str, args, flows: int) -> dict:
    """Warm up, then read the sink's tx counter twice (window = args.seconds).
    Warm-up: the pcap port has received >= warmup_passes x N packets AND
    >= args.warmup seconds have passed since the first packet left the sink."""
    tel = Telemetry(prefix, proc)
    try:
        pin, pout = tel.port_by_name("net_pcap0"), tel.port_by_name("net_null0")
        deadline = time.monotonic() + args.start_timeout
        rx_since = None
        while True:  # until forwarding starts
            _, st = tel.query(f"/ethdev/stats,{pout}")
            if st and st["opackets"] > 0:
                break
            _, sin = tel.query(f"/ethdev/stats,{pin}")
            if rx_since is None and sin and sin["ipackets"] > 0:
                rx_since = time.monotonic()
            if (proc.poll() is not None or time.monotonic() > deadline
                    or (rx_since is not None and time.monotonic() - rx_since > 10)):
                why = ""
                if "/dataplane/stats" in tel.commands:
                    dps = tel.query("/dataplane/stats")[1]
                    why = " " + json.dumps({k: v for k, v in dps.items() if v})
                raise RuntimeError(f"nothing was forwarded (sink opackets stays 0, "
                                   f"{sin['ipackets'] if sin else 0:,} received){why}")
            time.sleep(0.01)
        t_fwd = time.monotonic()
        need = args.warmup_passes * flows
        while True:
            _, st = tel.query(f"/ethdev/stats,{pin}")
            if st["ipackets"] >= need and time.monotonic() - t_fwd >= args.warmup:
                break
            if proc.poll() is not None or time.monotonic() > deadline + 600:
                raise RuntimeError(f"warm-up did not end (rx {st['ipackets']:,} of {need:,})")
            time.sleep(0.01)
        warmup_s = time.monotonic() - t_fwd
        cpu0 = _task_cpu_ns(proc.pid)
        t1, out1 = tel.query(f"/ethdev/stats,{pout}")
        _, in1 = tel.query(f"/ethdev/stats,{pin}")
        dp1 = tel.query("/dataplane/stats")[1] if "/dataplane/stats" in tel.commands else None
        time.sleep(args.seconds)
        t2, out2 = tel.query(f"/ethdev/stats,{pout}")
        _, in2 = tel.query(f"/ethdev/stats,{pin}")
        dp2 = tel.query("/dataplane/stats")[1] if dp1 is not None else None
        cpu1 = _task_cpu_ns(proc.pid)
    finally:
        tel.close()
    dt = t2 - t1
    busiest = max(cpu1, key=lambda t: cpu1[t] - cpu0.get(t, 0))
    on_cpu = (cpu1[busiest] - cpu0.get(busiest, 0)) / 1e9
    comm, allowed = _thread_info(proc.pid, busiest)
    tx = out2["opackets"] - out1["opackets"]
    res = {
        "pps": tx / dt, "rx_pps": (in2["ipackets"] - in1["ipackets"]) / dt,
        "interval_s": dt, "window_tx": tx, "warmup_s": warmup_s,
        "rx_before_window": in1["ipackets"], "ports": {"in": pin, "out": pout},
        "sink_oerrors": out2["oerrors"] - out1["oerrors"],
        "rx_imissed": in2["imissed"] - in1["imissed"], "rx_nombuf": in2["rx_nombuf"] - in1["rx_nombuf"],
        "fwd_thread": {"tid": busiest, "comm": comm, "cpus_allowed": allowed},
        "fwd_thread_on_cpu": on_cpu / dt,
        "pkts_per_fwd_cpu_s": tx / on_cpu if on_cpu else 0.0,
    }
    if dp1 is not None:
        res["dataplane_window"] = {k: dp2[k] - dp1[k] for k in dp2 if isinstance(dp2[k], int)}
    return res


def stop(proc: subprocess.Popen, timeout: float = 120) -> int:
    """SIGINT (both peers stop cleanly on it), then wait; kill if it hangs."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
    try:
        return proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        raise RuntimeError(f"{proc.args[0]} did not stop within {timeout:.0f} s after SIGINT (killed)")


# ---- the peers ---------------------------------------------------------------------------

def l3fwd_cmd(binary: Path, prefix: str, pcap: Path, lookup: str, sz: dict) -> list[str]:
    # One lcore (cpu 1) is l3fwd's main and only forwarding lcore: l3fwd gives
    # every lcore a TX queue on every port, and net_pcap with only rx_pcap has
    # one TX queue, so with "-l 0,1" rte_eth_dev_configure() fails. Its EAL
    # control threads (telemetry, interrupts) then go to cpu 0.
    return [str(binary), "-l", str(WORKER_CPU), *([] if HUGEPAGES else ["--no-huge"]),
            "-m", str(sz["memory_mb"]), "--no-pci",
            "--file-prefix", prefix, "--log-level=warning",
            "--vdev", f"net_pcap0,rx_pcap={pcap},infinite_rx=1", "--vdev", "net_null0,no-rx=1",
            "--", "-p", "0x3", "-P", "--config", f"(0,0,{WORKER_CPU})", "--lookup", lookup,
            "--parse-ptype", f"--eth-dest=1,{NEXTHOP_MAC}"]


def run_l3fwd(workdir: Path, args, binary: Path, pcap: Path, lookup: str, sz: dict) -> dict:
    prefix = unique_prefix(f"l3fwd_{lookup}")
    cmd = l3fwd_cmd(binary, prefix, pcap, lookup, sz)
    env = dict(os.environ, L3FWD_BENCH_MBUFS=str(sz["mbufs"]), L3FWD_BENCH_BUF_SIZE=str(DATA_ROOM))
    log = workdir / f"{prefix}.out"
    t0 = time.monotonic()
    try:
        with open(log, "w") as out:
            proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env)
        try:
            res = measure(proc, prefix, args, args.flows)
        finally:
            code = stop(proc)
    except Exception as e:
        raise RuntimeError(f"{e}\nl3fwd: {' '.join(cmd)}\n{log.read_text(errors='replace')[-4000:]}") from e
    finally:
        remove_runtime_dir(prefix)
    text = log.read_text(errors="replace")
    m = re.search(r"Initializing port 0 \.\.\..*?Address:\s*([0-9A-Fa-f:]{17})", text, re.S)
    mac0 = m.group(1).lower() if m else None
    if mac0 != PCAP0_MAC:
        raise RuntimeError(f"l3fwd port 0 MAC is {mac0}, the frames are sent to {PCAP0_MAC}:\n{text[-3000:]}")
    res.update(exit_code=code, total_s=time.monotonic() - t0, port0_mac=mac0, cmd=" ".join(cmd))
    return res


IP6_KEYS = ("forward", "fastforward", "created", "flows", "expired", "reaped_lru", "reaped_invalid",
            "invalidated", "refreshed", "maxflows", "hashsize")


def ip6flow_counters(final: dict) -> dict:
    """The ip6flow stage's IPv6 counters from `run --json` (whole run; summed
    over the stage's entries, one per worker), and whether every packet after
    each flow's first took the fast path: the route path ran exactly once per
    flow (forward == created == N) and no flow was ever removed."""
    rows = [e.get("ipv6") or {} for e in final.get("ip6flow") or []]
    if not rows:
        return {}
    c = {k: sum(r.get(k, 0) for r in rows) for k in IP6_KEYS}
    c["punts"] = {k: sum((r.get("punts") or {}).get(k, 0) for r in rows)
                  for k in (rows[0].get("punts") or {})}
    c["punts"] = {k: v for k, v in c["punts"].items() if v}
    return c


def window_all_hits(c: dict, flows: int) -> bool:
    return bool(c) and c["forward"] == c["created"] == flows and not (
        c["expired"] or c["reaped_lru"] or c["reaped_invalid"] or c["invalidated"] or c["punts"])


# The same devices with the router replaced by a cross-connect: what our
# worker moves from this source with no per-packet work at all.
IO_PIPELINE = '[[pipeline]]\nstage = "xconnect"\nmap = { in = "out" }\n'


def run_ours(workdir: Path, args, pcap: Path, sz: dict, cache: bool = True, io: bool = False) -> dict:
    prefix = unique_prefix("ip6flow")
    cfg = workdir / f"{prefix}.toml"
    text = CONFIG.format(worker=WORKER_CPU, main=MAIN_CPU, memory=sz["memory_mb"], prefix=prefix,
                         hugepages="true" if HUGEPAGES else "false",
                         mbufs=sz["mbufs"], data_room=DATA_ROOM, pcap=pcap,
                         hashsize=sz["hashsize"], maxflows=sz["hashsize"] if cache else 0, in_addr=IN_ADDR,
                         out_addr=OUT_ADDR, dst_prefix=DST_PREFIX, nexthop=NEXTHOP, nexthop_mac=NEXTHOP_MAC)
    if io:
        text = text[:text.index("[[pipeline]]")] + IO_PIPELINE
    cfg.write_text(text)
    # --duration is only a backstop: the run is stopped with SIGINT after the window
    cmd = [sys.executable, "-m", "dataplane", "run", str(cfg), "--duration", "3600", "--json"]
    out_p, err_p = workdir / f"{prefix}.out", workdir / f"{prefix}.err"
    t0 = time.monotonic()
    try:
        with open(out_p, "w") as out, open(err_p, "w") as err:
            proc = subprocess.Popen(cmd, stdout=out, stderr=err, cwd=REPO)
        try:
            res = measure(proc, prefix, args, args.flows)
        finally:
            code = stop(proc)
    except Exception as e:
        raise RuntimeError(f"{e}\nours: {' '.join(cmd)} (config {cfg})\n"
                           f"{err_p.read_text(errors='replace')[-3000:]}\n"
                           f"{out_p.read_text(errors='replace')[-2000:]}") from e
    finally:
        remove_runtime_dir(prefix)
    if code != 0:
        raise RuntimeError(f"dataplane exited {code}:\n{err_p.read_text(errors='replace')[-3000:]}")
    final = last_json(out_p.read_text(errors="replace"))
    drops = (final.get("totals") or {}).get("drops", {})
    res.update(exit_code=code, total_s=time.monotonic() - t0, config=cfg.read_text(),
               final_totals=final.get("totals"), final_drops={k: v for k, v in drops.items() if v},
               ip6flow=ip6flow_counters(final),
               runtime={row["stage"]: {k: row.get(k) for k in ("cycles_per_pkt", "pkts_per_call", "packets")}
                        for row in final.get("runtime", []) if isinstance(row, dict) and "stage" in row})
    # cache off: every packet takes the route path, nothing is ever cached
    res["window_all_hits"] = (True if io else window_all_hits(res["ip6flow"], args.flows) if cache else
                              bool(res["ip6flow"]) and res["ip6flow"]["created"] == 0)
    res["ip6flow_cycles_per_pkt"] = res["runtime"].get("ip6flow", {}).get("cycles_per_pkt")
    return res


# ---- driver ---------------------------------------------------------------------------

def median(runs: list[dict], key: str) -> float:
    return statistics.median(r[key] for r in runs)


def summarize(results: dict[str, list[dict]]) -> dict:
    s: dict = {}
    for k, runs in results.items():
        if runs:
            s[f"mpps_{k}"] = median(runs, "pps") / 1e6
            s[f"mpps_best_{k}"] = max(r["pps"] for r in runs) / 1e6
            s[f"mpkts_per_fwd_cpu_s_{k}"] = median(runs, "pkts_per_fwd_cpu_s") / 1e6
            s[f"fwd_thread_on_cpu_{k}"] = median(runs, "fwd_thread_on_cpu")
    if results.get("lpm") and results.get("fib"):
        s["ratio_fib_over_lpm"] = s["mpps_fib"] / s["mpps_lpm"]
    if results.get("ours"):
        ours = results["ours"]
        s["ours_window_all_hits"] = all(r["window_all_hits"] for r in ours)
        s["ours_fastforward"] = [r["ip6flow"].get("fastforward") for r in ours]
        s["ours_forward"] = [r["ip6flow"].get("forward") for r in ours]
        cyc = [r["ip6flow_cycles_per_pkt"] for r in ours if r.get("ip6flow_cycles_per_pkt")]
        s["ours_ip6flow_cycles_per_pkt"] = statistics.median(cyc) if cyc else None
    if results.get("io") and results.get("lpm") and results.get("ours"):
        # per CPU-second figures: what each thread costs per packet while it runs
        s["cpu_mhz"] = cpu_mhz()
        s["io_ns_per_pkt"] = 1e3 / s["mpkts_per_fwd_cpu_s_io"]
        s["lpm_ns_per_pkt"] = 1e3 / s["mpkts_per_fwd_cpu_s_lpm"]
        s["ours_ns_per_pkt"] = 1e3 / s["mpkts_per_fwd_cpu_s_ours"]
        s["stage_budget_ns_for_1_1x_lpm"] = s["lpm_ns_per_pkt"] / 1.1 - s["io_ns_per_pkt"]
        s["stage_budget_cycles_for_1_1x_lpm"] = s["stage_budget_ns_for_1_1x_lpm"] * s["cpu_mhz"] / 1e3
    for mine in ("ours", "nocache"):
        for peer in ("lpm", "fib"):
            if results.get(mine) and results.get(peer):
                s[f"ratio_{mine}_over_l3fwd_{peer}"] = s[f"mpps_{mine}"] / s[f"mpps_{peer}"]
                s[f"ratio_{mine}_over_l3fwd_{peer}_per_cpu_s"] = (
                    s[f"mpkts_per_fwd_cpu_s_{mine}"] / s[f"mpkts_per_fwd_cpu_s_{peer}"])
    return s


def cpu_mhz() -> float:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("cpu MHz"):
            return float(line.split(":")[1])
    return float("nan")


def report(args, results: dict[str, list[dict]], setup: dict) -> dict:
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    s = summarize(results)
    c = Console(width=None if sys.stdout.isatty() else 130)
    c.print(f"[bold]IPv6 forwarding at {args.flows:,} flows[/]: {setup['traffic']}\n"
            f"devices (every peer): net_pcap0 rx_pcap infinite_rx -> route -> net_null0 (no-rx, sink); "
            f"one forwarding core (cpu {WORKER_CPU}); --no-huge -m {setup['memory_mb']}; "
            f"{setup['mbufs']:,} mbufs of {DATA_ROOM} B data room, cache 256\n"
            f"l3fwd {setup['dpdk_version']} (built {setup['l3fwd_binary']}): -l {WORKER_CPU} (its main lcore "
            f"forwards), --parse-ptype, compiled-in route table, dst 2001:200:0:1::/64 -> port 1\n"
            f"ours: ip6flow maxflows = hashsize = {setup['hashsize']:,}; main thread on cpu {MAIN_CPU}\n"
            f"{args.rounds} round(s), peers alternated; each measured {args.seconds:g} s after a warm-up of "
            f">= {args.warmup_passes} pass(es) over the file and >= {args.warmup:g} s\n"
            f"figure: delta of the sink's opackets (telemetry /ethdev/stats) / time between the reads\n"
            f"load average before/after: {setup['loadavg_before']} / {setup['loadavg_after']}",
            highlight=False)
    t = Table(title="per run")
    t.add_column("peer")
    for i in range(args.rounds):
        t.add_column(f"round {i + 1}", justify="right")
    t.add_column("median", justify="right", style="bold")
    t.add_column("best", justify="right")
    for key, runs in results.items():
        if not runs:
            continue
        t.add_row(escape(PEERS[key]) + ", Mpps", *(f"{r['pps'] / 1e6:.3f}" for r in runs),
                  f"{median(runs, 'pps') / 1e6:.3f}", f"{max(r['pps'] for r in runs) / 1e6:.3f}")
        t.add_row("  fwd thread on its CPU, %", *(f"{r['fwd_thread_on_cpu'] * 100:.1f}" for r in runs),
                  f"{median(runs, 'fwd_thread_on_cpu') * 100:.1f}", "")
        t.add_row("  Mpkts per fwd-thread CPU-s", *(f"{r['pkts_per_fwd_cpu_s'] / 1e6:.3f}" for r in runs),
                  f"{median(runs, 'pkts_per_fwd_cpu_s') / 1e6:.3f}", "")
    c.print(t)
    lines = []
    for mine in ("ours", "nocache"):
        for peer in ("lpm", "fib"):
            k = f"ratio_{mine}_over_l3fwd_{peer}"
            if k in s:
                lines.append(f"ratio {mine}/l3fwd-{peer} (medians): [bold]{s[k]:.3f}[/]  "
                             f"(per forwarding-thread CPU-second: {s[k + '_per_cpu_s']:.3f})")
    if "ratio_fib_over_lpm" in s:
        lines.append(f"l3fwd fib/lpm: {s['ratio_fib_over_lpm']:.3f}")
    if "stage_budget_ns_for_1_1x_lpm" in s:
        lines.append(
            f"our I/O floor (xconnect, same source and sink): {s['mpkts_per_fwd_cpu_s_io']:.3f} Mpkts per CPU-s "
            f"= {s['io_ns_per_pkt']:.1f} ns/pkt; l3fwd-lpm {s['lpm_ns_per_pkt']:.1f} ns/pkt. To be 1.1x "
            f"l3fwd-lpm a router stage may cost at most [bold]{s['stage_budget_ns_for_1_1x_lpm']:.1f} ns/pkt "
            f"(~{s['stage_budget_cycles_for_1_1x_lpm']:.0f} cycles at {s['cpu_mhz']:.0f} MHz)[/]; ours costs "
            f"{s['ours_ns_per_pkt'] - s['io_ns_per_pkt']:.1f} ns/pkt over the floor")
    if results.get("ours"):
        r0 = results["ours"][-1]
        w = r0.get("dataplane_window") or {}
        lines.append(f"ours, last run: window punted {w.get('punted', '?')}, dropped {w.get('dropped', '?')} "
                     f"(of {r0['window_tx']:,} sent); whole-run drops {r0['final_drops'] or 'none'}")
        c6 = r0["ip6flow"]
        if c6:
            lines.append(f"ours, ip6flow IPv6 counters over the last whole run: route path (forward) "
                         f"{c6['forward']:,}, fast path (fastforward) {c6['fastforward']:,}; flows created "
                         f"{c6['created']:,}, cached at the end {c6['flows']:,} (maxflows {c6['maxflows']:,}), "
                         f"expired {c6['expired']:,}, reaped {c6['reaped_lru'] + c6['reaped_invalid']:,}, "
                         f"invalidated {c6['invalidated']:,}, punts {c6['punts'] or 0}")
            ok = all(r["window_all_hits"] for r in results["ours"])
            lines.append("  -> every run: the route path ran once per flow (first pass, before the window) "
                         "and nothing was removed, so the window was all cache hits" if ok else
                         "  -> [bold red]NOT all cache hits[/] in some run: forward != created != N, "
                         "or flows were removed/punted (see --json-out)")
        rt = {k: v for k, v in r0["runtime"].items() if v.get("cycles_per_pkt")}
        if rt:
            lines.append("ours, cycles/pkt (runtime rows): " +
                         ", ".join(f"{k} {v['cycles_per_pkt']:.1f}" for k, v in rt.items()))
    lines.append(("caveat: a 2-core shared VM, every peer on 2 MiB hugepages; " if HUGEPAGES else
                  "caveat: a 2-core shared VM, --no-huge (4 KiB pages: TLB misses on the mbufs; our pool is packed "
                  "across pages, l3fwd's is not, and our flow tables get transparent huge pages); ") +
                 "net_pcap's replay (an mbuf alloc + 60-byte copy per packet) and the null tx are in every "
                 "figure. l3fwd does not check or decrement the IPv6 hop limit; ours validates, decrements "
                 "and looks up a flow cache of N entries.")
    c.print("\n".join(lines), highlight=False)
    return {"setup": setup, "runs": results, **s}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--flows", type=int, help="flows N (default 1,000,000; --quick: 20,000)")
    ap.add_argument("--rounds", type=int, help="rounds of alternated runs (default 2; --quick: 1)")
    ap.add_argument("--seconds", type=float, help="seconds measured per run (default 8; --quick: 3)")
    ap.add_argument("--warmup", type=float, default=1.0,
                    help="minimum seconds of forwarding before the window (default 1)")
    ap.add_argument("--warmup-passes", type=int, default=1,
                    help="full passes over the file before the window (default 1: ours creates the flows)")
    ap.add_argument("--quick", action="store_true", help="smoke run: 20,000 flows, 1 round x 3 s")
    ap.add_argument("--peers", default="lpm,fib,ours,nocache,io",
                    help="comma list of lpm, fib, ours, nocache, io (default all, alternated in that order)")
    ap.add_argument("--l3fwd-src", type=Path, default=L3FWD_SRC,
                    help="directory holding l3fwd/ and common/ (default: dpdk-doc's)")
    ap.add_argument("--cache", type=Path,
                    default=Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "dp-bench",
                    help="where the built l3fwd is kept (default ~/.cache/dp-bench)")
    ap.add_argument("--start-timeout", type=float, default=180, help=argparse.SUPPRESS)
    ap.add_argument("--json-out", metavar="FILE", help="also write all figures as JSON here")
    ap.add_argument("--hugepages", action="store_true",
                    help="run every peer on 2 MiB hugepages (reserve and mount them first)")
    args = ap.parse_args()
    global HUGEPAGES
    HUGEPAGES = args.hugepages
    for key, full, quick in (("flows", 1_000_000, 20_000), ("rounds", 2, 1), ("seconds", 8.0, 3.0)):
        if getattr(args, key) is None:
            setattr(args, key, quick if args.quick else full)
    if args.rounds < 1 or args.seconds <= 0:
        ap.error("--rounds must be >= 1 and --seconds > 0")
    if not 1 <= args.flows <= MAX_FLOWS:
        ap.error(f"--flows must be 1..{MAX_FLOWS}")
    peers = [p.strip() for p in args.peers.split(",") if p.strip()]
    if not peers or set(peers) - set(PEERS):
        ap.error(f"--peers: a comma list of {', '.join(PEERS)}")
    if os.geteuid() != 0:
        sys.exit("needs root (DPDK EAL)")

    pcap = make_pcap(args.flows)
    binary = build_l3fwd(args.l3fwd_src, args.cache) if {"lpm", "fib"} & set(peers) else None
    sz = plan(args.flows)
    if HUGEPAGES:
        require_hugepages(sz["memory_mb"])
    setup = {
        "traffic": f"{args.flows:,} IPv6 flows (src 2001:db8:1::1:0:0+i -> dst in {DST_PREFIX}, "
                   f"next header 59, hop limit {HOP_LIMIT}), one {FRAME_LEN}-byte frame each "
                   f"({FRAME_LEN + 4} B with FCS) to {PCAP0_MAC}",
        "pcap": str(pcap), "flows": args.flows, **sz, "data_room": DATA_ROOM,
        "worker_cpu": WORKER_CPU, "main_cpu": MAIN_CPU, "seconds": args.seconds, "warmup_s": args.warmup,
        "warmup_passes": args.warmup_passes, "rounds": args.rounds, "peers": peers,
        "dpdk_version": _dpdk_version(), "l3fwd_binary": str(binary) if binary else None,
        "l3fwd_patches": [{"file": f, "why": why} for f, _, _, why in L3FWD_PATCHES],
        "method": "sink port (net_null0) opackets via DPDK telemetry /ethdev/stats, read after the "
                  "warm-up and --seconds later; rate = delta / time between the reads",
        "loadavg_before": [round(x, 2) for x in os.getloadavg()],
    }
    results: dict[str, list[dict]] = {k: [] for k in peers}
    with tempfile.TemporaryDirectory(prefix="ip6flow_bench_") as tmp:
        wd = Path(tmp)
        for rnd in range(args.rounds):
            for key in peers:
                print(f"round {rnd + 1}/{args.rounds}: {PEERS[key]} ...", file=sys.stderr, flush=True)
                if key in ("ours", "nocache", "io"):
                    r = run_ours(wd, args, pcap, sz, cache=key == "ours", io=key == "io")
                else:
                    r = run_l3fwd(wd, args, binary, pcap, key, sz)
                print(f"  {r['pps'] / 1e6:.3f} Mpps (fwd thread on CPU {r['fwd_thread_on_cpu'] * 100:.0f}%, "
                      f"warm-up {r['warmup_s']:.1f} s)", file=sys.stderr, flush=True)
                results[key].append(r)
    setup["loadavg_after"] = [round(x, 2) for x in os.getloadavg()]
    out = report(args, results, setup)
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(out, indent=2) + "\n")
    summary = {k: v for k, v in out.items() if k not in ("runs", "setup")}
    summary.update(flows=args.flows, rounds=args.rounds, seconds=args.seconds, peers=peers)
    print(RESULT_MARK + json.dumps(summary), flush=True)


if __name__ == "__main__":
    main()
