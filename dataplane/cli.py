"""The `dataplane` command: run, check, pmds."""
from __future__ import annotations

import json
import logging
import os
import signal
import sys
import threading
import time
from pathlib import Path

import click
from rich.console import Console

from . import config as config_mod
from .errors import ConfigError, DataplaneError

log = logging.getLogger("dataplane")


def _seconds_since_process_start() -> float:
    """Wall time since this process was created (the 'start to forwarding' clock)."""
    try:
        start_ticks = int(Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()[19])
        uptime = float(Path("/proc/uptime").read_text().split()[0])
        return uptime - start_ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return float("nan")


def sd_notify(state: str) -> None:
    """Tell systemd (Type=notify) where we are; nothing when not under systemd."""
    import socket as _socket
    addr = os.environ.get("NOTIFY_SOCKET")
    if not addr:
        return
    if addr.startswith("@"):
        addr = "\0" + addr[1:]
    with _socket.socket(_socket.AF_UNIX, _socket.SOCK_DGRAM) as s:
        try:
            s.sendto(state.encode(), addr)
        except OSError as e:
            log.warning("sd_notify %s: %s", state, e)


def _reload_from_signal(dp) -> None:
    """SIGHUP: the same as `dataplane ctl reload`, on a thread of its own (a
    file that blocks its reader must not stop the main loop, nor SIGTERM);
    whatever goes wrong is logged and the dataplane runs on."""
    def reload() -> None:
        try:
            applied = dp.reload()
            log.warning("reload: %s", ", ".join(applied) or "nothing changed")
        except ConfigError as e:
            log.error("reload rejected, running config unchanged: %s", e)
        except Exception:  # noqa: BLE001 - a reload never takes the dataplane down
            log.exception("reload failed")
    threading.Thread(target=reload, name="dp-reload", daemon=True).start()


def _load(path: str | None) -> config_mod.Config:
    if path is None:
        from .demo import default_config
        return default_config()
    return config_mod.load(path)


def _fail(msg: str, code: int) -> None:
    # Plain text, never wrapped: people grep and scripts parse these lines.
    click.echo(f"error: {msg}", err=True)
    sys.exit(code)


def _emit_json(obj) -> None:
    click.echo(json.dumps(obj, indent=2, sort_keys=True, default=str))


@click.group()
@click.option("-v", "--verbose", count=True, help="more log output (-vv for debug)")
def main(verbose: int) -> None:
    """A DPDK packet dataplane driven from Python."""
    level = (logging.WARNING, logging.INFO, logging.DEBUG)[min(verbose, 2)]
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")


@main.command()
@click.argument("config_path", required=False, metavar="[CONFIG]")
@click.option("--duration", type=float, default=None, help="stop by itself after this many seconds")
@click.option("--json", "as_json", is_flag=True, help="no live view; print the final counters as JSON")
@click.option("--quiet", is_flag=True, help="no live view")
def run(config_path: str | None, duration: float | None, as_json: bool, quiet: bool) -> None:
    """Run the dataplane on CONFIG (default: the embedded virtual-device demo)."""
    from .eal import Eal
    from .engine import Dataplane
    from .view import rates, render, runtime_table

    try:
        cfg = _load(config_path)
    except ConfigError as e:
        _fail(str(e), 2)

    try:
        eal = Eal(cfg)
    except DataplaneError as e:
        _fail(str(e), 1)
    dp = Dataplane(cfg)

    signals_seen = []

    def on_signal(signum, _frame):
        signals_seen.append(signum)
        if len(signals_seen) > 1:
            os._exit(128 + signum)  # second signal: no clean-up, out now
        dp.request_stop()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    reload_requested = []
    signal.signal(signal.SIGHUP, lambda *_: reload_requested.append(True))
    dp.config_path = config_path

    code = 0
    first = last = None
    control = metrics = None
    _fail_later: list[str] = []
    forwarding_at = None
    try:
        try:
            dp.start()
        except DataplaneError as e:
            _fail(str(e), 1)
        # Metrics first: once the control socket exists, everything is up.
        metrics = None
        if cfg.metrics.enabled:
            from .metrics import MetricsServer
            host, _, mport = cfg.metrics.listen.rpartition(":")
            metrics = MetricsServer(dp, host.strip("[]"), int(mport), cfg.metrics.interval_s,
                                    cfg.metrics.max_connections, cfg.metrics.timeout_s)
            try:
                metrics.start()
                dp.metrics_url = f"http://{metrics.host}:{metrics.port}/metrics"
            except OSError as e:  # the dataplane runs on; only the endpoint is missing
                log.warning("metrics endpoint %s not started: %s", cfg.metrics.listen, e.strerror)
                metrics = None
        control = None
        if cfg.control.enabled:
            from .control import ControlServer
            c = cfg.control
            control = ControlServer(dp, config_mod.control_socket(cfg), group=c.group,
                                    max_request=c.max_request_bytes, idle_timeout=c.idle_timeout_s,
                                    request_timeout=c.request_timeout_s)
            try:
                control.start()
            except Exception as e:  # noqa: BLE001 - a clear message, then a clean stop
                control = None
                dp.request_stop()
                _fail_later.append(f"control socket: {e}")
        ready_at = _seconds_since_process_start()
        sd_notify("READY=1")
        log.info("ready %.2f s after process start", ready_at)
        first = last = dp.snapshot()
        live = None
        console = Console()
        if not (as_json or quiet) and console.is_terminal:
            from rich.live import Live
            live = Live(render(first, first), console=console, refresh_per_second=4)
            live.start()
        t_end = None if duration is None else time.monotonic() + duration
        prev = first
        from . import native
        while not native.stop_requested():
            # Poll finely until the first packet is out: it times "start to forwarding".
            step = 0.25 if forwarding_at is not None else 0.005
            remaining = step if t_end is None else min(step, t_end - time.monotonic())
            if remaining <= 0:
                break
            time.sleep(remaining)
            if reload_requested:
                reload_requested.clear()
                _reload_from_signal(dp)
            cur = dp.snapshot()
            if forwarding_at is None and cur.totals["tx"] > 0:
                forwarding_at = _seconds_since_process_start()
            if live is not None and cur.time - prev.time >= 0.5:
                live.update(render(prev, cur))
                prev = cur
            last = cur
        if live is not None:
            live.stop()
    finally:
        sd_notify("STOPPING=1")
        if metrics is not None:
            metrics.stop()
        if control is not None:
            control.stop()
        failed = [w for w in dp.workers if w.error is not None]
        dp.quiesce()
        if last is not None:
            last = dp.snapshot()  # workers stopped, flows flushed: exact and final
        dp.stop()
        eal.close()
    for msg in _fail_later:
        code = 1
        click.echo(f"error: {msg}", err=True)
    if failed:
        code = 1
        for w in failed:
            click.echo(f"error: worker {w.index} failed: {w.error}", err=True)
    if last is not None:
        window = rates(first, last)
        if as_json:
            from .view import runtime_rows
            out = last.as_dict()
            out.update(rates=window, ready_s=ready_at, forwarding_s=forwarding_at,
                       runtime=runtime_rows(last), signals=signals_seen)
            _emit_json(out)
        elif not quiet:
            console = Console()
            console.print(render(first, last, "final"))
            console.print(runtime_table(last))
            fwd = f"{forwarding_at:.2f} s" if forwarding_at is not None else "never"
            console.print(f"ready {ready_at:.2f} s after start, first packet forwarded: {fwd}")
    sys.exit(code)


@main.command()
@click.argument("config_path", metavar="CONFIG")
@click.option("--json", "as_json", is_flag=True)
def check(config_path: str, as_json: bool) -> None:
    """Validate CONFIG and this host (hugepages, IOMMU/vfio, NIC binding, PMDs)."""
    from . import hostcheck

    try:
        cfg = config_mod.load(config_path)
    except ConfigError as e:
        if as_json:
            _emit_json({"config": {"ok": False, "error": str(e)}, "host": []})
            sys.exit(2)
        _fail(str(e), 2)
    results = hostcheck.check_host(cfg.devices, no_huge=not cfg.eal.hugepages)
    bad = [r for r in results if r.level == "error"]
    if as_json:
        _emit_json({"config": {"ok": True, "file": config_path},
                    "host": [r.__dict__ for r in results]})
    else:
        console = Console()
        console.print(f"[green]ok[/]    config {config_path}")
        for r in results:
            style = {"ok": "green", "warn": "yellow", "error": "red"}[r.level]
            console.print(f"[{style}]{r.level:<5}[/] {r.name}: {r.detail}", highlight=False)
            if r.level != "ok" and r.fix:
                console.print(f"      fix: {r.fix}", highlight=False)
    sys.exit(1 if bad else 0)


def _find_socket(socket_path: str | None, config_path: str | None) -> Path:
    if socket_path:
        return Path(socket_path)
    if config_path:
        return config_mod.control_socket(config_mod.load(config_path))
    from .demo import default_config
    run_dir = config_mod.runtime_dir(default_config())
    found = sorted(run_dir.glob("*.sock"))
    if len(found) == 1:
        return found[0]
    where = ", ".join(map(str, found)) or f"none in {run_dir}"
    _fail(f"say which dataplane with --socket or --config (sockets: {where})", 2)


def _parse_value(text: str):
    try:
        return json.loads(text)
    except ValueError:
        return text


@main.command(context_settings={"ignore_unknown_options": True})
@click.argument("command")
@click.argument("args", nargs=-1)
@click.option("-s", "--socket", "socket_path", help="control socket of the dataplane")
@click.option("-c", "--config", "config_path", help="config of the dataplane (to find its socket)")
@click.option("--json", "as_json", is_flag=True, help="machine-readable output")
def ctl(command: str, args: tuple[str, ...], socket_path: str | None, config_path: str | None,
        as_json: bool) -> None:
    """Send COMMAND [key=value ...] to a running dataplane ('help' lists them)."""
    from .control import ControlError, request

    kwargs = {}
    for a in args:
        key, eq, value = a.partition("=")
        if not eq:
            _fail(f"arguments are key=value (got {a!r})", 2)
        kwargs[key] = _parse_value(value)
    path = _find_socket(socket_path, config_path)
    try:
        result = request(path, command, kwargs)
    except ControlError as e:
        _fail(str(e), 1)
    except OSError as e:
        _fail(f"{path}: {e.strerror or e}", 1)
    if as_json:
        click.echo(json.dumps(result, default=str))
    else:
        Console().print_json(data=result, default=str)


@main.command()
@click.option("-s", "--socket", "socket_path", help="control socket of the dataplane")
@click.option("-c", "--config", "config_path", help="config of the dataplane (to find its socket)")
@click.option("--interval", type=float, default=1.0, show_default=True)
@click.option("--count", type=int, default=0, help="stop after this many updates (0: never)")
def top(socket_path: str | None, config_path: str | None, interval: float, count: int) -> None:
    """Live per-port and per-worker rates, drops by reason, flows and export."""
    from rich.live import Live

    from .control import ControlError, request
    from .engine import Snapshot
    from .view import render

    path = _find_socket(socket_path, config_path)

    def snap() -> Snapshot:
        d = request(path, "stats")
        return Snapshot(**{k: d[k] for k in Snapshot.__dataclass_fields__ if k in d})

    try:
        prev = snap()
        with Live(render(prev, prev), refresh_per_second=4, screen=False) as live:
            n = 0
            while count == 0 or n < count:
                time.sleep(interval)
                cur = snap()
                live.update(render(prev, cur, title=f"dataplane ({path.name})"))
                prev, n = cur, n + 1
    except (ControlError, OSError) as e:
        _fail(f"{path}: {e}", 1)
    except KeyboardInterrupt:
        pass


@main.command()
@click.option("--json", "as_json", is_flag=True)
@click.option("--pci", "only_pci", is_flag=True, help="only drivers for PCI devices")
@click.option("--vdev", "only_vdev", is_flag=True, help="only virtual-device drivers")
def pmds(as_json: bool, only_pci: bool, only_vdev: bool) -> None:
    """List installed DPDK poll-mode drivers with their PCI ids and parameters."""
    from . import pmdinfo

    found = pmdinfo.scan()
    if only_pci:
        found = [p for p in found if p.kind == "pci"]
    if only_vdev:
        found = [p for p in found if p.kind == "vdev"]
    if as_json:
        _emit_json([{"name": p.name, "kind": p.kind, "params": p.params,
                     "pci_ids": [f"{v:04x}:{d:04x}" for v, d, *_ in p.pci_ids],
                     "library": p.library} for p in found])
        return
    from rich.table import Table
    t = Table(title=f"{len(found)} DPDK drivers in {pmdinfo.default_pmd_dir()}")
    for col in ("driver", "kind", "PCI ids", "parameters"):
        t.add_column(col, overflow="fold")
    for p in found:
        ids = ", ".join(sorted({f"{v:04x}:{d:04x}" for v, d, *_ in p.pci_ids}))
        if len(ids) > 60:
            ids = ids[:57] + f"... ({len(p.pci_ids)})"
        t.add_row(p.name, p.kind, ids, p.params)
    Console().print(t)


@main.command()
@click.option("-c", "--config", "config_path", required=True, help="the DUT's config (its ports, its socket)")
@click.option("-s", "--socket", "socket_path", help="the DUT's control socket (default: from --config)")
@click.option("--source", type=click.Choice(["afpacket", "trex"]), default="afpacket", show_default=True,
              help="afpacket: a paced sender on the veth peers of the DUT's net_af_packet ports; trex: TRex")
@click.option("--in", "in_ports", help="DUT ports the traffic enters by (comma-separated)")
@click.option("--out", "out_ports", help="DUT ports it leaves by (comma-separated)")
@click.option("--max-rate", type=float, required=True, help="first trial's rate, pps (line rate)")
@click.option("--resolution", type=float, help="stop when the bracket is this narrow, pps [1% of max]")
@click.option("--duration", type=float, default=1.0, show_default=True, help="seconds per trial")
@click.option("--loss-tolerance", type=float, default=0.5, show_default=True, help="PDR: loss allowed, %")
@click.option("--max-trials", type=int, default=20, show_default=True)
@click.option("--fanout", type=int, default=1, show_default=True,
              help="copies of each packet expected back (packet broker: the tool ports)")
@click.option("--count-at", type=click.Choice(["source", "dut"]), default="source", show_default=True,
              help="dut: forwarded = the DUT's transmissions on --out (nothing comes back: a probe)")
@click.option("--tx-iface", help="afpacket: interface to send on [veth peer of the --in port]")
@click.option("--rx-iface", help="afpacket: interface to count returns on [veth peer of --out]")
@click.option("--size", type=int, default=64, show_default=True, help="afpacket: frame size incl. FCS")
@click.option("--flows", type=int, default=1, show_default=True, help="afpacket: source addresses")
@click.option("--ipv", type=click.Choice(["4", "6"]), default="4", show_default=True)
@click.option("--src", help="afpacket: first source address")
@click.option("--dst", help="afpacket: destination address")
@click.option("--dst-mac", help="afpacket: destination MAC [the DUT port's]")
@click.option("--trex-server", default="127.0.0.1", show_default=True)
@click.option("--profile", help="trex: a stateless profile (deploy/trex/*.py)")
@click.option("-t", "tunables", help="trex: profile tunables, e.g. size=64,flows=1000000")
@click.option("--trex-tx", default="0", show_default=True, help="trex: transmit ports")
@click.option("--trex-rx", default="1", show_default=True, help="trex: receive ports")
@click.option("--json", "as_json", is_flag=True, help="print the result as JSON")
@click.option("--json-out", help="also write the result as JSON to this file")
def ndr(config_path: str, socket_path: str | None, source: str, in_ports: str | None,
        out_ports: str | None, max_rate: float, resolution: float | None, duration: float,
        loss_tolerance: float, max_trials: int, fanout: int, count_at: str, tx_iface: str | None,
        rx_iface: str | None, size: int, flows: int, ipv: str, src: str | None, dst: str | None,
        dst_mac: str | None, trex_server: str, profile: str | None, tunables: str | None,
        trex_tx: str, trex_rx: str, as_json: bool, json_out: str | None) -> None:
    """NDR/PDR search (RFC 2544) against a running dataplane, losses by reason."""
    from . import ndr as ndr_mod
    from .control import ControlError

    try:
        res = ndr_mod.run_cli(
            config_path=config_path, socket_path=socket_path, source=source, in_ports=in_ports,
            out_ports=out_ports, max_rate=max_rate, resolution=resolution, duration=duration,
            loss_tolerance_pct=loss_tolerance, max_trials=max_trials, fanout=fanout,
            count_at=count_at, tx_iface=tx_iface, rx_iface=rx_iface, size=size, flows=flows,
            ipv=int(ipv), src=src, dst=dst, dst_mac=dst_mac, trex_server=trex_server,
            profile=profile, tunables=tunables, trex_tx=trex_tx, trex_rx=trex_rx,
            as_json=as_json, json_out=json_out, echo=lambda m: click.echo(m, err=True))
    except ConfigError as e:
        _fail(str(e), 2)
    except (ValueError, RuntimeError, ControlError) as e:
        _fail(str(e), 1)
    except OSError as e:
        _fail(f"{e.filename or 'ndr'}: {e.strerror or e}", 1)
    if as_json:
        _emit_json(res.as_dict())
    else:
        console = Console()
        if not console.is_terminal:
            console = Console(width=max(console.width, 160))
        console.print(ndr_mod.trial_table(res.trials))
        for line in ndr_mod.summary_lines(res):
            console.print(line, highlight=False, markup=False)


if __name__ == "__main__":
    main()
