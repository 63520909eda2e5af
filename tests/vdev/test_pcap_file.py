"""The pcap_file port (native/pcapfile.c): a pcap read into mbufs by the
dataplane's own reader. Golden: what it delivers is the file, record by
record, written back out by net_pcap; a bad file is a config error naming
the port, the key and the file."""
from __future__ import annotations

import struct

import pytest
from scapy.layers.inet import IP, UDP
from scapy.layers.l2 import Ether
from scapy.utils import rdpcap, wrpcap

from dataplane.errors import ConfigError
from tests.helpers import conserved, port, running, vdev_config, wait_for, xconnect

pytestmark = [pytest.mark.eal, pytest.mark.timeout(60)]


def frames(n: int) -> list:
    """UDP frames of varied sizes, two of them larger than one mbuf (chained)."""
    out = []
    for i in range(n):
        size = {7: 3000, 100: 9000}.get(i, 60 + (i * 37) % 1400)
        p = Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02") / \
            IP(src=f"10.1.{i % 200}.1", dst="10.2.0.1") / UDP(sport=1000 + i, dport=7)
        out.append(p / (b"%08d" % i).ljust(max(0, size - len(p)), b"."))
    return out


def file_port(path, loop: bool = False, name: str = "in") -> str:
    return f'[[ports]]\nname = "{name}"\npcap_file = "{path}"\n' + ("pcap_loop = true\n" if loop else "")


def sink_to(tmp_path) -> str:
    return port("out", f"net_pcap1,tx_pcap={tmp_path}/out.pcap", poll=False) + xconnect({"in": "out"})


@pytest.mark.parametrize("nsec", [False, True])
def test_a_pcap_file_is_delivered_record_by_record(tmp_path, file_prefix, nsec):
    sent = frames(300)
    wrpcap(str(tmp_path / "in.pcap"), sent, nano=nsec)
    cfg = vdev_config(file_prefix, file_port(tmp_path / "in.pcap") + sink_to(tmp_path))
    with running(cfg) as dp:
        assert wait_for(lambda: dp.snapshot().totals["tx"] == len(sent))
        assert dp.wait_idle()
        snap = dp.snapshot()
    got = rdpcap(str(tmp_path / "out.pcap"))
    assert [bytes(p) for p in got] == [bytes(p) for p in sent]
    st = snap.ports["in"]["pcap_file"]
    assert st["packets"] == len(sent) and st["bytes"] == sum(len(p) for p in sent)
    assert st["done"] == 1 and st["bad_tail"] == 0 and st["passes"] == 0
    assert snap.ports["in"]["rx"] == len(sent) and conserved(snap)


def test_a_cut_off_file_delivers_every_whole_record_and_says_so(tmp_path, file_prefix):
    sent = frames(50)
    wrpcap(str(tmp_path / "in.pcap"), sent)
    data = (tmp_path / "in.pcap").read_bytes()
    (tmp_path / "in.pcap").write_bytes(data[:-10])  # the last record loses its end
    cfg = vdev_config(file_prefix, file_port(tmp_path / "in.pcap") + sink_to(tmp_path))
    with running(cfg) as dp:
        assert wait_for(lambda: dp.snapshot().ports["in"]["pcap_file"]["done"] == 1)
        assert wait_for(lambda: dp.snapshot().totals["tx"] == len(sent) - 1)
        snap = dp.snapshot()
    assert [bytes(p) for p in rdpcap(str(tmp_path / "out.pcap"))] == [bytes(p) for p in sent[:-1]]
    assert snap.ports["in"]["pcap_file"]["bad_tail"] == 1


def test_loop_starts_over_at_the_end(tmp_path, file_prefix):
    sent = frames(40)
    wrpcap(str(tmp_path / "in.pcap"), sent)
    cfg = vdev_config(file_prefix, file_port(tmp_path / "in.pcap", loop=True) +
                      port("out", "net_null0,no-rx=1", poll=False) + xconnect({"in": "out"}))
    with running(cfg) as dp:
        assert wait_for(lambda: dp.snapshot().ports["in"]["pcap_file"]["passes"] >= 5)
        dp.stop_workers()
        snap = dp.snapshot()
    st = snap.ports["in"]["pcap_file"]
    assert st["done"] == 0
    # every pass is the whole file: packets read = passes x 40 + the pass under
    # way (whole when the reader stopped at the end, before starting over)
    assert st["passes"] * len(sent) <= st["packets"] <= (st["passes"] + 1) * len(sent)
    assert snap.ports["in"]["rx"] == st["packets"] and conserved(snap)


def pcap_header(magic: int, linktype: int = 1) -> bytes:
    return struct.pack("<IHHiIII", magic, 2, 4, 0, 0, 65535, linktype)


@pytest.mark.parametrize("content, says", [
    (None, "No such file"),
    (b"", "shorter than a pcap file header"),
    (b"\x0a\x0d\x0d\x0a" + bytes(40), "is pcapng"),
    (b"GIF89a" + bytes(40), "is not a pcap file"),
    (pcap_header(0xa1b2c3d4, linktype=113), "link type 113, not Ethernet"),
])
def test_a_bad_file_is_a_config_error_naming_port_key_and_file(tmp_path, file_prefix, content, says):
    path = tmp_path / "in.pcap"
    if content is not None:
        path.write_bytes(content)
    cfg = vdev_config(file_prefix, file_port(path) + port("out", "net_null0,no-rx=1", poll=False) +
                      xconnect({"in": "out"}))
    with pytest.raises(ConfigError) as e:
        with running(cfg):
            pass
    assert "ports[0].pcap_file" in str(e.value) and str(path) in str(e.value) and says in str(e.value)


@pytest.mark.parametrize("body, says", [
    ('pcap_file = "x.pcap"\ndevice = "net_null0"', "set exactly one of"),
    ('device = "net_null0"\npcap_loop = true', "'pcap_loop' is for pcap_file ports"),
])
def test_port_sources_are_checked(file_prefix, body, says):
    with pytest.raises(ConfigError) as e:
        vdev_config(file_prefix, f'[[ports]]\nname = "in"\n{body}\n' + xconnect({"in": "in"}))
    assert says in str(e.value) and "ports[0]" in str(e.value)
