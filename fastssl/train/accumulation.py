"""Gradient accumulation's shape: K micro-batches per optimizer step, and whether GradCache runs.

`--train.batch_size` stays the global batch: the loader hands each rank its batch / dp images, and
the step cuts them into K = `--train.grad_accum_steps` contiguous micro-batches of
batch / (dp x K) (torchtitan train.py: `local_batch_size // microbatch_size` micro-batches, one
optimizer step). Contiguous slices keep each image at its place in the global batch, so
per-image draws (fastssl/methods/batch_draws.py) and queue order match K = 1.

GradCache (`--train.grad_cache`, fastssl/train/grad_cache.py) is for methods whose loss couples
the samples of a batch (`SSLMethod.couples_samples`: in-batch negatives); for every other method
the loss is a mean over samples and plain accumulation of loss / K is already exact.
"""

from __future__ import annotations

import torch

from fastssl.config import Config
from fastssl.distributed import World
from fastssl.errors import FastSSLError


def data_parallel_size(world: World) -> int:
    """Ranks that split the global batch: the mesh's data-parallel size (fastssl/parallel_dims.py)."""
    return world.dims.dp_size


def micro_batch_size(cfg: Config, world: World) -> int:
    """Images per rank in one micro-batch; raises (naming the flag) where the batch does not split."""
    dp, k = data_parallel_size(world), cfg.train.grad_accum_steps
    batch = cfg.train.batch_size
    if batch % (dp * k):
        per_rank = batch // dp  # the trainer has checked that dp divides the batch
        raise FastSSLError(f"train.batch_size={batch} does not split into {k} micro-batches on each of {dp} "
                           f"rank(s); set --train.grad_accum_steps to a divisor of {per_rank} or "
                           f"--train.batch_size to a multiple of {dp * k}")
    return batch // (dp * k)


def check_accumulation(cfg: Config, world: World, method_cls: type) -> None:
    """Before any work: the micro-batch splits, is big enough for pairs, and GradCache applies."""
    micro = micro_batch_size(cfg, world)
    dp, k = data_parallel_size(world), cfg.train.grad_accum_steps
    if method_cls.needs_pairs and micro < 2:
        fix = (f"lower --train.grad_accum_steps to at most {cfg.train.batch_size // (2 * dp)}"
               if cfg.train.batch_size >= 2 * dp else f"raise --train.batch_size to at least {2 * dp * k}")
        raise FastSSLError(f"{cfg.method.name} needs at least 2 images per rank in each micro-batch, got {micro} "
                           f"(batch {cfg.train.batch_size} / ({dp} rank(s) x {k})); {fix}")
    if cfg.train.grad_cache == "on" and not method_cls.couples_samples:
        raise FastSSLError(f"--train.grad_cache=on: {cfg.method.name}'s loss does not couple samples (no in-batch "
                           f"negatives), so plain accumulation is already exact; use --train.grad_cache=auto or off")


def grad_cache_on(cfg: Config, method_cls: type) -> bool:
    """`--train.grad_cache`: auto = on when accumulating (K > 1) a loss that couples samples."""
    mode = cfg.train.grad_cache
    if mode == "auto":
        return cfg.train.grad_accum_steps > 1 and method_cls.couples_samples
    return mode == "on"


def split_micro_batches(views: list[torch.Tensor], k: int) -> list[list[torch.Tensor]]:
    """This rank's views [n, ...] each -> k micro-batches of views [n / k, ...], contiguous rows."""
    if k == 1:
        return [views]
    chunks = [v.chunk(k) for v in views]
    return [[c[j] for c in chunks] for j in range(k)]
