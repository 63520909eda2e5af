"""Harness for a real collector: nfcapd/nfdump from Debian's nfdump package
(1.7.x), so the dataplane's exporter is also checked by third-party code.

    with Nfcapd(tmp_path) as cap:
        send_udp(datagrams, cap.port)
        cap.drain()
    cap.records(), cap.stats()

nfcapd only writes its file when it stops (SIGTERM flushes and renames
nfcapd.current.<pid> to nfcapd.<yyyymmddhhmm>), so records()/stats() are read
after the context exits. Each instance writes to <tmp_dir>/flows; starting a
second one on the same tmp_dir appends to the same time-slot file.
"""
from __future__ import annotations

import ipaddress
import json
import os
import shutil
import signal
import socket
import subprocess
import time
from datetime import datetime
from pathlib import Path
from typing import Iterable, Optional

RCVBUF = 33554432
TCP_FLAG_CHARS = "CEUAPRSF"  # nfdump's flag string, most significant bit first


def available() -> bool:
    return shutil.which("nfcapd") is not None and shutil.which("nfdump") is not None


def free_udp_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def send_udp(datagrams: Iterable[bytes], port: int, host: str = "127.0.0.1",
             source_port: int = 0) -> tuple[str, int]:
    """Send datagrams from one socket (one exporter address); return that address."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind((host, source_port))
        for d in datagrams:
            s.sendto(d, (host, port))
        return s.getsockname()


def _udp_socket_state(port: int, host: str, pid: int) -> Optional[int]:
    """Recv-Q of process `pid`'s UDP socket bound to host:port, or None if it has
    none (yet). The pid matters: another socket may hold the same port."""
    out = subprocess.run(["ss", "-Hnlup", f"sport = :{port}"], capture_output=True, text=True,
                         check=True).stdout
    for line in out.splitlines():
        cols = line.split()  # State Recv-Q Send-Q Local Peer users:(("nfcapd",pid=N,fd=M))
        if len(cols) >= 4 and cols[3] == f"{host}:{port}" and f"pid={pid}," in line:
            return int(cols[1])
    return None


def _flags(s: str) -> int:
    if s.isdigit() or s.startswith("0x"):
        return int(s, 0)
    return sum(1 << (7 - i) for i, c in enumerate(s[:8]) if c != ".")


def _epoch_ms(s: str) -> int:
    # nfdump prints local time without a zone; interpret it the same way.
    return round(datetime.fromisoformat(s).timestamp() * 1000)


class Nfcapd:
    """Run `nfcapd -w DIR -b 127.0.0.1 -p PORT -B 33554432 -P PIDFILE` in the
    foreground (no -D) for the duration of a with-block."""

    def __init__(self, tmp_dir: os.PathLike | str, port: Optional[int] = None,
                 host: str = "127.0.0.1", extra_args: Iterable[str] = ()) -> None:
        self.base = Path(tmp_dir)
        self.dir = self.base / "flows"
        self.host = host
        self.fixed_port = port is not None
        self.port = port or free_udp_port(host)
        self.pidfile = self.base / "nfcapd.pid"
        self.logfile = self.base / "nfcapd.log"
        self.extra_args = list(extra_args)
        self.proc: Optional[subprocess.Popen] = None
        self.returncode: Optional[int] = None

    @property
    def address(self) -> tuple[str, int]:
        return (self.host, self.port)

    def command(self) -> list[str]:
        return ["nfcapd", "-w", str(self.dir), "-b", self.host, "-p", str(self.port),
                "-B", str(RCVBUF), "-P", str(self.pidfile), *self.extra_args]

    def start(self, timeout: float = 10.0, attempts: int = 3) -> "Nfcapd":
        """Start nfcapd and wait until its socket is bound. A port we picked
        ourselves may be taken before nfcapd binds it: then retry on another."""
        self.dir.mkdir(parents=True, exist_ok=True)
        with open(self.logfile, "wb") as log:
            self.proc = subprocess.Popen(self.command(), stdout=log, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout
        while _udp_socket_state(self.port, self.host, self.proc.pid) is None:
            if self.proc.poll() is not None:
                if not self.fixed_port and attempts > 1:
                    self.proc, self.port = None, free_udp_port(self.host)
                    return self.start(timeout, attempts - 1)
                raise RuntimeError(f"nfcapd exited with {self.proc.returncode}: {self.log()}")
            if time.monotonic() > deadline:
                self.stop()
                raise TimeoutError(f"nfcapd not listening on {self.host}:{self.port}: {self.log()}")
            time.sleep(0.02)
        return self

    def drain(self, timeout: float = 5.0, settle: float = 0.2) -> None:
        """Wait until nfcapd has read everything queued on its socket (Recv-Q 0),
        then a little longer for it to process the last datagram: a SIGTERM
        while datagrams are still queued would lose them."""
        deadline = time.monotonic() + timeout
        while self.proc and (_udp_socket_state(self.port, self.host, self.proc.pid) or 0) > 0:
            if time.monotonic() > deadline:
                raise TimeoutError("nfcapd did not drain its socket")
            time.sleep(0.02)
        time.sleep(settle)

    def stop(self, timeout: float = 10.0) -> int:
        if self.proc is None:
            return self.returncode or 0
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)  # nfcapd flushes and closes its file
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.returncode, self.proc = self.proc.returncode, None
        return self.returncode

    def __enter__(self) -> "Nfcapd":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def log(self) -> str:
        """nfcapd's output. Malformed datagrams show up only here (e.g. "Process_v9:
        flowset length error"), not in any counter: 1.7.1 leaves "Bad Packets" at 0."""
        return self.logfile.read_text(errors="replace") if self.logfile.exists() else ""

    def files(self) -> list[Path]:
        return sorted(p for p in self.dir.iterdir() if p.name.startswith("nfcapd."))

    def records(self) -> list[dict]:
        """Flows as nfdump reads them back (`nfdump -R DIR -o json`), normalized:
        src, dst, nexthop (ipaddress), sport, dport, proto, tos, tcp_flags,
        packets, bytes, in_ifx, out_ifx, src_mask, dst_mask, first/last (epoch
        ms), exporter; plus the untouched nfdump object under "raw"."""
        if not self.files():
            return []
        # Not -q: in 1.7.1 it drops the enclosing [ ] and the output stops being JSON.
        out = subprocess.run(["nfdump", "-R", str(self.dir), "-o", "json"], capture_output=True,
                             text=True, check=True).stdout
        if "No matching flows" in out:
            return []
        return [self._normalize(r) for r in json.loads(out) if r.get("type") == "FLOW"]

    @staticmethod
    def _normalize(r: dict) -> dict:
        v6 = "src6_addr" in r
        ip = lambda k: ipaddress.ip_address(r[k]) if r.get(k) else None  # noqa: E731
        return {
            "ip_version": 6 if v6 else 4,
            "src": ip("src6_addr" if v6 else "src4_addr"),
            "dst": ip("dst6_addr" if v6 else "dst4_addr"),
            "nexthop": ip("ip6_next_hop") or ip("ip4_next_hop"),
            "sport": r.get("src_port", 0), "dport": r.get("dst_port", 0),
            "proto": r.get("proto", 0), "tos": r.get("src_tos", 0),
            "tcp_flags": _flags(str(r.get("tcp_flags", "0"))),
            "packets": r.get("in_packets", 0), "bytes": r.get("in_bytes", 0),
            "in_ifx": r.get("input_snmp", 0), "out_ifx": r.get("output_snmp", 0),
            "src_mask": r.get("src_mask", 0), "dst_mask": r.get("dst_mask", 0),
            "first": _epoch_ms(r["first"]) if "first" in r else None,
            "last": _epoch_ms(r["last"]) if "last" in r else None,
            "exporter": ip("ip4_router") or ip("ip6_router"),
            "raw": r,
        }

    def stats(self) -> dict:
        """`nfdump -R DIR -I` as a dict: lower-case keys with '_' for spaces
        (flows, packets, bytes, flows_tcp, ..., sequence_failures), ints where
        numeric. nfdump 1.7.1 crashes on an empty directory, hence the guard."""
        if not self.files():
            return {"flows": 0, "packets": 0, "bytes": 0, "sequence_failures": 0}
        out = subprocess.run(["nfdump", "-R", str(self.dir), "-I"], capture_output=True,
                             text=True, check=True).stdout
        stats: dict = {}
        for line in out.splitlines():
            key, sep, value = line.partition(":")
            if sep:
                value = value.strip()
                stats[key.strip().lower().replace(" ", "_")] = int(value) if value.isdigit() else value
        return stats
