#!/usr/bin/env python3
"""atheris: dataplane.config.loads on arbitrary text.

ConfigError is the contract for every bad config (TOML syntax, schema,
cross-checks); any other exception escaping loads() is a finding.

    python fuzz/py/fuzz_config.py --seed DIR        write seeds into DIR
    python fuzz/py/fuzz_config.py [libFuzzer flags] CORPUS_DIR...
"""
from __future__ import annotations

import sys
from pathlib import Path

import atheris
import harness

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

with atheris.instrument_imports(include=["dataplane"]):
    from dataplane import config
    from dataplane.errors import ConfigError


def seeds() -> dict[str, bytes]:
    out = {"default": (ROOT / "dataplane/default.toml").read_bytes()}
    for d in ("deploy/examples", "tests/data/bad_configs"):
        for p in sorted((ROOT / d).glob("*.toml")):
            out[f"{Path(d).name}-{p.stem}"] = p.read_bytes()
    return out


def TestOneInput(data: bytes) -> None:
    text = data.decode("utf-8", errors="replace")
    try:
        config.loads(text, "<fuzz>", check_drivers=False)
    except ConfigError:
        pass


if __name__ == "__main__":
    harness.main(seeds, TestOneInput)
