"""HellaSwag during training: a callback that scores the model every ``every_n_steps`` optimizer steps."""

from __future__ import annotations

from typing import Any, Literal, Optional

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback

from lit_gpt_mini.errors import ConfigError
from lit_gpt_mini.evals.hellaswag import HellaSwag, score
from lit_gpt_mini.lightning_private import forward_redirection


class HellaSwagEval(Callback):
    """Scores HellaSwag every ``every_n_steps`` optimizer steps of training and logs ``hellaswag/acc`` and
    ``hellaswag/acc_norm`` next to ``val/loss``: any recipe whose tokenizer is GPT-2's (FineWeb, Discord, Reddit).

    Each rank scores its share of the examples (no padding, no repeats); the counts are summed over ranks. The
    file is prepared (downloaded, tokenized) by the first process of each node, as the training data is, or by the
    first of all when the data module's ``prepare_data_per_node`` (Lightning's attribute) is False.

    Args:
        every_n_steps: Optimizer steps between evaluations; ``None``: never (the callback does nothing).
        data_dir, path, split, examples_per_batch, limit: Which examples, as in ``main.py eval``
            (:class:`~lit_gpt_mini.evals.hellaswag.HellaSwag`).
    """

    def __init__(
        self,
        every_n_steps: Optional[int] = None,
        data_dir: str = "data/hellaswag",
        path: Optional[str] = None,
        split: Literal["val", "train", "test"] = "val",
        examples_per_batch: int = 32,
        limit: Optional[int] = None,
    ) -> None:
        if every_n_steps is not None and every_n_steps < 1:
            raise ConfigError(f"hellaswag.every_n_steps must be positive (or null: never), got {every_n_steps}")
        self.every_n_steps = every_n_steps
        self.task = HellaSwag(data_dir, path, split, examples_per_batch, limit)
        self._last_step = -1

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # (after the model's setup: it holds the data's tokenizer by now)
        if self.every_n_steps is None:
            return
        kind = pl_module.tokenizer.kind if pl_module.tokenizer is not None else None
        if kind != "gpt2":
            raise ConfigError(
                f"hellaswag.every_n_steps is set, but HellaSwag is scored with GPT-2's vocabulary and this data uses a "
                f"{kind} tokenizer: set hellaswag.every_n_steps to null, or data.tokenizer.kind to gpt2"
            )
        per_node = getattr(trainer.datamodule, "prepare_data_per_node", True)
        if self.prepares_here(trainer.local_rank, trainer.global_rank, per_node):
            self.task.prepare()
        trainer.strategy.barrier()
        # every rank checks its node has the data now, rather than failing at the first evaluation
        self.task.batches(pl_module.hparams.block_size, trainer.global_rank, trainer.world_size)

    @staticmethod
    def prepares_here(local_rank: int, global_rank: int, per_node: bool) -> bool:
        """Whether this process downloads and tokenizes HellaSwag: the first of each node, as Lightning's own
        ``prepare_data`` (nodes need no shared filesystem), or the first of all when the data module's
        ``prepare_data_per_node`` is False (a shared filesystem)."""
        return local_rank == 0 if per_node else global_rank == 0

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, *args: Any) -> None:
        # Called after every micro-batch; global_step moves once per optimizer step.
        step = trainer.global_step
        if self.every_n_steps is None or step % self.every_n_steps or step == self._last_step:
            return
        self._last_step = step
        metrics = self.evaluate(trainer, pl_module)
        # Straight to the loggers, once: self.log from a batch hook would repeat the value at every log step.
        if trainer.is_global_zero:
            for logger in trainer.loggers:
                logger.log_metrics({"hellaswag/acc": metrics["acc"], "hellaswag/acc_norm": metrics["acc_norm"]},
                                   step=step)

    def evaluate(self, trainer: L.Trainer, pl_module: L.LightningModule) -> dict[str, float]:
        """``acc``, ``acc_norm`` and ``examples`` over all ranks' examples, through the strategy's wrapper (FSDP
        gathers a sharded model's weights only in its forward)."""
        model = pl_module.model
        was_training = model.training
        model.eval()
        device = pl_module.device
        wrapper = trainer.strategy.model

        def step(batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
            if wrapper is None or wrapper is pl_module:
                return pl_module.hellaswag_step(batch)
            return forward_redirection(trainer.strategy, wrapper, pl_module, "hellaswag_step", batch)

        batches = self.task.batches(pl_module.hparams.block_size, trainer.global_rank, trainer.world_size,
                                    pin_memory=device.type == "cuda")
        try:
            return score(batches, step, device, trainer.precision_plugin.forward_context,
                         lambda counts: trainer.strategy.reduce(counts, reduce_op="sum"))
        finally:
            model.train(was_training)
