# Training smoke of benchmarks/gpu_suite.sh (sourced after suite_lib.sh; uses CPU_ONLY, IMAGES,
# CIFAR, TORCHRUN, FASTSSL, WORK, PY). The suite otherwise never runs the trainer itself.
#
# `fastssl train`, ~30 steps each, of four methods under ddp, then fsdp, one GPU under torchrun:
# SimCLR ResNet-50 at 224 px (gpu-tensor backend, bf16, the Triton loss), BYOL ResNet-18 on the
# CIFAR-10 shard (32 px), MAE ViT-B at 224 px, DINO ViT-S multi-crop (2 x 224 + 10 x 96 px).
# `fastssl bench train` then reads each run's images/s (between its step-10 and step-30 records,
# start-up left out) and counts FLOPs per image (FlopCounterMode) for the MFU.
#
# Expected on the H200, per run: the steps themselves take about a second. FLOPs per image,
# fwd+bwd, counted as FlopCounterMode does (2 per multiply-add): SimCLR 2 x 24.6 G; BYOL ~9 G
# (ResNet-18 at 32 px, target forward included); MAE ~57 G (the encoder sees the 25% of tokens
# kept, plus an 8-block decoder); DINO ~125 G (2 x 27.6 G global + 10 x 5.2 G local crops, plus the
# teacher's 2 global forwards). 30 steps of 128 / 256 / 128 / 64 images: 1.9e14, 0.7e14, 2.2e14
# and 2.4e14 FLOPs, 0.2-0.7 s at 35% MFU (346 TFLOP/s). Start-up dominates: torchrun, imports,
# decoding the 334 photos (10,000 CIFAR images), cuDNN autotuning, Triton's first compile:
# ~20 s. Eight runs ~160 s, the report ~20 s (a model build and one counted step per run).

SMOKE=(--train.log_every=10 --train.max_steps=30 --train.ckpt_every_steps=1000000 --train.knn_at_end=false
       --train.progress=false --train.tensorboard=false --data.backend=gpu-tensor --data.dataset=auto)
BYOL_DATA=${CIFAR:-$IMAGES}
if [ "$CPU_ONLY" = 1 ]; then
    # Toy sizes: the same recipes and launcher, tiny networks, 4 steps on 64 images.
    SMOKE+=(--train.log_every=2 --train.max_steps=4 --train.precision=fp32 --data.dtype=fp32 --data.limit=64
            --data.num_workers=1 --train.batch_size=8 --data.image_size=16)
    SIMCLR=(--recipe simclr-resnet50-imagenet --model.name=resnet-tiny --method.loss_impl=chunked)
    BYOL=(--recipe byol-resnet18-cifar10 --model.name=resnet-tiny)
    MAE=(--recipe mae-vit-base-imagenet --model.name=vit_nano --model.patch_size=4 --method.decoder_dim=32
         --method.decoder_depth=1 --method.decoder_heads=2)
    DINO=(--recipe dino-vit-small-imagenet --model.name=vit_nano --model.patch_size=4 --aug.local_crops=2
          --aug.local_size=8 --method.out_dim=256 --method.proj_hidden_dim=64 --method.bottleneck_dim=32)
else
    SMOKE+=(--train.precision=bf16)
    SIMCLR=(--recipe simclr-resnet50-imagenet --train.batch_size=128 --method.loss_impl=triton)
    BYOL=(--recipe byol-resnet18-cifar10 --train.batch_size=256 --data.image_size=32)
    MAE=(--recipe mae-vit-base-imagenet --train.batch_size=128)
    DINO=(--recipe dino-vit-small-imagenet --train.batch_size=64)
fi

RUNS=()
train_run() {  # train_run NAME DATA OVERRIDES...: one `fastssl train` as a part of its own
    local name=$1 data=$2 out="$WORK/runs/$1"
    shift 2
    RUNS+=("$out")
    part "train-$name" 60 - "${TORCHRUN[@]}" -m fastssl train "$@" --data.path="$data" "${SMOKE[@]}" \
        --train.out="$out"
    rm -rf "$out/checkpoints"  # hundreds of MiB, nothing to read from them here
}

for strategy in ddp fsdp; do
    train_run "simclr-$strategy" "$IMAGES" "${SIMCLR[@]}" --dist.strategy=$strategy
    if [ "$CPU_ONLY" = 1 ] && [ "$strategy" = fsdp ]; then
        # ~15 s each of start-up on a 2-core CPU: the dry run checks fsdp with SimCLR and MAE only.
        skip "train-byol-$strategy" "CPU dry run: fsdp is checked with simclr and mae"
    else
        train_run "byol-$strategy" "$BYOL_DATA" "${BYOL[@]}" --dist.strategy=$strategy
    fi
    train_run "mae-$strategy" "$IMAGES" "${MAE[@]}" --dist.strategy=$strategy
    if [ "$CPU_ONLY" = 1 ] && [ "$strategy" = fsdp ]; then
        skip "train-dino-$strategy" "CPU dry run: fsdp is checked with simclr and mae"
    else
        train_run "dino-$strategy" "$IMAGES" "${DINO[@]}" --dist.strategy=$strategy
    fi
done
part train-report 60 "$WORK/train.csv" "${FASTSSL[@]}" bench train --run "${RUNS[@]}" --csv "$WORK/train.csv" \
    --plot "$WORK/train.png"
