#!/usr/bin/env bash
# GPU suite: GPU tests, a training smoke, then the benchmarks at GPU sizes; results in ONE folder.
#
#   benchmarks/prepare_gpu_suite.sh         # here, before the copy: data (DATA_ROOT) + COMMIT
#   benchmarks/gpu_suite.sh                 # there, from anywhere; runs in the repository root
#
# $OUT (else benchmarks/results/gpu-<UTC date>) receives at most 5 files, under the 8 the GPU
# machine sends back: summary.txt, results.tgz (logs, CSVs, run metrics, environment.txt: the
# scratch folder, checkpoints left out) and up to 3 PNGs. The summary names every part: ok /
# FAILED (exit status, or failed rows in its CSV) / TIMEOUT / skipped (why). A failing part is
# reported and the rest still run; the exit status is 1 if any part failed.
#
# Parts, most important first (a part that would start with < 20 s of the budget left is
# skipped): install check, GPU tests, training smoke, bench loss, bench backbone + step, loaders.
# Budget: SUITE_TOTAL_S (default 540 s: 9 minutes, one command may run 10); each part has its
# own `timeout`, never longer than what is left.
#
# Environment: PYTHON (default python3), DATA_ROOT (default benchmarks/suite-data, the carried
# copy prepare_gpu_suite.sh makes: imagenet-sample/ and cifar10/train-0.npz, 45 MB; missing
# images are replaced by 256 synthetic JPEGs, a missing CIFAR shard skips what needs it),
# FASTSSL_COMMIT (commit stamp when the copy has no .git; else a COMMIT file at the root),
# FASTSSL_SUITE_ALLOW_CPU=1 (no GPU: the same parts at toy sizes, to check the script itself).
# Made for the GPU image: torch 2.11 + triton 3.6, no DALI, no DeepSpeed, no network.

set -u
cd "$(dirname "$0")/.." || exit 2
START=$(date +%s)
TOTAL_S=${SUITE_TOTAL_S:-540}
PY=${PYTHON:-$(command -v python3 || command -v python)}
DEST=${OUT:-benchmarks/results/gpu-$(date -u +%Y%m%d-%H%M)}
DATA_ROOT=${DATA_ROOT:-benchmarks/suite-data}
mkdir -p "$DEST" || exit 2
WORK=$(mktemp -d "${TMPDIR:-/tmp}/gpu_suite.XXXXXX") || exit 2
export PYTHONUNBUFFERED=1  # logs of a part killed by its time limit keep their last lines
# shellcheck source=benchmarks/suite_lib.sh
source benchmarks/suite_lib.sh
PLOTS=("$WORK/loss-bf16.png" "$WORK/train.png" "$WORK/backbone.png")
trap 'pack_results "${PLOTS[@]}"; rm -rf "$WORK"' EXIT
trap 'note "stopped by a signal"; exit 1' TERM INT

has_module() { "$PY" -c "import $1" >/dev/null 2>&1; }

# --- set-up: GPU or not, the package importable, the environment -------------------------------
if "$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" 2>/dev/null; then
    CPU_ONLY=0
elif [ "${FASTSSL_SUITE_ALLOW_CPU:-0}" = "1" ]; then
    CPU_ONLY=1
    note "no CUDA GPU: FASTSSL_SUITE_ALLOW_CPU=1, running every part at toy sizes"
else
    note "no CUDA GPU visible: run this on the GPU machine (FASTSSL_SUITE_ALLOW_CPU=1 to check the script on CPU)"
    trap - EXIT
    rm -rf "$WORK"
    exit 2
fi

# The copy is not installed there: `fastssl` imports from the root but `fastssl_kernels` (the
# kernels/ folder, mapped by pyproject) does not (suite_lib.sh: ensure_importable).
ensure_importable
{
    nvidia-smi 2>/dev/null || echo "nvidia-smi: not available"
    "$PY" -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda)"
    "$PY" -m pip list 2>/dev/null | grep -iE '^(torch|triton|nvidia-dali|deepspeed|timm) ' || true
    "$PY" -c "from fastssl.bench.harness import source_commit; print('commit', source_commit())"
} >"$WORK/environment.txt" 2>&1
note "results go to $DEST (scratch $WORK)"
FASTSSL=("$PY" -m fastssl)
TORCHRUN=("$PY" -m torch.distributed.run --standalone --nproc_per_node=1)

# Data: the carried copy, else synthetic JPEGs (the rates then say nothing about real photos).
IMAGES="$DATA_ROOT/imagenet-sample"
if [ ! -d "$IMAGES" ]; then
    IMAGES="$WORK/synthetic-images"
    mkdir -p "$IMAGES"
    note "no $DATA_ROOT/imagenet-sample: 256 synthetic 500x375 JPEGs in $IMAGES instead"
    "$PY" - "$IMAGES" <<'EOF'
import sys, numpy as np
from PIL import Image
rng = np.random.default_rng(0)
for i in range(256):
    Image.fromarray(rng.integers(0, 255, (375, 500, 3), dtype=np.uint8)).save(f"{sys.argv[1]}/img_{i:03d}.jpg", quality=90)
EOF
fi
CIFAR="$DATA_ROOT/cifar10"
[ -d "$CIFAR" ] || CIFAR=""

# --- 1. GPU tests: kernels and losses only -------------------------------------------------------
# 284 tests of tests/kernels + tests/losses minus the AOT compiles (test_aot_compile.py: ptxas
# per variant, minutes) and the gloo tests (test_contrastive_distributed.py, 2 CPU processes).
# Expected ~60-90 s on the H200: sub-millisecond GPU work per test, dominated by ~30 Triton JIT
# compiles of 1-2 s each.
TESTS=(tests/kernels tests/losses --ignore=tests/kernels/test_aot_compile.py
       --ignore=tests/losses/test_contrastive_distributed.py -m "not slow and not distributed")
if [ "$CPU_ONLY" = 1 ]; then  # the interpreter would take the whole budget: one small file
    part tests 120 - "$PY" -m pytest -q -p no:cacheprovider tests/kernels/test_kernel_configs.py
else
    part tests 110 - env FASTSSL_TEST_GPU=1 "$PY" -m pytest -q -p no:cacheprovider "${TESTS[@]}"
fi

# --- 2. training smoke: `fastssl train` under torchrun, ddp then fsdp ------------------------------
source benchmarks/suite_train.sh

# --- 3. loss providers: Triton vs torch vs chunked -----------------------------------------------
# bf16, d = 128: Triton fwd+bwd is 3 passes of 2 (2N)^2 d FLOPs: 8.4e14 at 2N = 1,048,576, ~2-3 s
# at 300-400 TFLOP/s, ~20 s with fwd, repeats and the memory run; smaller sizes add ~10%. torch
# stops where its (2N)^2 logits pass the 40 GiB budget (2N = 65,536 runs, 262,144 is skipped).
# Chunked runs (2N / 2048)^2 / 2 tiles of 2048^2 from Python, ~70-100 us each (launch- and
# memory-bound), three passes for fwd+bwd: ~2 s at 262,144 (8k tiles) but ~30 s at 1,048,576
# (131k tiles), ~70 s with fwd and the memory run: past the part's limit, so it stops at 262,144.
# fp32 (3xTF32) to 262,144, d = 128: 5.3e13 FLOPs, ~0.4 s a call. Expected ~60 s + ~30 s.
if [ "$CPU_ONLY" = 1 ]; then
    # One fresh process per case measures CPU memory (~8 s each here): two cases.
    part loss 60 "$WORK/loss.csv" "${FASTSSL[@]}" bench loss --sizes 64 --dims 8 --repeats 1 \
        --providers torch,chunked --verify-max-s 0 --csv "$WORK/loss.csv" \
        --plot "$WORK/loss-bf16.png"
else
    part loss-bf16 110 "$WORK/loss.csv" "${FASTSSL[@]}" bench loss --sizes 4096,16384,65536,262144,1048576 \
        --dims 128 --dtype bf16 --max-two-n chunked=262144 --mem-budget-mb 40960 --max-case-s 10 \
        --verify-max-s 20 --csv "$WORK/loss.csv" --plot "$WORK/loss-bf16.png"
    part loss-fp32 60 "$WORK/loss.csv" "${FASTSSL[@]}" bench loss --sizes 4096,16384,65536,262144 --dims 128 \
        --dtype fp32 --mem-budget-mb 40960 --max-case-s 8 --verify-max-s 10 --csv "$WORK/loss.csv" \
        --plot "$WORK/loss-fp32.png"
fi

# --- 4. backbone and training step, with MFU ------------------------------------------------------
# Backbones at batch 128, bf16, fwd+bwd (FLOPs/image: resnet50 24.6 G, vit_base ~105 G at 224 px):
# 128 x 105 G = 13.4 TFLOP a step, ~40 ms at 35% MFU; 10 repeats, FLOP count, memory run and
# cuDNN autotuning: ~5 s a model, ~30 s for 5. Step: resnet50 at 224, batch 64, SimCLR (2 views,
# 3.2 TFLOP a step), ddp and fsdp plus the backbone-alone baseline: ~15 s + ~15 s start-up.
if [ "$CPU_ONLY" = 1 ]; then
    part backbone 60 "$WORK/backbone.csv" "${FASTSSL[@]}" bench backbone --models resnet-tiny --image-size 16 \
        --batch 2 --repeats 1 --csv "$WORK/backbone.csv"
    part step 90 "$WORK/step.csv" "${TORCHRUN[@]}" -m fastssl bench step --strategy ddp,fsdp --model resnet-tiny \
        --image-size 16 --batch 4 --warmup 2 --repeats 1 --csv "$WORK/step.csv"
else
    part backbone 60 "$WORK/backbone.csv" "${FASTSSL[@]}" bench backbone \
        --models resnet18-cifar,resnet18,resnet50,vit_small,vit_base --batch 128 --amp bf16 --repeats 10 \
        --csv "$WORK/backbone.csv"
    part step 60 "$WORK/step.csv" "${TORCHRUN[@]}" -m fastssl bench step --strategy ddp,fsdp --model resnet50 \
        --image-size 224 --batch 64 --warmup 3 --repeats 5 --csv "$WORK/step.csv"
fi
has_module deepspeed || skip step-zero "DeepSpeed not installed: no zero1/zero2/zero3 rows in bench step"

# --- 5. data loaders -------------------------------------------------------------------------------
# CPU-bound (JPEG decode on 16 cores): 40 batches of 128 at 224 px per backend, ~1,500 images/s
# for torch: ~5 s a backend plus worker start-up; 32 px: 40 batches of 512 from one shard.
has_module nvidia.dali || skip loader-dali "DALI not installed: no dali / dali-cpu rows"
BACKENDS=torch,gpu-tensor,dali,dali-cpu
if [ "$CPU_ONLY" = 1 ]; then
    part loader 60 "$WORK/loader.csv" "${FASTSSL[@]}" bench loader --data "$IMAGES" --backend torch \
        --image-size 32 --batch 8 --steps 2 --repeats 1 --workers 1 --limit 64 --csv "$WORK/loader.csv"
else
    part loader-224 45 "$WORK/loader.csv" "${FASTSSL[@]}" bench loader --data "$IMAGES" --backend "$BACKENDS" \
        --image-size 224 --batch 128 --steps 10 --repeats 3 --csv "$WORK/loader.csv" --plot "$WORK/loader-224.png"
    if [ -n "$CIFAR" ]; then
        part loader-32 30 "$WORK/loader.csv" "${FASTSSL[@]}" bench loader --data "$CIFAR" --backend "$BACKENDS" \
            --image-size 32 --batch 512 --steps 10 --repeats 3 --csv "$WORK/loader.csv" --plot "$WORK/loader-32.png"
    else
        skip loader-32 "no $DATA_ROOT/cifar10 (benchmarks/prepare_gpu_suite.sh copies one shard)"
    fi
fi
exit "$FAILED"  # the EXIT trap writes summary.txt and results.tgz
