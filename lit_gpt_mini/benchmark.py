"""A recipe's benchmark (its ``hellaswag:`` section): a multiple-choice data module scored every ``every_n_steps``
optimizer steps of training, and by ``main.py test`` beside the held-out test loss. The scoring is the model's
(``GPTModule.multiple_choice_step``), the data the data module's test dataloader: the same code as ``main.py test
--data HellaSwagDataModule``."""

from __future__ import annotations

from typing import Any, Optional

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.utilities import move_data_to_device
from torch.utils.data import DataLoader

from lit_gpt_mini.errors import ConfigError
from lit_gpt_mini.lightning_private import forward_redirection
from lit_gpt_mini.scoring import figures
from lit_gpt_mini.tokenizers import Tokenizer


def _names(data: L.LightningDataModule) -> tuple[str, str]:
    # (how the benchmark is called in a sentence, the recipe section that sets it)
    benchmark = getattr(data, "benchmark", type(data).__name__)
    return benchmark, benchmark.lower()


class BenchmarkEval(Callback):
    """Scores a multiple-choice data module (``data``, e.g. ``data_modules.hellaswag.HellaSwagDataModule``) during
    training every ``every_n_steps`` optimizer steps, logging ``<task>/acc`` and ``<task>/acc_norm`` next to
    ``val/loss``; ``main.py test`` on the same config scores it beside the test loss (:class:`WithBenchmark`).

    Each rank scores its share of the examples (no padding, no repeats); the counts are summed over ranks. The
    data is prepared (downloaded, tokenized) by the first process of each node, as the training data is, or by the
    first of all when the training data module's ``prepare_data_per_node`` (Lightning's attribute) is False.

    Args:
        every_n_steps: Optimizer steps between evaluations during training; ``None``: none during training
            (``main.py test`` still scores ``data``).
        data: The benchmark's data module; ``None``: no benchmark.
    """

    def __init__(self, every_n_steps: Optional[int] = None, data: Optional[L.LightningDataModule] = None) -> None:
        if every_n_steps is not None and every_n_steps < 1:
            raise ConfigError(f"hellaswag.every_n_steps must be positive (or null: never), got {every_n_steps}")
        if every_n_steps is not None and data is None:
            raise ConfigError(f"hellaswag.every_n_steps is {every_n_steps} but hellaswag.data is null: set hellaswag.data "
                              f"to data_modules.hellaswag.HellaSwagDataModule, or every_n_steps to null")
        self.every_n_steps = every_n_steps
        self.data = data
        self._loader: Optional[DataLoader] = None
        self._last_step = -1

    @property
    def active(self) -> bool:
        return self.every_n_steps is not None and self.data is not None

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # (after the model's setup: it holds the training data's tokenizer by now)
        if not self.active:
            return
        benchmark, section = _names(self.data)
        theirs = self.data.connect(pl_module.hparams.block_size)
        mine = pl_module.tokenizer
        if mine is None or mine.kind != theirs.kind or mine.vocab_size != theirs.vocab_size:
            kind = mine.kind if mine is not None else None
            raise ConfigError(
                f"{section}.every_n_steps is set, but {benchmark} is scored with {theirs.kind} tokens and this data "
                f"uses a {kind} tokenizer: set {section}.every_n_steps to null, or data.tokenizer.kind to {theirs.kind}"
            )
        per_node = getattr(trainer.datamodule, "prepare_data_per_node", True)
        self.data.trainer = trainer
        if self.prepares_here(trainer.local_rank, trainer.global_rank, per_node):
            self.data.prepare_data()
        trainer.strategy.barrier()
        self.data.setup("test")
        self._loader = self.data.test_dataloader()

    @staticmethod
    def prepares_here(local_rank: int, global_rank: int, per_node: bool) -> bool:
        """Whether this process downloads and tokenizes the benchmark: the first of each node, as Lightning's own
        ``prepare_data`` (nodes need no shared filesystem), or the first of all when the training data module's
        ``prepare_data_per_node`` is False (a shared filesystem)."""
        return local_rank == 0 if per_node else global_rank == 0

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, *args: Any) -> None:
        # Called after every micro-batch; global_step moves once per optimizer step.
        step = trainer.global_step
        if not self.active or step % self.every_n_steps or step == self._last_step:
            return
        self._last_step = step
        task = self._loader.dataset.task
        scored = self.evaluate(trainer, pl_module)
        # Straight to the loggers, once: self.log from a batch hook would repeat the value at every log step.
        if trainer.is_global_zero:
            for logger in trainer.loggers:
                logger.log_metrics({f"{task}/acc": scored["acc"], f"{task}/acc_norm": scored["acc_norm"]}, step=step)

    def evaluate(self, trainer: L.Trainer, pl_module: L.LightningModule) -> dict[str, float]:
        """``acc``, ``acc_norm`` and ``examples`` over all ranks' examples, each batch scored by the model's
        ``multiple_choice_step`` through the strategy's wrapper, as the test loop runs it (FSDP gathers a sharded
        model's weights only in its forward)."""
        model = pl_module.model
        was_training = model.training
        model.eval()
        device = pl_module.device
        wrapper = trainer.strategy.model
        total = torch.zeros(3, device=device)
        try:
            for batch in self._loader:
                batch = move_data_to_device(batch, device)  # from pinned memory: asynchronous
                with torch.no_grad(), trainer.precision_plugin.forward_context():
                    if wrapper is None or wrapper is pl_module:
                        total += pl_module.multiple_choice_step(batch)
                    else:
                        total += forward_redirection(trainer.strategy, wrapper, pl_module, "multiple_choice_step", batch)
            return figures(trainer.strategy.reduce(total, reduce_op="sum").tolist())
        finally:
            model.train(was_training)


class WithBenchmark(L.LightningDataModule):
    """A recipe's data module with its benchmark's, for ``main.py test --config RECIPE``: the test loop runs the
    recipe's held-out text (dataloader 0, ``test/loss``) and the benchmark (dataloader 1, ``<task>/acc`` ...).
    Anything else (training, validation, its settings) is the recipe's data module's."""

    def __init__(self, data: L.LightningDataModule, benchmark: L.LightningDataModule) -> None:
        super().__init__()
        self.data = data
        self.benchmark_data = benchmark
        self.prepare_data_per_node = getattr(data, "prepare_data_per_node", True)

    def __getattr__(self, name: str) -> Any:
        # only for what this class lacks (text_format, train_tokens_seen...): the recipe's data module's
        if name in ("data", "benchmark_data"):
            raise AttributeError(name)
        return getattr(self.data, name)

    def _attach(self) -> None:
        self.data.trainer = self.benchmark_data.trainer = self.trainer

    def prepare_data(self) -> None:
        self._attach()
        self.data.prepare_data()
        self.benchmark_data.prepare_data()

    def setup(self, stage: str) -> None:
        self._attach()
        self.data.setup(stage)
        self.benchmark_data.setup(stage)

    def connect(self, block_size: int) -> Tokenizer:
        """The recipe's tokenizer, refused (one line) when the benchmark is scored with another vocabulary."""
        mine = self.data.connect(block_size)
        theirs = self.benchmark_data.connect(block_size)
        if mine.kind != theirs.kind or mine.vocab_size != theirs.vocab_size:
            benchmark, section = _names(self.benchmark_data)
            raise ConfigError(
                f"{section}.data is set, but {benchmark} is scored with {theirs.kind} tokens and this data uses a "
                f"{mine.kind} tokenizer: set {section}.data to null, or data.tokenizer.kind to {theirs.kind}"
            )
        return mine

    def _of(self, dataloader_idx: int) -> L.LightningDataModule:
        return self.benchmark_data if dataloader_idx == 1 else self.data

    def test_dataloader(self) -> list[DataLoader]:
        return [self.data.test_dataloader(), self.benchmark_data.test_dataloader()]

    def on_before_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        return self._of(dataloader_idx).on_before_batch_transfer(batch, dataloader_idx)

    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        return self._of(dataloader_idx).on_after_batch_transfer(batch, dataloader_idx)

    def teardown(self, stage: str) -> None:
        self.data.teardown(stage)
        self.benchmark_data.teardown(stage)
