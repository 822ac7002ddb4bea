"""Callbacks the configs use beside Lightning's own."""

from __future__ import annotations

import math
import random
from typing import Any, Optional

import lightning as L
import numpy as np
import torch
from lightning.pytorch.callbacks import Callback, ModelCheckpoint, ThroughputMonitor
from lightning.pytorch.loggers import TensorBoardLogger
from lightning.pytorch.strategies import FSDPStrategy
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn

from lit_gpt_mini.errors import ConfigError, DivergenceError


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
        if window_size < 2:  # a rate needs two points in time
            raise ConfigError(f"TokenThroughput's window_size is {window_size}; it must be at least 2")
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


class SampleText(Callback):
    """After each validation during training, samples a continuation of a fixed prompt and logs it to
    TensorBoard (``samples``, in the Text tab), so the curves come with what the model writes.

    Runs on rank 0 only (the weights are the same on every rank), from the same seed each time.

    Args:
        prompt: The text to continue (encoded with the data's tokenizer).
        max_new_tokens: Tokens to sample.
        temperature, top_k: As in ``main.py generate``.
        seed: Seed of the sampler.
    """

    def __init__(
        self, prompt: str = "\n", max_new_tokens: int = 200, temperature: float = 0.8, top_k: Optional[int] = 200,
        seed: int = 1337,
    ) -> None:
        self.prompt = prompt
        self.max_new_tokens = max_new_tokens
        self.temperature = temperature
        self.top_k = top_k
        self.seed = seed

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking or not trainer.is_global_zero or pl_module.tokenizer is None:
            return
        if isinstance(trainer.strategy, FSDPStrategy):
            return  # sharded weights: rank 0 alone cannot run the model
        try:
            ids = pl_module.tokenizer.encode(self.prompt)
        except ValueError as e:
            raise ConfigError(f"SampleText's prompt cannot be encoded by the data's tokenizer: {e}") from None
        model = pl_module.model
        was_training = model.training
        model.eval()
        generator = torch.Generator(device=pl_module.device).manual_seed(self.seed)
        idx = torch.tensor([ids], dtype=torch.long, device=pl_module.device)
        with trainer.precision_plugin.forward_context():
            out = model.generate(idx, self.max_new_tokens, self.temperature, self.top_k, generator=generator)
        model.train(was_training)
        text = pl_module.tokenizer.decode(out[0].tolist())
        for logger in trainer.loggers:
            if isinstance(logger, TensorBoardLogger):
                # indented: TensorBoard renders Markdown, and a code block keeps the line breaks
                logger.experiment.add_text("samples", "    " + text.replace("\n", "\n    "), trainer.global_step)


class StopOnNonFinite(Callback):
    """Stops the run with one clear error when the loss is NaN or infinite: training diverged.

    Reading a loss that lives on a GPU makes the host wait for the device, so the training loss is checked
    every ``every_n_steps`` optimizer steps, not after every micro-batch. A divergence is not missed in
    between: once a loss is NaN the weights are NaN, and every later loss is too. The validation loss is
    checked after every validation, and the last training loss when training ends, so a diverged run never
    ends with exit status 0 (nor writes its final checkpoint: this callback runs before the checkpoints').

    Args:
        every_n_steps: Optimizer steps between checks of the training loss; 0 checks it only at the end.
        val_metric: The validation metric checked after each validation (``None``: none).
    """

    def __init__(self, every_n_steps: int = 10, val_metric: Optional[str] = "val/loss") -> None:
        if every_n_steps < 0:
            raise ConfigError(f"StopOnNonFinite's every_n_steps is {every_n_steps}; it must be 0 or more")
        self.every_n_steps = every_n_steps
        self.val_metric = val_metric
        self._last_loss: Optional[torch.Tensor] = None
        self._checked_step = -1

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, *args: Any) -> None:
        loss = outputs.get("loss") if isinstance(outputs, dict) else outputs
        if not isinstance(loss, torch.Tensor):
            return
        self._last_loss = loss.detach()
        step = trainer.global_step  # moves once per optimizer step, after its last micro-batch
        if self.every_n_steps and step % self.every_n_steps == 0 and step != self._checked_step:
            self._checked_step = step
            self._check(trainer, self._last_loss, f"the training loss at step {step}")

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        value = trainer.callback_metrics.get(self.val_metric) if self.val_metric else None
        if value is not None:  # already reduced over ranks: the same on every rank
            self._check(trainer, value, f"{self.val_metric} at step {trainer.global_step}", reduce=False)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._last_loss is not None:
            self._check(trainer, self._last_loss, f"the training loss at the last step ({trainer.global_step})")

    @staticmethod
    def _check(trainer: L.Trainer, loss: torch.Tensor, what: str, reduce: bool = True) -> None:
        bad = not bool(torch.isfinite(loss).all())
        if reduce:  # every rank must stop together, or the others would wait for it forever
            bad = trainer.strategy.reduce_boolean_decision(bad, all=False)
        if bad:
            value = float(loss.float().mean())
            raise DivergenceError(
                f"{what} is {value if not math.isfinite(value) else 'not finite on another device'}: training diverged. "
                f"Lower model.learning_rate (or lengthen model.warmup_steps, or set trainer.gradient_clip_val) "
                f"and start again from a checkpoint written before this step"
            )


class FinalModelCheckpoint(ModelCheckpoint):
    """Lightning's ``ModelCheckpoint`` that also writes ``last.ckpt`` at the end of training.

    Lightning saves on its interval (``every_n_train_steps``, or after validations) and, at the end, only if
    it never saved: with 19,073 steps and a checkpoint every 2,500, ``last.ckpt`` would hold step 17,500.
    With ``save_last`` this saves the final step too, whatever the interval. Arguments are Lightning's.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._last_saved_step: Optional[int] = None

    def _save_last_checkpoint(self, trainer: L.Trainer, monitor_candidates: dict[str, torch.Tensor]) -> None:
        super()._save_last_checkpoint(trainer, monitor_candidates)
        if self.save_last:
            self._last_saved_step = trainer.global_step

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        super().on_train_end(trainer, pl_module)
        if self.save_last and trainer.global_step > 0 and self._last_saved_step != trainer.global_step:
            if not trainer.fast_dev_run:
                self._save_last_checkpoint(trainer, self._monitor_candidates(trainer))


def _random_state() -> dict[str, Any]:
    # Plain types and tensors only: checkpoints load with weights_only=True.
    name, keys, pos, has_gauss, gauss = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state() if torch.cuda.is_available() and torch.cuda.is_initialized() else None,
        "numpy": [name, torch.from_numpy(keys.astype(np.int64)), int(pos), int(has_gauss), float(gauss)],
        "python": random.getstate(),
    }


def _set_random_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    if state.get("cuda") is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])
    name, keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))
    version, internal, gauss_next = state["python"]
    random.setstate((version, tuple(internal), gauss_next))


class RandomState(Callback):
    """Saves every random generator training draws from (torch's CPU and CUDA ones: dropout; numpy's and
    Python's) in checkpoints, one set per rank, and restores them on resume, so a resumed run draws the same
    dropout masks as an uninterrupted one.

    The states are put back just before the first training batch after the resume, not when the checkpoint
    is read: whatever Lightning draws in between (a sanity check, new loaders) cannot shift them. A run
    resumed on another number of devices cannot repeat the same masks; it keeps its seeded generators and
    says so.
    """

    def __init__(self) -> None:
        self._trainer: Optional[L.Trainer] = None
        self._pending: Optional[dict[str, Any]] = None

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        self._trainer = trainer

    def state_dict(self) -> dict[str, Any]:
        # Called on every rank when a checkpoint is written (rank 0 writes the file): gather all ranks' states.
        mine = _random_state()
        world = self._trainer.world_size if self._trainer is not None else 1
        if world > 1 and torch.distributed.is_available() and torch.distributed.is_initialized():
            states: list[Any] = [None] * world
            torch.distributed.all_gather_object(states, mine)
        else:
            states = [mine]
        return {"states": states}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._pending = state_dict

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, *args: Any) -> None:
        if self._pending is None:
            return
        states, self._pending = self._pending.get("states") or [], None
        if len(states) != trainer.world_size:
            rank_zero_warn(
                f"the checkpoint holds the random states of {len(states)} device(s), this run has "
                f"{trainer.world_size}: dropout masks will differ from an uninterrupted run"
            )
            return
        _set_random_state(states[trainer.global_rank])
