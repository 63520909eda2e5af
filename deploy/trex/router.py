"""Traffic for deploy/examples/router.toml (ip6flow: routed, flow cached).

TRex port 0 is cabled to the router's `lan` port, port 1 to `wan`.
Direction 0 (port 0 -> lan): sources in the LAN (2001:db8:1::1:0:0 + i,
16.0.0.1 + i) to destinations behind the default routes (2001:db8:9::1,
203.0.113.1), which leave by `wan` to the next hop, TRex port 1.
Direction 1 (port 1 -> wan): from those destinations back to TRex port 0's
own LAN address (2001:db8:1::2, 192.0.2.2), a connected route on `lan`.
Each source address is a flow of the router's cache (key: source,
destination, first IPv6 word / ToS). Frames carry TTL / hop limit 64.

    start -f deploy/trex/router.py -p 0 1 -m 2mpps -t size=64,flows=65536,ipv=6

Tunables: size (64), flows (1024), ipv (4, 6 or 46; 46), fin (0).
"""
import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import dp_stl  # noqa: E402

# (LAN side, far side) per family
LAN = {6: ("2001:db8:1::1:0:0", "2001:db8:1::2"), 4: ("16.0.0.1", "192.0.2.2")}
FAR = {6: "2001:db8:9::1", 4: "203.0.113.1"}


class Router:
    def get_streams(self, tunables=(), direction=0, port_id=0, **kwargs):
        args = dp_stl.parse(tunables, os.path.basename(__file__), flows=1024, ipv="46")
        out = []
        fams = dp_stl.families(args.ipv)
        for fam in fams:
            one = argparse.Namespace(**vars(args))
            one.ipv = str(fam)
            if direction % 2 == 0:
                one.src, one.dst = LAN[fam][0], FAR[fam]
            else:
                one.src, one.dst = FAR[fam], LAN[fam][1]
            out += dp_stl.streams(one, 0, weight=1 / len(fams))
        return out


def register():
    return Router()
