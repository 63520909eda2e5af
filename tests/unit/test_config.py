"""Config: the reference example, defaults, and the broken-config corpus."""
from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest
from pydantic import BaseModel

from dataplane import config
from dataplane.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]
REFERENCE = ROOT / "deploy" / "examples" / "reference.toml"
BAD = sorted((ROOT / "tests" / "data" / "bad_configs").glob("*.toml"))


def test_reference_example_loads():
    cfg = config.load(REFERENCE)
    assert [p.name for p in cfg.ports] == ["wan", "lan", "replay"]
    assert cfg.ports[0].pci == "0000:01:00.0" and cfg.ports[1].driver == "net_tap"
    assert cfg.ports[2].pcap_file and cfg.ports[2].pcap_loop is False


@pytest.mark.parametrize("section,model", [("eal", config.EalConfig), ("mempool", config.MempoolConfig),
                                           ("run", config.RunConfig)])
def test_reference_documents_every_key_with_its_default(section, model):
    data = tomllib.loads(REFERENCE.read_text())[section]
    assert set(data) == set(model.model_fields), "reference.toml and the model disagree on keys"
    defaults = model.model_validate({"memory_mb": 512} if section == "eal" and not data.get("hugepages", True) else {})
    for key, value in data.items():
        assert getattr(defaults, key) == value, f"[{section}].{key}: reference says {value!r}"


def test_reference_documents_every_port_key():
    ports = tomllib.loads(REFERENCE.read_text())["ports"]
    documented = set().union(*map(set, ports))
    assert documented == set(config.PortConfig.model_fields)
    defaults = config.PortConfig(name="x", device="net_null0")
    for key, value in ports[0].items():
        if key not in ("name", "pci", "device"):
            assert getattr(defaults, key) == value, key


def test_models_are_frozen():
    cfg = config.load(REFERENCE)
    with pytest.raises(Exception):
        cfg.eal.workers = [2]  # type: ignore[misc]
    assert isinstance(cfg, BaseModel)


def test_embedded_default_is_valid_and_virtual():
    text = (ROOT / "dataplane" / "default.toml").read_text().replace("${DEMO_PCAP}", "/x.pcap")
    cfg = config.loads(text)
    assert not cfg.eal.hugepages and all(p.device for p in cfg.ports)


@pytest.mark.parametrize("path", BAD, ids=lambda p: p.stem)
def test_bad_config_is_rejected_naming_file_key_and_value(path):
    expect = path.read_text().splitlines()[0].removeprefix("# expect: ")
    with pytest.raises(ConfigError) as exc:
        config.load(path)
    msg = str(exc.value)
    assert msg.startswith(str(path) + ":"), msg
    # The expectation is literal text where ".*" stands for anything.
    pattern = ".*".join(re.escape(part) for part in expect.split(".*"))
    assert re.search(pattern, msg), msg


def test_every_error_is_reported_not_just_the_first(tmp_path):
    p = tmp_path / "two.toml"
    p.write_text('[mempool]\ncache = -1\nmbufs = "x"\n[[ports]]\nname = "a"\ndevice = "net_null0"\n'
                 '[[pipeline]]\nstage = "xconnect"\nmap = {}\n')
    with pytest.raises(ConfigError) as exc:
        config.load(p)
    assert "mempool.cache" in str(exc.value) and "mempool.mbufs" in str(exc.value)


def test_missing_file_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="cannot read"):
        config.load(tmp_path / "nope.toml")


def test_eal_args_follow_the_config():
    from dataplane.eal import eal_args
    cfg = config.load(REFERENCE)
    args = eal_args(cfg)
    assert args[:3] == ["dataplane", "-l", "0"]
    assert "-a" in args and "0000:01:00.0" in args and "--no-pci" not in args
    assert "--no-huge" not in args and "--huge-unlink" in args and "--log-level=notice" in args
    text = (ROOT / "dataplane" / "default.toml").read_text().replace("${DEMO_PCAP}", "/x.pcap")
    demo = eal_args(config.loads(text))
    assert "--no-pci" in demo and "--no-huge" in demo and demo[demo.index("-m") + 1] == "512"
    assert "--huge-unlink" not in demo


@pytest.mark.parametrize("path", sorted((ROOT / "deploy" / "examples").glob("*.toml")), ids=lambda p: p.stem)
def test_every_example_config_is_valid(path):
    config.load(path)


def test_reference_documents_every_netflow_key_with_its_default():
    stage = next(s for s in tomllib.loads(REFERENCE.read_text())["pipeline"] if s["stage"] == "netflow")
    assert set(stage) == set(config.NetflowStage.model_fields)
    assert set(stage["export"]) == set(config.NetflowExport.model_fields)
    defaults = config.NetflowStage(stage="netflow")
    for key, value in stage.items():
        if key != "export":
            assert getattr(defaults, key) == value, key
    for key, value in stage["export"].items():
        assert getattr(defaults.export, key) == value, f"export.{key}"


def test_bonded_uplink_example_documents_every_one2many_key_with_its_default():
    path = ROOT / "deploy" / "examples" / "bonded-uplink.toml"
    stage = next(s for s in tomllib.loads(path.read_text())["pipeline"] if s["stage"] == "one2many")
    assert set(stage) == set(config.One2ManyStage.model_fields)
    defaults = config.One2ManyStage(stage="one2many", one="x", many=["y"])
    for key, value in stage.items():
        if key not in ("one", "many"):
            assert getattr(defaults, key) == value, key


def test_router_example_documents_every_ip6flow_key_with_its_default():
    path = ROOT / "deploy" / "examples" / "router.toml"
    stage = next(s for s in tomllib.loads(path.read_text())["pipeline"] if s["stage"] == "ip6flow")
    assert set(stage) == set(config.Ip6flowStage.model_fields)
    defaults = config.Ip6flowStage(stage="ip6flow")
    for key, value in stage.items():
        if key not in ("interfaces", "routes", "neighbours"):
            assert getattr(defaults, key) == value, key
    assert {k for r in stage["routes"] for k in r} == set(config.RouteConfig.model_fields)


def test_reference_documents_every_punt_reason_with_its_default():
    from dataplane import native
    slowpath = tomllib.loads(REFERENCE.read_text())["slowpath"]
    police = slowpath["police"]
    assert set(slowpath) == set(config.SlowPathConfig.model_fields)
    assert slowpath["source_share"] == config.SlowPathConfig().source_share
    defaults = config.PuntPolice()
    # one bucket per reason the C side punts with, named as it names them
    assert tuple(config.PuntPolice.model_fields) == native.punt_reason_names()
    assert set(police) == set(config.PuntPolice.model_fields)
    for reason, bucket in police.items():
        assert getattr(defaults, reason).model_dump() == bucket, reason


def test_a_bad_punt_rate_names_the_reason(tmp_path):
    p = tmp_path / "p.toml"
    p.write_text('[[ports]]\nname = "a"\ndevice = "net_null0"\n[[pipeline]]\nstage = "xconnect"\n'
                 'map = {}\n[slowpath.police]\nhop_limit = { rate = 0, burst = 10 }\n')
    with pytest.raises(ConfigError, match=r"slowpath\.police\.hop_limit\.rate.*greater than 0"):
        config.load(p)
    p.write_text(p.read_text().replace("hop_limit", "hop_limits").replace("rate = 0", "rate = 5"))
    with pytest.raises(ConfigError, match=r"slowpath\.police\.hop_limits"):
        config.load(p)


def test_metrics_reachable_from_other_hosts_only_when_allowed():
    base = '[[ports]]\nname = "a"\ndevice = "net_null0"\n[[pipeline]]\nstage = "xconnect"\nmap = {}\n'
    for listen in ("0.0.0.0:9108", "[::]:9108", "192.0.2.7:9108"):
        cfg = config.loads(f'[metrics]\nlisten = "{listen}"\nallow_remote = true\n' + base, check_drivers=False)
        assert cfg.metrics.allow_remote
    for listen in ("127.0.0.1:9108", "[::1]:9108", "localhost:9108"):
        config.loads(f'[metrics]\nlisten = "{listen}"\n' + base, check_drivers=False)
