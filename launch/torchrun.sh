#!/usr/bin/env bash
# One node, all its GPUs (or NPROC processes): launch/torchrun.sh --recipe NAME [--section.key=value ...]
# On a CPU-only machine this runs NPROC gloo processes (default 2).
set -euo pipefail
if [[ -z "${NPROC:-}" ]]; then
  NPROC=$(python -c "import torch; print(torch.cuda.device_count() or 2)")
fi
exec torchrun --standalone --nproc_per_node="$NPROC" -m fastssl train "$@"
