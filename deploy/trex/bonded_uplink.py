"""Traffic for deploy/examples/bonded-uplink.toml (one2many over wan0/wan1).

TRex port 0 -> `lan` (the one side); what the bundle sends comes back on
TRex ports 1 (wan0) and 2 (wan1): ``--trex-tx 0 --trex-rx 1,2``. With two
ports only, cable wan0 and disable wan1 (``dataplane ctl
one2many.setconfig enabled='[true,false]'``). Ports 1 and 2 (direction 1)
send from the links back to the LAN. Addresses and source ports both vary
(TRex's tuple generator), so ``xmit = "hash"`` has flows to spread.

    start -f deploy/trex/bonded_uplink.py -p 0 -m 1mpps -t size=imix,flows=100000

Tunables: size (imix), flows (10000), ipv (46), ports (source ports per
address, 64).
"""
import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import dp_stl  # noqa: E402


class BondedUplink:
    def get_streams(self, tunables=(), direction=0, port_id=0, **kwargs):
        extra = argparse.ArgumentParser(add_help=False)
        extra.add_argument("--ports", type=int, default=64)
        own, rest = extra.parse_known_args(list(tunables or []))
        args = dp_stl.parse(rest, os.path.basename(__file__), size="imix", flows=10000, ipv="46")
        if not 1 <= own.ports <= 64511:
            raise ValueError("ports: 1 .. 64511")
        return dp_stl.streams(args, 0 if port_id == 0 else 1, tuple_ports=own.ports)


def register():
    return BondedUplink()
