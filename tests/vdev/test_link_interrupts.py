"""Link-change interrupts wake the one2many link monitor at once.

Links are net_tap ports: the driver advertises link-change interrupts
(RTE_ETH_DEV_INTR_LSC), so the port is configured with them and our callback
is registered; its link state follows the kernel tap interface. DPDK 22.11's
tap driver never raises the interrupt itself, so the test raises it as a NIC
driver does on a link change (dp_port_lsc_raise runs the same callback).
The monitor's poll interval is 10 s: a change seen through the interrupt is
marked via = "interrupt", one seen by the poll via = "poll" - no clock is
read by the assertions.
"""
from __future__ import annotations

import functools
import shutil
import subprocess

import pytest

from dataplane import native
from tests.helpers import port, running, vdev_config, wait_for

pytestmark = [pytest.mark.eal, pytest.mark.timeout(60)]


wait_for = functools.partial(wait_for, timeout=8.0)  # a hang guard, not a timing


@pytest.mark.skipif(shutil.which("ip") is None, reason="iproute2 (ip) not installed")
def test_a_link_change_interrupt_wakes_the_monitor_before_its_poll(file_prefix):
    tag = file_prefix[-6:]
    taps = [f"dl{tag}0", f"dl{tag}1"]
    cfg = vdev_config(file_prefix, port("one", "net_null0") + port("l0", f"net_tap0,iface={taps[0]}")
                      + port("l1", f"net_tap1,iface={taps[1]}") + """
[[pipeline]]
stage = "one2many"
one = "one"
many = ["l0", "l1"]
failure = "notify"
monitor_interval_ms = 10000
""")
    with running(cfg) as dp:
        c = dp.one2many[0]
        l0, l1 = dp.port("l0").port_id, dp.port("l1").port_id
        assert native.port_lsc(l0)["enabled"] and native.port_lsc(l1)["enabled"]
        assert wait_for(lambda: native.port_link(l0)["up"] and native.port_link(l1)["up"])
        subprocess.run(["ip", "link", "set", taps[0], "down"], check=True)
        assert wait_for(lambda: not native.port_link(l0)["up"])
        native.port_lsc_raise(l0)
        assert wait_for(lambda: len(c.events) == 1), "the interrupt did not wake the monitor"
        assert c.events[0] | {"time": 0} == {"time": 0, "link": 0, "port": "l0", "up": False,
                                              "via": "interrupt"}
        assert c.getconfig()["enabled"] == [False, True]
        subprocess.run(["ip", "link", "set", taps[0], "up"], check=True)
        assert wait_for(lambda: native.port_link(l0)["up"])
        native.port_lsc_raise(l0)
        assert wait_for(lambda: len(c.events) == 2)
        assert (c.events[1]["up"], c.events[1]["via"]) == (True, "interrupt")
        assert native.port_lsc(l0)["events"] == 2 and native.port_lsc(l1)["events"] == 0
