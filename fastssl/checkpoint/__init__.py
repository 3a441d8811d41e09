"""Checkpoints: distributed (DCP) saving and loading, their folder layout, and export.

Both `fastssl.train` (saving, resuming) and `fastssl.eval` (loading for evaluation) import this
package; it imports neither, so evaluation never depends on the training code.

- `layout`: the run folder, atomic publication of `checkpoints/step_N/`, the last K kept;
- `dcp_io`: the one state-dict layout every strategy writes, collective save and load, and
  single-process reading;
- `compat`: which config changes a resume accepts;
- `pretrained`: a checkpoint's method rebuilt for evaluation;
- `export`: `fastssl export` (the backbone's timm state_dict plus the config that rebuilds it) and
  `load_backbone`; `timm_spec`: each backbone's timm name and arguments; `model_card`: the hf card.
"""

from fastssl.checkpoint.compat import check_resumable
from fastssl.checkpoint.dcp_io import (
    FORMAT,
    has_optimizer_state,
    load_checkpoint,
    load_model_weights,
    read_tensors,
    read_train_state,
    save_checkpoint,
)
from fastssl.checkpoint.layout import (
    atomic_write_text,
    checkpoint_dir,
    latest_checkpoint,
    list_checkpoints,
    resolve_checkpoint,
    step_of,
)
from fastssl.checkpoint.pretrained import load_pretrained, read_config
from fastssl.checkpoint.rng import rng_state, set_rng_state

__all__ = [
    "FORMAT", "atomic_write_text", "check_resumable", "checkpoint_dir", "has_optimizer_state",
    "latest_checkpoint", "list_checkpoints", "load_checkpoint", "load_model_weights", "load_pretrained", "read_config", "read_tensors",
    "read_train_state", "resolve_checkpoint", "rng_state", "save_checkpoint", "set_rng_state", "step_of",
]
