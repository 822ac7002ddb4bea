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
