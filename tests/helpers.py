"""Shared test helpers: configs on virtual devices, a running dataplane."""
from __future__ import annotations

import contextlib
import json
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

from dataplane import config
from dataplane.eal import Eal
from dataplane.engine import Dataplane


def port(name: str, device: str, poll: bool = True) -> str:
    """One [[ports]] table."""
    return f'[[ports]]\nname = "{name}"\ndevice = "{device}"\n' + ("" if poll else "poll = false\n")


def xconnect(mapping: dict[str, str]) -> str:
    """An xconnect [[pipeline]] stage."""
    pairs = ", ".join(f'{k} = "{v}"' for k, v in mapping.items())
    return f'[[pipeline]]\nstage = "xconnect"\nmap = {{ {pairs} }}\n'


def vdev_toml(file_prefix: str, workers: str = "[1]") -> str:
    """The [eal], [mempool] and [run] tables of a test on virtual devices: no
    hugepages, a small pool, workers back in Python every 20 ms."""
    return textwrap.dedent(f"""
        [eal]
        workers = {workers}
        hugepages = false
        memory_mb = 256
        file_prefix = "{file_prefix}"
        log_level = "warning"
        [mempool]
        mbufs = 8191
        cache = 64
        [run]
        poll_budget_ms = 20
        """)


def vdev_config(file_prefix: str, body: str, workers: str = "[1]", extra: str = "") -> config.Config:
    text = vdev_toml(file_prefix, workers) + textwrap.dedent(body) + textwrap.dedent(extra)
    return config.loads(text, "<test>", check_drivers=False)


@contextlib.contextmanager
def running(cfg: config.Config, before_start=None):
    """EAL + started dataplane; everything torn down afterwards, EAL last.
    before_start(dp) runs before the workers do (punt handlers, hooks)."""
    eal = Eal(cfg)
    dp = Dataplane(cfg)
    try:
        if before_start is not None:
            before_start(dp)
        dp.start()
        yield dp
    finally:
        dp.stop()
        eal.close()


def flow_records(n: int, first_ms: int, last_ms: int, proto: int = 6, packets: int = 10,
                 octets: int = 1000):
    """n expired IPv4 flows as a worker hands them to the exporter (a cffi
    array of struct dp_flow_record): source 10.0.x.y by index, one destination."""
    from dataplane import native

    recs = native.flow_records(n)
    for i in range(n):
        r = recs[i]
        r.ipver, r.proto, r.packets, r.bytes = 4, proto, packets, octets
        r.src[0:4] = bytes([10, 0, (i >> 8) & 255, i & 255])
        r.dst[0:4] = bytes([10, 1, 0, 1])
        r.first_ms, r.last_ms = first_ms, last_ms
    return recs


def wait_for(pred, timeout: float = 10.0, interval: float = 0.005) -> bool:
    """Poll pred() until it holds or `timeout` s pass (a hang guard: tests
    wait for counters, never for time); its last value."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(interval)
    return pred()


def conserved(snap) -> bool:
    t = snap.totals
    return t["rx"] + t["injected"] == t["tx"] + t["dropped"] + t["punted"]


# ---- the CLI as a subprocess (e2e tier) ------------------------------------------

def eal_toml(prefix: str, workers: str = "[1]") -> str:
    """The [eal] table every subprocess test uses: no hugepages, its own prefix."""
    return (f'[eal]\nworkers = {workers}\nhugepages = false\nmemory_mb = 256\n'
            f'file_prefix = "{prefix}"\nlog_level = "warning"\n')


def dataplane_cli(*args: str, timeout: float = 90, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "dataplane", *args], capture_output=True,
                          text=True, timeout=timeout, **kw)


def probe_toml(pcap: Path, export: str = "", forever: bool = False) -> str:
    """A flow probe: pcap in (`mirror`), netflow, xconnect to a `drop` sink."""
    replay = ",infinite_rx=1" if forever else ""
    return f"""
[[ports]]
name = "mirror"
device = "net_pcap0,rx_pcap={pcap}{replay}"
[[ports]]
name = "drop"
device = "net_null0,no-rx=1"
poll = false
[[pipeline]]
stage = "netflow"
{export}
[[pipeline]]
stage = "xconnect"
map = {{ mirror = "drop" }}
"""


def meter_pcap_cli(tmp_path: Path, pcap: Path, collector_port: int, version: int,
                   prefix: str) -> dict:
    """Run a flow probe through the CLI to the end of the pcap, exporting to
    127.0.0.1:collector_port; returns its --json output."""
    cfg = tmp_path / "probe.toml"
    export = (f'export = {{ version = {version}, collectors = ["127.0.0.1:{collector_port}"], '
              f'source_id = 7 }}')
    cfg.write_text(eal_toml(prefix) + probe_toml(pcap, export) + "[metrics]\nenabled = false\n")
    r = dataplane_cli("run", str(cfg), "--duration", "1.5", "--json", timeout=60)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


class RunningCli:
    """`dataplane run CONFIG --json` in the background, until its control
    socket answers; on exit SIGTERM and the final JSON in .result."""

    def __init__(self, config: Path, socket_path: Path):
        self.config, self.socket = config, socket_path
        self.proc: subprocess.Popen | None = None
        self.stdout = self.stderr = ""

    def __enter__(self) -> "RunningCli":
        self.proc = subprocess.Popen([sys.executable, "-m", "dataplane", "run", str(self.config),
                                      "--json"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     text=True)
        deadline = time.monotonic() + 20
        while not self.socket.exists():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise AssertionError(f"no control socket: {self.stderr}")
            time.sleep(0.05)
        return self

    def stop(self, sig: int = signal.SIGTERM) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        self.stdout, self.stderr = self.proc.communicate(timeout=30)
        return self.proc.returncode

    @property
    def result(self) -> dict:
        return json.loads(self.stdout)

    def __exit__(self, *exc) -> None:
        if self.proc is not None and self.proc.returncode is None:
            self.stop()


# ---- processes and commands (netns tier) ---------------------------------------

def sh(*args: str, check: bool = True, timeout: float = 30.0) -> subprocess.CompletedProcess:
    """Run a command (ip, sysctl...); a failure raises with its output."""
    res = subprocess.run(list(args), capture_output=True, text=True, timeout=timeout)
    if check and res.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} -> rc {res.returncode}\n{res.stdout}{res.stderr}")
    return res


def kill_proc(p: subprocess.Popen, sig: int = signal.SIGTERM, wait: float = 5.0) -> None:
    """Signal a helper process; kill it if it does not go within `wait` s."""
    if p.poll() is None:
        p.send_signal(sig)
        try:
            p.wait(timeout=wait)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait(timeout=5)
