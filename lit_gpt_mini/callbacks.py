"""Callbacks the configs use beside Lightning's own."""

from __future__ import annotations

from typing import Any, Optional

import lightning as L
from lightning.pytorch.callbacks import ThroughputMonitor


def _windows(batch: Any) -> int:
    return batch[0].size(0)


def _tokens(batch: Any) -> int:
    return batch[0].numel()


class TokenThroughput(ThroughputMonitor):
    """Lightning's ThroughputMonitor set up for token batches ``(x, y)`` of shape (B, T).

    Logs ``train/device/items_per_sec`` (tokens/s per device) and, with several devices, ``train/items_per_sec``
    (all devices), with samples/s, batches/s, FLOP/s and, where the device's peak is known, ``train/device/mfu``. Lightning knows
    the peak of common GPUs (A100, H100, ...); for any other device give ``peak_flops`` (FLOP/s of one device
    at the training precision) to get MFU.

    Args:
        peak_flops: Peak FLOP/s of one device; ``None`` asks Lightning (which knows none for CPUs).
        window_size: Number of recent batches the rates are averaged over.
    """

    def __init__(self, peak_flops: Optional[float] = None, window_size: int = 50) -> None:
        super().__init__(batch_size_fn=_windows, length_fn=_tokens, window_size=window_size)
        self.peak_flops = peak_flops

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        super().setup(trainer, pl_module, stage)
        if self.peak_flops is not None:
            self.available_flops = self.peak_flops
            for throughput in self._throughputs.values():
                throughput.available_flops = self.peak_flops
