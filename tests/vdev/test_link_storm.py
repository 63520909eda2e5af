"""Link storms: a one2many bundle whose links flap hundreds of times while
traffic runs.

`one` is a net_pcap port replaying a small file forever (infinite_rx; what it
is sent it drops and frees), the four links are net_ring ports the worker
polls: what goes out on a link loops back into it and goes to `one`, so every
mbuf comes back to the pool. failure = "notify": the link monitor (every 2 ms)
enables and disables links by their DPDK link state, which the test flips
through the API (rte_eth_dev_set_link_up/down). Links start up; the test takes
every one down, then flaps links 0-2 FLAPS times at random intervals (link 3
stays down throughout), ends with every link down again and lets traffic run.

Checked: nothing crashes; link 3 never sends a packet and no link sends one
once the monitor has seen them all down (traffic then drops as
no_active_link, and only as that); per worker rx + injected == tx + dropped +
punted; the stage's books balance (from one == sent on links +
no_active_link; back from links == sent to one); the monitor saw the storm;
after the links' rings drain, the pool holds exactly what it held at the start
(the pcap replay ring).
"""
from __future__ import annotations

import functools
import random
import struct
import time

import pytest

from dataplane import native
from tests.helpers import conserved, port, running, vdev_config, wait_for

pytestmark = [pytest.mark.eal, pytest.mark.timeout(120)]

N_LINKS = 4
STORM_LINKS = 3          # links 0..2 flap; link 3 stays down
FLAPS = 400
FILE_PACKETS = 64


def write_pcap(path) -> None:
    with open(path, "wb") as f:
        f.write(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1))
        for i in range(FILE_PACKETS):
            ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 46, 0, 0, 64, 17, 0,
                             bytes([10, 0, 0, 1 + i]), bytes([10, 9, 9, 9]))
            fr = (bytes.fromhex("020000000002020000000001") + b"\x08\x00" + ip +
                  struct.pack("!HHHH", 1000 + i, 53, 26, 0) + b"z" * 18)
            f.write(struct.pack("<IIII", 0, i, len(fr), len(fr)) + fr)


wait_for = functools.partial(wait_for, timeout=20.0)  # a hang guard, not a timing


def link_counts(dp, o2m) -> tuple[list[int], list[int], list[int]]:
    """Per link: packets the stage sent on it, the port's tx, packets back."""
    snap = dp.snapshot()
    stats = [o2m.getstats(i) for i in range(N_LINKS)]
    return ([s["tx_packets"] for s in stats], [snap.ports[f"wan{i}"]["tx"] for i in range(N_LINKS)],
            [s["rx_packets"] for s in stats])


def barrier(dp) -> None:
    """Every worker has finished the burst it was in."""
    dp.on_all_workers(lambda w: None)


@pytest.mark.parametrize("xmit", ["roundrobin", "failover", "hash"])
def test_link_flap_storm_under_traffic(file_prefix, tmp_path, xmit):
    pcap = tmp_path / "one.pcap"
    write_pcap(pcap)
    links = [f"wan{i}" for i in range(N_LINKS)]
    body = port("one", f"net_pcap0,rx_pcap={pcap},infinite_rx=1") + "".join(
        port(name, f"net_ring{i + 1}") for i, name in enumerate(links))
    body += (f'[[pipeline]]\nstage = "one2many"\none = "one"\nmany = {links!r}\n'
             f'xmit = "{xmit}"\nfailure = "notify"\nmonitor_interval_ms = 2\n').replace("'", '"')
    with running(vdev_config(file_prefix, body)) as dp:
        o2m = dp.one2many[0]
        link_ids = [dp.port(n).port_id for n in links]
        assert wait_for(lambda: sum(link_counts(dp, o2m)[0]) > 1000)   # traffic on the links

        # every link down
        for pid in link_ids:
            native.port_set_link(pid, False)
        assert wait_for(lambda: not any(o2m.enabled)), o2m.enabled
        barrier(dp)
        base_sent, base_tx, _ = link_counts(dp, o2m)
        drops0 = dp.snapshot().totals["drops"]["no_active_link"]
        assert wait_for(lambda: dp.snapshot().totals["drops"]["no_active_link"] > drops0 + 1000)
        assert link_counts(dp, o2m)[:2] == (base_sent, base_tx)        # nothing on a down link

        # the storm: links 0..2 flap at random intervals while traffic runs
        rng = random.Random(20240707)
        state = [False] * N_LINKS
        for _ in range(FLAPS):
            i = rng.randrange(STORM_LINKS)
            state[i] = not state[i]
            native.port_set_link(link_ids[i], state[i])
            pause = rng.choice((0, 0, 0.0002, 0.001, 0.003, 0.006))
            if pause:
                time.sleep(pause)
        storm_sent = [s - b for s, b in zip(link_counts(dp, o2m)[0], base_sent)]
        events = len(o2m.events)
        assert events >= 40, f"the monitor saw only {events} link changes"
        assert sum(storm_sent[:STORM_LINKS]) > 0, storm_sent      # links were used while up
        assert storm_sent[STORM_LINKS] == 0, storm_sent           # link 3 never

        # every link down again: traffic only drops
        for pid in link_ids:
            native.port_set_link(pid, False)
        assert wait_for(lambda: not any(o2m.enabled)), o2m.enabled
        barrier(dp)
        quiet_sent, quiet_tx, _ = link_counts(dp, o2m)
        drops1 = dp.snapshot().totals["drops"]["no_active_link"]
        assert wait_for(lambda: dp.snapshot().totals["drops"]["no_active_link"] > drops1 + 10000)
        assert link_counts(dp, o2m)[:2] == (quiet_sent, quiet_tx)
        assert quiet_sent[STORM_LINKS] == base_sent[STORM_LINKS]

        # the links' rings drain into `one`; then stop and count
        assert wait_for(lambda: (lambda c: c[2] == c[1])(link_counts(dp, o2m))), link_counts(dp, o2m)
        dp.stop_workers()
        snap = dp.snapshot()
        sent, tx, back = link_counts(dp, o2m)
        one = o2m.getstats(native.O2M_ONE_LINK)
        in_use = snap.pools[0]["in_use"]
    t = snap.totals
    print(f"link storm ({xmit}): {FLAPS} flaps, {events} changes seen by the monitor, "
          f"{one['rx_packets']:,} packets from one, {sum(sent):,} sent on links {sent}, "
          f"{t['drops']['no_active_link']:,} no_active_link, pool in use {in_use}")
    assert conserved(snap), t
    assert t["dropped"] == t["drops"]["no_active_link"] > 0, t["drops"]
    assert t["punted"] == 0
    # the stage's books: from one == sent on links + dropped; back == sent to one
    assert one["rx_packets"] == sum(sent) + t["drops"]["no_active_link"], (one, sent, t["drops"])
    assert sent == tx == back, (sent, tx, back)
    assert one["tx_packets"] == sum(back) == snap.ports["one"]["tx"]
    assert sum(s["tx_dropped"] for s in snap.ports.values()) == 0
    # every mbuf back in the pool but the pcap replay ring's (one per file packet)
    assert in_use == FILE_PACKETS, snap.pools
