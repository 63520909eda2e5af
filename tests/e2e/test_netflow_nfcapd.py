"""netflow end to end: the CLI meters a pcap and exports to a real nfcapd
(Debian's nfdump); nfdump reads back exactly the flows an independent model
computes from the same packets, with zero sequence failures."""
from __future__ import annotations

from collections import Counter
from ipaddress import ip_address

import pytest
from scapy.utils import wrpcap

from tests import collectors
from tests.conftest import unique_prefix
from tests.helpers import meter_pcap_cli
from tests.flowmodel import model_flows
from tests.traffic import mixed_traffic

pytestmark = [pytest.mark.timeout(120),
              pytest.mark.skipif(not collectors.available(), reason="nfdump not installed")]


@pytest.mark.parametrize("version", [5, 9, 10])
def test_nfcapd_receives_every_flow(tmp_path, version):
    pkts = mixed_traffic() * 3  # the same flows three times over: more packets per flow
    wrpcap(str(tmp_path / "in.pcap"), pkts)
    with collectors.Nfcapd(tmp_path / "nfcapd") as cap:
        out = meter_pcap_cli(tmp_path, tmp_path / "in.pcap", cap.port, version,
                             unique_prefix("nfcapd"))
        cap.drain()
    assert out["netflow"][0]["export"]["collectors"][0]["errors"] == 0

    expected = model_flows([(0.0, p, 1) for p in pkts])
    if version == 5:
        expected = [f for f in expected if f.ip_version == 4]
    # A key can come back after its flow ended (FIN, RST): compare multisets.
    want = Counter((f.src, f.dst, f.sport, f.dport, f.proto, f.tos, f.packets, f.bytes)
                   for f in expected)
    got = Counter()
    for rec in cap.records():
        got[(ip_address(rec["src"]), ip_address(rec["dst"]), rec["sport"], rec["dport"],
             rec["proto"], rec["tos"], rec["packets"], rec["bytes"])] += 1
        assert rec["in_ifx"] == 1
    assert got == want
    stats = cap.stats()
    assert stats["sequence_failures"] == 0
    assert stats["flows"] == sum(want.values())
