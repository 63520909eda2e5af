"""Traffic for deploy/examples/flow-probe.toml: what a SPAN port carries.

A mirror port sees many short TCP conversations that end with FIN (netflow
expires such a flow at once) among longer UDP flows, IPv4 and IPv6, in IMIX
sizes. Nothing comes back from a probe: run the NDR search with
``--count-at dut`` (forwarded = metered and handed to its sink).

    start -f deploy/trex/flow_probe.py -p 0 -m 1mpps -t flows=1000000,ppf=10

Tunables: size (imix), flows (100000 per family), ppf (packets per TCP flow,
10), tcp_share (percent of packets in TCP flows, 60), ipv (46).
"""
import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import dp_stl  # noqa: E402


class FlowProbe:
    def get_streams(self, tunables=(), direction=0, port_id=0, **kwargs):
        extra = argparse.ArgumentParser(add_help=False)
        extra.add_argument("--ppf", type=int, default=10)
        extra.add_argument("--tcp_share", type=float, default=60.0)
        own, rest = extra.parse_known_args(list(tunables or []))
        args = dp_stl.parse(rest, os.path.basename(__file__), size="imix", flows=100000, ipv="46")
        if own.ppf < 2 or not 0 <= own.tcp_share <= 100:
            raise ValueError("ppf >= 2, tcp_share 0..100")
        share = own.tcp_share / 100
        out = []
        if share > 0:
            out += dp_stl.streams(args, direction, weight=share, fin=own.ppf)
        if share < 1:
            out += dp_stl.streams(args, direction, weight=1 - share, fin=0)
        return out


def register():
    return FlowProbe()
