"""Parameter groups (AdamW decay/no-decay; Muon + AdamW) and the warmup + cosine learning-rate schedule."""

from __future__ import annotations

import math
from typing import Optional

import torch.nn as nn

from lit_gpt_mini.errors import ConfigError


# Prefixes that wrappers insert into parameter names: FSDP, activation checkpointing, torch.compile.
_WRAPPER_PREFIXES = ("_fsdp_wrapped_module.", "_checkpoint_wrapped_module.", "_orig_mod.")


def clean_name(name: str) -> str:
    """A parameter's name in the unwrapped model."""
    for prefix in _WRAPPER_PREFIXES:
        name = name.replace(prefix, "")
    return name


def matrix_names(model: nn.Module) -> set[str]:
    """Names of the parameters that are matrices (Linear weights, embeddings) in ``model`` as built.

    Decided before any wrapping: FSDP flattens each parameter it shards to one dimension, so ``p.dim()`` read
    after wrapping says nothing about what the parameter is.
    """
    return {clean_name(n) for n, p in model.named_parameters() if p.dim() >= 2}


def param_groups(model: nn.Module, weight_decay: float, matrices: Optional[set[str]] = None) -> list[dict]:
    """Weight decay on matrices (Linear weights, embeddings) only; never on biases or LayerNorm gains.

    ``matrices`` are the names from :func:`matrix_names` of the model before it was wrapped (by default the
    model itself is read, which is right only when it is not sharded). Tied parameters are listed once:
    ``named_parameters`` already skips the duplicate.
    """
    named = [(clean_name(n), p) for n, p in model.named_parameters() if p.requires_grad]
    if any("_flat_param" in n for n, _ in named):
        raise ConfigError(
            "FSDP with use_orig_params: false hides the parameters behind flat buffers, so weight decay cannot be "
            "applied by parameter: set use_orig_params: true in the FSDPStrategy's init_args (Lightning's default)"
        )
    if matrices is None:
        matrices = matrix_names(model)
    decay = [p for n, p in named if n in matrices]
    no_decay = [p for n, p in named if n not in matrices]
    return [
        # "name" labels the groups' learning rates in TensorBoard (lr-AdamW/decay, lr-AdamW/no_decay)
        {"params": decay, "weight_decay": weight_decay, "name": "decay"},
        {"params": no_decay, "weight_decay": 0.0, "name": "no_decay"},
    ]


def warmup_cosine_lr(step: int, max_lr: float, min_lr: float, warmup_steps: int, decay_steps: int) -> float:
    """Learning rate at optimizer step ``step`` (0-based).

    Linear warmup from ``max_lr / (warmup_steps + 1)`` to ``max_lr`` over ``warmup_steps`` steps, then a cosine
    from ``max_lr`` down to ``min_lr`` at ``decay_steps``, then ``min_lr`` for any step beyond.
    """
    if step < warmup_steps:
        return max_lr * (step + 1) / (warmup_steps + 1)
    if step >= decay_steps:
        return min_lr
    progress = (step - warmup_steps) / max(1, decay_steps - warmup_steps)
    return min_lr + 0.5 * (1.0 + math.cos(math.pi * progress)) * (max_lr - min_lr)


def is_muon_parameter(name: str) -> bool:
    """Whether Muon trains the parameter called ``name`` (in ``GPT.named_parameters()``): the weight matrices
    of the transformer blocks' Linear layers (``transformer.h.<i>.attn.c_attn.weight``, ...).

    Decided by name, not by ``p.dim()``: FSDP flattens parameters, and the embeddings and the tied head are
    matrices that Muon must not train.
    """
    parts = clean_name(name).split(".")  # without the segments wrappers insert
    return (
        len(parts) >= 6
        and parts[-6:-4] == ["transformer", "h"]  # transformer.h.<i>.<attn|mlp>.<layer>.weight
        and parts[-3] in ("attn", "mlp")
        and parts[-2] in ("c_attn", "c_proj", "c_fc")
        and parts[-1] == "weight"
    )


def muon_param_groups(
    model: nn.Module, muon_lr: float, muon_weight_decay: float, adamw_lr: float, weight_decay: float
) -> list[dict]:
    """Groups for :class:`~lit_gpt_mini.muon.MuonAdamW`: Muon on the blocks' matrices; AdamW with decay on the
    embeddings (``wte`` is also the tied ``lm_head``) and without decay on biases and LayerNorm gains."""
    muon, embeddings, no_decay = [], [], []
    for name, p in model.named_parameters():  # the tied head is listed once, as transformer.wte.weight
        if not p.requires_grad:
            continue
        if is_muon_parameter(name):
            muon.append(p)
        elif name.endswith(("wte.weight", "wpe.weight", "lm_head.weight")):
            embeddings.append(p)
        else:
            no_decay.append(p)
    return [
        {"params": muon, "lr": muon_lr, "weight_decay": muon_weight_decay, "muon": True, "name": "muon"},
        {"params": embeddings, "lr": adamw_lr, "weight_decay": weight_decay, "muon": False, "name": "adamw_decay"},
        {"params": no_decay, "lr": adamw_lr, "weight_decay": 0.0, "muon": False, "name": "adamw_no_decay"},
    ]
