"""one2many stage on virtual devices: exact counts per link.

The one side is a net_ring port that loops what is sent on it back into its
receive queue, so the test injects packets and the stage sees them arrive on
`one`. Links are net_ring ports that nobody polls (their link state can be
set through the API, and the monitor sees it) or, where the mempool count is
checked, net_null sinks that free what they send.
"""
from __future__ import annotations

import pytest
from scapy.layers.inet import IP, UDP

from dataplane import native
from dataplane.one2many import One2ManyError
from tests.helpers import conserved, port, running, vdev_config, wait_for
from tests.traffic import eth

pytestmark = [pytest.mark.eal, pytest.mark.timeout(60)]


def bundle_cfg(file_prefix, n_links: int, xmit: str, failure: str = "notify", sinks: bool = False):
    links = [f"wan{i}" for i in range(n_links)]
    dev = "net_null{},no-rx=1" if sinks else "net_ring{}"
    body = port("one", "net_ring0") + "".join(
        port(name, dev.format(i + 1), poll=False) for i, name in enumerate(links))
    body += (f'[[pipeline]]\nstage = "one2many"\none = "one"\nmany = {links!r}\n'
             f'xmit = "{xmit}"\nfailure = "{failure}"\nmonitor_interval_ms = 5\n')
    return vdev_config(file_prefix, body.replace("'", '"'))




def send(dp, n: int, flows: int = 1) -> None:
    for i in range(n):
        f = i % flows
        dp.inject("one", bytes(eth() / IP(src=f"10.0.0.{f + 1}", dst="10.9.9.9") /
                              UDP(sport=1000 + f, dport=53) / (b"p" * 18)))


def sent_per_link(dp, n_links: int) -> list[int]:
    snap = dp.snapshot()
    return [snap.ports[f"wan{i}"]["tx"] for i in range(n_links)]


def settle(dp, n_links: int, total: int) -> list[int]:
    assert wait_for(lambda: sum(sent_per_link(dp, n_links)) >= total), sent_per_link(dp, n_links)
    return sent_per_link(dp, n_links)


def set_link(dp, o2m, link: int, up: bool) -> None:
    native.port_set_link(dp.port(f"wan{link}").port_id, up)
    # the mask the workers read, not the monitor's own list: that one changes
    # first, and a packet sent in between still went the old way
    assert wait_for(lambda: bool(native.o2m_enabled(o2m.bundle) >> link & 1) == up), \
        f"monitor did not see link {link} {up}"


def test_round_robin_evenly_over_survivors_and_nothing_on_a_down_link(file_prefix):
    with running(bundle_cfg(file_prefix, 4, "roundrobin")) as dp:
        o2m = dp.one2many[0]
        send(dp, 400)
        assert settle(dp, 4, 400) == [100, 100, 100, 100]
        set_link(dp, o2m, 2, False)
        send(dp, 300)
        assert settle(dp, 4, 700) == [200, 200, 100, 200]
        assert [e["port"] for e in o2m.events] == ["wan2"]
        assert o2m.getstats(2)["tx_packets"] == 100
        assert o2m.getstats(native.O2M_ONE_LINK)["rx_packets"] == 700
        snap = dp.snapshot()
    assert conserved(snap)


def test_failover_uses_the_lowest_active_link_and_returns(file_prefix):
    with running(bundle_cfg(file_prefix, 3, "failover")) as dp:
        o2m = dp.one2many[0]
        send(dp, 50)
        assert settle(dp, 3, 50) == [50, 0, 0]
        set_link(dp, o2m, 0, False)
        send(dp, 50)
        assert settle(dp, 3, 100) == [50, 50, 0]
        set_link(dp, o2m, 0, True)  # a lower link returns: traffic goes back
        send(dp, 50)
        assert settle(dp, 3, 150) == [100, 50, 0]


def test_xmit_all_sends_every_packet_on_every_active_link_without_leaks(file_prefix):
    with running(bundle_cfg(file_prefix, 3, "all", failure="manual", sinks=True)) as dp:
        o2m = dp.one2many[0]
        in_use = dp.snapshot().pools[0]["in_use"]
        send(dp, 100)
        assert settle(dp, 3, 300) == [100, 100, 100]
        o2m.enable_link(1, False)
        send(dp, 100)
        assert settle(dp, 3, 500) == [200, 100, 200]
        assert o2m.getstats(0)["memory_failures"] == 0
        dp.stop_workers()
        # one mbuf per packet, shared by reference count: all came back
        assert dp.snapshot().pools[0]["in_use"] <= in_use + 64


def test_upstream_is_told_only_when_the_set_empties_or_refills(file_prefix):
    with running(bundle_cfg(file_prefix, 3, "roundrobin", failure="manual", sinks=True)) as dp:
        o2m = dp.one2many[0]
        for enabled in ([False, True, True], [False, False, False], [False, False, True],
                        [True, True, True]):
            o2m.setconfig(enabled=enabled)
        assert o2m.notifications == {"up": 1, "down": 1}
        o2m.setconfig(enabled=[False, False, False])
        send(dp, 10)
        assert wait_for(lambda: dp.snapshot().totals["drops"]["no_active_link"] == 10)
        assert o2m.notifications == {"up": 1, "down": 2}
        assert conserved(dp.snapshot())


def test_packets_from_any_link_go_to_the_one_port(file_prefix):
    body = (port("one", "net_null0,no-rx=1", poll=False) + port("wan0", "net_ring0") +
            port("wan1", "net_ring1") +
            '[[pipeline]]\nstage = "one2many"\none = "one"\nmany = ["wan0", "wan1"]\n')
    with running(vdev_config(file_prefix, body)) as dp:
        o2m = dp.one2many[0]
        pkt = bytes(eth() / IP() / UDP())
        for _ in range(7):
            dp.inject("wan1", pkt)  # loops back into wan1's receive queue
        assert wait_for(lambda: dp.snapshot().ports["one"]["tx"] == 7)
        assert o2m.getstats(1)["rx_packets"] == 7 and o2m.getstats(0)["rx_packets"] == 0
        assert o2m.getstats(native.O2M_ONE_LINK)["tx_packets"] == 7


def test_hash_keeps_each_flow_on_one_link(file_prefix):
    with running(bundle_cfg(file_prefix, 4, "hash", sinks=True)) as dp:
        send(dp, 16 * 20, flows=16)
        counts = settle(dp, 4, 320)
        assert all(c % 20 == 0 for c in counts), counts  # no flow split over links
        assert sum(1 for c in counts if c) >= 2            # and flows do spread


def test_bad_control_input_is_rejected_and_changes_nothing(file_prefix):
    with running(bundle_cfg(file_prefix, 3, "roundrobin", failure="manual", sinks=True)) as dp:
        o2m = dp.one2many[0]
        before = o2m.getconfig()
        with pytest.raises(One2ManyError, match="unknown transmit algorithm 'random'"):
            o2m.setconfig(xmit="random", enabled=[False, False, False])
        with pytest.raises(One2ManyError, match="unknown failure algorithm"):
            o2m.setconfig(failure="psychic")
        with pytest.raises(One2ManyError, match="list of 3 booleans"):
            o2m.setconfig(enabled=[True, False])
        with pytest.raises(One2ManyError, match="no link 7"):
            o2m.getstats(7)
        with pytest.raises(One2ManyError, match="no link 3"):
            o2m.enable_link(3, False)
        assert o2m.getconfig() == before
        send(dp, 30)
        assert settle(dp, 3, 30) == [10, 10, 10]  # the running config still works


def test_getclrstats_reads_and_clears_atomically(file_prefix):
    with running(bundle_cfg(file_prefix, 2, "roundrobin", failure="manual", sinks=True)) as dp:
        o2m = dp.one2many[0]
        send(dp, 40)
        settle(dp, 2, 40)
        got = o2m.getclrstats(0)
        assert got["tx_packets"] == 20 and got["tx_octets"] == 20 * 60
        assert o2m.getstats(0)["tx_packets"] == 0
        send(dp, 4)
        settle(dp, 2, 44)
        assert o2m.getstats(0)["tx_packets"] == 2
