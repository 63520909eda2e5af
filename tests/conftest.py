"""Test tiers: unit (no EAL), vdev (in-process EAL on virtual devices, each
test forked so it gets its own EAL and file prefix), e2e (the CLI as a
subprocess), netns (namespaces and veth pairs; root)."""
from __future__ import annotations

import os
import uuid

import pytest


def pytest_addoption(parser):
    parser.addoption("--run-slow", action="store_true", help="run long soaks")


def pytest_collection_modifyitems(config, items):
    for item in items:
        # rte_eal_init works once per process: every EAL test runs in a fork.
        if item.get_closest_marker("eal"):
            item.add_marker(pytest.mark.forked)
        if item.get_closest_marker("slow") and not config.getoption("--run-slow"):
            item.add_marker(pytest.mark.skip(reason="long soak; use --run-slow"))
        if item.get_closest_marker("netns") and os.geteuid() != 0:
            item.add_marker(pytest.mark.skip(reason="needs root for network namespaces"))


def unique_prefix(tag: str = "t") -> str:
    return f"dpt-{tag}-{os.getpid()}-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def file_prefix(request) -> str:
    return unique_prefix(request.node.name[:16].replace("[", "_").replace("]", "_"))
