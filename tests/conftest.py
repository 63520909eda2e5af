"""Test tiers: unit (no EAL), vdev (in-process EAL on virtual devices, each
test forked so it gets its own EAL and file prefix), e2e (the CLI as a
subprocess), netns (namespaces and veth pairs; root)."""
from __future__ import annotations

import glob
import json
import os
import uuid

import pytest
from _pytest.reports import TestReport
from _pytest.runner import runtestprotocol


def pytest_addoption(parser):
    parser.addoption("--run-slow", action="store_true", help="run long soaks")


def pytest_collection_modifyitems(config, items):
    for item in items:
        if item.get_closest_marker("slow") and not config.getoption("--run-slow"):
            item.add_marker(pytest.mark.skip(reason="long soak; use --run-slow"))
        if item.get_closest_marker("netns") and os.geteuid() != 0:
            item.add_marker(pytest.mark.skip(reason="needs root for network namespaces"))


def unique_prefix(tag: str = "t") -> str:
    return f"dpt-{tag}-{os.getpid()}-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def file_prefix(request) -> str:
    return unique_prefix(request.node.name[:16].replace("[", "_").replace("]", "_"))


def _death_details(item, pid: int) -> str:
    """What a forked test that died left behind: sanitizer reports written to
    files (make sanitize sets ASan's log_path) and the output it wrote in the
    phase it died in. pytest's capture file was opened before the fork, so the
    child's unread output (a UBSan report, an rte_panic, a crash message) is
    still there for the parent to read."""
    texts = []
    for var in ("ASAN_OPTIONS", "UBSAN_OPTIONS"):
        for opt in os.environ.get(var, "").split(":"):
            if opt.startswith("log_path="):
                for f in sorted(glob.glob(f"{opt[len('log_path='):]}.{pid}*")):
                    with open(f, errors="replace") as fh:
                        texts.append(fh.read())
    capman = item.config.pluginmanager.getplugin("capturemanager")
    if capman is not None:
        try:
            out, err = capman.read_global_capture()
        except Exception:  # noqa: BLE001 - capture off or closed: nothing to add
            out, err = "", ""
        for name, text in (("stdout", out), ("stderr", err)):
            if text.strip():
                texts.append(f"---- its captured {name} (last 20000 characters) ----\n{text[-20000:]}")
    return "\n".join(texts)


def _run_in_fork(item, nextitem) -> list:
    """Run one test's setup/call/teardown in a child; return its reports.
    Reports cross the pipe through pytest's own (de)serialization hooks."""
    hook = item.config.hook
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # child
        os.close(r)
        code = 0
        try:
            reports = runtestprotocol(item, log=False, nextitem=None)
            data = [hook.pytest_report_to_serializable(config=item.config, report=rep) for rep in reports]
            with os.fdopen(w, "w") as f:
                json.dump(data, f)
        except BaseException:  # noqa: BLE001 - the parent reports the death
            code = 3
        os._exit(code)
    os.close(w)
    with os.fdopen(r) as f:
        payload = f.read()
    _, status = os.waitpid(pid, 0)
    if payload:
        return [hook.pytest_report_from_serializable(config=item.config, data=d)
                for d in json.loads(payload)]
    how = (f"killed by signal {os.WTERMSIG(status)}" if os.WIFSIGNALED(status)
           else f"exit status {os.WEXITSTATUS(status)}")
    report = _death_details(item, pid)
    return [TestReport(item.nodeid, item.location, {k: 1 for k in item.keywords}, "failed",
                       f"the forked test process died ({how}) before reporting"
                       + (f"\n{report}" if report else ""), "call")]


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_protocol(item, nextitem):
    # rte_eal_init works once per process: every EAL test runs in a fork.
    if not item.get_closest_marker("eal"):
        return None
    item.ihook.pytest_runtest_logstart(nodeid=item.nodeid, location=item.location)
    for rep in _run_in_fork(item, nextitem):
        item.ihook.pytest_runtest_logreport(report=rep)
    item.ihook.pytest_runtest_logfinish(nodeid=item.nodeid, location=item.location)
    return True
