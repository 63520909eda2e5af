"""The `dataplane` command as a user runs it: a subprocess, real EAL, real vdevs."""
from __future__ import annotations

import json
import os
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


# EAL in a private mount namespace whose /run is a fresh tmpfs holding other
# people's files; the prefix goes straight into the model, past validation, as
# a name that reaches elsewhere would if a check were ever lost.
_EAL_IN_PRIVATE_RUN = r"""
import os, sys
from pathlib import Path
from dataplane import config
from dataplane.eal import Eal
Path("/run/precious").write_text("keep")
Path("/run/dpdk/someone_else").mkdir(parents=True)
Path("/run/dpdk/someone_else/keep").write_text("keep")
stale = Path("/run/dpdk/stale")  # a crashed run's, and a file of someone's
stale.mkdir()
(stale / "marker").write_text("keep")
(stale / "fbarray_memzone").write_text("a crashed run's")
cfg = config.loads(sys.argv[1], check_drivers=False)
cfg = cfg.model_copy(update={"eal": cfg.eal.model_copy(update={"file_prefix": sys.argv[2]})})
Eal(cfg).close()
print(sorted(str(p) for p in Path("/run").rglob("*")))
"""


@pytest.mark.parametrize("prefix,gone", [("..", None), (".", None), ("stale", None),
                                         ("fresh", "/run/dpdk/fresh")])
def test_shutdown_removes_only_the_runtime_dir_eal_made_for_this_run(prefix, gone):
    """file_prefix = ".." once made the shutdown rmtree /var/run/dpdk/.. = /run."""
    toml = eal_toml("placeholder") + '[[ports]]\nname = "a"\ndevice = "net_null0"\n' \
        '[[pipeline]]\nstage = "xconnect"\nmap = {}\n'
    r = subprocess.run(["unshare", "-m", "--propagation", "private", "sh", "-c",
                        'mount -t tmpfs none /run && exec "$0" -c "$1" "$2" "$3"',
                        sys.executable, _EAL_IN_PRIVATE_RUN, toml, prefix],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    left = eval(r.stdout.strip().splitlines()[-1])
    for kept in ("/run/precious", "/run/dpdk/someone_else/keep", "/run/dpdk/stale/marker"):
        assert kept in left, (prefix, left)
    if gone:
        assert gone not in left and os.path.join(gone, "config") not in left
    if prefix == "stale":  # EAL's own files in it are this run's, and go
        assert [p for p in left if p.startswith("/run/dpdk/stale/")] == ["/run/dpdk/stale/marker"]
