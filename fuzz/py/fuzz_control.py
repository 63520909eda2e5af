#!/usr/bin/env python3
"""atheris: one control request line through ControlServer.dispatch.

dispatch() never raises: a bad request is answered with an error. What is
fuzzed is its validation (JSON, the request shape, the command name, each
command's pydantic argument model, the error text): the commands themselves
are replaced by stubs, so no dataplane is needed. A request must fail as a
ControlError (an "ok": false answer through the expected path); anything
that reaches dispatch's catch-all `except Exception` (logged as "control
command failed") is a finding.

    python fuzz/py/fuzz_control.py --seed DIR
    python fuzz/py/fuzz_control.py [libFuzzer flags] CORPUS_DIR...
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import atheris
import harness

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

with atheris.instrument_imports(include=["dataplane"]):
    from dataplane import control


class _Reraise:
    """control.log: the catch-all's log.exception re-raises what it caught."""

    def exception(self, *args, **kwargs):
        raise  # noqa: PLE0704 - called inside dispatch's except block

    def __getattr__(self, name):
        return lambda *a, **k: None


def _server() -> control.ControlServer:
    srv = control.ControlServer(dp=None, path=Path("/nonexistent/fuzz.sock"))
    for cmd in srv.commands.values():
        cmd.fn = lambda args: args.model_dump()
    srv._pool.shutdown(wait=False)
    return srv


SERVER = _server()
control.log = _Reraise()


def seeds() -> dict[str, bytes]:
    reqs = {
        "help": {"cmd": "help"},
        "netflow_show": {"cmd": "netflow.show", "args": {"stage": 0, "limit": 10}},
        "settimeouts": {"cmd": "netflow.settimeouts", "args": {"active": 60, "inactive": 15}},
        "setconfig": {"cmd": "netflow.setconfig", "args": {"port": "wan", "ingress": True}},
        "setifindex": {"cmd": "netflow.setifindex", "args": {"port": "wan", "ifindex": 7}},
        "o2m_setconfig": {"cmd": "one2many.setconfig",
                          "args": {"xmit": "roundrobin", "failure": "manual", "enabled": [True, False]}},
        "o2m_getstats": {"cmd": "one2many.getstats", "args": {"link": -1}},
        "flow_show": {"cmd": "ip6flow.show", "args": {"family": "ipv4", "limit": 5}},
        "maxflows": {"cmd": "ip6flow.maxflows", "args": {"family": "ipv6", "value": 1024}},
        "route_add": {"cmd": "route.add", "args": {"prefix": "2001:db8::/32", "via": "fe80::1",
                                                    "port": "lan", "action": "forward"}},
        "route_del": {"cmd": "route.del", "args": {"prefix": "10.0.0.0/8"}},
        "neigh_add": {"cmd": "neighbour.add",
                      "args": {"address": "10.0.0.2", "mac": "02:00:00:00:00:02", "port": "lan"}},
        "unknown_arg": {"cmd": "status", "args": {"x": 1}},
        "bad_type": {"cmd": "netflow.show", "args": {"limit": "many"}},
    }
    out = {k: json.dumps(v).encode() + b"\n" for k, v in reqs.items()}
    out["not_json"] = b"{cmd: help}\n"
    out["array"] = b"[1, 2, 3]\n"
    return out


def TestOneInput(data: bytes) -> None:
    answer = SERVER.dispatch(data)
    if not isinstance(answer, dict) or "ok" not in answer:
        raise AssertionError(f"dispatch answered {answer!r}")
    json.dumps(answer, default=str)  # what the server writes back


if __name__ == "__main__":
    harness.main(seeds, TestOneInput)
