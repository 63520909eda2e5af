"""hostcheck against a fake sysfs/proc tree (no NIC here) and the real PMDs."""
import os
from dataclasses import dataclass
from pathlib import Path

import pytest

from dataplane import pmdinfo
from dataplane.hostcheck import CheckResult, check_host

ADDR = "0000:01:00.0"


@dataclass
class Port:
    name: str
    pci: str | None = None
    device: str | None = None


@pytest.fixture(scope="module")
def pmds():
    return pmdinfo.scan()


def write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text + "\n")


def fake_host(root: Path, *, hugepages: int = 512, iommu: bool = True) -> Path:
    """A sysfs+proc tree with hugepages, hugetlbfs, an IOMMU and vfio-pci loaded."""
    hp = root / "sys/kernel/mm/hugepages/hugepages-2048kB"
    write(hp / "nr_hugepages", str(hugepages))
    write(hp / "free_hugepages", str(hugepages))
    write(root / "sys/kernel/mm/hugepages/hugepages-1048576kB/nr_hugepages", "0")
    write(root / "sys/kernel/mm/hugepages/hugepages-1048576kB/free_hugepages", "0")
    write(root / "proc/mounts", "proc /proc proc rw 0 0\n"
          "hugetlbfs /dev/hugepages hugetlbfs rw,relatime,pagesize=2M 0 0")
    (root / "sys/kernel/iommu_groups").mkdir(parents=True)
    if iommu:
        (root / "sys/kernel/iommu_groups/7").mkdir()
    (root / "sys/module/vfio_pci").mkdir(parents=True)
    (root / "sys/class/net/lo").mkdir(parents=True)
    return root


def add_nic(root: Path, driver: str | None, vendor="0x8086", device="0x10fb",
            ifname="enp1s0f0") -> None:
    dev = root / "sys/bus/pci/devices" / ADDR
    write(dev / "vendor", vendor)
    write(dev / "device", device)
    write(dev / "subsystem_vendor", "0x8086")
    write(dev / "subsystem_device", "0x000c")
    write(dev / "numa_node", "1")
    if driver:
        drv = root / "sys/bus/pci/drivers" / driver
        drv.mkdir(parents=True, exist_ok=True)
        (dev / "driver").symlink_to(os.path.relpath(drv, dev))
        if driver not in ("vfio-pci", "uio_pci_generic", "igb_uio"):
            (dev / "net" / ifname).mkdir(parents=True)


def run(root: Path, ports, pmds, no_huge=False) -> dict[str, CheckResult]:
    results = check_host(ports, no_huge, pmds, sysfs_root=root, proc_root=root)
    for r in results:
        print(f"{r.level:5} {r.name}: {r.detail}" + (f"  [fix: {r.fix}]" if r.fix else ""))
    return {r.name: r for r in results}


def test_all_good_pci_on_vfio(tmp_path, pmds):
    root = fake_host(tmp_path)
    add_nic(root, "vfio-pci")
    res = run(root, [Port("wan", pci="01:00.0")], pmds)
    port = res["port wan"]
    assert port.ok and port.level == "ok", port
    assert ADDR in port.detail and "net_ixgbe" in port.detail and "NUMA node 1" in port.detail
    assert res["hugepages"].ok and res["hugetlbfs"].ok
    assert res["iommu"].level == "ok" and res["vfio-pci"].level == "ok"
    assert all(r.ok for r in res.values())


def test_nic_on_kernel_driver(tmp_path, pmds):
    root = fake_host(tmp_path)
    add_nic(root, "ixgbe")
    port = run(root, [Port("wan", pci=ADDR)], pmds)["port wan"]
    assert not port.ok and port.level == "error"
    assert "ixgbe" in port.detail
    assert f"dpdk-devbind.py -b vfio-pci {ADDR}" in port.fix
    assert "modprobe vfio-pci" in port.fix and "ip link set enp1s0f0 down" in port.fix


def test_nic_unbound(tmp_path, pmds):
    root = fake_host(tmp_path)
    add_nic(root, None)
    port = run(root, [Port("wan", pci=ADDR)], pmds)["port wan"]
    assert port.level == "error" and "not bound" in port.detail
    assert "dpdk-devbind.py -b vfio-pci" in port.fix


def test_nic_missing(tmp_path, pmds):
    port = run(fake_host(tmp_path), [Port("wan", pci=ADDR)], pmds)["port wan"]
    assert port.level == "error" and "not found" in port.detail and "lspci" in port.fix


def test_nic_without_pmd(tmp_path, pmds):
    root = fake_host(tmp_path)
    add_nic(root, "vfio-pci", vendor="0x1234", device="0x0001")
    port = run(root, [Port("wan", pci=ADDR)], pmds)["port wan"]
    assert port.level == "error" and "no installed DPDK PMD supports 1234:0001" in port.detail


def test_mlx5_bifurcated_stays_on_kernel_driver(tmp_path, pmds):
    root = fake_host(tmp_path, iommu=False)
    add_nic(root, "mlx5_core", vendor="0x15b3", device="0x1017")
    for mod in ("mlx5_core", "mlx5_ib", "ib_uverbs"):
        (root / "sys/module" / mod).mkdir(parents=True)
    res = run(root, [Port("wan", pci=ADDR)], pmds)
    assert res["port wan"].level == "ok" and "mlx5_eth" in res["port wan"].detail
    assert "iommu" not in res  # no vfio involved


def test_no_iommu_warns_noiommu_mode(tmp_path, pmds):
    root = fake_host(tmp_path, iommu=False)
    add_nic(root, "vfio-pci")
    iommu = run(root, [Port("wan", pci=ADDR)], pmds)["iommu"]
    assert iommu.level == "warn" and iommu.ok
    assert "enable_unsafe_noiommu_mode" in iommu.fix and "intel_iommu=on iommu=pt" in iommu.fix


def test_no_hugepages(tmp_path, pmds):
    root = fake_host(tmp_path, hugepages=0)
    res = run(root, [Port("p0", device="net_null0")], pmds)
    hp = res["hugepages"]
    assert not hp.ok and hp.level == "error"
    assert "dpdk-hugepages.py --setup 2G" in hp.fix


def test_no_hugetlbfs_mount(tmp_path, pmds):
    root = fake_host(tmp_path)
    write(root / "proc/mounts", "proc /proc proc rw 0 0")
    mnt = run(root, [], pmds)["hugetlbfs"]
    assert mnt.level == "error" and "dpdk-hugepages.py --mount" in mnt.fix


def test_no_huge_skips_hugepages(tmp_path, pmds):
    root = fake_host(tmp_path, hugepages=0)
    res = run(root, [Port("p0", device="net_null0")], pmds, no_huge=True)
    assert res["hugepages"].ok and res["hugepages"].detail == "no_huge set"
    assert "hugetlbfs" not in res


def test_vdev_missing_rx_pcap(tmp_path, pmds):
    missing = tmp_path / "nope.pcap"
    port = run(fake_host(tmp_path), [Port("p0", device=f"net_pcap0,rx_pcap={missing}")],
               pmds)["port p0"]
    assert port.level == "error" and str(missing) in port.detail


def test_vdev_pcap_ok(tmp_path, pmds):
    pcap = tmp_path / "in.pcap"
    pcap.write_bytes(b"")
    port = run(fake_host(tmp_path),
               [Port("p0", device=f"net_pcap0,rx_pcap={pcap},tx_pcap={tmp_path}/out.pcap")],
               pmds)["port p0"]
    assert port.level == "ok" and "net_pcap" in port.detail


def test_vdev_missing_iface(tmp_path, pmds):
    res = run(fake_host(tmp_path), [Port("a", device="net_af_packet0,iface=veth9"),
                                    Port("b", device="net_af_packet1,iface=lo")], pmds)
    assert res["port a"].level == "error" and "veth9" in res["port a"].detail
    assert res["port b"].level == "ok"


def test_unknown_vdev_driver(tmp_path, pmds):
    port = run(fake_host(tmp_path), [Port("p0", device="net_pacp0,rx_pcap=/x")], pmds)["port p0"]
    assert not port.ok and port.level == "error" and "net_pacp0" in port.detail
    assert "did you mean net_pcap" in port.fix


def test_vdev_driver_kvarg(tmp_path, pmds):
    """EAL takes the driver from driver= when given, else from the name's prefix."""
    res = run(fake_host(tmp_path), [Port("a", device="mydev,driver=net_null"),
                                    Port("b", device="net_ring_left")], pmds)
    assert "net_null" in res["port a"].detail and res["port a"].ok
    assert "net_ring" in res["port b"].detail and res["port b"].ok


def test_pci_driver_as_vdev(tmp_path, pmds):
    port = run(fake_host(tmp_path), [Port("p0", device="net_ixgbe")], pmds)["port p0"]
    assert port.level == "error" and "PCI driver" in port.detail


def test_privileges_from_capeff(tmp_path, pmds):
    root = fake_host(tmp_path)
    write(root / "proc/self/status", "Name:\tx\nCapEff:\t0000000000000000")
    priv = run(root, [], pmds)["privileges"]
    assert priv.level == "warn" and priv.ok and "sudo" in priv.fix
    write(root / "proc/self/status", f"Name:\tx\nCapEff:\t{1 << 12:016x}")
    assert run(root, [], pmds)["privileges"].level == "ok"


def test_real_host_smoke(pmds):
    """Against the real / : must not raise; no PCI ports here."""
    results = check_host([Port("p0", device="net_null0")], no_huge=True)
    assert {r.level for r in results} <= {"ok", "warn", "error"}
    assert next(r for r in results if r.name == "port p0").ok
