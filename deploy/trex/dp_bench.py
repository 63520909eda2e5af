"""Generic dataplane benchmark traffic: every kind the NDR search needs.

    start -f deploy/trex/dp_bench.py -m 1mpps -p 0 -t size=64,flows=1
    start -f deploy/trex/dp_bench.py -p 0 -t size=imix,flows=1000000
    start -f deploy/trex/dp_bench.py -p 0 -t size=78,ipv=6,flows=65536
    start -f deploy/trex/dp_bench.py -p 0 -t size=128,flows=100000,fin=10   # TCP flows ending with FIN

Tunables (-t k=v,...): size (bytes incl. FCS, or imix), flows (source
addresses), ipv (4, 6, 46), fin (0 = UDP; N = TCP flows of N packets, the
last with FIN), src, dst, sport, dport. Port 1 (direction 1) swaps source and
destination.
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import dp_stl  # noqa: E402


class DataplaneBench:
    def get_streams(self, tunables=(), direction=0, port_id=0, **kwargs):
        args = dp_stl.parse(tunables, os.path.basename(__file__))
        return dp_stl.streams(args, direction)


def register():
    return DataplaneBench()
