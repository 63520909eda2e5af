"""Shared pieces of the network-namespace tier: two "hosts" (namespaces) on
veth pairs whose root-side ends are the dataplane's net_af_packet ports, and
the dataplane itself as a `python3 -m dataplane run ... --json` subprocess.

    ns <tag>-a-<id>               root namespace                 ns <tag>-b-<id>
    va<id>  <-veth->  da<id> ==[dataplane]== db<id>  <-veth->  vb<id>
                      net_af_packet0   net_af_packet1

The root-side veths carry no IP configuration and have IPv6 disabled (set
before they go up: no link-local, no RS/MLD/ND from the kernel), so the only
frames on them are the hosts' and the dataplane's. The hosts skip duplicate
address detection, so their addresses are usable at once.
"""
from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.helpers import sh

DPDK_RUN_ROOT = Path("/var/run/dpdk")
STOP_GUARD_S = 15.0      # hang guard only: the stop time is measured and printed


# ---- topology -------------------------------------------------------------------

@dataclass(frozen=True)
class Host:
    """One namespace's interface: addresses with prefix length, optional
    default gateways and link MTU."""
    ip4: str                  # "10.1.0.2/24"
    ip6: str                  # "2001:db8:a::2/64"
    gw4: str | None = None
    gw6: str | None = None
    mtu: int | None = None


@dataclass
class Topo:
    uid: str
    ns_a: str
    ns_b: str
    va: str   # in ns A
    vb: str   # in ns B
    da: str   # root side of va, the dataplane's port a
    db: str   # root side of vb, the dataplane's port b
    ip_a: str
    ip_b: str
    ip6_a: str
    ip6_b: str
    offloads_off: bool = False   # the hosts' veths got tx checksum/TSO/GSO offloads off

    def in_a(self, *cmd: str) -> list[str]:
        return ["ip", "netns", "exec", self.ns_a, *cmd]

    def in_b(self, *cmd: str) -> list[str]:
        return ["ip", "netns", "exec", self.ns_b, *cmd]

    def mac(self, ns: str, ifname: str) -> str:
        return sh("ip", "netns", "exec", ns, "cat", f"/sys/class/net/{ifname}/address").stdout.strip()


def _bare(address: str) -> str:
    return address.split("/")[0]


def new_namespace(ns: str, sysctls: tuple[str, ...] = ()) -> None:
    """A namespace with lo up and no duplicate address detection (set before
    any interface is born in it: not even the link-local waits)."""
    sh("ip", "netns", "add", ns)
    sh("ip", "netns", "exec", ns, "sysctl", "-q", "-w", "net.ipv6.conf.default.accept_dad=0",
       "net.ipv6.conf.all.accept_dad=0", *sysctls)
    sh("ip", "-n", ns, "link", "set", "lo", "up")


def add_veth(outer: str, inner: str, ns: str) -> None:
    """A veth pair: `outer` in the root namespace (a dataplane port: up, no
    IPv6, so the kernel puts no RS/MLD/ND of its own on the wire), `inner`
    in `ns` (down, for the caller to configure)."""
    sh("ip", "link", "add", outer, "type", "veth", "peer", "name", inner, "netns", ns)
    sh("sysctl", "-q", "-w", f"net.ipv6.conf.{outer}.disable_ipv6=1")
    sh("ip", "link", "set", outer, "up")


@contextlib.contextmanager
def veth_topology(a: Host, b: Host, tag: str = "dpt", offloads_off: bool = False,
                  ns_sysctls: tuple[str, ...] = ()):
    """Build the two hosts; removed afterwards even on failure.

    offloads_off: turn tx checksum offload, TSO and GSO off on the hosts'
    veths (needs ethtool; skipped silently without it, see Topo.offloads_off).
    With the offloads on, the kernel hands the peer (and so net_af_packet)
    TCP/UDP segments whose checksum is still to be filled in (CHECKSUM_PARTIAL):
    forwarded as they are, the receiving host drops them (TcpInCsumErrors).
    ns_sysctls: extra "key=value" sysctls for both namespaces.
    """
    if shutil.which("ip") is None:
        pytest.skip("iproute2 (ip) not installed")
    uid = uuid.uuid4().hex[:6]  # 'va' + 6 chars: well under the 15-char IFNAMSIZ limit
    t = Topo(uid=uid, ns_a=f"{tag}-a-{uid}", ns_b=f"{tag}-b-{uid}",
             va=f"va{uid}", vb=f"vb{uid}", da=f"da{uid}", db=f"db{uid}",
             ip_a=_bare(a.ip4), ip_b=_bare(b.ip4), ip6_a=_bare(a.ip6), ip6_b=_bare(b.ip6))
    ethtool = shutil.which("ethtool") if offloads_off else None
    t.offloads_off = ethtool is not None
    try:
        for ns, inner, outer, host in ((t.ns_a, t.va, t.da, a), (t.ns_b, t.vb, t.db, b)):
            new_namespace(ns, ns_sysctls)
            add_veth(outer, inner, ns)
            if host.mtu:
                sh("ip", "-n", ns, "link", "set", inner, "mtu", str(host.mtu))
            if ethtool:
                sh("ip", "netns", "exec", ns, ethtool, "-K", inner,
                   "tx", "off", "tso", "off", "gso", "off")
            sh("ip", "-n", ns, "addr", "add", host.ip4, "dev", inner)
            sh("ip", "-n", ns, "addr", "add", host.ip6, "dev", inner, "nodad")
            sh("ip", "-n", ns, "link", "set", inner, "up")
            if host.gw4:
                sh("ip", "-n", ns, "route", "add", "default", "via", host.gw4)
            if host.gw6:
                sh("ip", "-n", ns, "-6", "route", "add", "default", "via", host.gw6)
        yield t
    finally:
        # Deleting a namespace destroys its veth end, which destroys the peer.
        for ns in (t.ns_a, t.ns_b):
            sh("ip", "netns", "del", ns, check=False)
        for outer in (t.da, t.db):  # only if a namespace never got its end
            if Path(f"/sys/class/net/{outer}").exists():
                sh("ip", "link", "del", outer, check=False)
        left = [n for n in (t.da, t.db) if Path(f"/sys/class/net/{n}").exists()]
        left += [n for n in (t.ns_a, t.ns_b) if Path(f"/run/netns/{n}").exists()]
        assert not left, f"topology not cleaned up: {left}"


# ---- the dataplane process ----------------------------------------------------------

class DataplaneProc:
    """`python3 -m dataplane run CONFIG --duration D --json`; output to files so
    a full pipe can never stall it."""

    def __init__(self, tmp_path: Path, cfg_path: Path, duration: float):
        self.out_path = tmp_path / "dataplane.stdout"
        self.err_path = tmp_path / "dataplane.stderr"
        self._out = self.out_path.open("w")
        self._err = self.err_path.open("w")
        self.started = time.monotonic()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "dataplane", "run", str(cfg_path),
             "--duration", str(duration), "--json"],
            stdout=self._out, stderr=self._err, stdin=subprocess.DEVNULL)

    def stderr(self) -> str:
        self._err.flush()
        return self.err_path.read_text()

    def stdout(self) -> str:
        self._out.flush()
        return self.out_path.read_text()

    def check_alive(self) -> None:
        if self.proc.poll() is not None:
            pytest.fail(f"dataplane exited early with {self.proc.returncode}\n"
                        f"stdout:\n{self.stdout()[-2000:]}\nstderr:\n{self.stderr()}")

    def stop(self, sig: int, guard: float = STOP_GUARD_S) -> tuple[int, float]:
        """Send ``sig``; returns (exit code, seconds from signal to exit)."""
        t0 = time.monotonic()
        self.proc.send_signal(sig)
        try:
            rc = self.proc.wait(timeout=guard)
        except subprocess.TimeoutExpired:
            pytest.fail(f"dataplane did not exit within {guard:.0f} s of signal {sig}\n"
                        f"stderr:\n{self.stderr()}")
        return rc, time.monotonic() - t0

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)
        self._out.close()
        self._err.close()

    def result(self) -> dict:
        text = self.stdout()
        try:
            return json.loads(text)
        except json.JSONDecodeError as e:
            pytest.fail(f"--json output is not JSON ({e}):\n{text[:2000]}\nstderr:\n{self.stderr()}")


def assert_runtime_dir_gone(file_prefix: str) -> None:
    run_dir = DPDK_RUN_ROOT / file_prefix
    assert not run_dir.exists(), f"DPDK runtime dir left behind: {run_dir} {sorted(os.listdir(run_dir))}"


# ---- ping -------------------------------------------------------------------------

def ping(topo: Topo, dst: str, count: int, interval: float = 0.05, v6: bool = False,
         timeout: float = 30.0, extra: tuple[str, ...] = ()) -> subprocess.CompletedProcess:
    """`ping` from host A."""
    args = ["ping", "-n", "-c", str(count), "-i", str(interval), "-W", "1", *extra]
    if v6:
        args.insert(1, "-6")
    return sh(*topo.in_a(*args, dst), check=False, timeout=timeout)


def rtt_avg_ms(ping_out: str) -> float | None:
    m = re.search(r"= [\d.]+/([\d.]+)/[\d.]+/[\d.]+ ms", ping_out)
    return float(m.group(1)) if m else None


def assert_no_loss(res: subprocess.CompletedProcess, count: int, what: str) -> float | None:
    m = re.search(r"(\d+) packets transmitted, (\d+) received", res.stdout)
    assert res.returncode == 0 and m, f"{what} failed:\n{res.stdout}{res.stderr}"
    assert (int(m.group(1)), int(m.group(2))) == (count, count), f"{what} lost packets:\n{res.stdout}"
    assert " 0% packet loss" in res.stdout, res.stdout
    return rtt_avg_ms(res.stdout)
