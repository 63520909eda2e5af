#!/usr/bin/env bash
# Build the libFuzzer targets: clang, -fsanitize=fuzzer,address,undefined,
# against Debian's libdpdk (pkg-config) and native/*.c compiled here with
# coverage instrumentation. DPDK itself is not instrumented.
#
#   fuzz/build.sh [outdir]        (default: build/fuzz)
#   FUZZ_MODE=coverage fuzz/build.sh build/fuzz-cov
#                                 source-based coverage instead of sanitizers
#                                 (for fuzz/coverage.sh: line coverage of a corpus)
#
# CC (default clang) and FUZZ_CFLAGS (extra flags) can be overridden.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(dirname "$here")
out=${1:-$root/build/fuzz}
CC=${CC:-clang}
command -v "$CC" >/dev/null || { echo "fuzz/build.sh: $CC not found (apt-get install clang)" >&2; exit 1; }

# Same native sources as meson.build's dpnative library.
mapfile -t native < <(sed -n "/^native_sources = files(/,/^)/p" "$root/meson.build" \
                      | grep -o "'native/[^']*\.c'" | tr -d "'")
[ ${#native[@]} -gt 0 ] || { echo "fuzz/build.sh: no native sources in meson.build" >&2; exit 1; }

# alignment: DPDK's rte_hash_crc() reads keys 8 bytes at a time whatever their
# alignment (fine on x86, UB in C); the flow keys are 2- or 4-byte aligned.
san="-fsanitize=address,undefined -fno-sanitize=alignment -fno-sanitize-recover=all"
if [ "${FUZZ_MODE:-}" = coverage ]; then
    san="-fprofile-instr-generate -fcoverage-mapping"
fi
common="-g -O1 -fno-omit-frame-pointer -std=gnu11 -D_GNU_SOURCE $san \
  -I$root/native/include -I$root/native -I$here $(pkg-config --cflags libdpdk) \
  -Wall -Wno-unused-parameter -Wno-missing-field-initializers \
  -Wno-address-of-packed-member ${FUZZ_CFLAGS:-}"
cflags="$common -fsanitize=fuzzer-no-link"
libs="$(pkg-config --libs libdpdk) -lpthread -lm"

mkdir -p "$out/obj"
objs=()
compile() {  # src obj
    if [ ! -e "$2" ] || [ "$1" -nt "$2" ] || [ -n "$(find "$root/native" "$here" -name '*.h' -newer "$2" -print -quit)" ] \
       || [ "$0" -nt "$2" ]; then
        echo "  CC $1"
        # shellcheck disable=SC2086
        $CC $cflags -c "$1" -o "$2"
    fi
}
pids=()
for src in "${native[@]}" fuzz/stage_hook.c fuzz/fuzz_env.c; do
    obj="$out/obj/$(basename "${src%.c}").o"
    objs+=("$obj")
    compile "$root/$src" "$obj" &
    pids+=($!)
    if [ ${#pids[@]} -ge "$(nproc)" ]; then wait "${pids[0]}"; pids=("${pids[@]:1}"); fi
done
for p in "${pids[@]}"; do wait "$p"; done

# netflow_parse needs no EAL and no shim objects: the parser is a header.
targets=(netflow_parse netflow_burst ip6flow_burst)
for t in "${targets[@]}"; do
    src="$here/fuzz_$t.c"
    if [ "$t" = netflow_parse ]; then extra=(); else extra=("${objs[@]}"); fi
    echo "  LD $out/$t"
    # shellcheck disable=SC2086
    $CC $cflags -fsanitize=fuzzer "$src" "${extra[@]}" $libs -o "$out/$t"
done
echo "fuzz targets in $out: ${targets[*]}"
