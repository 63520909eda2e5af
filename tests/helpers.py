"""Shared test helpers: configs on virtual devices, a running dataplane."""
from __future__ import annotations

import contextlib
import textwrap

from dataplane import config
from dataplane.eal import Eal
from dataplane.engine import Dataplane


def port(name: str, device: str, poll: bool = True) -> str:
    """One [[ports]] table."""
    return f'[[ports]]\nname = "{name}"\ndevice = "{device}"\n' + ("" if poll else "poll = false\n")


def xconnect(mapping: dict[str, str]) -> str:
    """An xconnect [[pipeline]] stage."""
    pairs = ", ".join(f'{k} = "{v}"' for k, v in mapping.items())
    return f'[[pipeline]]\nstage = "xconnect"\nmap = {{ {pairs} }}\n'


def vdev_config(file_prefix: str, body: str, workers: str = "[1]", extra: str = "") -> config.Config:
    text = textwrap.dedent(f"""
        [eal]
        workers = {workers}
        hugepages = false
        memory_mb = 256
        file_prefix = "{file_prefix}"
        log_level = "warning"
        [mempool]
        mbufs = 8191
        cache = 64
        [run]
        poll_budget_ms = 20
        """) + textwrap.dedent(body) + textwrap.dedent(extra)
    return config.loads(text, "<test>", check_drivers=False)


@contextlib.contextmanager
def running(cfg: config.Config):
    """EAL + started dataplane; everything torn down afterwards, EAL last."""
    eal = Eal(cfg)
    dp = Dataplane(cfg)
    try:
        dp.start()
        yield dp
    finally:
        dp.stop()
        eal.close()


def conserved(snap) -> bool:
    t = snap.totals
    return t["rx"] + t["injected"] == t["tx"] + t["dropped"] + t["punted"]
