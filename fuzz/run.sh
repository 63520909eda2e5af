#!/usr/bin/env bash
# Run the fuzz targets (see fuzz/README.md). Used by the Makefile:
#
#   fuzz/run.sh fuzz   OUTDIR SECONDS TARGET...   fuzz each target in turn on
#                                                 fuzz/corpus/TARGET (grows it)
#   fuzz/run.sh replay OUTDIR TARGET...           run every input of
#                                                 fuzz/regressions/TARGET once
#   fuzz/run.sh py     PYTHON SECONDS             the atheris targets, in turn
#
# A crash stops with status 1; the input is left in build/fuzz/artifacts/
# (move it to fuzz/regressions/TARGET/ once the bug is fixed). A summary line
# per target gives executions, exec/s and libFuzzer's cov/ft at the end.
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(dirname "$here")
mode=${1:?mode}
shift

summary() {  # target logfile
    local last
    last=$(grep -a -E '^#[0-9]+[[:space:]]+(DONE|pulse|NEW|REDUCE|INITED)' "$2" | tail -1)
    printf '%-16s %s\n' "$1" "${last:-no stats (see $2)}"
}

# Stage targets start an EAL each: no shared files, a private prefix.
export LSAN_OPTIONS=${LSAN_OPTIONS:-}
export ASAN_OPTIONS=${ASAN_OPTIONS:-abort_on_error=1:detect_leaks=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}

case "$mode" in
fuzz)
    out=$1 secs=$2
    shift 2
    rc=0
    for t in "$@"; do
        corpus=$here/corpus/$t
        art=$root/build/fuzz/artifacts/$t/
        logf=$root/build/fuzz/$t.log
        mkdir -p "$corpus" "$art"
        echo "== $t: ${secs}s on $corpus"
        "$out/$t" -max_total_time="$secs" -timeout=25 -rss_limit_mb=4096 \
            -max_len=4096 -print_final_stats=1 -artifact_prefix="$art" \
            "$corpus" >"$logf" 2>&1
        r=$?
        summary "$t" "$logf"
        grep -a -E '^stat::(number_of_executed_units|average_exec_per_sec|new_units_added)' "$logf" | sed 's/^/    /'
        if [ $r -ne 0 ]; then
            echo "!! $t: exit $r; log $logf; artifacts in $art:" && ls "$art"
            grep -a -E -A40 'ERROR: |runtime error|fuzz env|^[a-z0-9_]+: ' "$logf" | head -80
            rc=1
        fi
    done
    exit $rc
    ;;
replay)
    out=$1
    shift
    rc=0
    for t in "$@"; do
        mapfile -t inputs < <(find "$here/regressions/$t" -type f ! -name '.*' ! -name '*.md' 2>/dev/null | sort)
        if [ ${#inputs[@]} -eq 0 ]; then
            echo "== $t: no regression inputs"
            continue
        fi
        echo "== $t: replaying ${#inputs[@]} regression inputs"
        if ! "$out/$t" -runs=1 "${inputs[@]}" >"$root/build/fuzz/$t.replay.log" 2>&1; then
            echo "!! $t: a regression input fails again (log build/fuzz/$t.replay.log)"
            grep -a -E -B2 -A30 'ERROR: |runtime error|fuzz env|Running: ' "$root/build/fuzz/$t.replay.log" | tail -60
            rc=1
        fi
    done
    exit $rc
    ;;
py)
    python=$1 secs=$2
    rc=0
    mkdir -p "$root/build/fuzz/artifacts"
    for f in "$here"/py/fuzz_*.py; do
        t=$(basename "$f" .py)
        t=${t#fuzz_}
        corpus=$here/py/corpus/$t
        art=$root/build/fuzz/artifacts/py-$t/
        logf=$root/build/fuzz/py-$t.log
        mkdir -p "$corpus" "$art"
        if ! out=$("$python" "$f" --seed "$corpus" 2>&1); then
            echo "!! py/$t: cannot write its seeds:"; echo "$out"; rc=1; continue
        fi
        echo "== py/$t: ${secs}s on $corpus"
        # regressions first: every input once
        mapfile -t inputs < <(find "$here/py/regressions/$t" -type f ! -name '.*' ! -name '*.md' 2>/dev/null | sort)
        if [ ${#inputs[@]} -gt 0 ] && ! "$python" "$f" -runs=1 "${inputs[@]}" >"$logf.replay" 2>&1; then
            echo "!! py/$t: a regression input fails again (log $logf.replay)"
            tail -40 "$logf.replay"
            rc=1
        fi
        "$python" "$f" -max_total_time="$secs" -timeout=25 -rss_limit_mb=4096 -max_len=8192 \
            -print_final_stats=1 -artifact_prefix="$art" "$corpus" >"$logf" 2>&1
        r=$?
        summary "py/$t" "$logf"
        if [ $r -ne 0 ]; then
            echo "!! py/$t: exit $r; log $logf; artifacts in $art:" && ls "$art"
            grep -a -E -B2 -A30 'Uncaught Python exception|Traceback' "$logf" | head -60
            rc=1
        fi
    done
    exit $rc
    ;;
*)
    echo "usage: $0 fuzz|replay|py ..." >&2
    exit 2
    ;;
esac
