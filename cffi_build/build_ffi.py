"""cffi builder for ``dataplane._native``.

The cdef is native/include/dp.h itself (our shim's API, never DPDK headers),
minus the preprocessor lines cffi cannot parse. meson runs this through
``python -m cffi.gen_src exec-python`` and compiles the generated C.
"""
import pathlib
import re

import cffi

HEADER = pathlib.Path(__file__).resolve().parent.parent / "native" / "include" / "dp.h"


def cdef_text(header: pathlib.Path = HEADER) -> str:
    keep = []
    for line in header.read_text().splitlines():
        # Guards and includes go; '#define NAME <integer>' stays (cffi reads those).
        if line.startswith("#") and not re.match(r"#define\s+\w+\s+-?\d+\s*(/\*.*\*/)?\s*$", line):
            continue
        keep.append(line)
    return "\n".join(keep)


ffibuilder = cffi.FFI()
ffibuilder.cdef(cdef_text())
ffibuilder.set_source("dataplane._native", '#include "dp.h"\n')

if __name__ == "__main__":
    print(cdef_text())
