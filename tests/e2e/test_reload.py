"""Live reload under load: `dataplane ctl reload` and SIGHUP apply a new file
without stopping traffic; a rejected file changes nothing and says why."""
from __future__ import annotations

import json
import signal
import time

import pytest
from scapy.utils import wrpcap

from dataplane.control import ControlError, request
from tests.conftest import unique_prefix
from tests.helpers import RunningCli, eal_toml
from tests.traffic import mixed_traffic

pytestmark = pytest.mark.timeout(120)

TEMPLATE = """
[[ports]]
name = "mirror"
device = "net_pcap0,rx_pcap={pcap},infinite_rx=1"
rx_desc = {rx_desc}
[[ports]]
name = "a"
device = "net_null0,no-rx=1"
poll = false
[[ports]]
name = "b"
device = "net_null1,no-rx=1"
poll = false
[[pipeline]]
stage = "netflow"
active_timeout = {active}
inactive_timeout = 15
[[pipeline]]
stage = "xconnect"
map = {{ mirror = "{out}" }}
[run]
runtime_dir = "{run_dir}"
[metrics]
enabled = false
"""


@pytest.fixture
def dataplane(tmp_path):
    wrpcap(str(tmp_path / "in.pcap"), mixed_traffic())
    params = dict(prefix=unique_prefix("reload"), pcap=tmp_path / "in.pcap", rx_desc=1024,
                  active=1800, out="a", run_dir=tmp_path / "run")
    cfg = tmp_path / "dp.toml"

    def write(**changes):
        cfg.write_text(eal_toml(params["prefix"]) + TEMPLATE.format(**{**params, **changes}))

    write()
    with RunningCli(cfg, params["run_dir"] / f"{params['prefix']}.sock") as dp:
        yield dp.proc, dp.socket, cfg, write


def port_tx(sock, name):
    return request(sock, "ports")[name]["tx"]


def test_reload_moves_traffic_and_loses_nothing(dataplane):
    proc, sock, cfg, write = dataplane
    time.sleep(0.3)
    assert port_tx(sock, "a") > 0
    write(out="b", active=600)
    applied = request(sock, "reload")["applied"]
    assert applied == ["pipeline[0] timeouts", "pipeline[1].map"]
    assert request(sock, "netflow.info")["active_timeout"] == 600
    b0 = port_tx(sock, "b")
    time.sleep(0.3)
    a1, b1 = port_tx(sock, "a"), port_tx(sock, "b")
    time.sleep(0.3)
    assert port_tx(sock, "a") == a1 and port_tx(sock, "b") > b1 > b0  # traffic moved to b
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    totals = json.loads(out)["totals"]
    assert totals["dropped"] == 0  # nothing lost to the reload
    assert totals["rx"] == totals["tx"]


def test_rejected_files_change_nothing(dataplane):
    proc, sock, cfg, write = dataplane
    write(rx_desc=512)
    with pytest.raises(ControlError, match=r"ports\[0\]\.rx_desc: changing this needs a restart"):
        request(sock, "reload")
    cfg.write_text("[eal\n")
    with pytest.raises(ControlError, match=f"{cfg}: TOML syntax error"):
        request(sock, "reload")
    write(active=0)
    with pytest.raises(ControlError, match=r"pipeline\[0\]\.active_timeout"):
        request(sock, "reload")
    assert request(sock, "netflow.info")["active_timeout"] == 1800
    assert request(sock, "status")["running"] is True


def test_sighup_reloads(dataplane):
    proc, sock, cfg, write = dataplane
    write(active=900)
    proc.send_signal(signal.SIGHUP)
    deadline = time.monotonic() + 10
    while request(sock, "netflow.info")["active_timeout"] != 900:
        assert time.monotonic() < deadline, "SIGHUP did not reload"
        time.sleep(0.05)
