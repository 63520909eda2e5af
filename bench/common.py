"""What the benchmarks share: run prefixes, DPDK's runtime directories, the
testpmd driver, and reading the dataplane's JSON out of mixed output."""
from __future__ import annotations

import itertools
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

DPDK_RUN = Path("/var/run/dpdk")
MAIN_CPU, WORKER_CPU = 0, 1
_seq = itertools.count(1)


def unique_prefix(tag: str) -> str:
    """A --file-prefix no other run (of any benchmark) uses."""
    return f"bench_{tag}_{os.getpid()}_{next(_seq)}"


def pcap_to_null_toml(prefix: str, memory_mb: int, mbufs: int, data_room: int, pcap: Path,
                      forever: bool, reader: str = "net_pcap", hugepages: bool = False) -> str:
    """The head of a benchmark config: one worker on WORKER_CPU (the main
    thread on MAIN_CPU), no hugepages unless asked, and ports `in` (reading `pcap`,
    replayed forever or once, by DPDK's net_pcap or by reader = "pcap_file",
    the dataplane's own reader) and `out` (a net_null sink). The caller adds
    its [[pipeline]] tables (and any other table)."""
    if reader == "pcap_file":
        source = f'pcap_file = "{pcap}"' + ("\npcap_loop = true" if forever else "")
    else:
        source = f'device = "net_pcap0,rx_pcap={pcap}{",infinite_rx=1" if forever else ""}"'
    return f"""\
[eal]
workers = [{WORKER_CPU}]
main_core = {MAIN_CPU}
hugepages = {"true" if hugepages else "false"}
memory_mb = {memory_mb}
file_prefix = "{prefix}"
log_level = "warning"

[mempool]
mbufs = {mbufs}
data_room = {data_room}

[[ports]]
name = "in"
{source}

[[ports]]
name = "out"
device = "net_null0,no-rx=1"
poll = false
"""


def remove_runtime_dir(prefix: str) -> None:
    """testpmd and l3fwd leave /var/run/dpdk/<prefix> behind, and with
    hugepages their hugepage files; the dataplane leaves neither."""
    shutil.rmtree(DPDK_RUN / prefix, ignore_errors=True)
    for f in Path("/dev/hugepages").glob(f"{prefix}map_*"):
        f.unlink(missing_ok=True)


def last_json(out: str) -> dict:
    """The last JSON object in ``out`` that starts a line (EAL logs share stdout)."""
    dec = json.JSONDecoder()
    found = None
    for m in re.finditer(r"^\{", out, re.M):
        try:
            found = dec.raw_decode(out, m.start())[0]
        except json.JSONDecodeError:
            pass
    if found is None:
        raise RuntimeError(f"no JSON in output:\n{out[-3000:]}")
    return found


def hugepages_free_mb() -> int:
    """Free 2 MiB (default size) hugepages, in MiB, and 0 without a hugetlbfs mount."""
    mounted = any(line.split()[2] == "hugetlbfs" for line in Path("/proc/mounts").read_text().splitlines())
    info = dict(line.split(":", 1) for line in Path("/proc/meminfo").read_text().splitlines())
    return int(info["HugePages_Free"]) * int(info["Hugepagesize"].split()[0]) // 1024 if mounted else 0


def require_hugepages(mb: int) -> None:
    if hugepages_free_mb() < mb:
        sys.exit(f"--hugepages needs {mb} MiB of free 2 MiB hugepages on a hugetlbfs mount, e.g.\n"
                 f"  echo {mb // 2 + 64} > /proc/sys/vm/nr_hugepages\n"
                 f"  mount -t hugetlbfs nodev /dev/hugepages   # if not mounted\n"
                 f"(free now: {hugepages_free_mb()} MiB)")


PROMPT = "testpmd> "
PORT_STATS = re.compile(r"NIC statistics for port (\d+)\s+#+\s+RX-packets:\s+(\d+).*?"
                        r"TX-packets:\s+(\d+)", re.S)


class Testpmd:
    """dpdk-testpmd -i fed through stdin; its (line-buffered) stdout goes to a file
    that we poll for prompts, so every command's completion is observed."""

    def __init__(self, workdir: Path, prefix: str, vdevs: list[str], *, memory_mb: int,
                 mbufs: int, portmask: int | None = None, hugepages: bool = False):
        self.log = workdir / f"{prefix}.out"
        self.cmd = ["stdbuf", "-oL", "dpdk-testpmd", "-l", f"{MAIN_CPU},{WORKER_CPU}",
                    *([] if hugepages else ["--no-huge"]), "-m", str(memory_mb), "--no-pci",
                    "--file-prefix", prefix]
        for v in vdevs:
            self.cmd += ["--vdev", v]
        self.cmd += ["--", "--forward-mode=io", f"--total-num-mbufs={mbufs}", "-i"]
        if portmask is not None:
            self.cmd.insert(-1, f"--portmask={portmask:#x}")
        with open(self.log, "w") as out:
            self.proc = subprocess.Popen(self.cmd, stdin=subprocess.PIPE, stdout=out,
                                         stderr=subprocess.STDOUT, text=True)
        self._wait_prompts(1, timeout=60)

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    def _wait_prompts(self, n: int, timeout: float) -> str:
        deadline = time.monotonic() + timeout
        while (text := self.text()).count(PROMPT) < n:
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"testpmd: no prompt #{n}; output:\n{text[-3000:]}")
            time.sleep(0.001)
        return text

    def command(self, line: str, timeout: float = 30) -> tuple[float, str]:
        """Run one command; return (mid-time between send and prompt, its output)."""
        n = self.text().count(PROMPT)
        t0 = time.monotonic()
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()
        text = self._wait_prompts(n + 1, timeout)
        t1 = time.monotonic()
        return (t0 + t1) / 2, text.split(PROMPT)[n]

    def port_stats(self, ports: set[int]) -> tuple[float, dict[int, tuple[int, int]]]:
        t, out = self.command("show port stats all")
        stats = {int(p): (int(rx), int(tx)) for p, rx, tx in PORT_STATS.findall(out)}
        if not ports <= set(stats):
            raise RuntimeError(f"testpmd: cannot parse port stats from:\n{out}")
        return t, stats

    def close(self) -> None:
        try:
            self.proc.stdin.write("quit\n")
            self.proc.stdin.close()
            self.proc.wait(30)
        except (OSError, subprocess.TimeoutExpired):
            self.proc.kill()
            self.proc.wait()


def load_alt_native(path: str) -> None:
    """Use another build of the C module (a saved copy of
    build/cp311/_native*.so) in place of the editable one, for A/B runs of two
    builds in one benchmark: it is registered as dataplane._native before the
    package imports it."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("dataplane._native", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    sys.modules["dataplane._native"] = mod
