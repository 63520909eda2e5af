"""The test-side NetFlow tools: decoder (against an encoder written here with
struct), sequence checker, metering model, and the nfcapd harness."""
from __future__ import annotations

import re
import shutil
import struct
import time
from ipaddress import ip_address as A

import pytest
from scapy.layers.inet import ICMP, IP, TCP, UDP
from scapy.layers.inet6 import IPv6, IPv6ExtHdrFragment, IPv6ExtHdrHopByHop
from scapy.layers.l2 import ARP, Dot1AD, Dot1Q, Ether

from tests import collectors
from tests.flowmodel import FlowModel, model_flows
from tests.nfdecode import DecodeError, FlowRecord, SequenceChecker, TemplateCache, decode

# --- an independent encoder ---------------------------------------------------


def v5_record(src="10.0.0.1", dst="10.0.0.2", nh="10.0.0.254", inx=3, outx=4, pkts=10, octs=1500,
              first=90_000, last=99_000, sport=1234, dport=80, flags=0x1B, proto=6, tos=0x10,
              src_as=64512, dst_as=64513, smask=24, dmask=16) -> bytes:
    return struct.pack("!4s4s4sHHIIIIHHBBBBHHBBH", A(src).packed, A(dst).packed, A(nh).packed, inx,
                       outx, pkts, octs, first, last, sport, dport, 0, flags, proto, tos, src_as,
                       dst_as, smask, dmask, 0)


def v5(records, seq=0, count=None, uptime=100_000, secs=None, nsecs=5, etype=1, eid=2, sampling=0):
    secs = int(time.time()) if secs is None else secs
    count = len(records) if count is None else count
    return struct.pack("!HHIIIIBBH", 5, count, uptime, secs, nsecs, seq, etype, eid, sampling) + b"".join(records)


def fset(set_id, body, align=4):
    """A set/flowset, zero-padded to `align` bytes."""
    pad = -(4 + len(body)) % align
    return struct.pack("!HH", set_id, 4 + len(body) + pad) + body + bytes(pad)


def template(tid, fields, ipfix=False):
    out = struct.pack("!HH", tid, len(fields))
    for f in fields:
        ie, length = f[0], f[1]
        if ipfix and len(f) > 2 and f[2]:  # enterprise-specific
            out += struct.pack("!HHI", ie | 0x8000, length, f[2])
        else:
            out += struct.pack("!HH", ie, length)
    return out


def values(fields, vals):
    out = b""
    for f, v in zip(fields, vals):
        length = f[1]
        if isinstance(v, str):
            out += A(v).packed
        elif isinstance(v, bytes):  # variable length (RFC 7011 7)
            out += (bytes([len(v)]) if len(v) < 255 else b"\xff" + struct.pack("!H", len(v))) + v
        else:
            out += v.to_bytes(length, "big")
    return out


def v9(sets, count, seq=7, source_id=42, uptime=100_000, secs=1_700_000_000):
    return struct.pack("!HHIIII", 9, count, uptime, secs, seq, source_id) + b"".join(sets)


def ipfix(sets, seq=0, domain=42, export_time=1_700_000_000, length=None):
    body = b"".join(sets)
    length = 16 + len(body) if length is None else length
    return struct.pack("!HHIII", 10, length, export_time, seq, domain) + body


V4_FIELDS = [(8, 4), (12, 4), (15, 4), (7, 2), (11, 2), (4, 1), (5, 1), (6, 1), (2, 4), (1, 8),
             (22, 4), (21, 4), (10, 2), (14, 4), (9, 1), (13, 1)]
V4_VALUES = ["10.1.1.1", "10.2.2.2", "10.9.9.9", 4000, 53, 17, 0xB8, 0, 3, 300, 1000, 2000, 5, 6, 24, 32]
V4_EXPECT = FlowRecord(src=A("10.1.1.1"), dst=A("10.2.2.2"), nexthop=A("10.9.9.9"), sport=4000,
                       dport=53, proto=17, tos=0xB8, tcp_flags=0, packets=3, bytes=300, first=1000,
                       last=2000, time_kind="uptime_ms", in_ifx=5, out_ifx=6, src_mask=24,
                       dst_mask=32, ip_version=4)
V6_FIELDS = [(27, 16), (28, 16), (62, 16), (7, 2), (11, 2), (4, 1), (5, 1), (6, 2), (2, 8), (1, 8),
             (152, 8), (153, 8), (10, 4), (14, 4), (29, 1), (30, 1), (31, 4), (60, 1), (136, 1)]
V6_VALUES = ["2001:db8::1", "2001:db8::2", "fe80::1", 443, 50000, 6, 0x28, 0x12, 2, 144,
             1_700_000_000_123, 1_700_000_001_456, 7, 8, 64, 128, 0xABCDE, 6, 3]
V6_EXPECT = FlowRecord(src=A("2001:db8::1"), dst=A("2001:db8::2"), nexthop=A("fe80::1"), sport=443,
                       dport=50000, proto=6, tos=0x28, tcp_flags=0x12, packets=2, bytes=144,
                       first=1_700_000_000_123, last=1_700_000_001_456, time_kind="epoch_ms",
                       in_ifx=7, out_ifx=8, src_mask=64, dst_mask=128, ip_version=6,
                       flow_label=0xABCDE, end_reason=3)

def named(cases):
    """Parametrize ids from the expected message rather than the bytes."""
    return [pytest.param(d, m, id=re.sub(r"\W+", "_", m).strip("_")) for d, m in cases]


# --- NetFlow v5 ------------------------------------------------------------------


def test_v5_every_field():
    d = v5([v5_record(), v5_record(src="10.0.0.3", proto=17, sport=53, dport=5353, pkts=1, octs=100)],
           seq=1000, secs=1_700_000_000)
    dg = decode(d, TemplateCache())
    assert (dg.version, dg.count, dg.sys_uptime_ms, dg.unix_secs, dg.unix_nsecs, dg.sequence) == \
        (5, 2, 100_000, 1_700_000_000, 5, 1000)
    assert (dg.engine_type, dg.engine_id, dg.sampling_interval, dg.source_id) == (1, 2, 0, None)
    assert dg.templates_seen == [] and dg.stream == (5, 1, 2)
    assert dg.records[0] == FlowRecord(
        src=A("10.0.0.1"), dst=A("10.0.0.2"), nexthop=A("10.0.0.254"), sport=1234, dport=80, proto=6,
        tos=0x10, tcp_flags=0x1B, packets=10, bytes=1500, first=90_000, last=99_000,
        time_kind="uptime_ms", in_ifx=3, out_ifx=4, src_mask=24, dst_mask=16, ip_version=4,
        src_as=64512, dst_as=64513)
    assert (dg.records[1].src, dg.records[1].proto, dg.records[1].packets) == (A("10.0.0.3"), 17, 1)


@pytest.mark.parametrize("data,msg", named([
    (v5([v5_record()] * 2, count=3), "needs exactly 168 bytes"),
    (v5([v5_record()] * 2, count=1), "needs exactly 72 bytes"),
    (v5([v5_record()] * 2)[:-1], "needs exactly 120 bytes"),
    (v5([], count=0), "count 0 outside"),
    (v5([v5_record()] * 31), "count 31 outside"),
    (v5([v5_record()])[:20], "shorter than the 24-byte header"),
    (v5([v5_record()], nsecs=10**9), "unix_nsecs"),
    (struct.pack("!H", 7) + bytes(30), "unsupported version 7"),
    (b"\x00", "no version field"),
]))
def test_v5_broken(data, msg):
    with pytest.raises(DecodeError, match=msg):
        decode(data, TemplateCache())


def test_v5_thirty_records_is_the_maximum():
    assert len(decode(v5([v5_record()] * 30), TemplateCache()).records) == 30

# --- NetFlow v9 ------------------------------------------------------------------


def test_v9_template_and_data_in_one_datagram_then_data_alone():
    cache = TemplateCache()
    tsets = fset(0, template(256, V4_FIELDS) + template(257, V6_FIELDS))
    data4 = fset(256, values(V4_FIELDS, V4_VALUES) * 2)   # 2 records of 45 bytes + 2 padding
    data6 = fset(257, values(V6_FIELDS, V6_VALUES))
    dg = decode(v9([tsets, data4, data6], count=5), cache, exporter=("192.0.2.1", 2055))
    assert (dg.version, dg.count, dg.sequence, dg.source_id, dg.sys_uptime_ms, dg.export_time) == \
        (9, 5, 7, 42, 100_000, 1_700_000_000)
    assert dg.templates_seen == [256, 257] and dg.unknown_sets == 0
    assert dg.records == [V4_EXPECT, V4_EXPECT, V6_EXPECT]
    assert [r.template_id for r in dg.records] == [256, 256, 257]
    # Templates persist per (exporter, version, source id).
    dg = decode(v9([data6], count=1, seq=8), cache, exporter=("192.0.2.1", 2055))
    assert dg.records == [V6_EXPECT] and dg.templates_seen == []
    for other in [dict(exporter=("192.0.2.9", 2055)), dict(exporter=("192.0.2.1", 2055), sid=43)]:
        dg = decode(v9([data6], count=1, source_id=other.pop("sid", 42)), cache, **other)
        assert dg.records == [] and dg.unknown_sets == 1


def test_v9_unknown_template_is_counted_not_raised():
    dg = decode(v9([fset(300, bytes(20))], count=1), TemplateCache())
    assert dg.records == [] and dg.unknown_sets == 1


def test_v9_options_template_and_data_are_parsed_and_skipped():
    cache = TemplateCache()
    # scope: system (type 1) 4 bytes; options: SAMPLING_INTERVAL (34) 4, SAMPLING_ALGORITHM (35) 1
    opt_t = struct.pack("!HHHHHHHHH", 300, 4, 8, 1, 4, 34, 4, 35, 1)
    opt_d = struct.pack("!IIB", 0, 100, 1)
    sets = [fset(1, opt_t), fset(0, template(256, V4_FIELDS)), fset(300, opt_d),
            fset(256, values(V4_FIELDS, V4_VALUES))]
    dg = decode(v9(sets, count=4), cache)
    assert dg.options_templates_seen == [300] and dg.templates_seen == [256]
    assert dg.options_records == 1 and dg.records == [V4_EXPECT] and dg.data_records == 2


def test_v9_unknown_elements_are_skipped_by_length():
    fields = [(8, 4), (999, 3), (12, 4), (95, 4)]
    d = v9([fset(0, template(256, fields)), fset(256, values(fields, ["1.2.3.4", 7, "5.6.7.8", 9]))], 2)
    (r,) = decode(d, TemplateCache()).records
    assert (r.src, r.dst, r.ip_version) == (A("1.2.3.4"), A("5.6.7.8"), 4)
    assert r.unknown == ((0, 999, b"\x00\x00\x07"), (0, 95, b"\x00\x00\x00\x09"))


V9_OK = [fset(0, template(256, V4_FIELDS)), fset(256, values(V4_FIELDS, V4_VALUES))]


@pytest.mark.parametrize("data,msg", named([
    (v9(V9_OK, count=3), "header count 3 but the datagram holds 2"),
    (v9(V9_OK, count=2)[:-3], "runs 3 bytes past the end"),
    (v9(V9_OK, count=2) + b"\0\0", "2 trailing bytes"),
    (v9([struct.pack("!HH", 256, 2)], count=0), "length 2 < 4"),
    (v9([fset(0, template(256, V4_FIELDS)), fset(256, values(V4_FIELDS, V4_VALUES)[:-5])], 2),
     "44 trailing bytes are neither a record of template 256"),
    (v9([fset(0, template(256, V4_FIELDS)), fset(256, values(V4_FIELDS, V4_VALUES) + bytes(7))], 2),
     r"9 trailing bytes .* \(< 4 bytes in v9\)"),
    (v9([fset(0, template(256, V4_FIELDS)), fset(256, values(V4_FIELDS, V4_VALUES) + b"\1")], 2),
     "1 trailing bytes are neither"),
    (v9([fset(0, template(255, V4_FIELDS))], 1), "template id 255 < 256"),
    (v9([fset(0, template(256, [(8, 4), (7, 3)]))], 1), r"element 7 \(sport\) has length 3"),
    (v9([fset(0, template(256, [(8, 4), (1, 2)]))], 1), r"element 1 \(bytes\) has length 2"),
    (v9([fset(0, template(256, V4_FIELDS)[:-4])], 1), "16 fields need 64 bytes, only 60 left"),
    (v9([fset(5, b"")], 0), "reserved flowset id"),
    (v9([], 0)[:19], "shorter than the 20-byte header"),
]))
def test_v9_broken(data, msg):
    with pytest.raises(DecodeError, match=msg):
        decode(data, TemplateCache())

# --- IPFIX -----------------------------------------------------------------------


def test_ipfix_templates_data_enterprise_and_variable_length():
    cache = TemplateCache()
    fields = V6_FIELDS + [(1234, 65535, 9), (82, 65535), (11, 2, 29305)]  # PEN elements, interfaceName
    long_name = b"x" * 300
    sets = [fset(2, template(256, fields, ipfix=True) + template(257, V4_FIELDS, ipfix=True)),
            fset(256, values(fields, V6_VALUES + [b"ab", long_name, 77]), align=1),
            fset(256, values(fields, V6_VALUES + [b"", b"eth0", 78]), align=1),
            fset(257, values(V4_FIELDS, V4_VALUES) * 3)]
    dg = decode(ipfix(sets, seq=500, domain=7), cache, exporter="x")
    assert (dg.version, dg.count, dg.sequence, dg.source_id, dg.export_time) == (10, 0, 500, 7, 1_700_000_000)
    assert dg.sys_uptime_ms is None and dg.unix_nsecs is None
    assert dg.templates_seen == [256, 257]
    assert dg.records == [V6_EXPECT] * 2 + [V4_EXPECT] * 3 and dg.data_records == 5
    # The enterprise element 11/29305 must not be read as destinationTransportPort.
    assert dg.records[0].unknown == ((9, 1234, b"ab"), (0, 82, long_name), (29305, 11, b"\x00\x4d"))
    assert dg.records[1].unknown[:2] == ((9, 1234, b""), (0, 82, b"eth0"))


def test_ipfix_time_kinds_seconds_and_preference():
    secs = [(8, 4), (12, 4), (150, 4), (151, 4)]
    both = [(8, 4), (12, 4), (22, 4), (21, 4), (152, 8), (153, 8)]
    sets = [fset(2, template(300, secs, True) + template(301, both, True)),
            fset(300, values(secs, ["1.1.1.1", "2.2.2.2", 1_700_000_000, 1_700_000_009])),
            fset(301, values(both, ["1.1.1.1", "2.2.2.2", 10, 20, 1_700_000_000_001, 1_700_000_000_002]))]
    r1, r2 = decode(ipfix(sets), TemplateCache()).records
    assert (r1.time_kind, r1.first, r1.last) == ("epoch_s", 1_700_000_000, 1_700_000_009)
    assert (r2.time_kind, r2.first, r2.last) == ("epoch_ms", 1_700_000_000_001, 1_700_000_000_002)


def test_ipfix_options_template_and_withdrawal():
    cache = TemplateCache()
    # scope observationDomainId (149), options exportedMessageTotalCount (41), exportedFlowRecordTotalCount (42)
    opt_t = struct.pack("!HHH", 400, 3, 1) + struct.pack("!HHHHHH", 149, 4, 41, 8, 42, 8)
    sets = [fset(3, opt_t), fset(2, template(256, V4_FIELDS, True)),
            fset(400, struct.pack("!IQQ", 42, 10, 20)), fset(256, values(V4_FIELDS, V4_VALUES))]
    dg = decode(ipfix(sets, seq=9), cache)
    assert dg.options_templates_seen == [400] and dg.options_records == 1
    assert dg.records == [V4_EXPECT] and dg.data_records == 2
    dg = decode(ipfix([fset(2, struct.pack("!HH", 256, 0)), fset(256, values(V4_FIELDS, V4_VALUES))]), cache)
    assert dg.templates_withdrawn == [256] and dg.unknown_sets == 1 and dg.records == []
    decode(ipfix([fset(3, struct.pack("!HH", 3, 0))]), cache)  # withdraw all options templates
    assert len(cache) == 0


IPFIX_T = fset(2, template(256, V4_FIELDS, True))


@pytest.mark.parametrize("data,msg", named([
    (ipfix([IPFIX_T], length=100), "header length 100 but datagram has"),
    (ipfix([IPFIX_T])[:15], "shorter than the 16-byte header"),
    (ipfix([IPFIX_T, fset(256, values(V4_FIELDS, V4_VALUES)[:-2], align=1)]), "45 trailing bytes are neither"),
    (ipfix([fset(2, template(256, [(82, 65535)], True)), fset(256, b"\x05abc")]), "record truncated"),
    (ipfix([fset(2, template(256, [(82, 65535)], True)), fset(256, b"\xff\x01", align=1)]), "long length"),
    (ipfix([fset(2, template(256, [(8, 4), (1234, 4, 9)], True)[:-2], align=1)]), "enterprise number"),
    (ipfix([fset(3, struct.pack("!HHHHH", 400, 1, 2, 149, 4))]), "scope count 2 not in 1..1"),
    (ipfix([fset(2, template(256, [(8, 65535)], True))]), "element 8 .* length 65535"),
    (ipfix([fset(4, b"")]), "reserved set id"),
    (ipfix([IPFIX_T, fset(256, values(V4_FIELDS, V4_VALUES) + b"\0\1\0", align=1)]), "3 trailing bytes"),
]))
def test_ipfix_broken(data, msg):
    with pytest.raises(DecodeError, match=msg):
        decode(data, TemplateCache())

# --- sequence numbers ------------------------------------------------------------


def test_sequence_v5_counts_flows():
    sc, cache = SequenceChecker(), TemplateCache()
    for seq, n in [(0, 2), (2, 3), (5, 1), (9, 1), (10, 1)]:  # flows 6..8 lost
        sc.feed(decode(v5([v5_record()] * n, seq=seq), cache))
    sc.feed(decode(v5([v5_record()], seq=100, eid=9), cache))  # another engine: own stream
    assert sc.gaps == [(6, 9)] and sc.missing_records == 3


def test_sequence_v9_counts_datagrams():
    sc, cache = SequenceChecker(), TemplateCache()
    for seq in [7, 8, 10, 11, 0xFFFFFFFF, 0]:
        sc.feed(decode(v9(V9_OK, count=2, seq=seq), cache))
    assert sc.gaps == [(9, 10), (12, 0xFFFFFFFF)] and sc.missing_datagrams == 1 and sc.backward == 1


def test_sequence_ipfix_counts_data_records_only():
    sc, cache = SequenceChecker(), TemplateCache()
    rec = fset(256, values(V4_FIELDS, V4_VALUES) * 2)
    assert sc.feed(decode(ipfix([IPFIX_T, rec], seq=0xFFFFFFFF), cache)) == 0  # 2 data, 1 template
    assert sc.feed(decode(ipfix([rec], seq=1), cache)) == 0                    # wraps modulo 2^32
    assert sc.feed(decode(ipfix([IPFIX_T], seq=3), cache)) == 0                # template only: +0
    assert sc.feed(decode(ipfix([rec], seq=3), cache)) == 0
    assert sc.feed(decode(ipfix([rec], seq=9), cache)) == 4
    assert sc.gaps == [(5, 9)] and sc.missing_records == 4
    # An undecodable data set makes the next value unknown: resynchronize, no false gap.
    sc.feed(decode(ipfix([fset(999, bytes(8))], seq=11), cache))
    assert sc.feed(decode(ipfix([rec], seq=50), cache)) == 0 and len(sc.gaps) == 1

# --- the metering model ------------------------------------------------------------


def eth(l3):
    return Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02") / l3


def tcp(flags, sport=1234, payload=b""):
    return eth(IP(src="10.0.0.1", dst="10.0.0.2") / TCP(sport=sport, dport=80, flags=flags) / payload)


def test_model_fin_on_existing_flow_expires_it_new_fin_flow_does_not():
    pkts = [(1.0, tcp("S"), 1), (1.5, tcp("A", payload=b"x" * 10), 1), (2.0, tcp("FA"), 1),
            (3.0, tcp("A"), 1),                      # after the FIN: a fresh flow
            (4.0, tcp("FA", sport=999), 1),          # new flow started by a FIN: stays
            (5.0, tcp("A", sport=999), 1),
            (6.0, tcp("R", sport=777), 1), (6.5, tcp("R", sport=777), 1)]
    flows = model_flows(pkts)
    assert [(f.sport, f.packets, f.expired_by) for f in flows] == \
        [(1234, 3, "fin_rst"), (777, 2, "fin_rst"), (1234, 1, "flush"), (999, 2, "flush")]
    f = flows[0]
    assert (f.src, f.dst, f.dport, f.proto, f.tos, f.in_ifx, f.ip_version) == \
        (A("10.0.0.1"), A("10.0.0.2"), 80, 6, 0, 1, 4)
    assert (f.bytes, f.tcp_flags, f.first, f.last) == (40 + 50 + 40, 0x13, 1.0, 2.0)
    assert flows.skipped == 0


def test_model_active_timeout_counts_the_packet_then_expires():
    pkts = [(t, tcp("A"), 2) for t in (0.0, 30.0, 60.0, 61.0, 100.0)]
    flows = model_flows(pkts, active=60)
    assert [(f.packets, f.first, f.last, f.expired_by) for f in flows] == \
        [(4, 0.0, 61.0, "active"), (1, 100.0, 100.0, "flush")]


def test_model_inactive_scan_is_explicit():
    m = FlowModel(active=1800, inactive=15)
    m.add(0.0, tcp("S"), 1)
    m.add(10.0, tcp("A", sport=5), 1)
    m.expire(16.0)
    assert [(f.sport, f.expired_by) for f in m.expired] == [(1234, "inactive")]
    assert [f.sport for f in m.flush()[1:]] == [5]


def test_model_ipv4_fragments_vlan_qinq_icmp_and_non_ip():
    ip = IP(src="10.0.0.1", dst="10.0.0.2", tos=0x20, id=7)
    first = ip.copy(); first.flags = "MF"; first.frag = 0
    rest = ip.copy(); rest.frag = 3; rest.proto = 17
    pkts = [
        (1.0, eth(first / UDP(sport=5000, dport=53) / (b"a" * 16)), 1),       # first fragment: ports
        (1.1, eth(rest / (b"b" * 20)), 1),                                    # later fragment: no ports
        (2.0, Ether() / Dot1Q(vlan=10) / IP(src="10.0.0.3", dst="10.0.0.4") / UDP(sport=1, dport=2), 3),
        (2.1, Ether() / Dot1AD(vlan=20) / Dot1Q(vlan=10) / IP(src="10.0.0.3", dst="10.0.0.4")
         / UDP(sport=1, dport=2) / b"xy", 3),
        (3.0, eth(IP(src="10.0.0.5", dst="10.0.0.6") / ICMP(type=8) / b"ping"), 1),
        (4.0, Ether() / ARP(), 1),
        (4.1, Ether(type=0x88CC) / b"lldp", 1),
    ]
    flows = model_flows(pkts)
    got = {(str(f.src), f.sport, f.dport, f.proto, f.tos, f.in_ifx): (f.packets, f.bytes) for f in flows}
    assert got == {
        ("10.0.0.1", 5000, 53, 17, 0x20, 1): (1, 20 + 8 + 16),
        ("10.0.0.1", 0, 0, 17, 0x20, 1): (1, 20 + 20),
        ("10.0.0.3", 1, 2, 17, 0, 3): (2, 28 + 30),
        ("10.0.0.5", 0, 0, 1, 0, 1): (1, 20 + 8 + 4),
    }
    assert flows.skipped == 2


def test_model_ipv6_traffic_class_extension_and_fragment_headers():
    base = dict(src="2001:db8::1", dst="2001:db8::2", tc=0xB8)
    pkts = [
        (1.0, eth(IPv6(**base) / IPv6ExtHdrHopByHop() / TCP(sport=10, dport=20, flags="S")), 4),
        (2.0, eth(IPv6(**base) / IPv6ExtHdrFragment(offset=0, m=1, id=5) / UDP(sport=7, dport=8)
                  / (b"z" * 8)), 4),
        (2.1, eth(IPv6(**base) / IPv6ExtHdrFragment(offset=2, id=5, nh=17) / (b"z" * 8)), 4),
    ]
    flows = model_flows(pkts)
    got = {(f.sport, f.dport, f.proto, f.tos, f.ip_version): (f.bytes, f.tcp_flags) for f in flows}
    assert got == {(10, 20, 6, 0xB8, 6): (40 + 8 + 20, 0x02),
                   (7, 8, 17, 0xB8, 6): (40 + 8 + 8 + 8, 0),
                   (0, 0, 17, 0xB8, 6): (40 + 8 + 8, 0)}

# --- a real collector ------------------------------------------------------------

needs_nfdump = pytest.mark.skipif(shutil.which("nfcapd") is None or shutil.which("nfdump") is None,
                                  reason="nfdump package (nfcapd, nfdump) not installed")
IPFIX_V6 = [f for f in V6_FIELDS if f[0] not in (31, 60, 136)]


def exports(now, gaps=False):
    """v5, v9 and IPFIX datagrams; two per version, in sequence unless `gaps`."""
    g = 1 if gaps else 0
    return [
        v5([v5_record(), v5_record(src="10.0.0.3", proto=17, sport=53, dport=5353, pkts=1, octs=100)],
           seq=0, secs=now, nsecs=0),
        v5([v5_record(src="10.0.0.5", sport=1)], seq=2 + g, secs=now, nsecs=0),
        v9([fset(0, template(256, V4_FIELDS)), fset(256, values(V4_FIELDS, V4_VALUES))], 2, seq=0, secs=now),
        v9([fset(256, values(V4_FIELDS, ["10.1.1.3"] + V4_VALUES[1:]))], 1, seq=1 + g, secs=now),
        ipfix([fset(2, template(256, IPFIX_V6, True)),
               fset(256, values(IPFIX_V6, V6_VALUES[:10] + [now * 1000 - 5000, now * 1000 - 2000]
                                + V6_VALUES[12:16]))], seq=0, export_time=now),
        ipfix([fset(256, values(IPFIX_V6, ["2001:db8::3"] + V6_VALUES[1:10]
                                + [now * 1000 - 1500, now * 1000 - 500] + V6_VALUES[12:16]))],
              seq=1 + g, export_time=now),
    ]


def absolute_ms(dg, r: FlowRecord) -> tuple[int, int]:
    if r.time_kind == "uptime_ms":  # boot time = export time - uptime, as collectors do
        boot = dg.unix_secs * 1000 + (dg.unix_nsecs or 0) // 1_000_000 - dg.sys_uptime_ms
        return boot + r.first, boot + r.last
    return r.first, r.last


@needs_nfdump
def test_nfcapd_reads_the_same_flows_as_nfdecode(tmp_path):
    now = int(time.time())
    datagrams = exports(now)
    cache, ours = TemplateCache(), []
    for d in datagrams:
        dg = decode(d, cache)
        ours += [(dg, r) for r in dg.records]
    with collectors.Nfcapd(tmp_path) as cap:
        collectors.send_udp(datagrams, cap.port)
        cap.drain()
    assert cap.returncode == 0, cap.log()
    theirs = {(r["src"], r["sport"]): r for r in cap.records()}
    assert len(theirs) == len(ours) == 7
    for dg, r in ours:
        t = theirs[(r.src, r.sport)]
        assert {k: t[k] for k in ("dst", "dport", "proto", "tos", "tcp_flags", "packets", "bytes", "in_ifx",
                                  "out_ifx", "nexthop", "ip_version")} == \
            {"dst": r.dst, "dport": r.dport, "proto": r.proto, "tos": r.tos, "tcp_flags": r.tcp_flags,
             "packets": r.packets, "bytes": r.bytes, "in_ifx": r.in_ifx, "out_ifx": r.out_ifx,
             "nexthop": r.nexthop, "ip_version": r.ip_version}, (dg.version, r)
        assert (t["first"], t["last"]) == absolute_ms(dg, r), (dg.version, r)
        if dg.version != 5:  # nfdump 1.7.1 does not keep v5 masks
            assert (t["src_mask"], t["dst_mask"]) == (r.src_mask, r.dst_mask)
    stats = cap.stats()
    assert (stats["flows"], stats["packets"], stats["bytes"]) == \
        (7, sum(r.packets for _, r in ours), sum(r.bytes for _, r in ours))
    assert stats["sequence_failures"] == 0


@needs_nfdump
def test_nfcapd_and_sequence_checker_agree_on_gaps(tmp_path):
    datagrams = exports(int(time.time()), gaps=True)
    sc, cache = SequenceChecker(), TemplateCache()
    for d in datagrams:
        sc.feed(decode(d, cache))
    assert sc.gaps == [(2, 3), (1, 2), (1, 2)]  # v5 flows, v9 datagrams, IPFIX data records
    with collectors.Nfcapd(tmp_path) as cap:
        collectors.send_udp(datagrams, cap.port)
        cap.drain()
    assert cap.stats()["sequence_failures"] == len(sc.gaps)
