# Helpers of benchmarks/gpu_suite.sh: parts with time limits, the summary, and packing the results.
# Sourced, not run. The caller sets START, TOTAL_S, WORK (scratch folder: logs, CSVs, runs) and
# DEST (what comes back: at most 8 files, see pack_results).

SUMMARY=()
FAILED=0

note() { echo "[gpu_suite] $*" | tee -a "$WORK/suite.log"; }

skip() {  # skip NAME WHY
    SUMMARY+=("$(printf '%-18s skipped: %s' "$1" "$2")")
    note "$1 skipped: $2"
}

record() {  # record NAME OUTCOME FAILED(0|1)
    SUMMARY+=("$(printf '%-18s %s' "$1" "$2")")
    [ "$3" = 1 ] && FAILED=1
    return 0
}

failed_rows() {  # failed_rows CSV: how many rows of a bench CSV have a "failed..." status
    [ -f "$1" ] || { echo 0; return; }
    grep -cE '(^|,)"?failed' "$1"
}

part() {  # part NAME LIMIT_S CSV|- CMD...: run CMD under a time limit, log it, record the outcome
    # The exit status is read from the command itself (no pipe in between), and a benchmark that
    # exits 0 with failed rows in its CSV (e.g. every Triton row when fastssl_kernels is missing)
    # still counts as failed.
    local name=$1 limit=$2 csv=$3 left rc t0 took bad
    shift 3
    left=$((TOTAL_S - ($(date +%s) - START)))
    if [ "$left" -lt 20 ]; then
        skip "$name" "suite time budget (${TOTAL_S} s) spent"
        return
    fi
    [ "$limit" -gt "$left" ] && limit=$left
    note "=== $name (limit ${limit} s): $*"
    t0=$(date +%s)
    timeout --kill-after=15 "$limit" "$@" >"$WORK/$name.log" 2>&1
    rc=$?
    took=$(($(date +%s) - t0))
    tail -n 15 "$WORK/$name.log"
    bad=0
    [ "$csv" != - ] && bad=$(failed_rows "$csv")
    if [ "$rc" -eq 124 ] || [ "$rc" -eq 137 ]; then
        record "$name" "TIMEOUT after $took s (rows measured so far are kept)" 1
    elif [ "$rc" -ne 0 ]; then
        record "$name" "FAILED, exit status $rc ($took s; see $name.log in results.tgz)" 1
    elif [ "$bad" -gt 0 ]; then
        record "$name" "FAILED: $bad row(s) with a failed status in $(basename "$csv") ($took s)" 1
    else
        record "$name" "ok ($took s)" 0
    fi
}

write_summary() {  # write_summary FILE
    {
        echo "gpu_suite summary ($(($(date +%s) - START)) s in all; $(basename "$DEST")):"
        printf '  %s\n' "${SUMMARY[@]}"
        echo "everything else (logs, CSVs, run metrics, environment.txt) is in results.tgz"
    } | tee "$1"
}

pack_results() {  # summary.txt + results.tgz + at most 3 PNGs: 5 files, under the 8 that come back
    local png n=0
    write_summary "$DEST/summary.txt"
    cp "$DEST/summary.txt" "$WORK/summary.txt"
    # Checkpoints are hundreds of MiB and say nothing about speed; config and metrics stay.
    tar -czf "$DEST/results.tgz" --exclude=checkpoints --exclude='*.pt' --exclude=tb -C "$WORK" . 2>/dev/null \
        || echo "[gpu_suite] results.tgz: tar failed" >>"$DEST/summary.txt"
    for png in "$@"; do
        [ -f "$png" ] && [ "$n" -lt 3 ] && cp "$png" "$DEST/" && n=$((n + 1))
    done
    return 0
}

ensure_importable() {  # fastssl and fastssl_kernels importable by $PY, installed offline if needed
    # pip's isolated build would fetch setuptools from an index, hence --no-build-isolation and
    # --no-index. Where pip cannot install (no setuptools, an externally managed Python), a folder
    # on PYTHONPATH linking kernels/ as fastssl_kernels gives the same imports.
    local check="import fastssl, fastssl_kernels"
    if "$PY" -c "$check" >/dev/null 2>&1; then
        record install "ok (already importable)" 0
        return
    fi
    note "fastssl_kernels is not importable: pip install -e . --no-build-isolation --no-deps --no-index"
    "$PY" -m pip install -e . --no-build-isolation --no-deps --no-index >"$WORK/install.log" 2>&1
    if "$PY" -c "$check" >>"$WORK/install.log" 2>&1; then
        record install "ok (pip install -e . offline)" 0
        return
    fi
    mkdir -p "$WORK/pypath" && ln -sfn "$PWD/kernels" "$WORK/pypath/fastssl_kernels"
    export PYTHONPATH="$PWD:$WORK/pypath${PYTHONPATH:+:$PYTHONPATH}"
    if "$PY" -c "$check" >>"$WORK/install.log" 2>&1; then
        record install "ok (pip failed, see install.log; kernels/ linked as fastssl_kernels on PYTHONPATH)" 0
    else
        record install "FAILED: fastssl_kernels not importable (install.log in results.tgz)" 1
    fi
}
