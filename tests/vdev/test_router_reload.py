"""Live reload of the ip6flow stage: routes, neighbours and cache limits
change without a restart; structural keys are refused and change nothing."""
from __future__ import annotations

import textwrap

import pytest

from dataplane import reload
from tests.helpers import port, running, vdev_config

pytestmark = [pytest.mark.eal, pytest.mark.timeout(60)]

PORTS = port("lan", "net_ring0") + port("wan", "net_null0,no-rx=1", poll=False)


def router(routes: str, maxflows: int = 64, extra: str = "") -> str:
    return textwrap.dedent(f'''
        [[pipeline]]
        stage = "ip6flow"
        maxflows = {maxflows}
        hashsize = 64
        max_routes = 1024
        {extra}
        [[pipeline.interfaces]]
        port = "lan"
        addresses = ["2001:db8:1::1/64"]
        [[pipeline.interfaces]]
        port = "wan"
        addresses = ["2001:db8:2::1/64"]
        [[pipeline.neighbours]]
        address = "2001:db8:2::2"
        mac = "02:00:00:00:22:22"
        port = "wan"
        ''') + textwrap.dedent(routes)


ROUTE_A = '[[pipeline.routes]]\nprefix = "2001:db8:a::/48"\nvia = "2001:db8:2::2"\n'
ROUTE_B = '[[pipeline.routes]]\nprefix = "2001:db8:b::/48"\nvia = "2001:db8:2::2"\n'


def static_routes(c) -> set[str]:
    return {r["prefix"] for r in c.routes() if r["action"] == "forward"}


def test_reload_applies_route_and_limit_changes_live(file_prefix):
    with running(vdev_config(file_prefix, PORTS + router(ROUTE_A))) as dp:
        c = dp.ip6flow[0]
        gen = c.stats()["generation"]
        new = vdev_config(file_prefix, PORTS + router(ROUTE_B, maxflows=16))
        applied = reload.apply(dp, new, "<new>")
        assert applied and "routes" in applied[0] and "maxflows" in applied[0]
        assert static_routes(c) == {"2001:db8:b::/48"}
        assert c.table.lookup("2001:db8:a::1").kind == "none"
        assert c.table.lookup("2001:db8:b::1").kind == "forward"
        assert c.stats()["ipv6"]["maxflows"] == 16
        assert c.stats()["generation"] > gen
        assert dp.cfg is new


def test_reload_refuses_a_structural_change_and_keeps_running_config(file_prefix):
    with running(vdev_config(file_prefix, PORTS + router(ROUTE_A))) as dp:
        c = dp.ip6flow[0]
        new = vdev_config(file_prefix, PORTS + router(ROUTE_B, extra="max_nexthops = 2048"))
        with pytest.raises(reload.RestartRequired, match=r"pipeline\[0\]\.max_nexthops"):
            reload.apply(dp, new, "<new>")
        assert static_routes(c) == {"2001:db8:a::/48"}


def test_reload_changes_punt_rates_live(file_prefix, tmp_path):
    """A reload applies [slowpath.police] at the next punt: 20 pings to the
    router, a bucket of 3, then (reloaded) a bucket of 100."""
    from scapy.layers.inet6 import ICMPv6EchoRequest, IPv6
    from scapy.layers.l2 import Ether

    def police(burst: int) -> str:
        return (f"[slowpath]\nsource_share = 1.0\n"
                f"[slowpath.police]\nlocal = {{ rate = 0.001, burst = {burst} }}\n")

    with running(vdev_config(file_prefix, PORTS + router(ROUTE_A), extra=police(3))) as dp:
        lan = dp.port("lan").info.mac
        ping = bytes(Ether(dst=lan) / IPv6(src="2001:db8:1::9", dst="2001:db8:1::1") / ICMPv6EchoRequest())

        def pings_then_counts(n: int) -> tuple[int, int]:
            for _ in range(n):  # out of the lan ring and back in (with our echo replies)
                dp.inject("lan", ping)
            assert dp.wait_idle()
            w = dp.snapshot().workers[0]
            return w["punts"]["local"], w["punt_policed"]["local"]

        assert pings_then_counts(20) == (3, 17)
        applied = reload.apply(dp, vdev_config(file_prefix, PORTS + router(ROUTE_A), extra=police(100)),
                               "<new>")
        assert applied == ["slowpath"]
        assert pings_then_counts(20) == (23, 17)
