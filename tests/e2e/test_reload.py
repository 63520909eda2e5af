"""Live reload under load: `dataplane ctl reload` and SIGHUP apply a new file
without stopping traffic; a rejected file changes nothing and says why."""
from __future__ import annotations

import json
import os
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


HOSTILE_FILES = {
    "not_utf8": lambda good: good.encode() + b"\n# \xff\xfe\n",
    "nested_too_deeply": lambda good: good.encode() + b"\nx = " + b"[" * 100_000 + b"]" * 100_000 + b"\n",
    "overflows_uint32": lambda good: good.replace("active_timeout = 1800",
                                                  f"active_timeout = {1 << 32}").encode(),
}


@pytest.mark.parametrize("how", ["sighup", "ctl"])
def test_hostile_files_change_nothing_whatever_the_path(dataplane, how):
    """Invalid UTF-8, nesting that exhausts the parser, a value that once
    validated and overflowed a 32-bit counter in C, and a FIFO instead of a
    file: each is rejected, by SIGHUP as by `ctl reload`, and the dataplane
    runs on with its config unchanged; a FIFO never blocks the reader."""
    proc, sock, cfg, write = dataplane
    good = cfg.read_text()
    for name, make in HOSTILE_FILES.items():
        cfg.write_bytes(make(good))
        if how == "ctl":
            with pytest.raises(ControlError, match=str(cfg)):
                request(sock, "reload")
        else:
            proc.send_signal(signal.SIGHUP)
            time.sleep(0.5)
        assert proc.poll() is None, (name, proc.stderr.read() if proc.poll() is not None else "")
        assert request(sock, "netflow.info")["active_timeout"] == 1800, name
    cfg.unlink()
    os.mkfifo(cfg)   # nobody ever writes it: a reader that opened it normally would hang
    t0 = time.monotonic()
    if how == "ctl":
        with pytest.raises(ControlError, match="not a regular file"):
            request(sock, "reload")
        assert time.monotonic() - t0 < 30  # a hang guard, not a timing assertion
    else:
        for _ in range(3):
            proc.send_signal(signal.SIGHUP)
        time.sleep(0.5)
    for _ in range(8):  # the control pool is not pinned: every request is answered
        assert request(sock, "status", timeout=10)["running"] is True
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    if how == "sighup":  # SIGHUPs close together make one reload
        assert err.count("reload rejected") >= len(HOSTILE_FILES) + 1, err[-3000:]
        assert "not a regular file" in err and "Traceback" not in err, err[-3000:]
