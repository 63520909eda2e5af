"""Traffic for deploy/examples/packet-broker.toml (one2many xmit = all).

TRex port 0 -> `mirror`; every tool port gets a copy. Cable the tools to TRex
ports 1..3 and run the search with ``--fanout 3 --trex-rx 1,2,3`` (each
offered packet must come back three times); on a two-port lab cable one
tool: the others are down and skipped (failure = "notify"), so ``--fanout
1``. The traffic is a mirror's: IMIX, TCP flows ending with FIN and UDP, IPv4
and IPv6.

    start -f deploy/trex/packet_broker.py -p 0 -m 500kpps -t flows=100000

Tunables: size (imix), flows (10000), ipv (46), ppf (packets per TCP flow, 8).
"""
import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import dp_stl  # noqa: E402


class PacketBroker:
    def get_streams(self, tunables=(), direction=0, port_id=0, **kwargs):
        extra = argparse.ArgumentParser(add_help=False)
        extra.add_argument("--ppf", type=int, default=8)
        own, rest = extra.parse_known_args(list(tunables or []))
        args = dp_stl.parse(rest, os.path.basename(__file__), size="imix", flows=10000, ipv="46")
        return (dp_stl.streams(args, direction, weight=0.5, fin=own.ppf)
                + dp_stl.streams(args, direction, weight=0.5, fin=0))


def register():
    return PacketBroker()
