"""`--model.init=PATH`: continue pretraining from released or exported backbone weights.

PATH is one of
- a timm `state_dict` file (`torch.save(timm_model.state_dict(), PATH)`; a `{"state_dict": ...}`
  or `{"model": ...}` wrapper, and `module.` prefixes from DDP, are unwrapped);
- a `fastssl export` file (timm key names, written by fastssl/checkpoint/export.py);
- a fastssl checkpoint or run folder (its online backbone).

Only the backbone's trunk is initialised; tensors are matched by name and shape, and what did not
match is counted, not listed (a timm ImageNet file brings its classifier, which the trunk has not).
A ViT position embedding of another grid is resampled bicubically (timm's
`resample_abs_pos_embed`), so 224 px weights continue at another image size. The EMA targets
(`momentum_pairs`) start from the same weights, as they start as copies of the online modules.

Unlike `--resume`, the step, optimizer state and schedule start afresh: this is a new run whose
backbone starts where another one ended (dinov2#431, dinov3#141).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from fastssl.checkpoint.dcp_io import read_tensors
from fastssl.checkpoint.layout import TRAIN_STATE, is_single_file_checkpoint
from fastssl.errors import FastSSLError
from fastssl.methods.base import SSLMethod

_WRAPPERS = ("state_dict", "model", "module")


@dataclass
class InitReport:
    path: str
    loaded: int
    missing: int
    unexpected: int
    reshaped: int  # position embeddings resampled to this run's grid
    mismatched: int  # same name, another shape

    def line(self) -> str:
        return (f"fastssl: backbone initialised from {self.path}: {self.loaded} tensors loaded"
                f" ({self.reshaped} resampled), {self.missing} missing, {self.unexpected} unexpected,"
                f" {self.mismatched} of another shape")


def read_backbone_weights(path: str | Path) -> dict[str, torch.Tensor]:
    """{timm key: tensor} from a state_dict / export file or a fastssl checkpoint (see module docstring)."""
    p = Path(path)
    if not p.exists():
        raise FastSSLError(f"--model.init={path} does not exist; point it at a timm state_dict, a `fastssl export` "
                           f"file or a fastssl checkpoint")
    if p.is_dir() or (p.parent / TRAIN_STATE).exists() or is_single_file_checkpoint(p):  # the last: refused there
        return read_tensors(p, "model.backbone.trunk.")
    try:
        sd = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any unreadable file gets the same one-line answer
        raise FastSSLError(f"--model.init={path} is not a readable torch file ({type(e).__name__}); pass a "
                           f"state_dict saved with torch.save") from None
    while isinstance(sd, dict) and len(sd) == 1 and next(iter(sd)) in _WRAPPERS:
        sd = next(iter(sd.values()))
    for key in _WRAPPERS[:2]:
        if isinstance(sd, dict) and isinstance(sd.get(key), dict):
            sd = sd[key]
    if not isinstance(sd, dict) or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise FastSSLError(f"--model.init={path} holds no state_dict of tensors; save one with "
                           f"torch.save(model.state_dict(), PATH) or use `fastssl export`")
    return {k.removeprefix("module."): v for k, v in sd.items()}


def _fit_pos_embed(src: torch.Tensor, dst: torch.Tensor, trunk: torch.nn.Module) -> torch.Tensor | None:
    """`src` resampled to `dst`'s patch grid, or None when the two are not the same kind of table."""
    from timm.layers import resample_abs_pos_embed

    prefix = int(getattr(trunk, "num_prefix_tokens", 1))
    if src.dim() != 3 or dst.dim() != 3 or src.shape[-1] != dst.shape[-1]:
        return None
    n_src, n_dst = src.shape[1] - prefix, dst.shape[1] - prefix
    g_src, g_dst = int(round(n_src ** 0.5)), int(round(n_dst ** 0.5))
    if g_src * g_src != n_src or g_dst * g_dst != n_dst:
        return None
    return resample_abs_pos_embed(src, new_size=[g_dst, g_dst], old_size=[g_src, g_src], num_prefix_tokens=prefix)


@torch.no_grad()
def init_backbone(method: SSLMethod, path: str | Path, model_name: str) -> InitReport:
    """Load the matching tensors of PATH into `method.backbone`'s trunk, then into its EMA copies."""
    trunk = method.backbone.trunk
    own = trunk.state_dict()
    given = read_backbone_weights(path)
    take: dict[str, torch.Tensor] = {}
    reshaped = mismatched = 0
    for key, value in given.items():
        if key not in own:
            continue
        if value.shape != own[key].shape:
            fitted = _fit_pos_embed(value, own[key], trunk) if key.endswith("pos_embed") else None
            if fitted is None:
                mismatched += 1
                continue
            value, reshaped = fitted, reshaped + 1
        take[key] = value.to(own[key].dtype)
    if not take:
        sample = ", ".join(list(given)[:3])
        raise FastSSLError(f"--model.init={path} matches none of --model.name={model_name}'s {len(own)} weights "
                           f"(its keys look like {sample}); pass weights of that architecture or change --model.name")
    trunk.load_state_dict(take, strict=False)
    for online, target in method.momentum_pairs():
        if online is method.backbone:
            target.load_state_dict(online.state_dict())
    return InitReport(str(path), len(take), len(own) - len(take), sum(k not in own for k in given), reshaped,
                      mismatched)
