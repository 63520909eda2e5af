"""Host readiness checks behind ``dataplane check``.

Each check says what is wrong and the concrete command that fixes it, so a
user finds out before EAL init fails with a one-line log message. All host
state is read from files under ``sysfs_root``/``proc_root`` so tests can
point them at a fake tree.

Only stdlib (+ pmdinfo -> pyelftools): must run without the native module.
"""
from __future__ import annotations

import difflib
import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import pmdinfo
from .pmdinfo import PmdInfo

__all__ = ["CheckResult", "check_host"]

# Drivers that hand the device to user space; fallback when a PMD declares no kmod.
USERSPACE_DRIVERS = ("vfio-pci", "uio_pci_generic", "igb_uio")
# Mellanox PMDs drive the NIC through the kernel driver (bifurcated): no rebinding.
BIFURCATED_DRIVERS = ("mlx5_core", "mlx4_core")

CAP_NET_ADMIN = 12
CAP_SYS_ADMIN = 21

_PCI_ADDR_RE = re.compile(r"^(?:([0-9a-fA-F]{4,}):)?([0-9a-fA-F]{2}):([0-9a-fA-F]{2})\.([0-7])$")


@dataclass
class CheckResult:
    """One line of ``dataplane check`` output.

    ``ok`` is False only for errors: a warning doesn't stop the dataplane from
    starting (e.g. not root but with enough capabilities for what's used).
    """

    name: str
    ok: bool
    level: str  # "ok" | "warn" | "error"
    detail: str
    fix: str = ""


def _ok(name: str, detail: str) -> CheckResult:
    return CheckResult(name, True, "ok", detail, "")


def _warn(name: str, detail: str, fix: str) -> CheckResult:
    return CheckResult(name, True, "warn", detail, fix)


def _error(name: str, detail: str, fix: str) -> CheckResult:
    return CheckResult(name, False, "error", detail, fix)


def _read(path: Path) -> str | None:
    try:
        return path.read_text().strip()
    except OSError:
        return None


def _norm_mod(name: str) -> str:
    """Module and driver names differ in '-' vs '_' (vfio-pci / vfio_pci)."""
    name = name.strip().replace("-", "_")
    return "vfio_pci" if name == "vfio" else name  # old kmod strings say "vfio"


def normalize_pci(addr: str) -> str:
    """``01:00.0`` -> ``0000:01:00.0`` (sysfs names always carry the domain)."""
    m = _PCI_ADDR_RE.match(addr.strip())
    if not m:
        return addr.strip()
    dom, bus, dev, fn = m.groups()
    return f"{int(dom or '0', 16):04x}:{bus.lower()}:{dev.lower()}.{fn}"


# -- hugepages ---------------------------------------------------------------

def _check_hugepages(no_huge: bool, sysfs: Path, proc: Path) -> list[CheckResult]:
    if no_huge:
        return [_ok("hugepages", "no_huge set")]
    setup = "sudo dpdk-hugepages.py --setup 2G"
    sizes: list[str] = []
    total = free = 0
    for d in sorted((sysfs / "sys/kernel/mm/hugepages").glob("hugepages-*")):
        nr = int(_read(d / "nr_hugepages") or 0)
        fr = int(_read(d / "free_hugepages") or 0)
        size = d.name.removeprefix("hugepages-")
        sizes.append(f"{size}: {nr} reserved, {fr} free")
        total += nr
        free += fr
    results: list[CheckResult] = []
    summary = "; ".join(sizes) or "no hugepage sizes in sysfs"
    if total == 0:
        results.append(_error("hugepages", f"no hugepages reserved ({summary})",
                              f"{setup}  (or run with no_huge for testing)"))
    elif free == 0:
        results.append(_error(
            "hugepages", f"all hugepages are in use ({summary})",
            "stop other DPDK processes, remove stale files (sudo rm /dev/hugepages/rtemap_*) "
            f"or reserve more: {setup}"))
    else:
        results.append(_ok("hugepages", summary))

    mounts = _read(proc / "proc/mounts") or ""
    points = [f[1] for f in (line.split() for line in mounts.splitlines())
              if len(f) >= 3 and f[2] == "hugetlbfs"]
    if points:
        results.append(_ok("hugetlbfs", "mounted at " + ", ".join(points)))
    else:
        results.append(_error("hugetlbfs", "no hugetlbfs mounted",
                              "sudo dpdk-hugepages.py --mount  (or: sudo mount -t hugetlbfs nodev /dev/hugepages)"))
    return results


# -- PCI ports -----------------------------------------------------------------

def _accepted_drivers(pmds: Sequence[PmdInfo]) -> tuple[list[str], set[str]]:
    """(drivers the device may be bound to, best first; kernel modules that must be loaded).

    Read from the PMDs' kmod string, e.g. "* igb_uio | uio_pci_generic | vfio-pci"
    (alternatives) or "* ib_uverbs & mlx5_core & mlx5_ib" (all needed: bifurcated).
    """
    bind: list[str] = []
    needed: set[str] = set()
    for pmd in pmds:
        kmod = pmd.kmod.strip()
        if kmod.startswith("* "):  # device pattern "*" = any device of this driver
            kmod = kmod[2:]
        for alt in filter(None, (a.strip() for a in kmod.split("|"))):
            mods = [_norm_mod(m) for m in alt.split("&") if m.strip()]
            if len(mods) > 1:
                needed.update(mods)
                # Bind to the NIC's own kernel driver, not to ib_uverbs & co.
                mods = [m for m in mods if m in BIFURCATED_DRIVERS] or mods
            for m in mods:
                if m not in bind:
                    bind.append(m)
    if not bind:
        bind = [_norm_mod(d) for d in USERSPACE_DRIVERS + BIFURCATED_DRIVERS]
    # vfio-pci first: it's the one to recommend when several are accepted.
    bind.sort(key=lambda m: m != "vfio_pci")
    return bind, needed


def _check_pci_port(port_name: str, addr: str, pmds: Sequence[PmdInfo],
                    sysfs: Path) -> tuple[CheckResult, str | None]:
    """Check one PCI port; also returns its bound driver (for the vfio check)."""
    name = f"port {port_name}"
    addr = normalize_pci(addr)
    dev = sysfs / "sys/bus/pci/devices" / addr
    if not dev.is_dir():
        return _error(name, f"PCI device {addr} not found",
                      "check the address with `lspci -D` or `dpdk-devbind.py --status`"), None

    def hexfile(f: str) -> int | None:
        v = _read(dev / f)
        try:
            return int(v, 16) if v else None
        except ValueError:
            return None

    vendor, device = hexfile("vendor"), hexfile("device")
    numa = _read(dev / "numa_node")
    driver_link = dev / "driver"
    driver = os.path.basename(os.readlink(driver_link)) if driver_link.is_symlink() else None
    ids = f"{vendor or 0:04x}:{device or 0:04x}"

    parts = [addr, ids, f"driver {driver or 'none'}",
             f"NUMA node {numa}" if numa not in (None, "-1") else "NUMA node unknown"]
    problems: list[str] = []
    fixes: list[str] = []

    matched: list[PmdInfo] = []
    if vendor is not None and device is not None:
        matched = pmdinfo.driver_for_pci(vendor, device, pmds, hexfile("subsystem_vendor"),
                                         hexfile("subsystem_device"))
    if matched:
        net = [p for p in matched if p.name.startswith("net_")] or matched
        parts.append("PMD " + ", ".join(p.name for p in net))
    else:
        problems.append(f"no installed DPDK PMD supports {ids}")
        fixes.append("install the DPDK driver package for this NIC (apt install dpdk), "
                     "see `dpdk-pmdinfo.py` / https://core.dpdk.org/supported/")

    bind, needed = _accepted_drivers(matched)
    if driver is None or _norm_mod(driver) not in bind:
        want = bind[0].replace("_", "-") if bind[0] == "vfio_pci" else bind[0]
        if driver is None:
            problems.append("not bound to any driver")
        else:
            problems.append(f"bound to {driver}, DPDK needs {want}")
        steps = []
        if want == "vfio-pci":
            steps.append("sudo modprobe vfio-pci")
        ifaces = sorted(p.name for p in (dev / "net").iterdir()) if (dev / "net").is_dir() else []
        steps += [f"sudo ip link set {i} down" for i in ifaces]
        steps.append(f"sudo dpdk-devbind.py -b {want} {addr}")
        fixes.append(" && ".join(steps))
    elif needed:
        missing = sorted(m for m in needed if not (sysfs / "sys/module" / m).is_dir())
        if missing:
            problems.append("kernel modules not loaded: " + ", ".join(missing))
            fixes.append("sudo modprobe " + " ".join(missing))

    detail = ", ".join(parts)
    if problems:
        return _error(name, detail + ": " + "; ".join(problems), "; ".join(fixes)), driver
    return _ok(name, detail), driver


def _check_iommu(sysfs: Path) -> list[CheckResult]:
    results: list[CheckResult] = []
    groups = sysfs / "sys/kernel/iommu_groups"
    n = len(list(groups.iterdir())) if groups.is_dir() else 0
    noiommu = _read(sysfs / "sys/module/vfio/parameters/enable_unsafe_noiommu_mode")
    if n:
        results.append(_ok("iommu", f"{n} IOMMU groups"))
    elif noiommu in ("Y", "1"):
        results.append(_warn("iommu", "no IOMMU; vfio runs in unsafe no-IOMMU mode (no DMA isolation)",
                             "enable VT-d/AMD-Vi in firmware and boot with `intel_iommu=on iommu=pt` "
                             "(AMD: `amd_iommu=on iommu=pt`)"))
    else:
        results.append(_warn(
            "iommu", "no IOMMU groups: vfio-pci cannot bind devices",
            "enable VT-d/AMD-Vi in firmware and add `intel_iommu=on iommu=pt` to the kernel "
            "cmdline, or (unsafe, no DMA isolation) `echo 1 | sudo tee "
            "/sys/module/vfio/parameters/enable_unsafe_noiommu_mode`, or use uio_pci_generic"))
    if (sysfs / "sys/module/vfio_pci").is_dir():
        results.append(_ok("vfio-pci", "vfio-pci module loaded"))
    else:
        results.append(_warn("vfio-pci", "vfio-pci module not loaded", "sudo modprobe vfio-pci"))
    return results


# -- vdev ports --------------------------------------------------------------

def _devargs(device: str) -> tuple[str, list[tuple[str, str]]]:
    """``net_pcap0,rx_pcap=/x.pcap`` -> ("net_pcap0", [("rx_pcap", "/x.pcap")])."""
    head, _, rest = device.partition(",")
    kv = []
    for item in filter(None, (s.strip() for s in rest.split(","))):
        k, _, v = item.partition("=")
        kv.append((k.strip(), v.strip()))
    return head.strip(), kv


def _check_vdev_port(port_name: str, device: str, pmds: Sequence[PmdInfo],
                     sysfs: Path) -> CheckResult:
    name = f"port {port_name}"
    dev_name, kvargs = _devargs(device)
    # EAL's vdev bus honours driver=<name> before matching the device name.
    dev_name = next((v for k, v in kvargs if k == "driver" and v), dev_name)
    pmd = pmdinfo.find(dev_name, pmds)
    if pmd is None:
        vdevs = sorted(p.name for p in pmds if p.kind == "vdev" and p.name.startswith("net_"))
        close = difflib.get_close_matches(dev_name.rstrip("0123456789"), vdevs, n=3)
        hint = f"did you mean {', '.join(close)}? " if close else ""
        return _error(name, f"no DPDK PMD for '{dev_name}'",
                      f"{hint}installed vdev drivers: {', '.join(vdevs) or 'none (apt install dpdk)'}")
    if pmd.kind == "pci":
        return _error(name, f"{pmd.name} is a PCI driver, not a virtual device",
                      "give the port a `pci:` address instead of `device:`")

    problems: list[str] = []
    fixes: list[str] = []
    if pmd.name in ("net_af_packet", "net_pcap"):
        for key, iface in kvargs:
            if key in ("iface", "rx_iface", "rx_iface_in", "tx_iface") and iface:
                if not (sysfs / "sys/class/net" / iface).exists():
                    problems.append(f"interface {iface} ({key}=) does not exist")
                    fixes.append("create it or fix the name (`ip -br link` lists interfaces)")
    if pmd.name == "net_pcap":
        for key, path in kvargs:
            if key == "rx_pcap":
                if not os.path.isfile(path):
                    problems.append(f"rx_pcap file {path} does not exist")
                    fixes.append(f"check the path {path}")
                elif not os.access(path, os.R_OK):
                    problems.append(f"rx_pcap file {path} is not readable")
                    fixes.append(f"chmod o+r {path} or run as its owner")
            elif key == "tx_pcap":
                parent = os.path.dirname(os.path.abspath(path))
                if not os.access(parent, os.W_OK):
                    problems.append(f"tx_pcap directory {parent} is not writable")
                    fixes.append(f"create {parent} or make it writable")

    detail = f"{device} -> {pmd.name} ({os.path.basename(pmd.library)})"
    if problems:
        return _error(name, detail + ": " + "; ".join(problems), "; ".join(dict.fromkeys(fixes)))
    return _ok(name, detail)


# -- privileges --------------------------------------------------------------

def _check_privileges(proc: Path) -> CheckResult:
    status = _read(proc / "proc/self/status") or ""
    m = re.search(r"^CapEff:\s*([0-9a-fA-F]+)", status, re.M)
    euid = os.geteuid()
    if m:
        caps = int(m.group(1), 16)
        have = [n for n, bit in (("CAP_NET_ADMIN", CAP_NET_ADMIN), ("CAP_SYS_ADMIN", CAP_SYS_ADMIN))
                if caps >> bit & 1]
    else:  # no /proc: assume root has everything
        have = ["CAP_NET_ADMIN", "CAP_SYS_ADMIN"] if euid == 0 else []
    who = "root" if euid == 0 else f"uid {euid}"
    if have:
        return _ok("privileges", f"{who}, has {', '.join(have)}")
    return _warn("privileges", f"{who} without CAP_NET_ADMIN/CAP_SYS_ADMIN: EAL may fail to "
                 "map hugepages, open vfio or raw sockets",
                 "run with sudo, or grant CAP_NET_ADMIN, CAP_NET_RAW, CAP_IPC_LOCK, CAP_SYS_ADMIN "
                 "(e.g. systemd AmbientCapabilities=)")


# -- entry point ---------------------------------------------------------------

def check_host(
    ports: Iterable[Any],
    no_huge: bool,
    pmds: Sequence[PmdInfo] | None = None,
    *,
    sysfs_root: str | os.PathLike[str] = "/",
    proc_root: str | os.PathLike[str] = "/",
) -> list[CheckResult]:
    """Run all checks for a config's ports.

    ``ports``: objects with ``name`` and either ``pci`` (PCI address) or
    ``device`` (vdev devargs). ``pmds`` defaults to the installed drivers.
    """
    sysfs, proc = Path(sysfs_root), Path(proc_root)
    results: list[CheckResult] = []
    if pmds is None:
        try:
            pmds = pmdinfo.scan()
        except FileNotFoundError:
            pmds = []
    if pmds:
        results.append(_ok("dpdk drivers", f"{len(pmds)} PMDs installed"))
    else:
        results.append(_error("dpdk drivers", "no DPDK poll-mode drivers found",
                              "sudo apt install dpdk"))

    results += _check_hugepages(no_huge, sysfs, proc)

    port_results: list[CheckResult] = []
    needs_vfio = False
    for port in ports:
        pci = getattr(port, "pci", None)
        device = getattr(port, "device", None)
        pname = getattr(port, "name", "?")
        if pci:
            res, driver = _check_pci_port(pname, pci, pmds, sysfs)
            # Only vfio needs the IOMMU; bifurcated NICs and uio don't care.
            if driver not in BIFURCATED_DRIVERS + ("uio_pci_generic", "igb_uio"):
                needs_vfio = True
            port_results.append(res)
        elif device:
            port_results.append(_check_vdev_port(pname, device, pmds, sysfs))
        else:
            port_results.append(_error(f"port {pname}", "neither pci nor device given",
                                       "set `pci: 0000:01:00.0` or `device: net_pcap0,...`"))
    if needs_vfio:
        results += _check_iommu(sysfs)
    results += port_results
    results.append(_check_privileges(proc))
    return results
