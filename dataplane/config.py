"""TOML configuration: validated into frozen pydantic models.

Every error names the file, the dotted key path and the bad value, and
nothing starts on a bad config. The annotated reference of every key lives in
deploy/examples/reference.toml (a test keeps it equal to these defaults).
"""
from __future__ import annotations

import ipaddress
import os
import re
import stat
import tomllib
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from .errors import ConfigError
from .safefs import check_plain_name

PCI_ADDR = re.compile(r"^([0-9a-fA-F]{4}:)?[0-9a-fA-F]{2}:[0-9a-fA-F]{2}\.[0-7]$")
# A vdev spec: driver name with an instance suffix, then key=value pairs.
VDEV_SPEC = re.compile(r"^(?P<name>[a-z][a-z0-9_]*?\d+)(,[A-Za-z0-9_-]+=[^,]*)*$")
NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_-]{0,31}$")
# netflow keeps its timeouts in 32-bit milliseconds (native/netflow.c): a week is plenty
MAX_FLOW_TIMEOUT_S = 7 * 86400
MAX_CONFIG_BYTES = 16 << 20
LOG_LEVELS = ("emergency", "alert", "critical", "error", "warning", "notice", "info", "debug")


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class EalConfig(Strict):
    main_core: int = Field(0, ge=0, le=4095, description="CPU for the main (Python) thread")
    workers: list[Annotated[int, Field(ge=0)]] = Field(
        default_factory=lambda: [1], min_length=1, max_length=64,
        description="one worker thread per entry, pinned to that CPU")
    hugepages: bool = True
    memory_mb: int = Field(0, ge=0, le=1 << 24, description="EAL memory (-m); 0 lets EAL decide")
    file_prefix: Annotated[str, AfterValidator(check_plain_name)] = Field(
        "dataplane", description="names EAL's runtime directory and the control socket: a plain name")
    log_level: Literal[LOG_LEVELS] = "notice"  # type: ignore[valid-type]
    pci_allow: list[str] = Field(default_factory=list)
    vdevs: list[str] = Field(default_factory=list,
                             description="devices EAL probes at start (for ports use [[ports]])")
    extra_args: list[str] = Field(default_factory=list)

    @field_validator("pci_allow")
    @classmethod
    def _pci(cls, v: list[str]) -> list[str]:
        for addr in v:
            if not PCI_ADDR.match(addr):
                raise ValueError(f"'{addr}' is not a PCI address like 0000:01:00.0")
        return v

    @model_validator(mode="after")
    def _memory(self) -> "EalConfig":
        if not self.hugepages and self.memory_mb == 0:
            raise ValueError("memory_mb must be set (e.g. 512) when hugepages = false")
        return self


class MempoolConfig(Strict):
    mbufs: int = Field(16383, ge=1023, le=16_777_215, description="mbufs per NUMA socket")
    cache: int = Field(256, ge=0, le=512)
    data_room: int = Field(2176, ge=256, le=65535, description="bytes per mbuf incl. headroom")


class PortConfig(Strict):
    name: str
    device: str | None = Field(None, description="vdev spec, e.g. net_pcap0,rx_pcap=in.pcap")
    pci: str | None = Field(None, description="PCI address of a vfio-pci bound NIC")
    pcap_file: str | None = Field(None, description="a pcap file to receive from (the dataplane's own "
                                                    "reader: receive only, one queue)")
    pcap_loop: bool = Field(False, description="pcap_file: start over at its end (false: read it once)")
    bundle: bool = Field(False, description="a logical port: the one side of a one2many stage "
                                            "(no device); the router and netflow see it as one port")
    mac: str = Field("", description="bundle only: its MAC ('' = its first link's)")
    rx_queues: int = Field(0, ge=0, le=64, description="0: one per worker (capped by the device)")
    rx_desc: int = Field(1024, ge=32, le=16384)
    tx_desc: int = Field(1024, ge=32, le=16384)
    mtu: int = Field(0, ge=0, le=65535, description="0: device default")
    promiscuous: bool = True
    rss: bool = True
    poll: bool = Field(True, description="false for transmit-only ports (sinks)")
    ifindex: int = Field(0, ge=0, le=65535, description="SNMP ifIndex in flow records (0 = position + 1)")

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not NAME.match(v):
            raise ValueError("a port name is a letter then up to 31 letters, digits, '_' or '-'")
        return v

    @field_validator("device")
    @classmethod
    def _device(cls, v: str | None) -> str | None:
        if v is not None and not VDEV_SPEC.match(v):
            raise ValueError("a device is 'driverN[,key=value...]', e.g. 'net_null0' or "
                             "'net_pcap0,rx_pcap=in.pcap'")
        return v

    @field_validator("pci")
    @classmethod
    def _pci(cls, v: str | None) -> str | None:
        if v is not None and not PCI_ADDR.match(v):
            raise ValueError("not a PCI address like 0000:01:00.0")
        return v

    @model_validator(mode="after")
    def _one_source(self) -> "PortConfig":
        sources = [k for k in ("device", "pci", "pcap_file") if getattr(self, k) is not None]
        if self.bundle:
            if sources:
                raise ValueError("a bundle port has no 'device', 'pci' or 'pcap_file': its links "
                                 "are the many ports of the one2many stage whose one it is")
        elif len(sources) != 1:
            raise ValueError("set exactly one of 'device' (a vdev spec), 'pci' (an address) or "
                             f"'pcap_file' (a file to read){' (got ' + ', '.join(sources) + ')' if sources else ''}")
        if self.pcap_loop and self.pcap_file is None:
            raise ValueError("'pcap_loop' is for pcap_file ports")
        if self.mac and not self.bundle:
            raise ValueError("'mac' is for bundle ports; a device has its own")
        if self.mac and not MAC.match(self.mac):
            raise ValueError(f"mac: '{self.mac}' is not a MAC address like 02:00:00:00:00:01")
        return self

    @property
    def source_key(self) -> str:
        """The key that says where packets come from (for error messages)."""
        return next(k for k in ("device", "pci", "pcap_file") if getattr(self, k) is not None)

    @property
    def devargs(self) -> str:
        if self.pcap_file is not None:
            # The reader feeds a receive-only net_null (native/pcapfile.c).
            return f"net_null_file_{self.name},no-rx=1"
        return self.device if self.device is not None else self.pci  # type: ignore[return-value]

    @property
    def driver(self) -> str | None:
        """The vdev driver name ('net_pcap' for 'net_pcap0,...'), None for PCI."""
        if self.device is None:
            return None
        return re.sub(r"\d+$", "", self.device.split(",", 1)[0])


class XconnectStage(Strict):
    """Port cross-connect: packets in on a port leave on its mapped port."""
    stage: Literal["xconnect"]
    map: dict[str, str] = Field(description="input port -> output port, or 'punt'")


class NetflowExport(Strict):
    """Where and how expired flows are sent."""
    version: Literal[5, 9, 10] = Field(5, description="5, 9 or 10 (IPFIX)")
    collectors: list[str] = Field(default_factory=list,
                                  description="host:port or [v6addr]:port, each gets every datagram")
    engine_type: int = Field(0, ge=0, le=255, description="v5 header")
    engine_id: int = Field(0, ge=0, le=255, description="v5 header")
    source_id: int = Field(0, ge=0, le=0xFFFFFFFF,
                           description="v9 source id / IPFIX observation domain")
    template_refresh_s: float = Field(60.0, gt=0, le=86400,
                                      description="v9/IPFIX: resend templates this often")
    template_refresh_packets: int = Field(20, ge=1, le=1 << 31,
                                          description="... or every this many datagrams")
    max_datagram: int = Field(1400, ge=200, le=65000, description="v9/IPFIX datagram size limit")
    flush_interval_s: float = Field(0.5, gt=0, le=60,
                                    description="longest a partial datagram waits for more records")

    @field_validator("collectors")
    @classmethod
    def _collectors(cls, v: list[str]) -> list[str]:
        for c in v:
            parse_hostport(c)
        return v


class NetflowStage(Strict):
    """FreeBSD ng_netflow: a flow cache that meters and passes every packet on."""
    stage: Literal["netflow"]
    max_flows: int = Field(65536, ge=8, le=1 << 28, description="cache size, split over the workers")
    active_timeout: int = Field(1800, ge=1, le=MAX_FLOW_TIMEOUT_S, description="seconds")
    inactive_timeout: int = Field(15, ge=1, le=MAX_FLOW_TIMEOUT_S, description="seconds")
    lowat: int = Field(0, ge=0, le=(1 << 32) - 1,
                       description="flows; past it all inactive flows go (0 = 3/4 of max)")
    export_ring: int = Field(65536, ge=64, le=1 << 24, description="records per worker ring (2^n)")
    scan_budget: int = Field(1024, ge=1, le=1 << 20, description="flows the scan visits per 1 ms tick")
    export: NetflowExport = Field(default_factory=NetflowExport)

    @field_validator("export_ring")
    @classmethod
    def _pow2(cls, v: int) -> int:
        if v & (v - 1):
            raise ValueError("must be a power of two")
        return v


class One2ManyStage(Strict):
    """FreeBSD ng_one2many: packets from `one` go out on the `many` links by
    the transmit algorithm; packets from any link go to `one`."""
    stage: Literal["one2many"]
    one: str = Field(description="the port on the one side")
    many: list[str] = Field(min_length=1, max_length=64, description="link n = many[n]")
    xmit: Literal["roundrobin", "all", "failover", "hash"] = "roundrobin"
    failure: Literal["manual", "notify"] = Field(
        "manual", description="manual: links as `enabled` says; notify: by link state")
    enabled: list[bool] = Field(default_factory=list, description="per link; [] = all")
    monitor_interval_ms: float = Field(10.0, gt=0, le=10000, description="link state poll")
    updelay_ms: float = Field(0.0, ge=0, le=3_600_000, description="a link must stay up this long to count")
    downdelay_ms: float = Field(0.0, ge=0, le=3_600_000, description="... or down this long")

    @model_validator(mode="after")
    def _enabled(self) -> "One2ManyStage":
        if self.enabled and len(self.enabled) != len(self.many):
            raise ValueError(f"enabled has {len(self.enabled)} entries for {len(self.many)} links")
        return self


MAC = re.compile(r"^[0-9a-fA-F]{2}(:[0-9a-fA-F]{2}){5}$")


def _pow2(v: int) -> int:
    if v <= 0 or v & (v - 1):
        raise ValueError("must be a power of two")
    return v


class RouterInterface(Strict):
    """The router's addresses on one port (a link-local fe80:: is added)."""
    port: str
    addresses: list[str] = Field(default_factory=list, description="address/prefixlen, v4 or v6")

    @field_validator("addresses")
    @classmethod
    def _addresses(cls, v: list[str]) -> list[str]:
        for a in v:
            if "/" not in a:
                raise ValueError(f"'{a}' needs a prefix length (address/len)")
            try:
                ipaddress.ip_interface(a)
            except ValueError:
                raise ValueError(f"'{a}' is not an IPv4/IPv6 address/prefixlen") from None
        return v


class RouteConfig(Strict):
    prefix: str = Field(description="network/len; host bits must be zero")
    via: str | None = Field(None, description="next-hop address on a connected subnet")
    port: str | None = Field(None, description="egress port (on-link route, or to pick among equals)")
    action: Literal["forward", "blackhole", "reject"] = "forward"

    @model_validator(mode="after")
    def _route(self) -> "RouteConfig":
        try:
            net = ipaddress.ip_network(self.prefix)
        except ValueError as e:
            raise ValueError(f"prefix: {e}") from None
        if self.via is not None:
            try:
                via = ipaddress.ip_address(self.via)
            except ValueError:
                raise ValueError(f"via: '{self.via}' is not an IP address") from None
            if via.version != net.version:
                raise ValueError(f"via {self.via} is IPv{via.version}, prefix {self.prefix} "
                                 f"is IPv{net.version}")
        if self.action == "forward" and self.via is None and self.port is None:
            raise ValueError(f"route {self.prefix}: give `via` (a next hop) or `port` (on-link)")
        return self


class NeighbourConfig(Strict):
    address: str
    mac: str
    port: str

    @field_validator("address")
    @classmethod
    def _address(cls, v: str) -> str:
        ipaddress.ip_address(v)
        return v

    @field_validator("mac")
    @classmethod
    def _mac(cls, v: str) -> str:
        if not MAC.match(v):
            raise ValueError(f"'{v}' is not a MAC address like 02:00:00:00:00:01")
        return v.lower()


class Ip6flowStage(Strict):
    """NetBSD ip6_flow.c/ip_flow.c: a router with a fast-forward flow cache."""
    stage: Literal["ip6flow"]
    maxflows: int = Field(65536, ge=0, le=1 << 26,
                          description="IPv6 flows cached per worker (0 disables the cache)")
    hashsize: int = Field(65536, ge=16, le=1 << 28, description="IPv6 hash slots (power of two)")
    ipv4: bool = Field(True, description="route IPv4 too (ip_flow.c)")
    maxflows4: int = Field(65536, ge=0, le=1 << 26, description="IPv4 flows cached per worker")
    hashsize4: int = Field(65536, ge=16, le=1 << 28, description="IPv4 hash slots (power of two)")
    idle_timeout_s: float = Field(5.0, gt=0, le=86400, description="an unused flow is freed after this")
    icmp_rate: float = Field(100.0, ge=0, le=1e7, description="ICMP errors per second (token bucket)")
    icmp_burst: int = Field(10, ge=1, le=1 << 20)
    neighbour_reachable_s: float = Field(
        30.0, ge=0, le=86400,
        description="a learnt neighbour not heard from this long is polled, then forgotten (0: never)")
    max_neighbours: int = Field(
        0, ge=0, le=1 << 20,
        description="learnt neighbours kept, both families (Linux's gc_thresh3); past it the least "
                    "recently heard-from one that no route goes through makes room. 0: what "
                    "max_nexthops leaves, at most 1024")
    max_routes: int = Field(65536, ge=16, le=1 << 24, description="per family")
    max_nexthops: int = Field(16384, ge=16, le=32767)
    ipv4_tbl8: int = Field(4096, ge=16, le=1 << 20, description="IPv4 FIB groups for routes longer than /24")
    ipv6_tbl8: int = Field(16384, ge=16, le=1 << 22, description="IPv6 FIB trie groups")
    interfaces: list[RouterInterface] = Field(default_factory=list)
    routes: list[RouteConfig] = Field(default_factory=list)
    neighbours: list[NeighbourConfig] = Field(default_factory=list)

    @property
    def nexthops_reserved(self) -> int:
        """Next hops taken before any neighbour is learnt: static neighbours,
        routes, connected subnets and our own addresses (one per family)."""
        return (len(self.neighbours) + len(self.routes)
                + sum(len(i.addresses) for i in self.interfaces) + 2)

    @property
    def neighbour_limit(self) -> int:
        return self.max_neighbours or max(0, min(1024, self.max_nexthops - self.nexthops_reserved))

    @model_validator(mode="after")
    def _room_for_neighbours(self) -> "Ip6flowStage":
        if self.max_neighbours and self.max_neighbours + self.nexthops_reserved > self.max_nexthops:
            raise ValueError(f"max_neighbours {self.max_neighbours} needs max_nexthops >= "
                             f"{self.max_neighbours + self.nexthops_reserved} (routes, static "
                             f"neighbours and addresses take {self.nexthops_reserved}; got "
                             f"{self.max_nexthops})")
        return self

    _hashsize = field_validator("hashsize", "hashsize4")(classmethod(lambda cls, v: _pow2(v)))


StageConfig = Annotated[XconnectStage | NetflowStage | One2ManyStage | Ip6flowStage,
                        Field(discriminator="stage")]


def parse_hostport(text: str) -> tuple[str, int]:
    """'1.2.3.4:2055', '[2001:db8::1]:2055' or 'name:2055' -> (host, port)."""
    m = re.match(r"^\[(?P<v6>[0-9A-Fa-f:.]+)\]:(?P<p>\d+)$|^(?P<h>[^:\[\]]+):(?P<q>\d+)$", text)
    if not m:
        raise ValueError(f"'{text}' is not host:port (IPv6 as [addr]:port)")
    host = m.group("v6") or m.group("h")
    port = int(m.group("p") or m.group("q"))
    if not 0 < port < 65536:
        raise ValueError(f"port {port} out of range in '{text}'")
    return host, port


class RunConfig(Strict):
    runtime_dir: str = Field("", description="'' = /run/dataplane as root, else $XDG_RUNTIME_DIR/dataplane")
    poll_budget_ms: float = Field(0.0, ge=0, le=10000,
                                  description="0: a worker leaves C only when Python has work for it")
    cycle_sample_shift: int = Field(6, ge=0, le=16,
                                    description="measure stage cycles in one loop of 2^shift")
    gil_switch_interval_ms: float = Field(0.1, gt=0, le=10,
                                          description="sys.setswitchinterval while running")
    idle_rx_skip: int = Field(15, ge=0, le=1023,
                              description="a queue empty 16 polls in a row is polled once in "
                                          "idle_rx_skip + 1 loops until it has packets (0: always)")


class PuntPolicer(Strict):
    """One punt reason's token bucket, for all workers together (each worker
    polices its own punts at rate / workers, burst / workers, at least 1)."""
    rate: float = Field(1000.0, gt=0, le=1e7, description="packets per second")
    burst: int = Field(100, ge=1, le=1 << 20, description="packets at once")


def _police(rate: float, burst: int):
    return Field(default_factory=lambda: PuntPolicer(rate=rate, burst=burst))


class PuntPolice(Strict):
    """Per punt reason (dp.h DP_PUNT_*): what a worker may hand the slow path;
    the rest is dropped in C and counted (punt_policed)."""
    other: PuntPolicer = _police(1000, 100)          # xconnect "punt", a stage without a reason
    local: PuntPolicer = _police(1000, 100)          # to our addresses: pings, UDP/TCP
    resolve: PuntPolicer = _police(1000, 100)        # next hop without a MAC yet
    no_route: PuntPolicer = _police(1000, 100)       # ICMP unreachable
    hop_limit: PuntPolicer = _police(1000, 100)      # ICMP time exceeded
    too_big: PuntPolicer = _police(1000, 100)        # packet too big / fragmentation
    hbh: PuntPolicer = _police(1000, 100)            # IPv6 hop-by-hop: forwarded by the slow path
    ip4_options: PuntPolicer = _police(1000, 100)    # IPv4 options: forwarded by the slow path
    l2_multicast: PuntPolicer = _police(500, 50)
    # NDP and ARP: below what the slow path learns per second (~1.8k new
    # neighbours/s measured, bench/punt_storm.py --capacity): a flood of new
    # hosts at 2000/s kept it saturated and cost forwarding 0.64x
    multicast: PuntPolicer = _police(500, 100)       # NDP (solicitations, advertisements)
    arp: PuntPolicer = _police(500, 100)
    scope: PuntPolicer = _police(500, 50)            # link-local source routed off-link


class SlowPathConfig(Strict):
    """The slow path: its own thread takes every worker's punted packets."""
    police: PuntPolice = Field(default_factory=PuntPolice)
    source_share: float = Field(0.125, gt=0, le=1,
                                description="of each reason's rate and burst, what one source "
                                            "address may take (1: no per-source limit)")


class ControlConfig(Strict):
    """The local control socket (`dataplane ctl`)."""
    enabled: bool = True
    socket: str = Field("", description="'' = <runtime dir>/<eal.file_prefix>.sock")
    group: str = Field("", description="group allowed to use it (socket 0660, dir 0750)")
    max_request_bytes: int = Field(65536, ge=256, le=1 << 24)
    idle_timeout_s: float = Field(30.0, gt=0, le=86400, description="silent clients are dropped after this")
    request_timeout_s: float = Field(5.0, gt=0, le=3600)


class MetricsConfig(Strict):
    """Prometheus endpoint, served from a snapshot."""
    enabled: bool = True
    listen: str = Field("127.0.0.1:9108", description="host:port; port 0 picks a free one")
    interval_s: float = Field(1.0, gt=0, le=60, description="how often the snapshot is taken")
    allow_remote: bool = Field(False, description="listen on an address other hosts reach (not loopback)")
    max_connections: int = Field(16, ge=1, le=1024, description="open at once; more are closed at once")
    timeout_s: float = Field(5.0, gt=0, le=300,
                             description="a client silent this long (reading or writing) is dropped")

    @field_validator("listen")
    @classmethod
    def _listen(cls, v: str) -> str:
        if not v.endswith(":0"):  # port 0: the system picks one (tests)
            parse_hostport(v)
        return v

    @model_validator(mode="after")
    def _loopback_unless_allowed(self) -> "MetricsConfig":
        host = self.listen.rpartition(":")[0].strip("[]")
        try:
            loopback = ipaddress.ip_address(host).is_loopback
        except ValueError:
            loopback = host == "localhost"
        if not loopback and not self.allow_remote:
            raise ValueError(f"listen {self.listen!r} is reachable from other hosts: the counters "
                             "and tables show your traffic; set allow_remote = true to mean it")
        return self


class Config(Strict):
    eal: EalConfig = Field(default_factory=EalConfig)
    mempool: MempoolConfig = Field(default_factory=MempoolConfig)
    ports: list[PortConfig] = Field(min_length=1)
    pipeline: list[StageConfig] = Field(min_length=1)
    run: RunConfig = Field(default_factory=RunConfig)
    slowpath: SlowPathConfig = Field(default_factory=SlowPathConfig)
    control: ControlConfig = Field(default_factory=ControlConfig)
    metrics: MetricsConfig = Field(default_factory=MetricsConfig)

    def port(self, name: str) -> PortConfig:
        return next(p for p in self.ports if p.name == name)

    @property
    def devices(self) -> list[PortConfig]:
        """The ports that are devices (not bundles)."""
        return [p for p in self.ports if not p.bundle]


# ---- loading ---------------------------------------------------------------------

def _key_path(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out


def _format_errors(source: str, err: ValidationError) -> str:
    lines = []
    for e in err.errors():
        loc = tuple(p for p in e["loc"] if p not in ("xconnect", "netflow", "one2many", "ip6flow"))  # union tags
        key = _key_path(loc) or "(top level)"
        msg = e["msg"].removeprefix("Value error, ")
        value = e.get("input")
        if e["type"] == "extra_forbidden":
            msg = "unknown key"
        elif e["type"] == "union_tag_invalid":  # [[pipeline]] stage = "<unknown>"
            key += ".stage"
            msg = f"unknown stage; expected one of {e['ctx']['expected_tags']}"
            value = e["ctx"]["tag"]
        elif e["type"] == "union_tag_not_found":
            key += ".stage"
            msg = "missing; every [[pipeline]] table names its stage"
        shown = "" if isinstance(value, dict) else f" (got {value!r})"
        lines.append(f"{source}: {key}: {msg}{shown}")
    return "\n".join(lines)


def _cross_check(source: str, cfg: Config, known_driver) -> None:
    """Checks that span sections: names that refer to other names."""
    seen: dict[str, int] = {}
    for i, p in enumerate(cfg.ports):
        if p.name in seen:
            raise ConfigError(f"{source}: ports[{i}].name: duplicate port name (got {p.name!r}; "
                              f"first at ports[{seen[p.name]}])")
        seen[p.name] = i
        if p.driver is not None and known_driver is not None and not known_driver(p.driver):
            raise ConfigError(f"{source}: ports[{i}].device: unknown driver {p.driver!r} "
                              f"(got {p.device!r}; `dataplane pmds` lists the installed ones)")
    bundles = {p.name for p in cfg.ports if p.bundle}
    owner: dict[str, int] = {}
    for i, st in enumerate(cfg.pipeline):
        if isinstance(st, One2ManyStage):
            for key, name in [("one", st.one)] + [(f"many[{j}]", m) for j, m in enumerate(st.many)]:
                if name not in seen:
                    raise ConfigError(f"{source}: pipeline[{i}].{key}: no port named {name!r}")
            if st.one in st.many or len(set(st.many)) != len(st.many):
                raise ConfigError(f"{source}: pipeline[{i}].many: links must be distinct and "
                                  f"not the one port (got {st.many!r}, one = {st.one!r})")
            for j, m in enumerate(st.many):
                if m in bundles:
                    raise ConfigError(f"{source}: pipeline[{i}].many[{j}]: a link must be a "
                                      f"device, not a bundle (got {m!r})")
            if st.one in bundles:
                if st.one in owner:
                    raise ConfigError(f"{source}: pipeline[{i}].one: bundle {st.one!r} is already "
                                      f"the one of pipeline[{owner[st.one]}]")
                owner[st.one] = i
                # link traffic becomes the bundle's here: the stages that
                # should see it come after
                later = [j for j, o in enumerate(cfg.pipeline[:i]) if not isinstance(o, One2ManyStage)]
                if later:
                    raise ConfigError(f"{source}: pipeline[{i}]: a one2many stage whose one is a "
                                      f"bundle must come before the other stages (pipeline"
                                      f"[{later[0]}] is a {cfg.pipeline[later[0]].stage})")
        if isinstance(st, Ip6flowStage):
            _check_router(source, f"pipeline[{i}]", st, seen)
            if sum(isinstance(o, Ip6flowStage) for o in cfg.pipeline) > 1:
                raise ConfigError(f"{source}: pipeline[{i}].stage: one ip6flow stage per pipeline")
        if isinstance(st, XconnectStage):
            for src, dst in st.map.items():
                if src not in seen:
                    raise ConfigError(f"{source}: pipeline[{i}].map: no port named {src!r}")
                if dst != "punt" and dst not in seen:
                    raise ConfigError(f"{source}: pipeline[{i}].map.{src}: no port named {dst!r}")
    for i, p in enumerate(cfg.ports):
        if p.bundle and p.name not in owner:
            raise ConfigError(f"{source}: ports[{i}].bundle: {p.name!r} is the one of no one2many "
                              f"stage (a bundle's links come from that stage's many)")


def _check_router(source: str, where: str, st: Ip6flowStage, ports: dict) -> None:
    """Names must exist, next hops must sit on a connected subnet."""
    connected: list[tuple[str, object]] = []
    for j, itf in enumerate(st.interfaces):
        if itf.port not in ports:
            raise ConfigError(f"{source}: {where}.interfaces[{j}].port: no port named {itf.port!r}")
        connected += [(itf.port, ipaddress.ip_interface(a).network) for a in itf.addresses]
    for j, r in enumerate(st.routes):
        key = f"{where}.routes[{j}]"
        if r.port is not None and r.port not in ports:
            raise ConfigError(f"{source}: {key}.port: no port named {r.port!r}")
        if r.via is not None:
            via = ipaddress.ip_address(r.via)
            on = [p for p, net in connected if via.version == net.version and via in net
                  and (r.port is None or r.port == p)]
            if not on and not via.is_link_local:
                raise ConfigError(f"{source}: {key}.via: {r.via} is on no connected subnet "
                                  f"of {r.port or 'any port'} (got {r.via!r})")
            if via.is_link_local and r.port is None:
                raise ConfigError(f"{source}: {key}.port: a link-local next hop needs a port "
                                  f"(got via = {r.via!r})")
    for j, n in enumerate(st.neighbours):
        if n.port not in ports:
            raise ConfigError(f"{source}: {where}.neighbours[{j}].port: no port named {n.port!r}")


def _installed_driver(name: str) -> bool:
    from . import pmdinfo
    return pmdinfo.find(name) is not None


def parse(data: dict, source: str = "<config>", check_drivers: bool = True) -> Config:
    try:
        cfg = Config.model_validate(data)
    except ValidationError as e:
        raise ConfigError(_format_errors(source, e)) from None
    _cross_check(source, cfg, _installed_driver if check_drivers else None)
    return cfg


def loads(text: str, source: str = "<config>", check_drivers: bool = True) -> Config:
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{source}: TOML syntax error: {e}") from None
    except RecursionError:
        raise ConfigError(f"{source}: TOML nested too deeply") from None
    return parse(data, source, check_drivers)


def read_config_file(p: Path) -> str:
    """The file's text, or a ConfigError: only a regular file (a FIFO or a
    device would block the reader), at most MAX_CONFIG_BYTES, in UTF-8."""
    try:
        fd = os.open(p, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as e:
        raise ConfigError(f"{p}: cannot read: {e.strerror}", e.errno or 0) from None
    with os.fdopen(fd, "rb") as f:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise ConfigError(f"{p}: not a regular file")
        if st.st_size > MAX_CONFIG_BYTES:
            raise ConfigError(f"{p}: {st.st_size} bytes: larger than {MAX_CONFIG_BYTES} bytes")
        try:
            raw = f.read(MAX_CONFIG_BYTES + 1)
        except OSError as e:
            raise ConfigError(f"{p}: cannot read: {e.strerror}", e.errno or 0) from None
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ConfigError(f"{p}: not UTF-8 at byte {e.start}") from None


def load(path: str | os.PathLike, check_drivers: bool = True) -> Config:
    p = Path(path)
    return loads(read_config_file(p), str(p), check_drivers)


def runtime_dir(cfg: Config) -> Path:
    if cfg.run.runtime_dir:
        return Path(cfg.run.runtime_dir)
    if os.geteuid() == 0:
        return Path("/run/dataplane")
    return Path(os.environ.get("XDG_RUNTIME_DIR", f"/tmp/dataplane-{os.getuid()}")) / "dataplane"


def control_socket(cfg: Config) -> Path:
    return Path(cfg.control.socket) if cfg.control.socket else runtime_dir(cfg) / f"{cfg.eal.file_prefix}.sock"
