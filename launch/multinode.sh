#!/usr/bin/env bash
# Run the same command on every node (e.g. with pdsh or by hand):
#   NNODES=4 MASTER_ADDR=node0 launch/multinode.sh --recipe simclr-resnet50-imagenet --data.path /data/imagenet/train
# Rendezvous uses torchrun's c10d backend on MASTER_ADDR:MASTER_PORT; nodes may join in any order.
# Sharded, e.g. ZeRO-2 on 4 nodes:
#   NNODES=4 MASTER_ADDR=node0 launch/multinode.sh --recipe mocov3-vit-small-imagenet \
#     --config launch/configs/mocov3-vit-small-imagenet-zero2-4node.json
# Checkpoints (checkpoints/step_N/, one shard file per rank) must be on a file system all nodes share.
set -euo pipefail
: "${NNODES:?set NNODES to the number of nodes}"
: "${MASTER_ADDR:?set MASTER_ADDR to the first node\'s hostname}"
MASTER_PORT=${MASTER_PORT:-29500}
NPROC=${NPROC:-$(python -c "import torch; print(torch.cuda.device_count() or 1)")}
RDZV_ID=${RDZV_ID:-fastssl-$(date +%Y%m%d)}
exec torchrun --nnodes="$NNODES" --nproc_per_node="$NPROC" \
  --rdzv_backend=c10d --rdzv_endpoint="$MASTER_ADDR:$MASTER_PORT" --rdzv_id="$RDZV_ID" \
  --max_restarts="${MAX_RESTARTS:-0}" \
  -m fastssl train "$@"
