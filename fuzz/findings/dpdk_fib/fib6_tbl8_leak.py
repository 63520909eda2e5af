#!/usr/bin/env python3
"""DPDK 22.11 rte_fib6 (trie): deleting a prefix longer than /24 never gives
back its tbl8 reservation, so add/delete cycles of one route end in ENOSPC
("route table full") although the table is all but empty. Through the shim's
own API (dataplane.native), no traffic, no ports:

    python3 fuzz/findings/dpdk_fib/fib6_tbl8_leak.py
    -> /64: fails at cycle 12 (v6_tbl8=64); /128: cycle 4; v6_tbl8=1024: cycle 204
"""
import ipaddress
import os

from dataplane import native as n

n.eal_init(["repro", "--no-huge", "--no-pci", "-m", "512", "--no-shconf", "--no-telemetry",
            "--log-level=4", f"--file-prefix=repro{os.getpid()}"])


def cycles(prefix: str, v6_tbl8: int) -> str:
    r = n.router_create(16, 64, 64, 64, v6_tbl8)
    n.router_nh_set(r, 1, "forward", 6, port=0, mtu=1500, dst_mac="02:00:00:00:00:01")
    net = ipaddress.ip_network(prefix)
    try:
        for i in range(10000):
            try:
                n.router_route_add(r, 6, net.network_address.packed, net.prefixlen, 1)
                n.router_commit(r)
                n.router_route_del(r, 6, net.network_address.packed, net.prefixlen)
                n.router_commit(r)
            except Exception as e:  # noqa: BLE001
                return f"fails at cycle {i}: {e}"
        return "10000 cycles fine"
    finally:
        n.router_free(r)


for prefix, tbl8 in [("2001:db8:1:1::/64", 64), ("2001:db8:1::1/128", 64), ("2001:db8:1:1::/64", 1024),
                     ("2001:d00::/24", 64)]:
    print(f"{prefix} v6_tbl8={tbl8}: {cycles(prefix, tbl8)}")
