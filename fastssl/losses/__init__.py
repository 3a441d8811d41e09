"""Self-supervised losses. `nt_xent` and `info_nce` take `impl="auto"|"torch"|"triton"`."""

from fastssl.losses.contrastive import IMPLS, info_nce, nt_xent, resolve_impl
from fastssl.losses.regression import byol_loss

__all__ = ["IMPLS", "byol_loss", "info_nce", "nt_xent", "resolve_impl"]
