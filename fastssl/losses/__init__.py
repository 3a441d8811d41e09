"""Self-supervised losses, the one public loss API.

`nt_xent` and `info_nce` take `impl="auto"|"torch"|"triton"|"chunked"` (see contrastive.py);
`contrastive_flops` gives the matmul FLOPs each implementation runs (for benchmarks).
"""

from fastssl.losses.contrastive import IMPLS, TORCH_LOGITS_BUDGET_BYTES, info_nce, nt_xent, resolve_impl
from fastssl.losses.flops import contrastive_flops
from fastssl.losses.regression import byol_loss

__all__ = [
    "IMPLS",
    "TORCH_LOGITS_BUDGET_BYTES",
    "byol_loss",
    "contrastive_flops",
    "info_nce",
    "nt_xent",
    "resolve_impl",
]
