#!/usr/bin/env bash
# Before copying the working tree to the GPU machine (which gets the tree, not the repository,
# and no network): put the data the suite reads into the tree, and stamp the commit.
#
#   benchmarks/prepare_gpu_suite.sh [SHARED_DATA]     # default ../shared/data
#
# Writes benchmarks/suite-data/ (ignored by git; name it in the copy's carry list):
# imagenet-sample/ (334 photos, 35 MB) and cifar10/train-0.npz (one 10,000-image shard, 9 MB),
# 45 MB of the 64 MiB a copy may hold. Writes COMMIT at the root (HEAD's short hash, "+dirty"
# when tracked files differ), which the suite's provenance reads where .git is absent.
set -eu
cd "$(dirname "$0")/.."
SRC=${1:-../shared/data}
DEST=benchmarks/suite-data
mkdir -p "$DEST/cifar10"
rm -rf "$DEST/imagenet-sample"
cp -r "$SRC/imagenet-sample" "$DEST/imagenet-sample"
cp "$SRC/cifar10/train-0.npz" "$DEST/cifar10/train-0.npz"
chmod -R u+w "$DEST"
commit=$(git rev-parse --short HEAD)
git diff --quiet HEAD -- 2>/dev/null || commit="$commit+dirty"
echo "$commit" >COMMIT
du -sh "$DEST"
echo "COMMIT: $commit"
