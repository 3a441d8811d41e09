"""`--data.dtype` names -> torch dtypes: what the GPU backends hand the model."""

from __future__ import annotations

import torch

from fastssl.errors import FastSSLError

OUTPUT_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def output_dtype(name: str) -> torch.dtype:
    """The torch dtype for `--data.dtype=name`; an unknown name names the valid ones."""
    if name not in OUTPUT_DTYPES:
        raise FastSSLError(f"--data.dtype={name!r} is not one of {', '.join(OUTPUT_DTYPES)}; fix --data.dtype")
    return OUTPUT_DTYPES[name]
