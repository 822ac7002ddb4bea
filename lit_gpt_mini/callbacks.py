"""Callbacks the configs use beside Lightning's own."""

from __future__ import annotations

from typing import Any, Optional

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback, ThroughputMonitor
from lightning.pytorch.utilities import rank_zero_info

from lit_gpt_mini.errors import ConfigError


def _windows(batch: Any) -> int:
    # token batches are (x, y); HellaSwag batches are dicts of (examples, 4, length) tensors
    return batch["tokens"].size(0) if isinstance(batch, dict) else batch[0].size(0)


def _tokens(batch: Any) -> int:
    return batch["tokens"].numel() if isinstance(batch, dict) else batch[0].numel()


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


class GradientAccumulation(Callback):
    """Reaches a fixed number of tokens per optimizer step, whatever the hardware, by gradient accumulation.

    ``accumulate_grad_batches = total_batch_tokens / (data.batch_size * data.block_size * world_size)``, where
    ``world_size = trainer.devices * trainer.num_nodes``. It must divide exactly; the error says so otherwise.

    Lightning counts ``trainer.val_check_interval`` (an int) in micro-batches but ``max_steps``,
    ``log_every_n_steps`` and checkpoint intervals in optimizer steps. With this callback an int
    ``val_check_interval`` is in optimizer steps too (it is multiplied by the accumulation), so a recipe reads
    the same on one GPU and on 64.

    Args:
        total_batch_tokens: Tokens per optimizer step over all devices (GPT-2/GPT-3 124M: 524,288 = 2**19).
    """

    def __init__(self, total_batch_tokens: int = 524_288) -> None:
        if total_batch_tokens < 1:
            raise ConfigError(f"total_batch_tokens must be positive, got {total_batch_tokens}")
        self.total_batch_tokens = total_batch_tokens
        self.accumulate = 1
        self._val_check_steps: Optional[int] = None

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if stage != "fit":
            return
        data = trainer.datamodule
        batch_size, block_size, world = data.batch_size, data.block_size, trainer.world_size
        micro = batch_size * block_size * world
        if self.total_batch_tokens % micro:
            raise ConfigError(
                f"total_batch_tokens ({self.total_batch_tokens}) must be a multiple of data.batch_size "
                f"({batch_size}) x data.block_size ({block_size}) x devices*nodes ({world}) = {micro} tokens per "
                f"micro-step: change data.batch_size or total_batch_tokens (powers of two divide evenly)"
            )
        self.accumulate = self.total_batch_tokens // micro
        if trainer.accumulate_grad_batches not in (1, self.accumulate):
            raise ConfigError(
                f"trainer.accumulate_grad_batches ({trainer.accumulate_grad_batches}) conflicts with "
                f"GradientAccumulation(total_batch_tokens={self.total_batch_tokens}), which sets it to "
                f"{self.accumulate}: remove one of them"
            )
        trainer.accumulate_grad_batches = self.accumulate
        if self._val_check_steps is None and isinstance(trainer.val_check_interval, int):
            self._val_check_steps = trainer.val_check_interval
        if self._val_check_steps is not None:
            trainer.val_check_interval = self._val_check_steps * self.accumulate
        rank_zero_info(
            f"Gradient accumulation: {self.total_batch_tokens:,} tokens per step = {batch_size} x {block_size} "
            f"tokens x {world} devices x {self.accumulate} micro-batches"
        )


class HellaSwagEval(Callback):
    """Scores HellaSwag every ``every_n_steps`` optimizer steps of training and logs ``hellaswag/acc`` and
    ``hellaswag/acc_norm`` (next to ``val/loss``), with the data module's ``hellaswag`` settings.

    Each rank scores its share of the examples (no padding, no repeats); the counts are summed over ranks.

    Args:
        every_n_steps: Optimizer steps between evaluations.
    """

    def __init__(self, every_n_steps: int = 250) -> None:
        if every_n_steps < 1:
            raise ConfigError(f"every_n_steps must be positive, got {every_n_steps}")
        self.every_n_steps = every_n_steps
        self._last_step = -1

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if stage != "fit":
            return
        data = trainer.datamodule
        if getattr(data, "hellaswag", None) is None:
            raise ConfigError("the HellaSwagEval callback needs data.hellaswag (a HellaSwagDataModule) in the config")
        if data.tokenizer.kind != "gpt2":
            raise ConfigError(f"HellaSwag is scored with GPT-2's vocabulary; this data uses a {data.tokenizer.kind} tokenizer")
        if trainer.is_global_zero:
            data.hellaswag.prepare_data()
        trainer.strategy.barrier()

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, *args: Any) -> None:
        # Called after every micro-batch; global_step moves once per optimizer step.
        step = trainer.global_step
        if step % self.every_n_steps or step == self._last_step:
            return
        self._last_step = step
        acc, acc_norm = self.evaluate(trainer, pl_module)
        # Straight to the loggers, once: self.log from a batch hook would repeat the value at every log step.
        if trainer.is_global_zero:
            for logger in trainer.loggers:
                logger.log_metrics({"hellaswag/acc": acc.item(), "hellaswag/acc_norm": acc_norm.item()}, step=step)

    @staticmethod
    def evaluate(trainer: L.Trainer, pl_module: L.LightningModule) -> tuple[torch.Tensor, torch.Tensor]:
        from lit_gpt_mini import hellaswag

        model = pl_module.model
        was_training = model.training
        model.eval()
        counts = torch.zeros(3, device=pl_module.device)  # examples, right by acc, right by acc_norm
        batches = trainer.datamodule.hellaswag.batches(pl_module.config.block_size, trainer.global_rank, trainer.world_size)
        for batch in batches:
            batch = {k: v.to(pl_module.device) for k, v in batch.items()}
            with trainer.precision_plugin.forward_context():
                correct, correct_norm = hellaswag.evaluate_batch(model, batch)
            counts += torch.stack([torch.tensor(len(correct), device=counts.device), correct.sum(), correct_norm.sum()])
        model.train(was_training)
        counts = trainer.strategy.reduce(counts, reduce_op="sum")
        return counts[1] / counts[0], counts[2] / counts[0]
