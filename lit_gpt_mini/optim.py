"""AdamW parameter groups and the warmup + cosine learning-rate schedule (GPT-2/GPT-3 style)."""

from __future__ import annotations

import math

import torch.nn as nn


def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Weight decay on matrices (Linear weights, embeddings) only; never on biases or LayerNorm gains.

    Tied parameters are listed once: ``named_parameters`` already skips the duplicate.
    """
    decay = [p for p in model.parameters() if p.requires_grad and p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.requires_grad and p.dim() < 2]
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
