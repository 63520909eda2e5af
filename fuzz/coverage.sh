#!/usr/bin/env bash
# Line/function/branch coverage of native/ reached by each target's corpus:
# builds the targets with source-based coverage (no sanitizers) into
# build/fuzz-cov, runs every corpus input once, and prints llvm-cov's report.
#
#   fuzz/coverage.sh [TARGET...]      (default: all three)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(dirname "$here")
out=$root/build/fuzz-cov
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(netflow_parse netflow_burst ip6flow_burst)
cov=$(command -v llvm-cov-14 || command -v llvm-cov)
prof=$(command -v llvm-profdata-14 || command -v llvm-profdata)
FUZZ_MODE=coverage "$here/build.sh" "$out" >/dev/null
for t in "${targets[@]}"; do
    rm -f "$out/$t".*.profraw
    LLVM_PROFILE_FILE="$out/$t.%p.profraw" "$out/$t" -runs=0 "$here/corpus/$t" >/dev/null 2>&1 || true
    "$prof" merge -sparse "$out/$t".*.profraw -o "$out/$t.profdata"
    echo "== $t ($(find "$here/corpus/$t" -type f | wc -l) corpus inputs)"
    case $t in
        netflow_parse) files=("$root/native/flowparse.h") ;;
        netflow_burst) files=("$root/native/netflow.c" "$root/native/flowparse.h" "$root/native/nfexport.c" "$root/native/flowtable.h") ;;
        ip6flow_burst) files=("$root/native/ip6flow.c" "$root/native/flowtable.h") ;;
    esac
    "$cov" report "$out/$t" -instr-profile="$out/$t.profdata" "${files[@]}" | sed 's/^/    /'
done
