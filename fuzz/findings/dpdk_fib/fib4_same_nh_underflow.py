#!/usr/bin/env python3
"""DPDK 22.11 rte_fib (dir24_8), still so upstream: a prefix longer than /24
added with the SAME next-hop id as its covering route skips the tbl8
reservation (early return), but deleting it releases one: rsvd_tbl8s wraps
below zero and every later add of a prefix longer than /24 fails with ENOSPC.
dataplane/routing.py gives every route its own next-hop id, so the Python
control path does not hit it; a C caller sharing ids would.

    python3 fuzz/findings/dpdk_fib/fib4_same_nh_underflow.py
    -> same nh: add /32 again fails at once; own nh: fine
"""
import ipaddress
import os

from dataplane import native as n

n.eal_init(["repro", "--no-huge", "--no-pci", "-m", "512", "--no-shconf", "--no-telemetry",
            "--log-level=4", f"--file-prefix=repro{os.getpid()}"])
A = lambda s: ipaddress.ip_address(s).packed  # noqa: E731

for host_nh in (1, 2):
    r = n.router_create(16, 64, 64, 64, 64)
    for i in (1, 2):
        n.router_nh_set(r, i, "forward", 4, port=0, mtu=1500, dst_mac="02:00:00:00:00:09")
    n.router_route_add(r, 4, A("10.1.0.0"), 16, 1)
    n.router_commit(r)
    res = "100 cycles fine"
    for i in range(100):
        try:
            n.router_route_add(r, 4, A("10.1.1.1"), 32, host_nh)
            n.router_commit(r)
            n.router_route_del(r, 4, A("10.1.1.1"), 32)
            n.router_commit(r)
        except Exception as e:  # noqa: BLE001
            res = f"fails at cycle {i}: {e}"
            break
    print(f"/32 under a /16, {'same' if host_nh == 1 else 'own'} next-hop id: {res}")
    n.router_free(r)
