#!/usr/bin/env bash
# GPU suite: the GPU tests, then every benchmark at GPU sizes, all results in ONE folder.
#
#   benchmarks/gpu_suite.sh                 # from anywhere; runs in the repository root
#
# Writes CSVs, PNGs and one log per part to $OUT if set, else benchmarks/results/gpu-<UTC date>,
# then prints a summary: each part ok / FAILED (exit status) / TIMEOUT / skipped (why).
# A failing part is reported and the rest still run; the exit status is 1 if any part failed.
# Budget: under 10 minutes in all (SUITE_TOTAL_S, default 570 s); each part has its own limit
# and never runs past what is left of the total.
#
# Environment: PYTHON (default python), DATA_ROOT (default ../shared/data; loader inputs: if
# imagenet-sample/ is missing, 256 synthetic JPEGs are made in a temporary folder instead),
# FASTSSL_SUITE_ALLOW_CPU=1 (run without a GPU: only to check the script itself).
# Made for the GPU image: torch 2.11 + triton 3.6, no DALI, no DeepSpeed.

set -u
cd "$(dirname "$0")/.." || exit 2
START=$(date +%s)
TOTAL_S=${SUITE_TOTAL_S:-570}
PY=${PYTHON:-python}
DEST=${OUT:-benchmarks/results/gpu-$(date -u +%Y%m%d-%H%M)}
DATA_ROOT=${DATA_ROOT:-../shared/data}
mkdir -p "$DEST" || exit 2
SUMMARY=()
FAILED=0

note() { echo "[gpu_suite] $*" | tee -a "$DEST/suite.log"; }

skip() {  # skip NAME WHY
    SUMMARY+=("$(printf '%-16s skipped: %s' "$1" "$2")")
    note "$1 skipped: $2"
}

part() {  # part NAME LIMIT_S CMD... : run CMD with a time limit, log it, record the outcome
    local name=$1 limit=$2 left rc t0
    shift 2
    left=$((TOTAL_S - ($(date +%s) - START)))
    if [ "$left" -lt 20 ]; then
        skip "$name" "suite time budget (${TOTAL_S} s) spent"
        return
    fi
    [ "$limit" -gt "$left" ] && limit=$left
    note "=== $name (limit ${limit} s): $*"
    t0=$(date +%s)
    timeout --kill-after=15 "$limit" "$@" 2>&1 | tee "$DEST/$name.log"
    rc=${PIPESTATUS[0]}
    local took=$(($(date +%s) - t0))
    if [ "$rc" -eq 0 ]; then
        SUMMARY+=("$(printf '%-16s ok (%d s)' "$name" "$took")")
    elif [ "$rc" -eq 124 ] || [ "$rc" -eq 137 ]; then
        SUMMARY+=("$(printf '%-16s TIMEOUT after %d s (partial results kept)' "$name" "$took")")
        FAILED=1
    else
        SUMMARY+=("$(printf '%-16s FAILED, exit status %d (%d s; see %s/%s.log)' "$name" "$rc" "$took" "$DEST" "$name")")
        FAILED=1
    fi
}

has_module() { "$PY" -c "import $1" >/dev/null 2>&1; }

# --- set-up --------------------------------------------------------------------------------
if ! has_module fastssl; then
    note "fastssl is not importable: pip install -e . --no-deps"
    "$PY" -m pip install -q -e . --no-deps 2>&1 | tail -3 || true
    has_module fastssl || { note "fastssl still not importable; giving up"; exit 2; }
fi
if ! "$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" 2>/dev/null; then
    if [ "${FASTSSL_SUITE_ALLOW_CPU:-0}" != "1" ]; then
        note "no CUDA GPU visible: run this on the GPU machine (FASTSSL_SUITE_ALLOW_CPU=1 to check the script on CPU)"
        exit 2
    fi
    note "no CUDA GPU: FASTSSL_SUITE_ALLOW_CPU=1, running at toy sizes"
    CPU_ONLY=1
else
    CPU_ONLY=0
fi
{
    nvidia-smi 2>/dev/null || echo "nvidia-smi: not available"
    "$PY" -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda)"
    "$PY" -m pip list 2>/dev/null | grep -iE '^(torch|triton|nvidia-dali|deepspeed|timm) ' || true
    git rev-parse --short HEAD 2>/dev/null || echo "commit: unknown"
} >"$DEST/environment.txt" 2>&1
note "results go to $DEST"

FASTSSL=("$PY" -m fastssl)

# --- 1. GPU tests ----------------------------------------------------------------------------
if [ "$CPU_ONLY" = 1 ]; then
    skip tests "no GPU (the CPU suite runs them)"
else
    part tests 120 env FASTSSL_TEST_GPU=1 "$PY" -m pytest -q -x -p no:cacheprovider tests/kernels tests/losses -m "not slow"
fi

# --- 2. loss providers -----------------------------------------------------------------------
if [ "$CPU_ONLY" = 1 ]; then
    part loss 60 "${FASTSSL[@]}" bench loss --sizes 64,128 --dims 8 --repeats 1 --verify-max-s 0 \
        --csv "$DEST/loss.csv"
else
    # bf16 over 2N up to 1M; fp32 (3xTF32 in the kernel) up to 262k. The torch reference stops
    # where its (2N)^2 logits are predicted to exceed the 40 GiB budget.
    part loss-bf16 120 "${FASTSSL[@]}" bench loss --sizes 4096,16384,65536,262144,1048576 --dims 128 \
        --dtype bf16 --mem-budget-mb 40960 --max-case-s 10 --verify-max-s 20 --csv "$DEST/loss.csv" \
        --plot "$DEST/loss-bf16.png"
    part loss-fp32 75 "${FASTSSL[@]}" bench loss --sizes 4096,16384,65536,262144 --dims 64,128 \
        --dtype fp32 --mem-budget-mb 40960 --max-case-s 10 --verify-max-s 20 --csv "$DEST/loss.csv" \
        --plot "$DEST/loss-fp32.png"
fi

# --- 3. backbones ----------------------------------------------------------------------------
if [ "$CPU_ONLY" = 1 ]; then
    part backbone 60 "${FASTSSL[@]}" bench backbone --models resnet-tiny --image-size 16 --batch 2 \
        --repeats 1 --csv "$DEST/backbone.csv"
else
    part backbone 80 "${FASTSSL[@]}" bench backbone --models resnet18-cifar,resnet18,resnet50,vit_small,vit_base \
        --batch 128 --amp bf16 --repeats 10 --csv "$DEST/backbone.csv"
fi

# --- 4. data loaders -------------------------------------------------------------------------
if ! has_module nvidia.dali; then
    skip loader-dali "DALI not installed: the dali and dali-cpu rows are missing"
fi
IMAGES="$DATA_ROOT/imagenet-sample"
if [ ! -d "$IMAGES" ]; then
    IMAGES=$(mktemp -d)
    note "no $DATA_ROOT/imagenet-sample: loader runs on 256 synthetic 500x375 JPEGs in $IMAGES"
    "$PY" - "$IMAGES" <<'EOF'
import sys, numpy as np
from PIL import Image
rng = np.random.default_rng(0)
for i in range(256):
    Image.fromarray(rng.integers(0, 255, (375, 500, 3), dtype=np.uint8)).save(f"{sys.argv[1]}/img_{i:03d}.jpg", quality=90)
EOF
fi
BACKENDS=torch,gpu-tensor,dali,dali-cpu
if [ "$CPU_ONLY" = 1 ]; then
    part loader 60 "${FASTSSL[@]}" bench loader --data "$IMAGES" --backend torch --image-size 32 --batch 8 \
        --steps 2 --repeats 1 --csv "$DEST/loader.csv"
else
    part loader-224 60 "${FASTSSL[@]}" bench loader --data "$IMAGES" --backend "$BACKENDS" --image-size 224 \
        --batch 128 --steps 10 --repeats 3 --csv "$DEST/loader.csv" --plot "$DEST/loader-224.png"
    if [ -d "$DATA_ROOT/cifar10" ]; then
        part loader-32 45 "${FASTSSL[@]}" bench loader --data "$DATA_ROOT/cifar10" --backend "$BACKENDS" \
            --image-size 32 --batch 512 --limit 20000 --steps 10 --repeats 3 --csv "$DEST/loader.csv" \
            --plot "$DEST/loader-32.png"
    else
        skip loader-32 "no $DATA_ROOT/cifar10"
    fi
fi

# --- 5. training step per strategy (one process: each strategy on a 1-rank group) -------------
STRATEGIES=ddp,fsdp
if has_module deepspeed; then
    STRATEGIES=$STRATEGIES,zero1,zero2,zero3
else
    skip step-zero "DeepSpeed not installed: no zero1/zero2/zero3 rows in bench step"
fi
if ! "${FASTSSL[@]}" bench step --help >/dev/null 2>&1; then
    skip step "\`fastssl bench step\` does not exist in this checkout"
elif [ "$CPU_ONLY" = 1 ]; then
    skip step "no GPU (a CPU run of it belongs to the CPU README run)"
else
    part step 90 "${FASTSSL[@]}" bench step --strategy "$STRATEGIES" --model resnet50 --image-size 224 \
        --batch 64 --csv "$DEST/step.csv"
fi

# --- summary ---------------------------------------------------------------------------------
{
    echo "gpu_suite summary ($(($(date +%s) - START)) s in all; results in $DEST):"
    printf '  %s\n' "${SUMMARY[@]}"
} | tee "$DEST/summary.txt"
exit "$FAILED"
