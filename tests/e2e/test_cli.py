"""The `dataplane` command as a user runs it: a subprocess, real EAL, real vdevs."""
from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import unique_prefix
from tests.helpers import dataplane_cli, eal_toml

pytestmark = pytest.mark.timeout(120)
DPDK_RUN = Path("/var/run/dpdk")


dataplane = dataplane_cli


def null_config(tmp_path: Path, prefix: str) -> Path:
    p = tmp_path / "dp.toml"
    p.write_text(eal_toml(prefix) + """
[[ports]]
name = "a"
device = "net_null0"
[[ports]]
name = "b"
device = "net_null1"
[[pipeline]]
stage = "xconnect"
map = { a = "b", b = "a" }
[run]
poll_budget_ms = 50
""")
    return p


def test_embedded_default_forwards_and_cleans_up():
    r = dataplane("run", "--duration", "2", "--json")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    t = out["totals"]
    assert t["tx"] > 0 and t["rx"] == t["tx"] + t["dropped"] + t["punted"] - t["injected"]
    assert out["ports"]["wire"]["rx"] == out["ports"]["sink"]["tx"] == t["tx"]
    assert out["forwarding_s"] is not None
    print(f"ready {out['ready_s']:.2f} s, forwarding {out['forwarding_s']:.2f} s after start")
    assert not (DPDK_RUN / "dataplane-demo").exists()


def test_sigterm_stops_cleanly_with_final_counters(tmp_path):
    prefix = unique_prefix("sigterm")
    proc = subprocess.Popen([sys.executable, "-m", "dataplane", "run", str(null_config(tmp_path, prefix)),
                             "--json"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    time.sleep(2.0)
    assert proc.poll() is None, proc.stderr.read()
    t0 = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    stdout, stderr = proc.communicate(timeout=30)  # a hang guard, not a timing assertion
    print(f"stopped {time.monotonic() - t0:.3f} s after SIGTERM")
    assert proc.returncode == 0, stderr
    out = json.loads(stdout)
    assert out["signals"] == [signal.SIGTERM]
    assert out["totals"]["tx"] > 0 and out["totals"]["dropped"] == 0
    assert not (DPDK_RUN / prefix).exists()


def test_bad_config_exits_2_naming_file_and_key(tmp_path):
    p = tmp_path / "bad.toml"
    p.write_text('[[ports]]\nname = "a"\ndevice = "net_null0"\nrx_desc = "lots"\n'
                 '[[pipeline]]\nstage = "xconnect"\nmap = {}\n')
    r = dataplane("run", str(p), "--duration", "1")
    assert r.returncode == 2
    assert f"{p}: ports[0].rx_desc" in r.stderr and "'lots'" in r.stderr


def test_port_that_cannot_attach_exits_1_naming_the_key(tmp_path):
    p = null_config(tmp_path, unique_prefix("attach"))
    p.write_text(p.read_text().replace('device = "net_null1"', 'device = "net_null1,bogus_arg=1"'))
    r = dataplane("run", str(p), "--duration", "1")
    assert r.returncode == 1
    assert "ports[1].device" in r.stderr and "net_null1,bogus_arg=1" in r.stderr


def test_check_reports_a_missing_pcap(tmp_path):
    p = null_config(tmp_path, unique_prefix("check"))
    assert dataplane("check", str(p)).returncode == 0
    p.write_text(p.read_text().replace('"net_null0"', f'"net_pcap0,rx_pcap={tmp_path}/missing.pcap"'))
    r = dataplane("check", str(p), "--json")
    assert r.returncode == 1
    host = json.loads(r.stdout)["host"]
    assert any(c["level"] == "error" and "missing.pcap" in c["detail"] for c in host)


def test_pmds_lists_virtual_and_pci_drivers():
    r = dataplane("pmds", "--json")
    assert r.returncode == 0
    by_name = {d["name"]: d for d in json.loads(r.stdout)}
    assert "no-rx" in by_name["net_null"]["params"]
    assert "8086:10fb" in by_name["net_ixgbe"]["pci_ids"]
