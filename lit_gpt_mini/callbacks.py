"""Callbacks the configs use beside Lightning's own."""

from __future__ import annotations

import math
import os
import random
import time
import warnings
from pathlib import Path
from typing import Any, Optional, Union

import lightning as L
import numpy as np
import torch
from lightning.fabric.utilities.throughput import Throughput
from lightning.pytorch.callbacks import Callback, ModelCheckpoint, ProgressBar, TQDMProgressBar
from lightning.pytorch.loggers import TensorBoardLogger
from lightning.pytorch.strategies import FSDPStrategy

from lit_gpt_mini.errors import ConfigError, DivergenceError
from lit_gpt_mini.flops import compute_dtype, peak_flops
from lit_gpt_mini.log import get_logger

log = get_logger(__name__)


class TokenThroughput(Callback):
    """Training throughput of token batches ``(x, y)`` of shape (B, T), measured on Lightning's ``Throughput`` meter.

    Logs ``train/device/items_per_sec`` (tokens/s per device) and, with several devices, ``train/items_per_sec``
    (all devices), with samples/s, batches/s, FLOP/s and, where the device's peak is known, ``train/device/mfu``.
    :mod:`lit_gpt_mini.flops` knows the dense bf16 peak of the A100, H100 and H200, and Lightning that of other
    common GPUs; for any other device give ``peak_flops`` (FLOP/s of one device at the training precision).
    Time spent validating is left out.

    Args:
        peak_flops: Peak FLOP/s of one device; ``None`` looks the device up (no figure for CPUs).
        window_size: Number of recent logged steps the rates are averaged over (at least 2; fewer in a run that
            logs fewer steps, so that it gets rates too). Training is timed
            only at the end of the optimizer steps the logger writes (``trainer.log_every_n_steps``), so timing adds
            no CUDA synchronization to the other steps, and none to any micro-batch of gradient accumulation.
    """

    def __init__(self, peak_flops: Optional[float] = None, window_size: int = 5) -> None:
        if window_size < 2:  # a rate needs two points in time
            raise ConfigError(f"TokenThroughput's window_size is {window_size}; it must be at least 2")
        self.peak_flops = peak_flops
        self.window_size = window_size
        self._meter: Optional[Throughput] = None
        self._t0: Optional[float] = None  # when training started (moved on by validations); set on rank zero only
        self._paused: Optional[float] = None

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if stage != "fit":
            return
        peak = self.peak_flops
        if peak is None:  # this project's table (the H200 too), then Lightning's
            peak = peak_flops(trainer.strategy.root_device, compute_dtype(str(trainer.precision)))
        window = self.window_size
        if trainer.max_steps > 0:  # a short run gets rates too: at most as many points as it logs
            window = max(2, min(window, trainer.max_steps // trainer.log_every_n_steps))
        self._meter = Throughput(available_flops=peak, world_size=trainer.world_size, window_size=window)
        self._batches = self._samples = self._tokens = self._flops = 0
        self._step = trainer.global_step
        self._t0 = self._paused = None

    def _sync(self, trainer: L.Trainer) -> None:
        if trainer.strategy.root_device.type == "cuda":
            torch.cuda.synchronize()

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._meter is not None and trainer.is_global_zero:
            self._sync(trainer)
            self._t0 = time.perf_counter()

    def on_validation_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._t0 is not None and not trainer.sanity_checking:
            self._sync(trainer)
            self._paused = time.perf_counter()

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._paused is not None:  # the clock of training moves on by the time validation took
            self._sync(trainer)
            self._t0 += time.perf_counter() - self._paused
            self._paused = None

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, *args: Any
    ) -> None:
        if self._t0 is None:  # not rank zero, or not fitting
            return
        self._batches += 1
        self._samples += batch[0].size(0)
        self._tokens += batch[0].numel()
        self._flops += pl_module.flops_per_batch
        if trainer.global_step == self._step:  # no optimizer step yet: a micro-batch of gradient accumulation
            return
        self._step = trainer.global_step
        if trainer.global_step % trainer.log_every_n_steps:
            return
        self._sync(trainer)  # the rates are differences of cumulative counts: one sync per logged step is enough
        self._meter.update(time=time.perf_counter() - self._t0, batches=self._batches, samples=self._samples,
                           lengths=self._tokens, flops=self._flops)
        self._flops = 0  # the meter takes the FLOPs since its last update
        metrics = {f"train/{name}": value for name, value in self._meter.compute().items()}
        for logger in trainer.loggers:
            logger.log_metrics(metrics, step=trainer.global_step - 1)  # the step train/loss of this step has


class LossProgressBar(TQDMProgressBar):
    """Lightning's progress bar, showing the training loss of the last logged step.

    The module reads its loss back on the steps the logger writes (``GPTModule.logged_loss``); a loss logged with
    ``prog_bar=True`` would instead be read back after every micro-batch, each time a wait for the GPU.
    """

    def get_metrics(self, trainer: L.Trainer, pl_module: L.LightningModule) -> dict[str, Union[int, str, float, dict[str, float]]]:
        return _with_logged_loss(super().get_metrics(trainer, pl_module), pl_module)


def _with_logged_loss(metrics: dict, pl_module: L.LightningModule) -> dict:
    # both progress displays show the loss the module read back on the last logged step
    loss = getattr(pl_module, "logged_loss", None)
    if loss is not None:
        metrics["train/loss"] = round(loss, 3)
    return metrics


class LogLineProgress(ProgressBar):
    """The progress of a run whose output is a file or a pipe (CI, ``nohup``, ``tee``): one log line every
    ``every_n_steps`` optimizer steps (default: ``trainer.log_every_n_steps``, the steps whose loss is read anyway)
    and one after each validation, instead of a bar redrawn with carriage returns thousands of times."""

    def __init__(self, every_n_steps: Optional[int] = None) -> None:
        super().__init__()
        self.every_n_steps = every_n_steps
        self._enabled = True
        self._reported_step = -1

    def disable(self) -> None:
        self._enabled = False

    def enable(self) -> None:
        self._enabled = True

    def get_metrics(self, trainer: L.Trainer, pl_module: L.LightningModule) -> dict[str, Union[int, str, float, dict[str, float]]]:
        return _with_logged_loss(super().get_metrics(trainer, pl_module), pl_module)

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, *args: Any) -> None:
        step = trainer.global_step
        every = self.every_n_steps or trainer.log_every_n_steps
        if not self._enabled or step == self._reported_step or step % every:
            return  # (a micro-batch of gradient accumulation leaves the step where it was)
        self._reported_step = step
        loss = getattr(pl_module, "logged_loss", None)
        total = f"/{trainer.max_steps}" if trainer.max_steps and trainer.max_steps > 0 else ""
        log.info(f"step {step}{total}" + (f"  train/loss {loss:.4f}" if loss is not None else ""))

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        value = trainer.callback_metrics.get("val/loss")
        if self._enabled and not trainer.sanity_checking and value is not None and trainer.state.fn == "fit":
            log.info(f"step {trainer.global_step}  val/loss {float(value):.4f}")


def plan_accumulation(total_batch_tokens: int, batch_size: int, block_size: int, world_size: int) -> int:
    """The gradient accumulation that makes ``batch_size * block_size * world_size * accumulation ==
    total_batch_tokens``, or a ConfigError with the numbers and the batch sizes that would divide evenly."""
    per_window_row = block_size * world_size  # tokens of one window on every device
    if total_batch_tokens % per_window_row:
        raise ConfigError(
            f"total_batch_tokens ({total_batch_tokens:,}) cannot be split evenly over model.block_size ({block_size}) "
            f"x devices*nodes ({world_size}) = {per_window_row:,} tokens per window row: make total_batch_tokens a "
            f"multiple of {per_window_row:,} (powers of two divide evenly)"
        )
    windows = total_batch_tokens // per_window_row  # windows per device per optimizer step
    if windows % batch_size:
        fits = [b for b in range(min(batch_size, windows), 0, -1) if windows % b == 0][:3]
        raise ConfigError(
            f"data.batch_size ({batch_size}) does not divide the {windows} windows each of {world_size} device(s) "
            f"takes per step of {total_batch_tokens:,} tokens: set data.batch_size to {' or '.join(map(str, fits))}"
        )
    return windows // batch_size


class GradientAccumulation(Callback):
    """Reaches a fixed number of tokens per optimizer step, whatever the hardware, by gradient accumulation.

    ``total_batch_tokens = data.batch_size * model.block_size * world_size * accumulate_grad_batches``, where
    ``world_size = trainer.devices * trainer.num_nodes``: 524,288 tokens at T=1024 and ``batch_size: 64`` is
    64 x 8 accumulation steps on one GPU, 64 x 1 on eight. A batch size that does not divide evenly (64 on
    sixteen GPUs: 32 windows each) is refused with the sizes that would.

    Lightning counts ``trainer.val_check_interval`` (an int) in micro-batches but ``max_steps``,
    ``log_every_n_steps`` and checkpoint intervals in optimizer steps. With this callback an int
    ``val_check_interval`` is in optimizer steps too (it is multiplied by the accumulation), so a recipe reads
    the same on one GPU and on 64.

    Args:
        total_batch_tokens: Tokens per optimizer step over all devices (GPT-2/GPT-3 124M: 524,288 = 2**19);
            ``None``: this callback does nothing (``trainer.accumulate_grad_batches`` as given).
    """

    def __init__(self, total_batch_tokens: Optional[int] = None) -> None:
        if total_batch_tokens is not None and total_batch_tokens < 1:
            raise ConfigError(f"accumulation.total_batch_tokens must be positive (or null), got {total_batch_tokens}")
        self.total_batch_tokens = total_batch_tokens
        self.accumulate = 1
        self._val_check_steps: Optional[int] = None

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if stage != "fit" or self.total_batch_tokens is None:
            return
        batch_size, block_size, world = trainer.datamodule.batch_size, pl_module.hparams.block_size, trainer.world_size
        self.accumulate = plan_accumulation(self.total_batch_tokens, batch_size, block_size, world)
        if trainer.accumulate_grad_batches not in (1, self.accumulate):
            raise ConfigError(
                f"trainer.accumulate_grad_batches ({trainer.accumulate_grad_batches}) conflicts with "
                f"accumulation.total_batch_tokens ({self.total_batch_tokens}), which sets it to {self.accumulate}: "
                f"remove one of them"
            )
        trainer.accumulate_grad_batches = self.accumulate
        if self._val_check_steps is None and isinstance(trainer.val_check_interval, int):
            self._val_check_steps = trainer.val_check_interval
        if self._val_check_steps is not None:
            trainer.val_check_interval = self._val_check_steps * self.accumulate
        log.info(
            f"Gradient accumulation: {self.total_batch_tokens:,} tokens per step = {batch_size} x {block_size} "
            f"tokens x {world} devices x {self.accumulate} micro-batches"
        )


class SampleText(Callback):
    """After each validation during training, samples a continuation of a fixed prompt and logs it to
    TensorBoard (``samples``, in the Text tab), so the curves come with what the model writes.

    Runs on rank 0 only (the weights are the same on every rank), from the same seed each time.

    Args:
        prompt: The text to continue (encoded with the data's tokenizer).
        max_new_tokens: Tokens to sample; 0 samples nothing.
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
        if trainer.sanity_checking or pl_module.tokenizer is None or not self.max_new_tokens:
            return
        # A sharded model runs only with every rank taking part: all ranks sample the same tokens through the
        # FSDP wrapper (same seed, same number of steps). Otherwise rank 0 alone samples from its full copy.
        sharded = isinstance(trainer.strategy, FSDPStrategy)
        if not (sharded or trainer.is_global_zero):
            return
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
            out = model.generate(
                idx, self.max_new_tokens, self.temperature, self.top_k, generator=generator,
                forward=trainer.strategy.model if sharded else None,
            )
        model.train(was_training)
        if not trainer.is_global_zero:
            return
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


def _duration(seconds: float) -> str:
    for unit, size in (("days", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"{seconds / size:.1f} {unit}"
    return f"{seconds:.1f} s"


class RunTimeEstimate(Callback):
    """Says within the first minutes of training how long an optimizer step and the whole run will take, when
    that is long: a GPU-sized recipe started on a laptop says so instead of running for weeks.

    Times the second micro-batch of the run (the first one also compiles and sets up), multiplies by the
    micro-batches of an optimizer step and by the steps left to ``trainer.max_steps``, and warns (once) when one
    step would take longer than ``step_seconds`` or the run longer than ``run_hours``. On a CPU the warning also
    names what to change (a CPU-sized recipe; ``32-true``, often faster there than ``bf16-mixed``).

    Args:
        step_seconds: Warn when one optimizer step is estimated to take longer than this.
        run_hours: Warn when the rest of the run is estimated to take longer than this.
    """

    def __init__(self, step_seconds: float = 120.0, run_hours: float = 24.0) -> None:
        if not (step_seconds > 0 and run_hours > 0):
            raise ConfigError(f"RunTimeEstimate's step_seconds ({step_seconds}) and run_hours ({run_hours}) must be positive")
        self.step_seconds = step_seconds
        self.run_hours = run_hours
        self._micro_batches = 0
        self._t0: Optional[float] = None

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, *args: Any) -> None:
        self._micro_batches += 1
        if self._micro_batches == 2:
            self._sync(trainer)
            self._t0 = time.perf_counter()

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, *args: Any) -> None:
        if self._micro_batches != 2 or self._t0 is None:
            return
        self._sync(trainer)
        micro_batch = time.perf_counter() - self._t0
        self._t0 = None
        step = micro_batch * trainer.accumulate_grad_batches
        steps_left = trainer.max_steps - trainer.global_step if trainer.max_steps and trainer.max_steps > 0 else 0
        run = step * steps_left
        if step <= self.step_seconds and run <= self.run_hours * 3600:
            return
        device = trainer.strategy.root_device
        name = torch.cuda.get_device_name(device) if device.type == "cuda" else device.type.upper()
        advice = ""
        if device.type == "cpu":
            advice = (" On a CPU, train a CPU-sized recipe (configs/*_cpu.yaml)"
                      + (", or try --trainer.precision 32-true (bench/cpu_precision.py compares the two on this CPU)"
                         if trainer.precision != "32-true" else "")
                      + ".")
        log.warning(
            f"one optimizer step ({trainer.accumulate_grad_batches} micro-batches) will take about {_duration(step)} "
            f"on this {name} in {trainer.precision} (measured: {_duration(micro_batch)} a micro-batch), so the "
            f"{steps_left:,} steps left to trainer.max_steps about {_duration(run)}.{advice}"
        )

    @staticmethod
    def _sync(trainer: L.Trainer) -> None:
        # once per run: the timed micro-batch must have finished on the device, not only been queued
        if trainer.strategy.root_device.type == "cuda":
            torch.cuda.synchronize()


class ExplainInterrupt(Callback):
    """Ctrl-C during a run: the KeyboardInterrupt is given, as its message, where the run stopped and how to go
    on, which ``main.py`` prints as its one ``error:`` line (Lightning tears the run down, then exits with
    status 1 from its handler of the interrupt; main.py finds the interrupt as that exit's context)."""

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        if isinstance(exception, KeyboardInterrupt):
            exception.args = (where_it_stopped(trainer),)


def where_it_stopped(trainer: L.Trainer) -> str:
    """Where an interrupted run stopped and how to go on, as the end of a sentence."""
    command = trainer.state.fn.value if trainer.state.fn is not None else "run"
    if command != "fit":
        return f": nothing was changed; run the same command again to {command} from the start"
    saved = [getattr(cb, name, "") for cb in trainer.checkpoint_callbacks for name in ("last_model_path", "best_model_path")]
    saved = [Path(path) for path in saved + [trainer.ckpt_path] if path and Path(path).is_file()]
    if not saved:
        return (f" at step {trainer.global_step}, before any checkpoint was written: run the same command again to "
                f"start over (a data preparation resumes where it stopped)")
    last = max(saved, key=lambda path: path.stat().st_mtime)
    return f" at step {trainer.global_step}; the last checkpoint is {last}: resume with --ckpt_path {last}"


class FinalModelCheckpoint(ModelCheckpoint):
    """Lightning's ``ModelCheckpoint`` that also writes ``last.ckpt`` at the end of training, and by default
    keeps its files in ``<logger save_dir>/<logger name>/checkpoints`` (``out/<recipe>/checkpoints``), beside the
    run's TensorBoard versions rather than inside one of them.

    Lightning saves on its interval (``every_n_train_steps``, or after validations) and, at the end, only if
    it never saved: with 19,073 steps and a checkpoint every 2,500, ``last.ckpt`` would hold step 17,500.
    With ``save_last`` this saves the final step too, whatever the interval.

    The files in the directory are always the latest run's, so ``last.ckpt`` is the model the last ``fit`` trained:
    a run that does not resume (no ``--ckpt_path``) first moves an earlier run's ``*.ckpt`` files into
    ``previous-1/`` (then ``previous-2/``...) inside the directory; a resumed run goes on writing beside its own
    files. Arguments are Lightning's.
    """

    PREVIOUS = "previous-"  # the subdirectories that hold earlier runs' checkpoints, numbered oldest first

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._last_path = ""
        self._last_path_step: Optional[int] = None
        self._trainer_ref: Optional[L.Trainer] = None
        super().__init__(*args, **kwargs)

    # Lightning records each save of last.ckpt in last_model_path: noting the step there tells whether the final
    # step was saved, through public names only.
    @property
    def last_model_path(self) -> str:
        return self._last_path

    @last_model_path.setter
    def last_model_path(self, path: str) -> None:
        self._last_path = path
        self._last_path_step = self._trainer_ref.global_step if (path and self._trainer_ref is not None) else None

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        self._trainer_ref = trainer
        if self.dirpath is None and trainer.logger is not None and trainer.logger.save_dir is not None:
            self.dirpath = os.path.join(trainer.logger.save_dir, str(trainer.logger.name), "checkpoints")
        with warnings.catch_warnings():
            # files of an earlier run are moved aside when training starts (on_train_start): nothing to warn about
            warnings.filterwarnings("ignore", message=r"Checkpoint directory .* exists and is not empty")
            super().setup(trainer, pl_module, stage)

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # Here, not in setup: only now does every strategy (FSDP restores late) know whether the run resumes.
        super().on_train_start(trainer, pl_module)
        if trainer.ckpt_path is None and trainer.is_global_zero and self.dirpath and self.save_top_k != 0:
            moved = move_earlier_run(Path(self.dirpath), self.PREVIOUS)
            if moved is not None:
                log.info(f"{self.dirpath} held an earlier run's checkpoints: moved to {moved}; this run's "
                         f"last.ckpt will be in {self.dirpath}")
        trainer.strategy.barrier("FinalModelCheckpoint.on_train_start")

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        super().on_train_end(trainer, pl_module)
        if (self.save_last and trainer.global_step > 0 and self._last_path_step != trainer.global_step
                and not trainer.fast_dev_run):
            path = self.format_checkpoint_name({}, self.CHECKPOINT_NAME_LAST)
            self.last_model_path = path  # before saving: it is part of the saved state
            trainer.save_checkpoint(path, self.save_weights_only)


def move_earlier_run(dirpath: Path, prefix: str) -> Optional[Path]:
    """Move the ``*.ckpt`` files of ``dirpath`` into a new ``<prefix><N>`` subdirectory (N one more than the
    highest there); return it, or None when there was nothing to move."""
    files = sorted(dirpath.glob("*.ckpt")) if dirpath.is_dir() else []
    if not files:
        return None
    numbers = [int(p.name[len(prefix):]) for p in dirpath.glob(prefix + "*") if p.name[len(prefix):].isdigit()]
    target = dirpath / f"{prefix}{max(numbers, default=0) + 1}"
    target.mkdir()
    for path in files:
        path.rename(target / path.name)
    return target


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
            log.warning(
                f"the checkpoint holds the random states of {len(states)} device(s), this run has "
                f"{trainer.world_size}: dropout masks will differ from an uninterrupted run"
            )
            return
        _set_random_state(states[trainer.global_rank])
