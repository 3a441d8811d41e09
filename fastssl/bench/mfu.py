"""Model FLOPs utilisation: achieved FLOP/s as a fraction of the GPU's dense bf16 peak.

    mfu(flops, seconds, device) = flops / seconds / peak_bf16_flops(GPU name)

The peak is always the dense (no 2:4 sparsity) bf16 tensor-core figure, even for fp32 rows, so
every MFU on one GPU shares one denominator and rows stay comparable. None on CPU and on GPUs
missing from the table: a guessed peak would make a wrong number look measured.

The FLOPs come from each benchmark (its docstring says how they are counted):
`bench backbone` and `bench step` count one step with torch.utils.flop_counter.FlopCounterMode
(matmuls and convolutions, forward and backward; elementwise ops and the optimizer are not
counted), `bench loss` counts the NT-Xent matmuls analytically (`fastssl.losses.contrastive_flops`).
"""

from __future__ import annotations

from typing import Any

TFLOPS = 1e12

# (substring of torch.cuda.get_device_name, dense bf16 TFLOP/s). First match wins, so the more
# specific names (PCIe, NVL) come before the bare model.
PEAK_BF16_TFLOPS: tuple[tuple[str, float], ...] = (
    # NVIDIA H200 datasheet (nvidia.com/en-us/data-center/h200): H200 SXM BF16 Tensor Core
    # 1,979 TFLOPS "with sparsity"; dense is half.
    ("H200", 989.5),
    # NVIDIA H100 datasheet (nvidia.com/en-us/data-center/h100): BF16 Tensor Core, sparse figures
    # halved: H100 PCIe 1,513 -> 756.5, H100 NVL 1,671 -> 835.5, H100 SXM 1,979 -> 989.5.
    ("H100 PCIe", 756.5),
    ("H100 NVL", 835.5),
    ("H100", 989.5),
    # NVIDIA A100 datasheet (nvidia.com/en-us/data-center/a100): BF16 Tensor Core 312 TFLOPS
    # dense (624 with sparsity), SXM and PCIe alike.
    ("A100", 312.0),
    # NVIDIA L4 datasheet (nvidia.com/en-us/data-center/l4): BF16 Tensor Core 242 TFLOPS with
    # sparsity -> 121 dense.
    ("L4", 121.0),
    # NVIDIA Ada Lovelace architecture whitepaper, Appendix A: GeForce RTX 4090 peak BF16 Tensor
    # TFLOPS with FP32 accumulate 165.2 (330.4 with sparsity).
    ("RTX 4090", 165.2),
)


def peak_bf16_flops(gpu_name: str) -> float | None:
    """Dense bf16 FLOP/s of the GPU called `gpu_name` (torch.cuda.get_device_name), None if unknown."""
    for key, tflops in PEAK_BF16_TFLOPS:
        if key.lower() in (gpu_name or "").lower():
            return tflops * TFLOPS
    return None


def device_peak_flops(device: Any) -> float | None:
    """The peak of `device` (a torch.device or its string); None on CPU or an unknown GPU."""
    import torch

    device = torch.device(device)
    if device.type != "cuda" or not torch.cuda.is_available():
        return None
    return peak_bf16_flops(torch.cuda.get_device_name(device))


def mfu(flops: float | None, seconds: float | None, peak_flops: float | None) -> float | None:
    """Achieved FLOP/s over the peak; None when any input is missing or not positive."""
    if not flops or not seconds or not peak_flops or seconds <= 0:
        return None
    return flops / seconds / peak_flops
