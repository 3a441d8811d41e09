#!/usr/bin/env bash
# One node, all its GPUs (or NPROC processes): launch/torchrun.sh --recipe NAME [--section.key=value ...]
# On a CPU-only machine this runs NPROC gloo processes (default 2).
#
# The strategy is a config key, the same under every launcher:
#   launch/torchrun.sh --recipe mae-vit-base-imagenet --config launch/configs/mae-vit-base-imagenet-fsdp-1node.json
#   launch/torchrun.sh --recipe mocov3-vit-small-imagenet --dist.strategy=deepspeed --dist.zero_stage=3 --optim.name=adamw
# DeepSpeed runs under torchrun too (fastssl calls deepspeed.initialize itself; no `deepspeed` launcher).
#
# Stopping: SIGTERM, SIGINT or SIGUSR1 to this script (or to its whole process group: `timeout`,
# Ctrl-C, `kill -- -PGID`) reaches torchrun exactly once as SIGTERM; torchrun passes it to every
# rank, which checkpoint at the step they agree on. The script then exits 128 + the signal (143 for
# SIGTERM), so `launch/torchrun.sh ... && next-step` does not go on with a half-trained model.
# torchrun runs in its own session because a second SIGTERM while torchrun waits for its ranks
# makes it abandon the wait (torch.distributed.elastic raises on every signal it gets), and
# SHUTDOWN_TIMEOUT (s) is how long it waits for the stop checkpoint before SIGKILL (its default: 30).
set -uo pipefail
if [[ -z "${NPROC:-}" ]]; then
  NPROC=$(python -c "import torch; print(torch.cuda.device_count() or 2)")
fi
# shellcheck source=launch/forward_stop.sh
source "$(dirname "$0")/forward_stop.sh"
SHUTDOWN=()
if torchrun --help 2>/dev/null | grep -q -- "--shutdown[-_]timeout"; then
  SHUTDOWN=(--shutdown_timeout="${SHUTDOWN_TIMEOUT:-120}")
fi
run_forwarding_stop setsid torchrun --standalone --nproc_per_node="$NPROC" "${SHUTDOWN[@]}" -m fastssl train "$@"
