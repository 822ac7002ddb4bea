"""LightningModules around :class:`~lit_gpt_mini.model.GPT`: one implementation, three presets.

``GPTModule`` holds the training logic. ``CharGPT``, ``BPEGPT`` and ``GPT2`` only change the defaults of its
arguments to fit each kind of GPT, so a YAML config picks one with ``class_path`` and overrides what it needs.
Every ``__init__`` argument is a plain type: Lightning stores them as the checkpoint's hyperparameters and
``--ckpt_path`` re-parses them (with ``weights_only=True``) to rebuild the exact model.
"""

from __future__ import annotations

import functools
import math
from pathlib import Path
from typing import Any, Literal, Optional

import lightning as L
from lightning.pytorch.strategies import FSDPStrategy, ModelParallelStrategy
import torch
from torchmetrics import MeanMetric

from lit_gpt_mini.checkpoint import TEXT_FORMAT_KEY, TOKENIZER_KEY
from lit_gpt_mini.errors import ConfigError
from lit_gpt_mini.lightning_private import unscale_for_clipping
from lit_gpt_mini.model import GPT, GPTConfig, KVCache
from lit_gpt_mini.muon import MuonAdamW
from lit_gpt_mini.optim import matrix_names, muon_param_groups, param_groups, warmup_cosine_lr
from lit_gpt_mini.scoring import MultipleChoiceBatches, counts, figures, is_multiple_choice
from lit_gpt_mini.tokenizers import Tokenizer, tokenizer_from_dict


class GPTModule(L.LightningModule):
    """Trains a GPT with fused AdamW (or Muon + AdamW) and a warmup + cosine schedule stepped per optimizer step.

    Args:
        vocab_size: Size of the tokenizer's vocabulary; ``None`` (the usual): the data's, taken in ``setup`` once
            the data is prepared (and then recorded in the checkpoint's hyperparameters). A number is checked
            against the data's.
        block_size: Context length (the longest sequence the model can see), and the length of the training and
            validation windows, which the data takes from here (``setup``).
        n_layer, n_head, n_embd, dropout, bias: The model's shape, as in :class:`~lit_gpt_mini.model.GPTConfig`.
        block: ``gpt2`` (GPT-2's block: Hugging Face import and export) or ``modern`` (rotary positions,
            parameter-free RMSNorm, QK-norm, ReLU², untied zero-init head; see docs/model.md). Checkpoints from
            before this option load as ``gpt2``.
        learning_rate: Peak learning rate, reached after ``warmup_steps``.
        min_lr: Learning rate at the end of the cosine decay.
        warmup_steps: Optimizer steps of linear warmup.
        lr_decay_steps: Optimizer step at which the cosine reaches ``min_lr``; ``None`` uses the Trainer's
            ``max_steps``.
        weight_decay: AdamW weight decay, applied to matrices only (not to biases and LayerNorm gains).
        beta1, beta2, eps: AdamW's moment coefficients and epsilon.
        compile: Compile the model's forward with ``torch.compile`` (state-dict keys are unchanged).
        init_from: Start from these weights instead of a random init: a Hugging Face GPT-2 model id
            (``gpt2``, ``gpt2-medium``, ...; needs internet and ``transformers``), a local Hugging Face
            directory, a ``.pth`` from ``main.py export`` or a ``.ckpt`` of another run (weights only: the
            optimizer and step start afresh). The shape arguments must match the weights.
        optimizer: ``adamw`` (every parameter) or ``muon``: Muon on the matrices of the transformer blocks and
            AdamW (``learning_rate``, ``weight_decay``, betas, eps) on the embeddings/tied head, biases and
            LayerNorm gains. Both follow the warmup + cosine schedule, each group from its own peak learning
            rate (Muon's floor is ``muon_lr * min_lr / learning_rate``). Not supported under FSDP.
        muon_lr, muon_momentum, muon_weight_decay: Muon's peak learning rate, momentum (Nesterov) and decoupled
            weight decay.
        muon_ns_steps: Newton–Schulz iterations per step.
        muon_ns_dtype: dtype of the Newton–Schulz iteration: ``auto`` is bfloat16 on CUDA (as
            ``torch.optim.Muon``) and float32 elsewhere (bfloat16 is ~17x slower on CPUs without it).
    """

    def __init__(
        self,
        vocab_size: Optional[int] = None,
        block_size: int = 1024,
        n_layer: int = 12,
        n_head: int = 12,
        n_embd: int = 768,
        dropout: float = 0.0,
        bias: bool = True,
        block: Literal["gpt2", "modern"] = "gpt2",
        learning_rate: float = 6e-4,
        min_lr: float = 6e-5,
        warmup_steps: int = 0,
        lr_decay_steps: Optional[int] = None,
        weight_decay: float = 0.1,
        beta1: float = 0.9,
        beta2: float = 0.95,
        eps: float = 1e-8,
        compile: bool = False,
        init_from: Optional[str] = None,
        optimizer: Literal["adamw", "muon"] = "adamw",
        muon_lr: float = 0.02,
        muon_momentum: float = 0.95,
        muon_weight_decay: float = 0.0,
        muon_ns_steps: int = 5,
        muon_ns_dtype: Literal["auto", "float32", "bfloat16"] = "auto",
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        self._shape = dict(block_size=block_size, n_layer=n_layer, n_head=n_head, n_embd=n_embd, dropout=dropout,
                           bias=bias, block=block)
        # The shape is checked now; the vocabulary is the data's unless given, known in setup (see there).
        shape = GPTConfig(vocab_size=1 if vocab_size is None else vocab_size, **self._shape)
        self.config: Optional[GPTConfig] = shape if vocab_size is not None else None
        if optimizer not in ("adamw", "muon"):
            raise ConfigError(f"model.optimizer must be 'adamw' or 'muon', got {optimizer!r}")
        check_optimizer_args(learning_rate=learning_rate, min_lr=min_lr, warmup_steps=warmup_steps,
                             lr_decay_steps=lr_decay_steps, weight_decay=weight_decay, beta1=beta1, beta2=beta2, eps=eps)
        self.model: Optional[GPT] = None
        self.tokenizer: Optional[Tokenizer] = None
        self.text_format = "text"  # the data's (setup); saved in checkpoints for chat and serve
        # One metric object per stage: Lightning reduces it across DDP ranks, weighted by token counts.
        # A NaN loss must show (and stop the run), not be dropped from the mean: NaN is "replaced" by NaN.
        # (nan_strategy="disable" would also keep it, but torchmetrics then ignores the token weights.)
        self.val_loss = MeanMetric(nan_strategy=math.nan)
        self.test_loss = MeanMetric(nan_strategy=math.nan)
        self.flops_per_batch = 0  # read by the throughput callback for MFU; set per batch
        self._flops_cache: dict[int, int] = {}
        self._step_loss: Optional[torch.Tensor] = None
        # Multiple-choice counts (examples, right by acc, by acc_norm) of this evaluation, per task: summed over
        # ranks once, at its end. Exact sums, not means: each rank scores its own share of the examples.
        self._choice_counts: dict[str, torch.Tensor] = {}
        self._step_micro_batches = 0
        self._grad_norm: Optional[torch.Tensor] = None  # this optimizer step's, where logging computed it
        self.logged_loss: Optional[float] = None  # the training loss of the last logged step, for the progress bar

    def configure_model(self) -> None:
        # Called by the Trainer after setup (which learned the vocabulary) and before a checkpoint's weights are
        # restored; may run more than once.
        if self.model is not None:
            return
        if self.config is None:
            raise ConfigError("the model's vocabulary size is unknown: set model.vocab_size, or train it with a data module")
        self.model = GPT(self.config)
        self._matrices = matrix_names(self.model)  # before FSDP flattens the parameters it shards
        if self.hparams.init_from:
            self._load_initial_weights(self.hparams.init_from)
        if self.hparams.compile:
            # Module.compile() compiles forward in place: state-dict keys stay free of "_orig_mod.".
            self.model.compile()

    def _load_initial_weights(self, source: str) -> None:
        # (A run resumed with --ckpt_path loads these first, then the checkpoint's weights over them.)
        from lit_gpt_mini.checkpoint import import_hf, load_checkpoint, load_pth

        if source.endswith(".pth"):
            pretrained = load_pth(Path(source))[0]
        elif source.endswith(".ckpt"):  # another training run of this project (fine-tuning)
            pretrained = load_checkpoint(source)[0]
        else:
            pretrained = import_hf(source)
        mine = {k: v.shape for k, v in self.model.state_dict().items()}
        theirs = {k: v.shape for k, v in pretrained.state_dict().items()}
        if mine != theirs:
            differ = sorted(k for k in mine if theirs.get(k) != mine[k])[:3]
            raise ConfigError(
                f"model.init_from {source}: its weights do not fit this model ({', '.join(differ)} differ): set "
                f"model.n_layer/n_head/n_embd/block_size/vocab_size/bias/block to the pretrained shape "
                f"({pretrained.config.n_layer}/{pretrained.config.n_head}/{pretrained.config.n_embd}/"
                f"{pretrained.config.block_size}/{pretrained.config.vocab_size}/{pretrained.config.bias}/"
                f"{pretrained.config.block})"
            )
        self.model.load_state_dict(pretrained.state_dict())

    def setup(self, stage: str) -> None:
        # Runs on every rank after the data module's setup (the data is prepared), before configure_model: the one
        # exchange with the data. It takes this model's context length; the model takes its tokenizer, and with it
        # the vocabulary size it is built for (recorded in the hyperparameters, so a checkpoint rebuilds it).
        datamodule = self.trainer.datamodule
        if datamodule is None or not hasattr(datamodule, "connect"):
            raise ConfigError("the model needs a data module to learn its vocabulary from: give --config with a data section")
        tokenizer = datamodule.connect(self.hparams.block_size)
        self.check_benchmark(datamodule, tokenizer)
        if self.hparams.vocab_size is not None and tokenizer.vocab_size != self.hparams.vocab_size:
            raise ConfigError(
                f"model.vocab_size is {self.hparams.vocab_size} (set in the config, or recorded in the --ckpt_path "
                f"checkpoint) but the data's tokenizer has {tokenizer.vocab_size} tokens: the model was made "
                f"for other data or another tokenizer (leave model.vocab_size null to take the data's)"
            )
        self.tokenizer = tokenizer
        self.hparams.vocab_size = tokenizer.vocab_size
        self.config = GPTConfig(vocab_size=tokenizer.vocab_size, **self._shape)
        self.text_format = getattr(datamodule, "text_format", "text")

    def check_benchmark(self, datamodule: Any, tokenizer: Tokenizer) -> None:
        """Refuse, in one line, a benchmark's data (one with a ``benchmark`` name: HellaSwag) scored with another
        vocabulary than this model's (known once set or read from a checkpoint). The command line calls it
        before any data is prepared; ``setup`` again."""
        benchmark = getattr(datamodule, "benchmark", None)
        if benchmark and self.hparams.vocab_size is not None and tokenizer.vocab_size != self.hparams.vocab_size:
            raise ConfigError(
                f"{benchmark} is scored with {tokenizer.kind} tokens ({tokenizer.vocab_size}) and this model's "
                f"vocabulary has {self.hparams.vocab_size}: only a model trained on {tokenizer.kind} tokens "
                f"(data.tokenizer.kind: {tokenizer.kind}) can be scored on it"
            )

    def _flops_per_token(self, seq_len: int) -> int:
        # counting parameters walks the whole model: once per sequence length, cached on this module (a cache on
        # the class, as functools.lru_cache on a method, would keep every module alive with its trainer)
        if seq_len not in self._flops_cache:
            self._flops_cache[seq_len] = self.model.flops_per_token(seq_len)
        return self._flops_cache[seq_len]

    def forward(
        self, idx: torch.Tensor, targets: Optional[torch.Tensor] = None, cache: Optional[KVCache] = None
    ) -> torch.Tensor:
        """The model's eager forward (sampling and evaluation see many lengths; a compiled model would recompile
        for each). Called through ``trainer.strategy.model`` it runs inside the strategy's wrapper: under FSDP
        that gathers each block's shards, so sampling and evaluation work on a sharded model."""
        return self.model.forward(idx, targets, cache=cache)

    # --- steps --------------------------------------------------------------------------------------------------

    def _loss(self, batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        x, y = batch  # (B, T) inputs and the same windows shifted by one
        return self.model(x, y)  # the loss inside the model: a compiled model fuses it with the head

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        loss = self._loss(batch)
        self.flops_per_batch = self._flops_per_token(batch[0].size(1)) * batch[0].numel()
        # Summed over the micro-batches of one optimizer step; logged (as their mean) when the step happens.
        self._step_loss = loss.detach() if self._step_loss is None else self._step_loss + loss.detach()
        self._step_micro_batches += 1
        return loss

    def on_before_optimizer_step(self, optimizer: torch.optim.Optimizer) -> None:
        # Once per optimizer step, after gradient accumulation and the DDP all-reduce, before clipping. Lightning's
        # self.log costs ~0.5 ms a call on a CPU (1-3% of a small model's step) and the norm costs a pass over the
        # gradients: both only happen on the steps the logger writes (every trainer.log_every_n_steps).
        unscale_for_clipping(self.trainer.precision_plugin, optimizer)
        self._grad_norm = None
        if (self.trainer.global_step + 1) % self.trainer.log_every_n_steps == 0:  # the steps the logger writes
            loss = self._step_loss / self._step_micro_batches
            self.log("train/loss", loss, sync_dist=True)
            # Not prog_bar=True: Lightning reads progress-bar metrics after every micro-batch, a host-device sync
            # each time. The progress bar (callbacks.LossProgressBar) shows the value read here, on these steps only.
            self.logged_loss = self.trainer.strategy.reduce(loss.detach(), reduce_op="mean").item()
            self._grad_norm = self._gradient_norm()
            self.log("train/grad_norm", self._grad_norm)  # before clipping
            tokens_seen = getattr(self.trainer.datamodule, "train_tokens_seen", None)
            if tokens_seen is not None:
                self.log("train/tokens", float(tokens_seen))
        self._step_loss, self._step_micro_batches = None, 0

    def _gradient_norm(self) -> torch.Tensor:
        norm = torch.nn.utils.get_total_norm([p.grad for p in self.model.parameters() if p.grad is not None])
        if isinstance(self.trainer.strategy, FSDPStrategy):  # each rank holds a shard of the gradients
            norm = self.trainer.strategy.reduce(norm.square(), reduce_op="sum").sqrt()
        return norm

    def validation_step(self, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> None:
        if is_multiple_choice(batch):
            return self._count_choices(batch)
        loss = self._loss(batch)
        self.flops_per_batch = self._flops_per_token(batch[0].size(1)) * batch[0].numel() // 3  # forward only
        self.val_loss.update(loss, weight=batch[1].numel())
        self.log("val/loss", self.val_loss, prog_bar=True, add_dataloader_idx=False)

    def test_step(self, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> None:
        # Batches of every test dataloader come here: a recipe's held-out text and a benchmark's candidates.
        if is_multiple_choice(batch):
            return self._count_choices(batch)
        loss = self._loss(batch)
        self.test_loss.update(loss, weight=batch[1].numel())
        self.log("test/loss", self.test_loss, add_dataloader_idx=False)

    def multiple_choice_step(self, batch: dict[str, Any]) -> torch.Tensor:
        """A multiple-choice batch's counts, (3,): examples, right by ``acc``, right by ``acc_norm``
        (:mod:`lit_gpt_mini.scoring`). Called within the strategy's wrapper (FSDP's gathers the weights in its
        forward), as the test step is, or through it by an evaluation during training."""
        return counts(self.model, batch)

    def _count_choices(self, batch: dict[str, Any]) -> None:
        task = batch["task"]
        step = self.multiple_choice_step(batch)
        self._choice_counts[task] = self._choice_counts[task] + step if task in self._choice_counts else step

    def _start_choices(self, loaders: Any) -> None:
        # Every rank knows every task from its dataloaders, even one whose share is empty: all take part in the sum.
        loaders = loaders if isinstance(loaders, (list, tuple)) else [loaders]
        tasks = [loader.dataset.task for loader in loaders if isinstance(getattr(loader, "dataset", None), MultipleChoiceBatches)]
        self._choice_counts = {task: torch.zeros(3, device=self.device) for task in tasks}

    def _log_choices(self) -> None:
        for task, total in self._choice_counts.items():
            scored = figures(self.trainer.strategy.reduce(total, reduce_op="sum").tolist())
            for name, value in scored.items():
                self.log(f"{task}/{name}", float(value), sync_dist=False)  # summed over ranks already
        self._choice_counts = {}

    def on_validation_epoch_start(self) -> None:
        self._start_choices(self.trainer.val_dataloaders)

    def on_validation_epoch_end(self) -> None:
        self._log_choices()

    def on_test_epoch_start(self) -> None:
        self._start_choices(self.trainer.test_dataloaders)

    def on_test_epoch_end(self) -> None:
        self._log_choices()

    # --- optimization -------------------------------------------------------------------------------------------

    def configure_gradient_clipping(
        self,
        optimizer: torch.optim.Optimizer,
        gradient_clip_val: Optional[float] = None,
        gradient_clip_algorithm: Optional[str] = None,
    ) -> None:
        # Clipping here rather than through Lightning's precision plugins, which refuse it in two cases this project
        # runs: mixed precision with an optimizer that unscales inside its step (fused AdamW; see
        # unscale_for_clipping) and FSDP's norm clipping. The gradients are unscaled by now under every precision.
        if not gradient_clip_val:
            return
        if gradient_clip_algorithm == "value":  # elementwise: the same on whole tensors and on FSDP's shards
            torch.nn.utils.clip_grad_value_(self.parameters(), gradient_clip_val)
        elif isinstance(self.trainer.strategy, FSDPStrategy):
            # the norm is over every rank's shard: the FSDP root's clip_grad_norm_ computes it (one all-reduce)
            self.trainer.strategy.model.clip_grad_norm_(gradient_clip_val)
        else:
            params = [p for p in self.model.parameters() if p.grad is not None]
            norm = self._grad_norm if self._grad_norm is not None else self._gradient_norm()  # one pass, not two
            torch.nn.utils.clip_grads_with_norm_(params, gradient_clip_val, norm)

    def configure_optimizers(self) -> dict[str, Any]:
        hp = self.hparams
        decay_steps = hp.lr_decay_steps
        if decay_steps is None:
            decay_steps = self.trainer.max_steps
            if decay_steps is None or decay_steps < 0:
                raise ConfigError(
                    "the learning-rate schedule needs a length: set trainer.max_steps or model.lr_decay_steps"
                )
        fused = self.device.type in ("cuda", "cpu")  # one AdamW kernel for all parameters
        if hp.optimizer == "muon":
            check_muon_strategy(self.trainer.strategy if self._trainer is not None else None)
            optimizer = MuonAdamW(
                muon_param_groups(self.model, hp.muon_lr, hp.muon_weight_decay, hp.learning_rate, hp.weight_decay),
                momentum=hp.muon_momentum,
                ns_steps=hp.muon_ns_steps,
                ns_dtype=hp.muon_ns_dtype,
                betas=(hp.beta1, hp.beta2),
                eps=hp.eps,
                fused=fused,
            )
        else:
            optimizer = torch.optim.AdamW(
                param_groups(self.model, hp.weight_decay, self._matrices),
                lr=hp.learning_rate,
                betas=(hp.beta1, hp.beta2),
                eps=hp.eps,
                fused=fused,
            )
        # LambdaLR multiplies each group's initial lr by the lambda's value, so the lambda returns lr / max_lr:
        # every group (Muon's too) follows the same warmup and cosine from its own peak.
        schedule = functools.partial(
            _lr_factor,
            max_lr=hp.learning_rate,
            min_lr=hp.min_lr,
            warmup_steps=hp.warmup_steps,
            decay_steps=decay_steps,
        )
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    # --- checkpoints carry the tokenizer so that one file is enough to sample text --------------------------------

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        if self.tokenizer is not None:
            checkpoint[TOKENIZER_KEY] = self.tokenizer.to_dict()
        checkpoint[TEXT_FORMAT_KEY] = self.text_format

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        # Runs after setup() took the data's tokenizer and before the weights are loaded: a model is only
        # meaningful with the token ids it was trained on.
        if TOKENIZER_KEY not in checkpoint:
            return
        saved = tokenizer_from_dict(checkpoint[TOKENIZER_KEY])
        if self.tokenizer is not None and self.tokenizer != saved:
            raise ConfigError(
                f"the checkpoint's {saved.kind} tokenizer ({saved.vocab_size} tokens) differs from the data's "
                f"({self.tokenizer.vocab_size} tokens): the model was trained on other data or with another "
                f"tokenizer; use the data config it was trained with"
            )
        self.tokenizer = saved


def check_optimizer_args(
    learning_rate: float,
    min_lr: float,
    warmup_steps: int,
    lr_decay_steps: Optional[int],
    weight_decay: float,
    beta1: float,
    beta2: float,
    eps: float,
) -> None:
    """Refuse optimizer settings that cannot train, naming the key (rather than a ZeroDivisionError or an
    AdamW traceback at the first step). NaN fails every comparison, so it is refused too."""
    checks = [
        ("learning_rate", learning_rate, learning_rate > 0 and math.isfinite(learning_rate), "a positive number"),
        ("min_lr", min_lr, 0 <= min_lr <= learning_rate, f"between 0 and learning_rate ({learning_rate})"),
        ("warmup_steps", warmup_steps, warmup_steps >= 0, "0 or more"),
        ("lr_decay_steps", lr_decay_steps, lr_decay_steps is None or lr_decay_steps >= 1, "null or at least 1"),
        ("weight_decay", weight_decay, 0 <= weight_decay < math.inf, "0 or more"),
        ("beta1", beta1, 0 <= beta1 < 1, "in [0, 1)"),
        ("beta2", beta2, 0 <= beta2 < 1, "in [0, 1)"),
        ("eps", eps, 0 < eps < math.inf, "a positive number"),
    ]
    for name, value, ok, expected in checks:
        if not ok:
            raise ConfigError(f"model.{name} is {value}; it must be {expected}")


def check_muon_strategy(strategy: Any) -> None:
    """Refuse Muon under FSDP: its update needs each whole matrix, and FSDP gives every rank a flat shard."""
    if isinstance(strategy, (FSDPStrategy, ModelParallelStrategy)):
        raise ConfigError(
            f"model.optimizer muon does not work with trainer.strategy {type(strategy).__name__} (Muon needs whole "
            f"matrices, FSDP shards them): use model.optimizer adamw, or strategy ddp"
        )


def _lr_factor(step: int, max_lr: float, min_lr: float, warmup_steps: int, decay_steps: int) -> float:
    # A module-level function (not a lambda) so the scheduler's state stays picklable.
    return warmup_cosine_lr(step, max_lr, min_lr, warmup_steps, decay_steps) / max_lr


class CharGPT(GPTModule):
    """Character-level GPT: defaults are nanoGPT's Shakespeare-char GPU recipe (6 layers, 384 wide, dropout 0.2).

    Only the defaults that differ from :class:`GPTModule`'s are declared here; every other argument is
    :class:`GPTModule`'s, with its default.
    """

    def __init__(
        self,
        block_size: int = 256,
        n_layer: int = 6,
        n_head: int = 6,
        n_embd: int = 384,
        dropout: float = 0.2,
        bias: bool = False,
        learning_rate: float = 1e-3,
        min_lr: float = 1e-4,
        warmup_steps: int = 100,
        beta2: float = 0.99,
        **kwargs: Any,
    ) -> None:
        super().__init__(
            block_size=block_size, n_layer=n_layer, n_head=n_head, n_embd=n_embd, dropout=dropout, bias=bias,
            learning_rate=learning_rate, min_lr=min_lr, warmup_steps=warmup_steps, beta2=beta2, **kwargs,
        )


class BPEGPT(CharGPT):
    """GPT over our own byte-level BPE vocabulary: :class:`CharGPT`'s small model with less dropout (a vocabulary
    of a few thousand tokens sees fewer, longer tokens per text)."""

    def __init__(self, dropout: float = 0.1, **kwargs: Any) -> None:
        super().__init__(dropout=dropout, **kwargs)


class GPT2(GPTModule):
    """GPT-2 124M over GPT-2's tiktoken vocabulary, with the GPT-3 paper's optimizer settings (:class:`GPTModule`'s
    defaults) and llm.c's 715 warmup steps.

    The larger GPT-2 shapes differ only in ``n_layer``/``n_head``/``n_embd`` (see ``model.PRESETS``).
    """

    def __init__(self, warmup_steps: int = 715, **kwargs: Any) -> None:
        super().__init__(warmup_steps=warmup_steps, **kwargs)
