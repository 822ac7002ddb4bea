"""Test-only callbacks, added to configs from the command line (``--trainer.callbacks+=tests.helpers...``)."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import torch


class RecordBatches(L.Callback):
    """Saves the inputs of every training batch this rank used to ``<path>_rank<r>.pt`` when fitting ends."""

    def __init__(self, path: str = "out/batches") -> None:
        self.path = path
        self.batches: list[torch.Tensor] = []

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch, batch_idx: int) -> None:
        self.batches.append(batch[0].detach().cpu().clone())

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        torch.save(torch.stack(self.batches), f"{self.path}_rank{trainer.global_rank}.pt")


class DamageShard(L.Callback):
    """Overwrites every id of the shard at ``path`` with 65535 (size and header kept) before training batch
    ``at_batch``: a shard changed on the disk while a run reads it."""

    def __init__(self, path: str, at_batch: int = 2) -> None:
        self.path = path
        self.at_batch = at_batch

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch, batch_idx: int) -> None:
        if batch_idx == self.at_batch:
            from data_modules.shards import HEADER_BYTES

            size = Path(self.path).stat().st_size - HEADER_BYTES
            with open(self.path, "r+b") as f:
                f.seek(HEADER_BYTES)
                f.write(b"\xff" * size)
