"""Which DPDK poll-mode drivers are installed, read from the driver .so files.

Every PMD built by DPDK embeds one NUL-terminated ``PMD_INFO_STRING= {json}``
per driver in ``.rodata`` (written by buildtools/pmdinfogen), e.g.::

    {"name": "net_null", "params": "size=<int> copy=<int> no-rx=0|1", "pci_ids": []}

Reading that is what ``dpdk-pmdinfo.py`` does; we do it ourselves so
``dataplane check`` can answer "is there a driver for this port?" without
starting EAL. Only stdlib + pyelftools: this must work before the native
extension is built.
"""
from __future__ import annotations

import functools
import json
import os
import re
import subprocess
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from elftools.common.exceptions import ELFError
from elftools.elf.elffile import ELFFile

__all__ = ["PmdInfo", "default_pmd_dir", "scan", "find", "driver_for_pci"]

_MARKER = b"PMD_INFO_STRING="
# Real libraries only (librte_net_null.so.23.0); the .so / .so.23 names are
# symlinks to the same file.
_LIB_RE = re.compile(r"\.so\.\d+\.\d+$")
PCI_ANY_ID = 0xFFFF  # RTE_PCI_ANY_ID: wildcard in a driver's id table

PciId = tuple[int, int, int, int]


@dataclass(frozen=True)
class PmdInfo:
    """One driver as registered in a PMD library."""

    name: str
    params: str
    pci_ids: tuple[PciId, ...]  # (vendor, device, subsys_vendor, subsys_device)
    library: str  # path of the .so it came from
    kmod: str = ""  # kernel module dependency, e.g. "* igb_uio | uio_pci_generic | vfio-pci"

    @property
    def kind(self) -> str:
        return "pci" if self.pci_ids else "vdev"


def _pkg_config_libdir() -> str | None:
    try:
        out = subprocess.run(
            ["pkg-config", "--variable=libdir", "libdpdk"],
            capture_output=True, text=True, timeout=10, check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return out or None


def _newest(dirs: Iterable[Path]) -> Path | None:
    """Pick the pmds-<abi> dir with the highest ABI version."""
    def abi(p: Path) -> tuple[int, ...]:
        nums = re.findall(r"\d+", p.name)
        return tuple(int(n) for n in nums)
    dirs = [d for d in dirs if d.is_dir()]
    return max(dirs, key=abi) if dirs else None


@functools.cache
def default_pmd_dir() -> Path:
    """The directory EAL loads PMD plugins from (RTE_EAL_PMD_PATH).

    libdpdk.pc has no ``pmdsdir`` variable (checked on 22.11), so derive it
    from ``libdir`` the way DPDK's meson does: ``<libdir>/dpdk/pmds-<abi>``.
    """
    libdir = _pkg_config_libdir()
    if libdir:
        found = _newest(Path(libdir, "dpdk").glob("pmds-*"))
        if found:
            return found
    found = _newest(Path("/usr/lib").glob("*/dpdk/pmds-*"))
    if found:
        return found
    raise FileNotFoundError("no DPDK PMD directory found (is the 'dpdk' package installed?)")


def _parse_library(path: str) -> list[PmdInfo]:
    """PMD_INFO_STRINGs of one .so; [] if it isn't an ELF or has none."""
    try:
        with open(path, "rb") as f:
            section = ELFFile(f).get_section_by_name(".rodata")
            data = section.data() if section is not None else b""
    except (OSError, ELFError):
        return []
    found: list[PmdInfo] = []
    pos = data.find(_MARKER)
    while pos != -1:
        end = data.find(b"\0", pos)
        if end == -1:
            end = len(data)
        try:
            info = json.loads(data[pos + len(_MARKER):end])
            found.append(PmdInfo(
                name=info["name"],
                params=info.get("params", ""),
                pci_ids=tuple(tuple(int(x) for x in ids[:4]) for ids in info.get("pci_ids", [])),
                library=path,
                kmod=info.get("kmod", ""),
            ))
        except (ValueError, KeyError, TypeError):
            pass  # a malformed entry shouldn't hide the other drivers
        pos = data.find(_MARKER, end)
    return found


@functools.lru_cache(maxsize=8)
def _scan_dir(pmd_dir: str) -> tuple[PmdInfo, ...]:
    seen: set[str] = set()
    pmds: list[PmdInfo] = []
    with os.scandir(pmd_dir) as entries:
        for entry in entries:
            if not _LIB_RE.search(entry.name):
                continue
            # Dedupe on the real file rather than skipping symlinks outright:
            # some packagings make pmds-*/ a farm of symlinks into libdir.
            real = os.path.realpath(entry.path)
            if real in seen or not os.path.isfile(real):
                continue
            seen.add(real)
            pmds.extend(_parse_library(entry.path))
    pmds.sort(key=lambda p: p.name)
    return tuple(pmds)


def scan(pmd_dir: str | os.PathLike[str] | None = None) -> list[PmdInfo]:
    """All drivers in ``pmd_dir`` (default: ``default_pmd_dir()``), sorted by name.

    Cached per directory: the ~130 libraries take a few hundred ms to read.
    """
    d = Path(pmd_dir) if pmd_dir is not None else default_pmd_dir()
    return list(_scan_dir(str(d.resolve())))


def find(name: str, pmds: Iterable[PmdInfo] | None = None) -> PmdInfo | None:
    """The driver for ``name``, which may be a vdev instance name.

    ``net_pcap0`` -> ``net_pcap`` by stripping trailing digits. Failing that,
    the longest vdev driver name that prefixes ``name``, because that is how
    EAL's vdev bus matches (``net_ring_a`` is a net_ring). Registered aliases
    (``eth_pcap``) are not in PMD info, so they are not found.
    """
    pmds = list(scan() if pmds is None else pmds)
    by_name = {p.name: p for p in pmds}
    name = name.strip()
    if name in by_name:
        return by_name[name]
    stripped = name.rstrip("0123456789")
    if stripped in by_name:
        return by_name[stripped]
    prefixed = [p for p in pmds if p.kind == "vdev" and name.startswith(p.name)]
    return max(prefixed, key=lambda p: len(p.name)) if prefixed else None


def driver_for_pci(
    vendor: int,
    device: int,
    pmds: Iterable[PmdInfo] | None = None,
    subsys_vendor: int | None = None,
    subsys_device: int | None = None,
) -> list[PmdInfo]:
    """Drivers whose PCI id table matches the device.

    0xffff in a table entry matches anything (as rte_pci_match does). A
    subsystem id of None (unknown) matches any table entry.
    """
    want = (vendor, device, subsys_vendor, subsys_device)
    matches: list[PmdInfo] = []
    for pmd in scan() if pmds is None else pmds:
        for ids in pmd.pci_ids:
            if all(t == PCI_ANY_ID or w is None or t == w for t, w in zip(ids, want)):
                matches.append(pmd)
                break
    return matches
