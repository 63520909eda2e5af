"""What every atheris target here does with its command line: `--seed DIR`
writes its seeds into DIR; anything else goes to libFuzzer."""
from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

import atheris


def main(seeds: Callable[[], dict[str, bytes]], test_one_input: Callable[[bytes], None]) -> None:
    if len(sys.argv) == 3 and sys.argv[1] == "--seed":
        d = Path(sys.argv[2])
        d.mkdir(parents=True, exist_ok=True)
        for name, data in seeds().items():
            (d / f"seed-{name}").write_bytes(data)
        return
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()
