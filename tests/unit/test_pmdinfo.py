"""pmdinfo against the DPDK PMDs actually installed on this host."""
import time

import pytest

from dataplane import pmdinfo


@pytest.fixture(scope="module")
def pmds() -> list[pmdinfo.PmdInfo]:
    return pmdinfo.scan()


def test_default_pmd_dir_has_plugins():
    d = pmdinfo.default_pmd_dir()
    assert d.is_dir() and d.name.startswith("pmds-")
    assert any(d.glob("librte_net_null.so.*"))


def test_scan_time():
    pmdinfo._scan_dir.cache_clear()
    t = time.perf_counter()
    found = pmdinfo.scan()
    cold = time.perf_counter() - t
    t = time.perf_counter()
    pmdinfo.scan()
    warm = time.perf_counter() - t
    print(f"\nscan: {len(found)} drivers, cold {cold * 1000:.0f} ms, cached {warm * 1e6:.0f} us")


def test_sorted_and_no_duplicates(pmds):
    names = [p.name for p in pmds]
    assert names == sorted(names)
    assert len(names) == len(set(names)), "symlinked .so names must not be read twice"
    assert all(p.library.endswith(".so.23.0") or ".so." in p.library for p in pmds)


@pytest.mark.parametrize("name,param", [
    ("net_null", "size=<int>"),
    ("net_pcap", "rx_pcap=<string>"),
    ("net_ring", "nodeaction="),
    ("net_af_packet", "iface=<string>"),
    ("net_tap", "iface=<string>"),
    ("net_bonding", "mode=[0-6]"),
    ("net_memif", "socket=<string>"),
])
def test_vdev_drivers_present(pmds, name, param):
    pmd = pmdinfo.find(name, pmds)
    assert pmd is not None and pmd.name == name
    assert param in pmd.params
    assert pmd.kind == "vdev" and pmd.pci_ids == ()
    assert pmd.library.startswith(str(pmdinfo.default_pmd_dir()))


def test_net_tap_library_also_registers_net_tun(pmds):
    tun = pmdinfo.find("net_tun", pmds)
    assert tun is not None and tun.library == pmdinfo.find("net_tap", pmds).library


def test_ixgbe_pci_ids(pmds):
    ixgbe = pmdinfo.find("net_ixgbe", pmds)
    assert ixgbe.kind == "pci"
    assert (0x8086, 0x10FB, 0xFFFF, 0xFFFF) in ixgbe.pci_ids  # 82599ES SFP+
    assert "vfio-pci" in ixgbe.kmod
    assert all(len(ids) == 4 for ids in ixgbe.pci_ids)


def test_driver_for_pci(pmds):
    assert [p.name for p in pmdinfo.driver_for_pci(0x8086, 0x10FB, pmds)] == ["net_ixgbe"]
    # subsystem ids are wildcards in the ixgbe table
    assert [p.name for p in pmdinfo.driver_for_pci(0x8086, 0x10FB, pmds, 0x1234, 0x5678)] == ["net_ixgbe"]
    i40e = [p.name for p in pmdinfo.driver_for_pci(0x8086, 0x1572, pmds)]  # X710 SFP+
    assert "net_i40e" in i40e
    assert pmdinfo.driver_for_pci(0x1234, 0x0001, pmds) == []


def test_mlx5_is_bifurcated(pmds):
    mlx5 = pmdinfo.find("mlx5_eth", pmds)
    assert mlx5 is not None and "mlx5_core" in mlx5.kmod
    assert mlx5.params == ""  # no "params" key in its JSON


def test_find_vdev_instance_names(pmds):
    assert pmdinfo.find("net_pcap0", pmds).name == "net_pcap"
    assert pmdinfo.find("net_null12", pmds).name == "net_null"
    assert pmdinfo.find("net_ring_a", pmds).name == "net_ring"  # EAL matches by prefix
    assert pmdinfo.find("net_hns3", pmds).name == "net_hns3"  # digits that belong to the name
    assert pmdinfo.find("net_virtio_user0", pmds).name == "net_virtio_user"


def test_find_unknown(pmds):
    assert pmdinfo.find("net_doesnotexist0", pmds) is None
    assert pmdinfo.find("eth_pcap0", pmds) is None  # aliases aren't in PMD info
    assert pmdinfo.find("", pmds) is None


def test_find_defaults_to_installed():
    assert pmdinfo.find("net_pcap0").name == "net_pcap"


def test_scan_other_dir_and_non_elf(tmp_path):
    (tmp_path / "librte_fake.so.23.0").write_bytes(b"not an elf PMD_INFO_STRING= {}")
    assert pmdinfo.scan(tmp_path) == []
