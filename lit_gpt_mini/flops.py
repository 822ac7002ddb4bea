"""Peak FLOP/s of one accelerator at a training precision: the denominator of MFU.

Dense bf16/fp16 tensor-core peaks of the data-centre GPUs GPT-2 recipes usually run on, from NVIDIA's datasheets
(which print the figures "with sparsity": twice these). Lightning's own table lacks the H200 as the H200 names
itself ("NVIDIA H200"), and lists sparse figures for it; everything else (other GPUs, fp32/TF32) is Lightning's.
"""

from __future__ import annotations

from typing import Optional

import torch

# (name fragments that must all appear in the lower-cased device name, dense bf16/fp16 FLOP/s); first match wins
DENSE_BF16: list[tuple[tuple[str, ...], float]] = [
    (("h200", "nvl"), 835e12),  # H200 NVL: 1,671 TFLOP/s with sparsity
    (("h200",), 989e12),  # H200 SXM (and GH200): 1,979 with sparsity
    (("h100", "nvl"), 835e12),  # H100 NVL: 1,671 with sparsity
    (("h100", "pcie"), 756e12),  # H100 PCIe: 1,513 with sparsity
    (("h100",), 989e12),  # H100 SXM ("NVIDIA H100 80GB HBM3"): 1,979 with sparsity
    (("a100",), 312e12),  # A100 SXM and PCIe: 624 with sparsity
]


def dense_bf16_peak(device_name: str) -> Optional[float]:
    """The dense bf16 (= fp16) peak FLOP/s of a GPU named ``device_name`` (as ``torch.cuda.get_device_name``
    gives it), or ``None`` when it is not in :data:`DENSE_BF16`."""
    name = device_name.lower()
    for fragments, flops in DENSE_BF16:
        if all(fragment in name for fragment in fragments):
            return flops
    return None


def peak_flops(device: torch.device, dtype: torch.dtype) -> Optional[float]:
    """Peak FLOP/s of ``device`` for matmuls in ``dtype``: this module's table for bf16/fp16 on the GPUs it lists,
    else Lightning's (``None`` where neither knows the device, e.g. CPUs)."""
    if device.type == "cuda" and dtype in (torch.bfloat16, torch.float16):
        known = dense_bf16_peak(torch.cuda.get_device_name(device))
        if known is not None:
            return known
    from lightning.fabric.utilities.throughput import get_available_flops

    flops = get_available_flops(device, dtype)
    return float(flops) if flops is not None else None


def compute_dtype(precision: str) -> torch.dtype:
    """The dtype matmuls run in under a Lightning precision setting (``bf16-mixed`` -> bfloat16, ...)."""
    if precision.startswith("bf16"):
        return torch.bfloat16
    if precision.startswith("16"):
        return torch.float16
    return torch.float32
