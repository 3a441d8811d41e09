"""The dataset blocks recipes start from: where the images come from, at what size, into which
backbone. Each recipe adds its method, augmentation and optimiser beside the paper they cite;
these hold only what every CIFAR-10 or every ImageNet recipe sets alike."""

from __future__ import annotations

from fastssl.config import Config

# CIFAR-10's per-channel training-set statistics (as solo-learn and lightly normalise).
CIFAR10_MEAN, CIFAR10_STD = (0.4914, 0.4822, 0.4465), (0.247, 0.243, 0.261)


def cifar10(name: str, model: str) -> Config:
    """Recipe `name` on CIFAR-10: JPEG-shard npz (--data.path) at its native 32 px."""
    c = Config(recipe=name)
    c.data.dataset, c.data.image_size, c.data.num_workers = "npz", 32, 4
    c.aug.normalize_mean, c.aug.normalize_std = CIFAR10_MEAN, CIFAR10_STD
    c.model.name = model
    c.train.out = f"runs/{name}"
    return c


def imagenet(name: str, model: str, image_size: int = 224, workers: int = 8, dtype: str = "bf16") -> Config:
    """Recipe `name` on ImageNet: an ImageFolder through the auto backend (DALI on GPUs). No
    end-of-run kNN: a bank of 1.28 M features is a job for `fastssl eval knn`, not the run's tail."""
    c = Config(recipe=name)
    c.data.dataset, c.data.image_size, c.data.backend, c.data.num_workers = "folder", image_size, "auto", workers
    c.data.dtype = dtype
    c.model.name = model
    c.train.out, c.train.knn_at_end = f"runs/{name}", False
    return c


def digits(name: str, model: str, image_size: int = 16) -> Config:
    """Recipe `name` on the built-in 8x8 digits (sklearn's, no download), upscaled to `image_size`:
    the data of every `*-cpu` recipe that trains in minutes on 2 CPU cores."""
    c = Config(recipe=name)
    c.data.dataset, c.data.image_size, c.data.num_workers = "digits", image_size, 2
    c.model.name = model
    c.train.out = f"runs/{name}"
    return c
