"""The running dataplane: ports, pools, worker threads and their pipelines.

Main thread: builds everything from a validated Config, then only reads
counters and queues commands. Worker threads: one per configured CPU, each
looping on ``dp_worker_poll`` (C, GIL released) and, between polls, running
queued commands. The slow-path thread: takes what the workers punt (within
each reason's rate, policed in C) and hands it to the punt handlers, so no
per-packet Python ever runs on a worker.
"""
from __future__ import annotations

import glob
import logging
import queue
import sys
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Callable

from . import native
from .config import Config, Ip6flowStage, NetflowStage, One2ManyStage, PortConfig, XconnectStage
from .errors import ConfigError, WorkerError

log = logging.getLogger(__name__)


def cpu_socket(cpu: int) -> int:
    nodes = glob.glob(f"/sys/devices/system/cpu/cpu{cpu}/node*")
    return int(nodes[0].rsplit("node", 1)[1]) if nodes else 0


@dataclass
class Port:
    index: int
    cfg: PortConfig
    port_id: int
    info: native.PortInfo
    nb_rxq: int = 0
    nb_txq: int = 0
    pcapfile: object = None  # the reader of a pcap_file port

    @property
    def name(self) -> str:
        return self.cfg.name


# Records a worker reads for a table dump per request (Dataplane.read_pages)
DUMP_PAGE = 256

# (worker, rx port id, frame, DP_PUNT_* reason)
PuntHandler = Callable[["Worker", int, bytes, int], None]


class Worker(threading.Thread):
    """One worker: a Python thread pinned to a CPU, running the C loop."""

    def __init__(self, index: int, cpu: int, handle, dp: "Dataplane"):
        super().__init__(name=f"dp-worker-{index}", daemon=True)
        self.index = index
        self.cpu = cpu
        self.handle = handle
        self._dp = dp
        self._commands: queue.SimpleQueue = queue.SimpleQueue()
        self._budget_us = int(dp.cfg.run.poll_budget_ms * 1000)
        self.error: BaseException | None = None
        self.started = threading.Event()
        self.punts_unhandled = 0
        self.lcore = -1  # the EAL lcore id the thread registered as

    def call(self, fn: Callable[["Worker"], object]) -> Future:
        """Run ``fn(worker)`` on this worker's thread between two polls."""
        fut: Future = Future()
        self._commands.put((fn, fut))
        native.worker_notify(self.handle)
        return fut

    def run(self) -> None:
        try:
            native.worker_thread_init(self.handle, self.cpu)
        except BaseException as e:  # noqa: BLE001 - reported to the main thread
            self.error = e
            self.started.set()
            native.request_stop()
            return
        self.lcore = native.worker_lcore(self.handle)
        self.started.set()
        try:
            while True:
                reason = native.worker_poll(self.handle, self._budget_us)
                self._service()
                if reason & native.POLL_STOP:
                    break
        except BaseException as e:  # noqa: BLE001
            self.error = e
            log.exception("worker %d failed; stopping the dataplane", self.index)
            native.request_stop()
        finally:
            self._service()
            native.worker_thread_fini(self.handle)

    def _service(self) -> None:
        while True:
            try:
                fn, fut = self._commands.get_nowait()
            except queue.Empty:
                break
            if fut.set_running_or_notify_cancel():
                try:
                    fut.set_result(fn(self))
                except BaseException as e:  # noqa: BLE001
                    fut.set_exception(e)


class SlowPathThread(threading.Thread):
    """The one consumer of every worker's punt ring (they are single-consumer
    rings): waits in C with the GIL released, then hands each punted frame
    to the dataplane's punt handlers. Up to BATCH frames of one worker in a
    row, so one worker's storm does not starve another's neighbour discovery."""

    WAIT_US = 100_000
    BATCH = 64

    def __init__(self, dp: "Dataplane"):
        super().__init__(name="dp-slowpath", daemon=True)
        self._dp = dp
        self._readers = [(w, native.PuntReader(w.handle)) for w in dp.workers]
        self._waitset = native.punt_wait_set([w.handle for w in dp.workers])
        self._stopping = threading.Event()
        self.handled = 0
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            while not self._stopping.is_set():
                if native.punt_wait(self._waitset, self.WAIT_US):
                    self._drain(self.BATCH)
        except BaseException as e:  # noqa: BLE001 - a handler bug must not go unseen
            self.error = e
            log.exception("slow path thread failed; punted packets now wait in their rings")

    def _drain(self, batch: int) -> int:
        moved = 0
        for w, reader in self._readers:
            for _ in range(batch):
                pkt = reader.recv()
                if pkt is None:
                    break
                self._dp._on_punt(w, *pkt)
                moved += 1
        self.handled += moved
        return moved

    def stop(self) -> None:
        """After the workers stopped: what they punted last is still handled."""
        self._stopping.set()
        if self.is_alive():
            self.join()
        if self.error is None:
            while self._drain(self.BATCH):
                pass


@dataclass
class Snapshot:
    """Counters read at one instant, summed over workers where it makes sense."""
    time: float
    ports: dict[str, dict] = field(default_factory=dict)
    workers: list[dict] = field(default_factory=list)
    stages: list[dict] = field(default_factory=list)
    pools: list[dict] = field(default_factory=list)
    totals: dict = field(default_factory=dict)
    netflow: list[dict] = field(default_factory=list)
    one2many: list[dict] = field(default_factory=list)
    ip6flow: list[dict] = field(default_factory=list)
    slowpath: dict = field(default_factory=dict)  # the slow path thread: handled, pending

    def as_dict(self) -> dict:
        return {"time": self.time, "ports": self.ports, "workers": self.workers,
                "stages": self.stages, "pools": self.pools, "totals": self.totals,
                "netflow": self.netflow, "one2many": self.one2many, "ip6flow": self.ip6flow,
                "slowpath": self.slowpath}


class Dataplane:
    """Ports + pools + workers built from a Config. Needs a running EAL."""

    def __init__(self, cfg: Config):
        self.cfg = cfg
        self.ports: list[Port] = []     # devices
        self.bundles: list[Port] = []   # logical ports: one2many bundles (no device)
        self.workers: list[Worker] = []
        self.pools: dict[int, object] = {}
        self._worker_handles: list = []
        self._punt_handlers: list[PuntHandler] = []
        self.controllers: list = []   # the Python side of stages (netflow, one2many)
        self.slowpath: SlowPathThread | None = None
        self.reasons = native.drop_reasons()
        self.running = False
        self.metrics_url: str | None = None  # set by whoever serves metrics
        self.config_path: str | None = None  # where cfg came from (reload re-reads it)
        # Held by snapshot() and by teardown: counters are never read from
        # workers or ports that are being freed (metrics and control read
        # from their own threads).
        self._teardown_lock = threading.RLock()
        self._reload_lock = threading.Lock()

    def reload(self, path: str | None = None) -> list[str]:
        """Re-read the config file and apply it live (see dataplane.reload)."""
        from . import config as config_mod
        from .reload import apply
        path = path or self.config_path
        if path is None:
            raise ConfigError("reload: this dataplane runs the embedded default; there is no file")
        # One at a time, and a second one is told so at once: a file that
        # hangs its reader (a hung NFS mount) pins one thread, not every caller.
        if not self._reload_lock.acquire(blocking=False):
            raise ConfigError(f"{path}: a reload is already in progress")
        try:
            return apply(self, config_mod.load(path), path)
        finally:
            self._reload_lock.release()

    # ---- build ---------------------------------------------------------------

    def _pool_for(self, socket: int):
        socket = max(socket, 0)
        if socket not in self.pools:
            m = self.cfg.mempool
            self.pools[socket] = native.pool_create(f"dp_mbuf_s{socket}", m.mbufs, m.cache,
                                                    m.data_room, socket)
        return self.pools[socket]

    def _attach_ports(self) -> None:
        for i, pc in enumerate(self.cfg.ports):
            if pc.bundle:
                continue
            try:
                pid = native.dev_attach(pc.devargs)
            except native.DataplaneError as e:
                raise ConfigError(f"ports[{i}].{pc.source_key}: {e}", e.errno) from None
            self.ports.append(Port(i, pc, pid, native.port_info(pid)))
        # Bundles take port ids no device has, from the top down.
        free = (pid for pid in range(native.MAX_PORTS - 1, -1, -1)
                if pid not in {p.port_id for p in self.ports})
        for i, pc in enumerate(self.cfg.ports):
            if pc.bundle:
                links = [self.port(n) for n in self._bundle_stage(pc.name).many]
                pid = next(free)
                mtu = min(lk.cfg.mtu or lk.info.mtu or 1500 for lk in links)
                info = native.PortInfo(port_id=pid, name=pc.name, driver="bundle", socket=-1,
                                       max_rx_queues=0, max_tx_queues=0, min_mtu=mtu,
                                       max_mtu=mtu, mtu=mtu, mac=pc.mac or links[0].info.mac)
                self.bundles.append(Port(i, pc, pid, info))

    def _bundle_stage(self, name: str) -> One2ManyStage:
        """The one2many table whose one is bundle `name` (config checked: one)."""
        return next(sc for sc in self.cfg.pipeline if isinstance(sc, One2ManyStage) and sc.one == name)

    @property
    def all_ports(self) -> list[Port]:
        """Devices and bundles: every name a stage may refer to."""
        return self.ports + self.bundles

    def link_up(self, port_id: int) -> bool:
        """A device's link state; a bundle is up while it has an enabled link
        (ng_one2many tells upstream only on empty <-> non-empty)."""
        for b in self.bundles:
            if b.port_id == port_id:
                return any(c.is_up() for c in self.one2many if c.cfg.one == b.name)
        return native.port_link(port_id)["up"]

    def _configure_ports(self) -> None:
        n_workers = len(self.cfg.eal.workers)
        worker_sockets = {cpu_socket(c) for c in self.cfg.eal.workers}
        for p in self.ports:
            pc = p.cfg
            want_rx = 1 if pc.pcap_file else (pc.rx_queues or n_workers)  # a file is one stream
            p.nb_rxq = max(1, min(want_rx, p.info.max_rx_queues))
            p.nb_txq = max(1, min(n_workers, p.info.max_tx_queues))
            if p.info.socket >= 0 and worker_sockets and p.info.socket not in worker_sockets:
                log.warning("port %s sits on NUMA socket %d but no worker runs there "
                            "(workers on %s): every packet crosses the interconnect",
                            p.name, p.info.socket, sorted(worker_sockets))
            native.port_configure(p.port_id, nb_rxq=p.nb_rxq, nb_txq=p.nb_txq,
                                  rx_desc=pc.rx_desc, tx_desc=pc.tx_desc, mtu=pc.mtu,
                                  promiscuous=pc.promiscuous, rss=pc.rss,
                                  pool=self._pool_for(p.info.socket))
            if pc.pcap_file is not None:
                try:
                    p.pcapfile = native.pcapfile_open(p.port_id, pc.pcap_file, pc.pcap_loop,
                                                      self._pool_for(p.info.socket))
                except native.DataplaneError as e:
                    raise ConfigError(f"ports[{p.index}].pcap_file: {e}", e.errno) from None

    def _build_workers(self) -> None:
        for wi, cpu in enumerate(self.cfg.eal.workers):
            sock = cpu_socket(cpu)
            h = native.worker_create(wi, sock, self._pool_for(sock))
            native.worker_set_cycle_sampling(h, self.cfg.run.cycle_sample_shift)
            native.worker_set_idle_rx_skip(h, self.cfg.run.idle_rx_skip)
            self._set_punt_police(h, self.cfg.slowpath)
            self._worker_handles.append(h)
            for p in self.ports:
                if p.cfg.poll and wi < p.nb_rxq:
                    native.worker_add_rxq(h, p.port_id, wi)
                native.worker_set_txq(h, p.port_id, wi % p.nb_txq, shared=p.nb_txq < len(self.cfg.eal.workers))
            for i, sc in enumerate(self.cfg.pipeline):
                self._add_stage(h, i, sc)
            self.workers.append(Worker(wi, cpu, h, self))

    def _port_id(self, name: str) -> int:
        return self.port(name).port_id

    def _set_punt_police(self, h, slowpath) -> None:
        """Each worker polices its own punts: its share of every reason's rate."""
        n = len(self.cfg.eal.workers)
        for reason, name in enumerate(native.punt_reason_names()):
            p = getattr(slowpath.police, name)
            native.worker_set_punt_policer(h, reason, p.rate / n, max(1, p.burst // n),
                                           slowpath.source_share)

    def set_punt_police(self, slowpath) -> None:
        """New punt rates ([slowpath]), live: single words the workers read per punt."""
        for h in self._worker_handles:
            self._set_punt_police(h, slowpath)

    @property
    def netflow(self) -> list:
        return [c for c in self.controllers if c.kind == "netflow"]

    @property
    def one2many(self) -> list:
        return [c for c in self.controllers if c.kind == "one2many"]

    @property
    def ip6flow(self) -> list:
        return [c for c in self.controllers if c.kind == "ip6flow"]

    def _controller(self, index: int, sc):
        """The Python side of pipeline table `index`, made on first use."""
        from .ip6flow import Ip6flowController
        from .netflow import NetflowController
        from .one2many import One2ManyController
        for c in self.controllers:
            if c.index == index:
                return c
        cls = {NetflowStage: NetflowController, One2ManyStage: One2ManyController,
               Ip6flowStage: Ip6flowController}[type(sc)]
        c = cls(self, sc, index)
        self.controllers.append(c)
        return c

    def _add_stage(self, h, index: int, sc) -> None:
        st = native.worker_add_stage(h, sc.stage)
        if isinstance(sc, NetflowStage):
            self._controller(index, sc).add_worker_stage(st, len(self.cfg.eal.workers), self.all_ports)
        elif isinstance(sc, (One2ManyStage, Ip6flowStage)):
            self._controller(index, sc).add_worker_stage(st)
            if isinstance(sc, One2ManyStage) and self.cfg.port(sc.one).bundle:
                native.worker_set_port_via(h, self._port_id(sc.one), st)
        elif isinstance(sc, XconnectStage):
            for src, dst in sc.map.items():
                out = native.PORT_PUNT if dst == "punt" else self._port_id(dst)
                native.xconnect_set(st, self._port_id(src), out)

    def start(self) -> None:
        """Attach and start ports, then start the workers. On failure,
        everything built so far is torn down before the error propagates."""
        native.clear_stop()
        self._switch_interval = sys.getswitchinterval()
        sys.setswitchinterval(self.cfg.run.gil_switch_interval_ms / 1000)
        try:
            self._attach_ports()
            self._configure_ports()
            self._build_workers()
            if self.ip6flow:  # ng_netflow's route data: the router's table
                for nf in self.netflow:
                    for st in nf.stages:
                        native.netflow_attach_router(st, self.ip6flow[0].table.router)
            for c in self.controllers:  # tables in place before the first packet
                if hasattr(c, "prepare"):
                    c.prepare()
            for p in self.ports:
                native.port_start(p.port_id)
            for c in self.controllers:
                c.start()
            self.slowpath = SlowPathThread(self)
            self.slowpath.start()
            for w in self.workers:
                w.start()
            for w in self.workers:
                w.started.wait()
                if w.error is not None:
                    raise WorkerError(f"worker {w.index} on cpu {w.cpu}: {w.error}")
            self.running = True
            self._started_at = time.monotonic()
        except BaseException:
            self.stop()
            raise

    # ---- run -----------------------------------------------------------------

    def uptime(self) -> float:
        return time.monotonic() - self._started_at if self.running else 0.0

    def on_punt(self, handler: PuntHandler) -> None:
        self._punt_handlers.append(handler)

    def _on_punt(self, worker: Worker, port_id: int, data: bytes, reason: int) -> None:
        for h in self._punt_handlers:
            h(worker, port_id, data, reason)
        if not self._punt_handlers:
            worker.punts_unhandled += 1

    def port(self, name: str) -> Port:
        for p in self.all_ports:
            if p.name == name:
                return p
        raise KeyError(name)

    def inject(self, port: str, data: bytes, worker: int = 0) -> None:
        """Send a packet out of ``port`` through a worker's inject ring."""
        self.inject_port_id(self.port(port).port_id, data, worker)

    def inject_port_id(self, port_id: int, data: bytes, worker: int = 0) -> None:
        native.worker_inject(self._worker_handles[worker], port_id, data)

    def on_all_workers(self, fn: Callable[[Worker], object], timeout: float = 5.0) -> list:
        futs = [w.call(fn) for w in self.workers]
        return [f.result(timeout) for f in futs]

    def on_stage(self, index: int, fn: Callable[[object, Worker], object],
                 timeout: float = 5.0) -> list:
        """Run ``fn(stage, worker)`` on every worker's thread, between two
        bursts, for the stage of pipeline table ``index`` (workers add their
        stages in pipeline order, so the table index is the stage index)."""
        return self.on_all_workers(
            lambda w: fn(native.worker_stages(w.handle)[index], w), timeout)

    def stage_command(self, index: int, kind: int, a0: int = 0, a1: int = 0, p=None,
                      per_worker: Callable[[int], object] | None = None,
                      what: str = "worker command") -> list[int]:
        """Run C command ``kind`` (native.CMD_*) on every worker's stage of
        pipeline table ``index``, inside the workers' C loops: a worker never
        comes back to Python (nor waits for the GIL) for it. ``p``: the
        command's struct; ``per_worker(i)``: one per worker instead. Returns
        each worker's return code."""
        out = []
        for wi in range(len(self.workers)):
            with self._teardown_lock:  # the worker is not freed under us
                h, st = self._stage_of(wi, index)
                arg = per_worker(wi) if per_worker else (native.ffi.NULL if p is None else p)
                out.append(native.worker_exec(h, st, kind, a0, a1, arg, what=what)[0])
        return out

    def _stage_of(self, wi: int, index: int):
        if not self._worker_handles:
            raise WorkerError("the dataplane is stopped: its tables are gone")
        h = self._worker_handles[wi]
        return h, native.worker_stages(h)[index]

    def read_pages(self, index: int, kind: int, arg: int, buf, convert: Callable,
                   limit: int, after: tuple[int, int] = (0, 0)) -> tuple[list[dict], tuple[int, int] | None]:
        """Up to ``limit`` rows of pipeline table ``index``'s per-worker tables
        (``buf``: a cffi array of DUMP_PAGE records, a page; ``convert`` makes a
        row of one). Each page is read by its worker inside its C loop, between two
        bursts (a page scans at most DP_DUMP_SCAN_SLOTS slots, for at most
        ~50 us), so a dump never holds a worker out of its loop. ``after`` is
        where to go on from, (worker, slot); returns the rows and the next such
        position, or None when the walk is complete."""
        rows: list[dict] = []
        first, cursor = after
        for wi in range(first, len(self.workers)):
            if len(rows) >= limit:
                return rows, (wi, 0)
            while len(rows) < limit:
                with self._teardown_lock:
                    h, st = self._stage_of(wi, index)
                    n, cursor = native.worker_exec(h, st, kind, arg, 0, buf,
                                                   min(len(buf), limit - len(rows)), cursor, what="dump")
                    rows += [dict(convert(buf[i]), worker=wi) for i in range(n)]
                if cursor == 0:
                    break
            if cursor != 0:
                return rows, (wi, cursor)
        return rows, None

    def wait_idle(self, timeout: float = 10.0, settle: float = 0.2) -> bool:
        """Wait until no worker moved a packet for ``settle`` seconds."""
        deadline = time.monotonic() + timeout
        last = None
        since = time.monotonic()
        while time.monotonic() < deadline:
            cur = self.snapshot().totals
            key = (cur["rx"], cur["tx"], cur["dropped"], cur["punted"], cur["injected"])
            if key != last:
                last, since = key, time.monotonic()
            elif time.monotonic() - since >= settle:
                return True
            time.sleep(0.02)
        return False

    def snapshot(self) -> Snapshot:
        with self._teardown_lock:
            if not self._worker_handles and self.workers:
                raise WorkerError("the dataplane is stopped: its counters are gone")
            return self._snapshot()

    def _snapshot(self) -> Snapshot:
        snap = Snapshot(time=time.monotonic())
        hz = native.tsc_hz()
        totals = {"rx": 0, "tx": 0, "injected": 0, "punted": 0, "dropped": 0,
                  "drops": dict.fromkeys(self.reasons, 0), "max_gap_us": 0.0}
        for p in self.ports:
            entry = {"port_id": p.port_id, "driver": p.info.driver, "device": p.cfg.devargs,
                     "rx_queues": p.nb_rxq, "tx_queues": p.nb_txq, "rx": 0, "tx": 0,
                     "tx_dropped": 0}
            try:
                entry["link"] = native.port_link(p.port_id)
                entry["eth"] = native.port_stats(p.port_id)
            except native.DataplaneError:
                entry["link"], entry["eth"] = {}, {}
            if p.pcapfile is not None:
                entry["pcap_file"] = dict(native.pcapfile_stats(p.pcapfile), path=p.cfg.pcap_file)
            snap.ports[p.name] = entry
        for w in self.workers:
            ws = native.worker_stats(w.handle, self.reasons)
            ws.update(id=w.index, cpu=w.cpu, lcore=w.lcore, tid=w.native_id,
                      max_gap_us=ws["max_gap_cycles"] * 1e6 / hz,
                      max_command_us=ws["max_command_cycles"] * 1e6 / hz,
                      punts_unhandled=w.punts_unhandled)
            snap.workers.append(ws)
            for k in ("rx", "tx", "injected", "punted", "dropped"):
                totals[k] += ws[k]
            for r, v in ws["drops"].items():
                totals["drops"][r] += v
            totals["max_gap_us"] = max(totals["max_gap_us"], ws["max_gap_us"])
            for p in self.ports:
                pst = native.worker_port_stats(w.handle, p.port_id)
                for k, v in pst.items():
                    snap.ports[p.name][k] += v
            for si, st in enumerate(native.worker_stages(w.handle)):
                s = native.stage_stats(st, self.reasons)
                s.update(worker=w.index, index=si, kind=native.stage_kind(st))
                snap.stages.append(s)
        for sock, pool in self.pools.items():
            avail, in_use, size = native.pool_counts(pool)
            snap.pools.append({"socket": sock, "avail": avail, "in_use": in_use, "size": size})
        snap.totals = totals
        if self.slowpath is not None:
            snap.slowpath = {"handled": self.slowpath.handled,
                             "pending": sum(native.worker_punt_pending(h) for h in self._worker_handles)}
        snap.netflow = [dict(c.info(), pipeline_index=c.index) for c in self.netflow]
        snap.one2many = [dict(c.info(), pipeline_index=c.index) for c in self.one2many]
        snap.ip6flow = [dict(c.info(), pipeline_index=c.index) for c in self.ip6flow]
        return snap

    # ---- stop ----------------------------------------------------------------

    def request_stop(self) -> None:
        """Async-signal-safe enough: sets the C flag every worker loop checks."""
        native.request_stop()

    def stop_workers(self, timeout: float = 5.0) -> None:
        """Make every worker leave its loop; counters are final afterwards."""
        native.request_stop()
        for w in self.workers:
            if w.is_alive():
                w.join(timeout)
                if w.is_alive():
                    log.error("worker %d did not stop within %.1fs", w.index, timeout)
        self.running = False

    def quiesce(self, timeout: float = 5.0) -> None:
        """Stop the workers and flush what stages hold (every cached flow goes
        to the collectors). Counters are final afterwards; ports still open."""
        self.stop_workers(timeout)
        if self.slowpath is not None:
            self.slowpath.stop()
            # its answers to the last punts go out too: counted, not left in a ring
            for w in self.workers:
                if not w.is_alive():
                    native.worker_drain_inject(w.handle)
        for c in self.controllers:
            try:
                c.shutdown()
            except Exception:  # noqa: BLE001 - teardown goes on; the loss is logged
                log.exception("%s shutdown", c.kind)

    def stop(self, timeout: float = 5.0) -> None:
        self.quiesce(timeout)
        self.slowpath = None  # its readers point into the workers freed below
        sys.setswitchinterval(getattr(self, "_switch_interval", sys.getswitchinterval()))
        for p in self.ports:
            try:
                native.port_stop(p.port_id)
            except native.DataplaneError as e:
                log.warning("%s", e)
        with self._teardown_lock:
            handles, self._worker_handles = self._worker_handles, []
        for h in handles:
            native.worker_destroy(h)
        for c in self.controllers:
            if hasattr(c, "close"):
                c.close()
        for p in self.ports:
            if p.pcapfile is not None:  # the workers that ran its callback are gone
                native.pcapfile_close(p.pcapfile)
                p.pcapfile = None
            try:
                native.dev_detach(p.port_id)  # closes the port (flushes tx_pcap files)
            except native.DataplaneError as e:
                log.warning("%s", e)
        self.ports.clear()
        self.bundles.clear()
        for pool in self.pools.values():
            native.pool_free(pool)
        self.pools.clear()
        self.workers = []
        self.controllers = []

    def __enter__(self) -> "Dataplane":
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()
