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


CHARS = "\n !',-.:;?ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"


def write_checkpoint(path, kind: str = "char") -> str:
    """A checkpoint laid out as Lightning writes one (hyperparameters, ``model.``-prefixed weights) with this
    project's tokenizer entry: a tiny random model over a char vocabulary or GPT-2's."""
    from lit_gpt_mini.model import GPT, GPTConfig

    tokenizer, vocab_size = ({"kind": "char", "chars": CHARS}, len(CHARS)) if kind == "char" else ({"kind": "gpt2"}, 50257)
    config = dict(vocab_size=vocab_size, block_size=16, n_layer=1, n_head=2, n_embd=16)
    model = GPT(GPTConfig(**config))
    class_path = "lit_gpt_mini.lit_module.CharGPT" if kind == "char" else "lit_gpt_mini.lit_module.GPT2"
    torch.save({"hyper_parameters": {"_class_path": class_path, **config},
                "state_dict": {f"model.{k}": v for k, v in model.state_dict().items()}, "tokenizer": tokenizer}, path)
    return str(path)
