"""netflow end to end, second opinion: the CLI meters a pcap and exports
NetFlow v9 / IPFIX to pmacct's nfacctd, a decoder independent of nfdump.
nfacctd aggregates by (src, dst, sport, dport, proto, tos), summing flows,
packets and bytes; the same sums over the independent model's flows must
match exactly, and nfacctd must log no sequence gap and discard nothing."""
from __future__ import annotations


import pytest
from scapy.utils import wrpcap

from tests import collectors
from tests.conftest import unique_prefix
from tests.helpers import meter_pcap_cli
from tests.flowmodel import model_flows
from tests.traffic import mixed_traffic

pytestmark = [pytest.mark.timeout(120),
              pytest.mark.skipif(not collectors.nfacctd_available(),
                                 reason="nfacctd (pmacct) not installed")]


@pytest.mark.parametrize("version", [9, 10])
def test_nfacctd_decodes_every_flow(tmp_path, version):
    pkts = mixed_traffic() * 3  # the same flows three times over: more packets per flow
    wrpcap(str(tmp_path / "in.pcap"), pkts)
    with collectors.Nfacctd(tmp_path / "nfacctd", debug=True) as acct:
        out = meter_pcap_cli(tmp_path, tmp_path / "in.pcap", acct.port, version,
                             unique_prefix("nfacctd"))
        acct.drain()
    assert out["netflow"][0]["export"]["collectors"][0]["errors"] == 0
    assert acct.returncode == 0, acct.log()

    log = acct.log()
    assert f"version [{version}]" in log  # debug: nfacctd saw our datagrams as this version
    assert "expecting flow" not in log, log      # a sequence number gap or step back
    assert "Discarded" not in log, log           # data for a template it does not know
    assert "WARN" not in log and "ERROR" not in log, log

    want: dict[tuple, dict] = {}
    for f in model_flows([(0.0, p, 1) for p in pkts]):
        t = want.setdefault((f.src, f.dst, f.sport, f.dport, f.proto, f.tos),
                            {"flows": 0, "packets": 0, "bytes": 0})
        t["flows"] += 1
        t["packets"] += f.packets
        t["bytes"] += f.bytes
    assert acct.totals() == want, acct.log()
