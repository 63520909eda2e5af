"""How the exporter fills datagrams: as many records as max_datagram allows,
room for the templates only in the datagrams that carry them, every record
sent once and the sequence numbers without a gap. The exporter on its own
(no EAL, no worker), into a real UDP socket, decoded by tests/nfdecode."""
import socket

import pytest

from dataplane.config import NetflowExport
from dataplane.netflow import V5, Exporter
from tests.helpers import flow_records
from tests.nfdecode import SequenceChecker, TemplateCache, decode

RECORDS = 1000
SO_NO_CHECK = 11  # no UDP checksums on send: the kernel then refuses UDP GSO (EIO)


@pytest.fixture
def receiver():
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", 0))
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
    s.settimeout(2)
    yield s
    s.close()


@pytest.mark.parametrize("version", [5, 9, 10])
@pytest.mark.parametrize("max_datagram, gso", [(1400, True), (600, True), (1400, False)])
def test_datagrams_are_full_and_templates_take_room_only_where_they_travel(receiver, version,
                                                                           max_datagram, gso):
    """gso: runs of equal datagrams go as UDP GSO sends; False: the kernel
    refuses them (SO_NO_CHECK does) and the same datagrams go one by one."""
    refresh = 7
    cfg = NetflowExport(version=version, max_datagram=max_datagram, template_refresh_packets=refresh,
                        collectors=[f"127.0.0.1:{receiver.getsockname()[1]}"])
    exp = Exporter(cfg, boot_ms=0, epoch_offset_ms=0)
    if not gso:
        exp.collectors[0].sock.setsockopt(socket.SOL_SOCKET, SO_NO_CHECK, 1)
    exp.add(flow_records(RECORDS, 1000, 2000, proto=17, packets=3, octets=300), RECORDS)
    exp.pump(force=True)
    exp.close()
    assert exp.collectors[0].gso is gso and exp.collectors[0].errors == 0

    cache, seq, got = TemplateCache(), SequenceChecker(), []
    for _ in range(exp.datagrams):
        data = receiver.recv(65536)
        dg = decode(data, cache)
        seq.feed(dg)
        got.append((len(data), bool(dg.templates_seen), len(dg.records)))
    assert sum(n for _, _, n in got) == RECORDS
    assert seq.gaps == []
    assert all(length <= max_datagram for length, _, _ in got) or version == V5

    per, per_templated = exp.per_datagram[4], exp.per_datagram_templated[4]
    templated = [i for i, (_, t, _) in enumerate(got) if t]
    if version == V5:
        assert templated == [] and per == per_templated == 30
    else:
        # templates in the first datagram and then every `refresh` datagrams
        assert templated == list(range(0, len(got), refresh))
        rec = exp.rec_size[4]
        assert per_templated < per
        for i, (length, t, n) in enumerate(got[:-1]):  # all but the last are full
            assert n == (per_templated if t else per), (i, t, n)
            assert length + rec > max_datagram  # one more record would not fit
