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
import threading
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


class _Collector:
    """A collector process in the foreground for the duration of a with-block:
    started, waited for until its UDP socket is bound (a port we picked
    ourselves may be taken meanwhile: then another), drained, stopped."""

    NAME = ""

    def __init__(self, tmp_dir: os.PathLike | str, port: Optional[int], host: str) -> None:
        self.base = Path(tmp_dir)
        self.host = host
        self.fixed_port = port is not None
        self.port = port or free_udp_port(host)
        self.logfile = self.base / f"{self.NAME}.log"
        self.proc: Optional[subprocess.Popen] = None
        self.returncode: Optional[int] = None

    @property
    def address(self) -> tuple[str, int]:
        return (self.host, self.port)

    def command(self) -> list[str]:
        raise NotImplementedError

    def prepare(self) -> None:
        """Directories and files the process needs before it starts."""

    def start(self, timeout: float = 10.0, attempts: int = 3):
        self.base.mkdir(parents=True, exist_ok=True)
        self.prepare()
        with open(self.logfile, "wb") as log:
            self.proc = subprocess.Popen(self.command(), stdout=log, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout
        while _udp_socket_state(self.port, self.host, self.proc.pid) is None:
            if self.proc.poll() is not None:
                if not self.fixed_port and attempts > 1:
                    self.proc, self.port = None, free_udp_port(self.host)
                    return self.start(timeout, attempts - 1)
                raise RuntimeError(f"{self.NAME} exited with {self.proc.returncode}: {self.log()}")
            if time.monotonic() > deadline:
                self.stop()
                raise TimeoutError(f"{self.NAME} not listening on {self.host}:{self.port}: {self.log()}")
            time.sleep(0.02)
        return self

    def drain(self, timeout: float = 5.0, settle: float = 0.2) -> None:
        """Wait until the collector has read everything queued on its socket
        (Recv-Q 0), then a little longer for the last datagram: stopping it
        while datagrams are still queued would lose them."""
        deadline = time.monotonic() + timeout
        while self.proc and (_udp_socket_state(self.port, self.host, self.proc.pid) or 0) > 0:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{self.NAME} did not drain its socket")
            time.sleep(0.02)
        time.sleep(settle)

    def _terminate(self, sig: int, timeout: float) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def log(self) -> str:
        return self.logfile.read_text(errors="replace") if self.logfile.exists() else ""


class Nfcapd(_Collector):
    """Run `nfcapd -w DIR -b 127.0.0.1 -p PORT -B 33554432 -P PIDFILE` in the
    foreground (no -D) for the duration of a with-block. Malformed datagrams
    show up only in log() (e.g. "Process_v9: flowset length error"), not in
    any counter: 1.7.1 leaves "Bad Packets" at 0."""

    NAME = "nfcapd"

    def __init__(self, tmp_dir: os.PathLike | str, port: Optional[int] = None,
                 host: str = "127.0.0.1", extra_args: Iterable[str] = ()) -> None:
        super().__init__(tmp_dir, port, host)
        self.dir = self.base / "flows"
        self.pidfile = self.base / "nfcapd.pid"
        self.extra_args = list(extra_args)

    def command(self) -> list[str]:
        return ["nfcapd", "-w", str(self.dir), "-b", self.host, "-p", str(self.port),
                "-B", str(RCVBUF), "-P", str(self.pidfile), *self.extra_args]

    def prepare(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)

    def stop(self, timeout: float = 10.0) -> int:
        if self.proc is None:
            return self.returncode or 0
        self._terminate(signal.SIGTERM, timeout)  # nfcapd flushes and closes its file
        self.returncode, self.proc = self.proc.returncode, None
        return self.returncode

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


def nfacctd_available() -> bool:
    return shutil.which("nfacctd") is not None


class Nfacctd(_Collector):
    """pmacct's nfacctd (Debian's pmacct 1.7.x) as a second, independent
    NetFlow v9/IPFIX decoder, run in the foreground for a with-block:

        with Nfacctd(tmp_path) as acct:
            send_udp(datagrams, acct.port)
            acct.drain()
        acct.records(), acct.totals(), acct.log()

    One print plugin writes JSON lines to <tmp_dir>/flows.json, aggregated by
    AGGREGATE: nfacctd sums bytes, packets and flows of every record with the
    same (src, dst, sport, dport, proto, tos), so compare sums, not records.
    The plugin purges its cache every `refresh_time` seconds and on SIGINT,
    which stop() sends: the core closes its socket, hands the plugin what it
    still buffers, SIGINTs it and waits for it, and the plugin's last purge is
    in the file when the core exits. print_output_file_append keeps the rows of
    every purge, so one key can appear in several rows; totals() sums them.

    nfacctd_disable_checks is false so that sequence gaps are logged
    ("expecting flow 'N' but received 'M'"); debug=True also logs each
    template as decoded and data it discards ("Discarded NetFlow v9/IPFIX
    packet (R: unknown template ...)"). Both only reach log()."""

    AGGREGATE = ("src_host", "dst_host", "src_port", "dst_port", "proto", "tos", "flows")

    NAME = "nfacctd"

    def __init__(self, tmp_dir: os.PathLike | str, port: Optional[int] = None,
                 host: str = "127.0.0.1", refresh_time: int = 60, debug: bool = False,
                 extra_config: Optional[dict] = None) -> None:
        super().__init__(tmp_dir, port, host)
        self.config_file = self.base / "nfacctd.conf"
        self.output = self.base / "flows.json"
        self.refresh_time = refresh_time
        self.debug = debug
        self.extra_config = dict(extra_config or {})

    def config(self) -> dict:
        """The nfacctd configuration (key: value), see CONFIG-KEYS of pmacct."""
        cfg = {
            "daemonize": "false",            # the default: stay our child, log to stdout
            "nfacctd_ip": self.host,
            "nfacctd_port": self.port,
            "nfacctd_pipe_size": RCVBUF,     # the socket's receive buffer
            "nfacctd_disable_checks": "false",  # log sequence number gaps
            "debug": "true" if self.debug else "false",
            "plugins": "print",
            "aggregate": ", ".join(self.AGGREGATE),
            "print_output": "json",
            "print_output_file": str(self.output),
            "print_output_file_append": "true",  # else each purge overwrites the last
            "print_refresh_time": self.refresh_time,
            "print_num_protos": "true",      # "6", not "tcp"
        }
        cfg.update(self.extra_config)
        return cfg

    def command(self) -> list[str]:
        return ["nfacctd", "-f", str(self.config_file)]

    def prepare(self) -> None:
        self.config_file.write_text("".join(f"{k}: {v}\n" for k, v in self.config().items()))

    def _children(self) -> list[int]:
        pid = self.proc.pid
        try:
            return [int(c) for c in
                    Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
        except (OSError, ValueError):
            return []

    @staticmethod
    def _running(pid: int) -> bool:
        try:  # a zombie has finished its work; its parent or init reaps it
            return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
        except (OSError, IndexError):
            return False

    def stop(self, timeout: float = 15.0) -> int:
        """SIGINT: the documented graceful stop that purges the plugin caches.
        The core sleeps 2 s before signalling its plugins, so this takes > 2 s."""
        if self.proc is None:
            return self.returncode or 0
        children = self._children()  # the plugin processes (the core forks them)
        self._terminate(signal.SIGINT, timeout)
        deadline = time.monotonic() + timeout
        for child in children:
            while self._running(child):
                if time.monotonic() > deadline:
                    os.kill(child, signal.SIGKILL)
                    break
                time.sleep(0.02)
        self.returncode, self.proc = self.proc.returncode, None
        return self.returncode

    def records(self) -> list[dict]:
        """Rows of the print plugin's JSON output, one per aggregate and purge,
        normalized: src, dst (ipaddress), sport, dport, proto, tos, flows,
        packets, bytes; plus the untouched object under "raw"."""
        if not self.output.exists():
            return []
        rows = []
        for line in self.output.read_text().splitlines():
            if not line.strip():
                continue
            r = json.loads(line)
            if r.get("event_type", "purge") != "purge":  # markers, if enabled
                continue
            rows.append({
                "src": ipaddress.ip_address(r["ip_src"]), "dst": ipaddress.ip_address(r["ip_dst"]),
                "sport": int(r.get("port_src", 0)), "dport": int(r.get("port_dst", 0)),
                "proto": int(r.get("ip_proto", 0)), "tos": int(r.get("tos", 0)),
                "flows": int(r.get("flows", 0)), "packets": int(r["packets"]),
                "bytes": int(r["bytes"]), "raw": r,
            })
        return rows

    def totals(self) -> dict[tuple, dict]:
        """records() summed over purges: (src, dst, sport, dport, proto, tos) ->
        {"flows", "packets", "bytes"}."""
        out: dict[tuple, dict] = {}
        for r in self.records():
            key = (r["src"], r["dst"], r["sport"], r["dport"], r["proto"], r["tos"])
            t = out.setdefault(key, {"flows": 0, "packets": 0, "bytes": 0})
            for k in t:
                t[k] += r[k]
        return out


class UdpTap:
    """A collector of our own, in-process: a UDP socket on host:port read by a
    thread that keeps every datagram, decoded by tests/nfdecode.py (which
    shares no code with the exporter), in arrival order. Unlike nfcapd it is
    never restarted in a test, so it sees the whole sequence-number stream of
    an export, and lets a test tell exactly which datagrams another collector
    missed.

        tap = UdpTap()
        ... export to tap.port ...
        tap.wait_quiet(); tap.close()
        tap.datagrams  # [nfdecode.Datagram], tap.checker (SequenceChecker)
    """

    def __init__(self, port: Optional[int] = None, host: str = "127.0.0.1") -> None:
        from tests import nfdecode
        self._nfdecode = nfdecode
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:  # root: beyond rmem_max, so bursts (a shutdown flush) fit
            self.sock.setsockopt(socket.SOL_SOCKET, getattr(socket, "SO_RCVBUFFORCE", 33), RCVBUF)
        except OSError:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RCVBUF)
        self.sock.bind((host, port or 0))
        self.sock.settimeout(0.1)
        self.host, self.port = self.sock.getsockname()[:2]
        self.templates = nfdecode.TemplateCache()
        self.checker = nfdecode.SequenceChecker()
        self.datagrams: list = []
        self.errors: list[str] = []
        self.received = 0            # datagrams, decodable or not
        self.last_arrival = time.monotonic()
        self._stop = False
        self._thread = threading.Thread(target=self._run, name=f"udptap-{self.port}", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop:
            try:
                data, addr = self.sock.recvfrom(65535)
            except socket.timeout:
                continue
            except OSError:
                return
            self.received += 1
            self.last_arrival = time.monotonic()
            try:
                dg = self._nfdecode.decode(data, self.templates, addr)
            except self._nfdecode.DecodeError as e:
                self.errors.append(str(e))
                continue
            self.checker.feed(dg, addr)
            self.datagrams.append(dg)

    def wait_quiet(self, settle: float = 0.3, timeout: float = 30.0) -> None:
        """Until nothing arrived for `settle` s (and the socket is empty)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() - self.last_arrival < settle:
            if time.monotonic() > deadline:
                raise TimeoutError("UdpTap: datagrams kept arriving")
            time.sleep(0.05)

    @property
    def records(self) -> list:
        return [r for dg in self.datagrams for r in dg.records]

    def close(self) -> None:
        self._stop = True
        self._thread.join()
        self.sock.close()

    def __enter__(self) -> "UdpTap":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
