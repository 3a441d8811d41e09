#!/usr/bin/env bash
# One node, all its GPUs (or NPROC processes): launch/torchrun.sh --recipe NAME [--section.key=value ...]
# On a CPU-only machine this runs NPROC gloo processes (default 2).
#
# The strategy is a config key, the same under every launcher:
#   launch/torchrun.sh --recipe mae-vit-base-imagenet --config launch/configs/mae-vit-base-imagenet-fsdp-1node.json
#   launch/torchrun.sh --recipe mocov3-vit-small-imagenet --dist.strategy=deepspeed --dist.zero_stage=3 --optim.name=adamw
# DeepSpeed runs under torchrun too (fastssl calls deepspeed.initialize itself; no `deepspeed` launcher).
set -euo pipefail
if [[ -z "${NPROC:-}" ]]; then
  NPROC=$(python -c "import torch; print(torch.cuda.device_count() or 2)")
fi
exec torchrun --standalone --nproc_per_node="$NPROC" -m fastssl train "$@"
