"""Self-supervised losses, the one public loss API.

`nt_xent` and `info_nce` take `impl="auto"|"torch"|"triton"|"chunked"` (see contrastive.py);
`contrastive_flops` gives the matmul FLOPs each implementation runs (for benchmarks).
`vicreg_loss` and `barlow_twins_loss` take their batch statistics over all ranks; `koleo_loss`
is per rank (see each module).
"""

from fastssl.losses.barlow_twins import barlow_twins_loss
from fastssl.losses.contrastive import IMPLS, TORCH_LOGITS_BUDGET_BYTES, info_nce, nt_xent, resolve_impl
from fastssl.losses.flops import contrastive_flops
from fastssl.losses.koleo import koleo_loss
from fastssl.losses.regression import byol_loss
from fastssl.losses.vicreg import VICRegLoss, vicreg_loss

__all__ = [
    "IMPLS",
    "TORCH_LOGITS_BUDGET_BYTES",
    "VICRegLoss",
    "barlow_twins_loss",
    "byol_loss",
    "contrastive_flops",
    "info_nce",
    "koleo_loss",
    "nt_xent",
    "resolve_impl",
    "vicreg_loss",
]
