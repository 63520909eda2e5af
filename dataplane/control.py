"""The control socket: JSON requests over a local Unix socket.

One request per line, ``{"cmd": "netflow.info", "args": {...}}``, one answer
per line, ``{"ok": true, "result": ...}`` or ``{"ok": false, "error": "..."}``.
The server runs its own asyncio loop on a thread; commands run in a small
thread pool, so a slow command, a silent client or an oversize line never
blocks other clients, and workers are only ever reached through their
command queues. The socket is 0600 (0660 with a group) in a 0700 (0750)
runtime directory; every client's credentials are logged.
"""
from __future__ import annotations

import asyncio
import contextlib
import grp
import json
import logging
import os
import socket
import struct
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from .config import MAX_FLOW_TIMEOUT_S

log = logging.getLogger(__name__)


class Args(BaseModel):
    model_config = ConfigDict(extra="forbid")


class NoArgs(Args):
    pass


class NetflowArgs(Args):
    stage: int = Field(0, ge=0, description="which netflow table of the pipeline (0 = first)")


AFTER = Field(None, pattern=r"^\d{1,3}:\d{1,10}$",
              description="go on from here: the 'next' of the previous answer")


class ShowArgs(NetflowArgs):
    limit: int = Field(100, ge=1, le=100_000)
    after: str | None = AFTER


class TimeoutArgs(NetflowArgs):
    active: int = Field(ge=1, le=MAX_FLOW_TIMEOUT_S)
    inactive: int = Field(ge=1, le=MAX_FLOW_TIMEOUT_S)


class SetconfigArgs(NetflowArgs):
    port: str
    ingress: bool


class IfindexArgs(NetflowArgs):
    port: str
    ifindex: int = Field(ge=0, le=65535)


class BundleArgs(Args):
    stage: int = Field(0, ge=0, description="which one2many table of the pipeline (0 = first)")


class LinkArgs(BundleArgs):
    link: int = Field(description="link number; -1 is the one side")


class O2MConfigArgs(BundleArgs):
    xmit: str | None = None
    failure: str | None = None
    enabled: list[bool] | None = None


class RouterArgs(Args):
    stage: int = Field(0, ge=0, description="which ip6flow table of the pipeline (0 = first)")


class FamilyArgs(RouterArgs):
    family: str = Field("ipv6", pattern="^(ipv6|ipv4)$")


class FlowShowArgs(FamilyArgs):
    limit: int = Field(100, ge=1, le=1_000_000)
    after: str | None = AFTER


def paged(page: tuple[list[dict], tuple[int, int] | None]) -> dict:
    """A paged answer: the flows, and where the next request goes on from
    (NGM_NETFLOW_SHOW's `last`; None when the walk is complete)."""
    rows, nxt = page
    return {"flows": rows, "next": f"{nxt[0]}:{nxt[1]}" if nxt else None}


def position(after: str | None) -> tuple[int, int]:
    if after is None:
        return 0, 0
    worker, slot = after.split(":")
    return int(worker), int(slot)


class LimitArgs(FamilyArgs):
    value: int


class RouteAddArgs(RouterArgs):
    prefix: str
    via: str | None = None
    port: str | None = None
    action: str = "forward"


class RouteDelArgs(RouterArgs):
    prefix: str


class NeighbourAddArgs(RouterArgs):
    address: str
    mac: str
    port: str


class NeighbourDelArgs(RouterArgs):
    address: str
    port: str


@dataclass
class Command:
    fn: Callable[[Any], Any]
    args: type[Args]
    help: str


class ControlError(Exception):
    """A request that cannot be served; the message goes back to the client."""


def _arg_error(e: dict) -> str:
    key = ".".join(map(str, e["loc"])) or "args"
    if e["type"] == "extra_forbidden":
        return f"{key}: unknown argument"
    if e["type"] == "missing":
        return f"{key}: missing"
    return f"{key}: {e['msg']} (got {e.get('input')!r})"


SUN_PATH_MAX = 107  # bytes a sockaddr_un path holds, less its NUL


@contextlib.contextmanager
def addressable(path: Path):
    """A name bind()/connect() accept for `path`: itself, or, when it is
    longer than a sockaddr_un holds (deep runtime dirs), the same file seen
    through /proc/self/fd/<fd of its directory>/<name>."""
    if len(os.fsencode(str(path))) <= SUN_PATH_MAX:
        yield str(path)
        return
    fd = os.open(path.parent, os.O_PATH | os.O_DIRECTORY)
    try:
        yield f"/proc/self/fd/{fd}/{path.name}"
    finally:
        os.close(fd)


def peer_credentials(sock: socket.socket) -> tuple[int, int, int]:
    """(pid, uid, gid) of the process at the other end (SO_PEERCRED)."""
    data = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    return struct.unpack("3i", data)


class ControlServer:
    def __init__(self, dp, path: Path, *, group: str = "", max_request: int = 65536,
                 idle_timeout: float = 30.0, request_timeout: float = 5.0):
        self.dp = dp
        self.path = path
        self.group = group
        self.max_request = max_request
        self.idle_timeout = idle_timeout
        self.request_timeout = request_timeout
        self.commands = self._commands()
        self.requests = 0
        self.errors = 0
        self._pool = ThreadPoolExecutor(max_workers=4, thread_name_prefix="dp-ctl")
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._clients: set[asyncio.Task] = set()  # connections being served

    # ---- commands ------------------------------------------------------------

    def _netflow(self, a: NetflowArgs):
        if a.stage >= len(self.dp.netflow):
            raise ControlError(f"no netflow stage {a.stage} (the pipeline has {len(self.dp.netflow)})")
        return self.dp.netflow[a.stage]

    def _bundle(self, a: BundleArgs):
        if a.stage >= len(self.dp.one2many):
            raise ControlError(f"no one2many stage {a.stage} (the pipeline has {len(self.dp.one2many)})")
        return self.dp.one2many[a.stage]

    def _o2m(self, fn):
        """Run a one2many message; its validation errors go back as errors."""
        from .one2many import One2ManyError
        try:
            return fn()
        except One2ManyError as e:
            raise ControlError(str(e)) from None

    def _router(self, a: RouterArgs):
        if a.stage >= len(self.dp.ip6flow):
            raise ControlError(f"no ip6flow stage {a.stage} (the pipeline has {len(self.dp.ip6flow)})")
        return self.dp.ip6flow[a.stage]

    def _r(self, a: RouterArgs, fn):
        """Run an ip6flow/route message; its validation errors go back as errors."""
        from .ip6flow import Ip6flowError
        try:
            return fn(self._router(a))
        except Ip6flowError as e:
            raise ControlError(str(e)) from None

    def _port_name(self, name: str) -> str:
        if name not in {p.name for p in self.dp.ports}:
            raise ControlError(f"no port named {name!r}")
        return name

    def _commands(self) -> dict[str, Command]:
        from .view import runtime_rows
        dp = self.dp
        return {
            "reload": Command(lambda a: self._reload(), NoArgs,
                              "re-read the config file and apply it without stopping traffic"),
            "help": Command(lambda a: {k: c.help for k, c in self.commands.items()}, NoArgs,
                            "list the commands"),
            "status": Command(lambda a: self._status(), NoArgs, "pid, uptime, ports, workers, stages"),
            "ports": Command(lambda a: dp.snapshot().ports, NoArgs, "per-port counters and link"),
            "workers": Command(lambda a: dp.snapshot().workers, NoArgs, "per-worker counters"),
            "runtime": Command(lambda a: runtime_rows(dp.snapshot()), NoArgs,
                               "per-stage calls, packets per call, cycles per packet"),
            "stats": Command(lambda a: dp.snapshot().as_dict(), NoArgs, "every counter"),
            "netflow.info": Command(lambda a: self._netflow(a).info(), NetflowArgs,
                                    "ng_netflow info: cache, expiries, export"),
            "netflow.show": Command(
                lambda a: paged(self._netflow(a).page(a.limit, position(a.after))), ShowArgs,
                "cached flows, up to limit, and 'next' to go on from (after=)"),
            "netflow.settimeouts": Command(
                lambda a: self._netflow(a).settimeouts(a.active, a.inactive), TimeoutArgs,
                "set active and inactive timeouts (s)"),
            "netflow.setconfig": Command(
                lambda a: self._netflow(a).setconfig(self._port_name(a.port), a.ingress),
                SetconfigArgs, "meter a port's ingress or not"),
            "one2many.getconfig": Command(lambda a: self._bundle(a).getconfig(), BundleArgs,
                                          "ng_one2many getconfig"),
            "one2many.setconfig": Command(
                lambda a: self._o2m(lambda: self._bundle(a).setconfig(a.xmit, a.failure, a.enabled)),
                O2MConfigArgs, "set xmit / failure / enabled (validated as a whole)"),
            "one2many.getstats": Command(lambda a: self._o2m(lambda: self._bundle(a).getstats(a.link)),
                                         LinkArgs, "a link's counters (-1: the one side)"),
            "one2many.clrstats": Command(lambda a: self._o2m(lambda: self._bundle(a).clrstats(a.link)),
                                         LinkArgs, "clear a link's counters"),
            "one2many.getclrstats": Command(
                lambda a: self._o2m(lambda: self._bundle(a).getclrstats(a.link)), LinkArgs,
                "read and clear a link's counters, atomically per worker"),
            "ip6flow.stats": Command(lambda a: self._r(a, lambda r: r.stats()), RouterArgs,
                                     "fast-forward cache and slow path counters"),
            "ip6flow.show": Command(
                lambda a: self._r(a, lambda r: paged(r.page(a.family, a.limit, position(a.after)))),
                FlowShowArgs, "cached flows of a family, up to limit, and 'next' (after=)"),
            "ip6flow.maxflows": Command(
                lambda a: self._r(a, lambda r: r.set_maxflows(a.value, a.family)), LimitArgs,
                "set maxflows (per worker; 0 disables, lowering reaps at once)"),
            "ip6flow.hashsize": Command(
                lambda a: self._r(a, lambda r: r.set_hashsize(a.value, a.family)), LimitArgs,
                "set hashsize (a power of two; flushes the cache)"),
            "ip6flow.invalidate": Command(lambda a: self._r(a, lambda r: r.invalidate()),
                                          RouterArgs, "free every cached flow"),
            "route.show": Command(lambda a: self._r(a, lambda r: r.routes()), RouterArgs,
                                  "the route table"),
            "route.add": Command(
                lambda a: self._r(a, lambda r: r.route_add(a.prefix, a.via, a.port, a.action)),
                RouteAddArgs, "add or replace a route (via a next hop, or on-link on a port)"),
            "route.del": Command(lambda a: self._r(a, lambda r: r.route_del(a.prefix)),
                                 RouteDelArgs, "delete a route"),
            "neighbour.show": Command(lambda a: self._r(a, lambda r: r.neighbours()), RouterArgs,
                                      "static and learnt neighbours"),
            "neighbour.add": Command(
                lambda a: self._r(a, lambda r: r.neighbour_add(a.address, a.mac, a.port)),
                NeighbourAddArgs, "add a static neighbour"),
            "neighbour.del": Command(
                lambda a: self._r(a, lambda r: r.neighbour_del(a.address, a.port)),
                NeighbourDelArgs, "delete a neighbour"),
            "interface.show": Command(lambda a: self._r(a, lambda r: r.interfaces()), RouterArgs,
                                      "the router's ports, addresses, MTU and link"),
            "netflow.setifindex": Command(
                lambda a: self._netflow(a).setifindex(self._port_name(a.port), a.ifindex),
                IfindexArgs, "the ifIndex a port has in flow records"),
        }

    def _reload(self) -> dict:
        from .errors import ConfigError as _ConfigError
        try:
            return {"applied": self.dp.reload()}
        except _ConfigError as e:
            raise ControlError(str(e)) from None
        except Exception as e:  # noqa: BLE001 - said to the client; the dataplane runs on
            log.exception("reload failed")
            raise ControlError(f"reload failed: {type(e).__name__}: {e}") from None

    def _status(self) -> dict:
        return {"pid": os.getpid(), "running": self.dp.running,
                "uptime_s": self.dp.uptime(), "workers": len(self.dp.workers),
                "ports": [p.name for p in self.dp.ports],
                "pipeline": [sc.stage for sc in self.dp.cfg.pipeline],
                "metrics": self.dp.metrics_url,
                "control": {"requests": self.requests, "errors": self.errors}}

    def dispatch(self, line: bytes) -> dict:
        """One request line -> one answer (never raises)."""
        self.requests += 1
        try:
            try:
                req = json.loads(line)
            except (ValueError, RecursionError) as e:  # deep nesting: RecursionError
                raise ControlError(f"not JSON: {e}") from None
            if not isinstance(req, dict) or not isinstance(req.get("cmd"), str):
                raise ControlError('a request is {"cmd": "<command>", "args": {...}}')
            cmd = self.commands.get(req["cmd"])
            if cmd is None:
                raise ControlError(f"unknown command {req['cmd']!r}; 'help' lists them")
            try:
                args = cmd.args.model_validate(req.get("args") or {})
            except ValidationError as e:
                raise ControlError(f"{req['cmd']}: " + "; ".join(_arg_error(x) for x in e.errors())) from None
            return {"ok": True, "result": cmd.fn(args)}
        except ControlError as e:
            self.errors += 1
            return {"ok": False, "error": str(e)}
        except Exception as e:  # noqa: BLE001 - the client gets the reason, we keep serving
            self.errors += 1
            log.exception("control command failed")
            return {"ok": False, "error": f"{type(e).__name__}: {e}"}

    # ---- server ----------------------------------------------------------------

    def start(self) -> None:
        self._prepare_path()
        self._thread = threading.Thread(target=self._run, name="dp-control", daemon=True)
        self._thread.start()
        self._ready.wait()
        if self._error is not None:
            raise self._error

    def _prepare_path(self) -> None:
        d = self.path.parent
        gid = grp.getgrnam(self.group).gr_gid if self.group else -1
        try:
            d.mkdir(parents=True)
        except FileExistsError:
            pass  # someone's directory (/tmp, /run): its mode is not ours to change;
            # the socket's own mode (0600, 0660 for the group) guards it
        else:  # our own directory: only the owner (and the control group) get in
            os.chmod(d, 0o750 if self.group else 0o700)
            if gid >= 0:
                os.chown(d, -1, gid)
        if self.path.is_socket():
            # a socket left by a crashed run; a live instance would answer
            probe = socket.socket(socket.AF_UNIX)
            try:
                with addressable(self.path) as name:
                    probe.connect(name)
                raise ControlError(f"{self.path}: another dataplane is listening there")
            except (ConnectionRefusedError, FileNotFoundError):
                self.path.unlink()
            finally:
                probe.close()

    def _run(self) -> None:
        try:
            self._loop = asyncio.new_event_loop()
            self._loop.run_until_complete(self._serve())
        except BaseException as e:  # noqa: BLE001 - reported to start()
            self._error = e
            self._ready.set()

    async def _serve(self) -> None:
        old = os.umask(0o177)  # the socket is born 0600: no window where others can connect
        try:
            with addressable(self.path) as name:
                server = await asyncio.start_unix_server(self._client, path=name,
                                                         limit=self.max_request)
        finally:
            os.umask(old)
        if self.group:
            os.chown(self.path, -1, grp.getgrnam(self.group).gr_gid)
            os.chmod(self.path, 0o660)
        self._stop = asyncio.Event()
        self._ready.set()
        async with server:
            await self._stop.wait()
            # Connections still open (a `top`, a client between requests) end
            # here, while the loop runs, not when it is gone.
            clients = list(self._clients)
            for task in clients:
                task.cancel()
            await asyncio.gather(*clients, return_exceptions=True)

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            pid, uid, gid = peer_credentials(writer.get_extra_info("socket"))
        except OSError:
            pid = uid = gid = -1
        log.info("control: client pid %d uid %d gid %d", pid, uid, gid)
        loop = asyncio.get_running_loop()
        self._clients.add(asyncio.current_task())
        try:
            while True:
                try:
                    line = await asyncio.wait_for(reader.readline(), self.idle_timeout)
                except asyncio.TimeoutError:
                    break  # silent client: its connection goes, nobody waited on it
                except (asyncio.LimitOverrunError, ValueError):
                    await self._answer(writer, {"ok": False, "error":
                                                f"request longer than {self.max_request} bytes"})
                    break
                if not line:
                    break
                try:
                    answer = await asyncio.wait_for(
                        loop.run_in_executor(self._pool, self.dispatch, line), self.request_timeout)
                except asyncio.TimeoutError:
                    answer = {"ok": False, "error": f"no answer within {self.request_timeout} s"}
                await self._answer(writer, answer)
        except (ConnectionError, BrokenPipeError, asyncio.CancelledError):
            pass  # gone, or the server is stopping
        finally:
            self._clients.discard(asyncio.current_task())
            writer.close()

    @staticmethod
    async def _answer(writer: asyncio.StreamWriter, answer: dict) -> None:
        writer.write(json.dumps(answer, default=str).encode() + b"\n")
        await writer.drain()

    def stop(self) -> None:
        if self._loop is not None and self._thread is not None and self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._stop.set)
            self._thread.join(5)
        self._pool.shutdown(wait=False, cancel_futures=True)
        try:
            self.path.unlink()
        except FileNotFoundError:
            pass


def request(path: Path, cmd: str, args: dict | None = None, timeout: float = 10.0) -> Any:
    """Client side: one request, its result; raises ControlError on an error answer."""
    with socket.socket(socket.AF_UNIX) as s:
        s.settimeout(timeout)
        with addressable(Path(path)) as name:
            s.connect(name)
        s.sendall(json.dumps({"cmd": cmd, "args": args or {}}).encode() + b"\n")
        buf = b""
        while not buf.endswith(b"\n"):
            chunk = s.recv(1 << 20)
            if not chunk:
                break
            buf += chunk
    answer = json.loads(buf)
    if not answer.get("ok"):
        raise ControlError(answer.get("error", "error"))
    return answer.get("result")
