"""DPDK's EAL: arguments from config, init once per process, clean up last."""
from __future__ import annotations

import logging
import os
from pathlib import Path

from . import native
from .config import Config
from .errors import EalError
from .safefs import PLAIN_NAME, OwnedDir

log = logging.getLogger(__name__)

DPDK_RUN_ROOT = Path("/var/run/dpdk")
# What EAL 22.11 writes into its runtime directory.
EAL_RUNTIME_FILES = ("config", "hugepage_info", "mp_socket*", "fbarray_*", "dpdk_telemetry*")


def dpdk_runtime_dir(file_prefix: str) -> Path:
    """Where EAL keeps its runtime files (config, fbarrays, telemetry socket):
    DPDK 22.11's eal_create_runtime_dir() rule. Root: /var/run/dpdk/<prefix>;
    anyone else: $XDG_RUNTIME_DIR/dpdk/<prefix>, or /tmp/dpdk/<prefix>."""
    if os.getuid() == 0:
        return DPDK_RUN_ROOT / file_prefix
    return Path(os.environ.get("XDG_RUNTIME_DIR") or "/tmp") / "dpdk" / file_prefix


def normalize_pci(addr: str) -> str:
    return addr if addr.count(":") == 2 else "0000:" + addr


def eal_args(cfg: Config, program: str = "dataplane") -> list[str]:
    e = cfg.eal
    args = [program, "-l", str(e.main_core), "--main-lcore", str(e.main_core),
            "--file-prefix", e.file_prefix, f"--log-level={e.log_level}"]
    if not e.hugepages:
        args.append("--no-huge")
    else:
        # No secondary processes here: unlinked hugepage files go back to the
        # system when the process ends, however it ends (SIGKILL included).
        args.append("--huge-unlink")
    if e.memory_mb:
        args += ["-m", str(e.memory_mb)]
    pci = [normalize_pci(a) for a in e.pci_allow] + [normalize_pci(p.pci) for p in cfg.ports if p.pci]
    if pci:
        for addr in dict.fromkeys(pci):
            args += ["-a", addr]
    else:
        args.append("--no-pci")  # never grab NICs the config does not name
    for v in e.vdevs:
        args += ["--vdev", v]
    return args + list(e.extra_args)


class Eal:
    """The process's one EAL. ``rte_eal_init`` works once per process: after
    ``close()`` a new Eal in the same process fails (DPDK's rule)."""

    _active: "Eal | None" = None

    def __init__(self, cfg: Config):
        if Eal._active is not None:
            raise EalError("EAL already running in this process")
        self.args = eal_args(cfg)
        self.file_prefix = cfg.eal.file_prefix
        # What EAL is about to create is ours to remove at close. Of a prefix's
        # directory that was there before (a crashed run's), only EAL's own
        # files are: once EAL holds the prefix's lock no other run uses them.
        # A name that is not plain reaches elsewhere: nothing there is ours.
        run_dir = dpdk_runtime_dir(self.file_prefix)
        existed = os.path.lexists(run_dir), os.path.lexists(run_dir.parent)
        # EAL puts its own threads (interrupts, multi-process, telemetry) on
        # the CPUs this thread may use that are not its lcores: the workers'
        # CPUs, where they would preempt the forwarding loop. Limited to the
        # main core first, they stay there with the main thread.
        affinity = os.sched_getaffinity(0)
        if cfg.eal.main_core in affinity:  # else EAL says what is wrong with it
            os.sched_setaffinity(0, {cfg.eal.main_core})
        try:
            native.eal_init(self.args)
        except BaseException:
            os.sched_setaffinity(0, affinity)
            raise
        self._run_dir = (OwnedDir.adopt(run_dir, existed[0], EAL_RUNTIME_FILES)
                         if PLAIN_NAME.match(self.file_prefix) else None)
        # $XDG_RUNTIME_DIR/dpdk or /tmp/dpdk, when EAL made it for this run
        self._run_parent = (OwnedDir.adopt(run_dir.parent, existed[1])
                            if run_dir.parent != DPDK_RUN_ROOT else None)
        Eal._active = self
        self.closed = False

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        native.eal_cleanup()
        Eal._active = None
        # EAL 22.11 leaves its runtime files behind: remove the directory it
        # made for this run, and its parent if EAL made that too and it is
        # empty (another prefix's run may still be in it).
        if self._run_dir is not None:
            self._run_dir.remove()  # and the directory itself, once empty
        if self._run_parent is not None:
            self._run_parent.remove(tree=False)

    def __enter__(self) -> "Eal":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
