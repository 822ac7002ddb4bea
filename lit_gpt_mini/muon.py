"""Muon for the transformer blocks' matrices and AdamW for every other parameter, as one torch optimizer.

Muon (Keller Jordan, 2024; ``torch.optim.Muon`` since torch 2.9) replaces each matrix's momentum by its nearest
semi-orthogonal matrix, computed with a few Newton–Schulz iterations, so every direction of the update moves
by about the same amount. It suits the hidden layers' matrices only: embeddings, the (tied) head, biases and
LayerNorm gains stay on AdamW.

This file holds both in one ``torch.optim.Optimizer`` so that Lightning's automatic optimization, gradient
accumulation and clipping, the LR scheduler (one lambda over every group) and the LR monitor (one curve per
group) work unchanged, and one ``state_dict`` resumes both exactly. The Muon step follows ``torch.optim.Muon``
(same momentum, Nesterov blend, Newton–Schulz coefficients, learning-rate adjustment and decoupled weight decay)
with two differences:

- the Newton–Schulz iteration runs in ``ns_dtype``: ``torch.optim.Muon`` always uses bfloat16, which costs
  ~17x a whole training step on a CPU without native bf16. ``"auto"`` takes bfloat16 on CUDA and float32
  elsewhere; with bfloat16 the update is torch's (tested);
- matrices of the same shape (after turning tall ones into wide ones) are orthogonalized together as one batch
  of matmuls instead of one after the other.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any, Iterable

import torch
from torch import Tensor
from torch.optim.adamw import adamw

# Keller Jordan's quintic coefficients (the same as torch.optim.Muon's defaults).
NS_COEFFICIENTS = (3.4445, -4.7750, 2.0315)
NS_EPS = 1e-7
NS_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}


def newton_schulz(g: Tensor, steps: int = 5, dtype: torch.dtype = torch.float32, eps: float = NS_EPS) -> Tensor:
    """Approximately orthogonalize each matrix of the batch ``g`` (..., m, n) with m <= n; returns ``dtype``.

    Each matrix is scaled to a Frobenius norm of 1 (so its spectral norm is at most 1), then the quintic
    iteration ``X <- a X + (b A + c A^2) X`` with ``A = X X^T`` pushes its singular values towards ~1.
    Wide matrices keep ``A`` small (m x m): callers transpose tall ones first.
    """
    a, b, c = NS_COEFFICIENTS
    x = g.to(dtype)
    x = x / x.norm(dim=(-2, -1), keepdim=True).clamp(min=eps)
    batched = x.dim() == 3
    for _ in range(steps):
        gram = x @ x.mT
        if batched:
            update = torch.baddbmm(gram, gram, gram, beta=b, alpha=c)
            x = torch.baddbmm(x, update, x, beta=a)
        else:
            update = torch.addmm(gram, gram, gram, beta=b, alpha=c)
            x = torch.addmm(x, update, x, beta=a)
    return x


def resolve_ns_dtype(ns_dtype: str, device: torch.device) -> torch.dtype:
    """``"auto"``: bfloat16 on CUDA (tensor cores), float32 elsewhere (a CPU without native bf16 is ~17x slower)."""
    if ns_dtype == "auto":
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    return NS_DTYPES[ns_dtype]


class MuonAdamW(torch.optim.Optimizer):
    """Muon on the parameter groups marked ``"muon": True``, fused AdamW on the others.

    Every group carries its own ``lr`` and ``weight_decay`` (and ``name`` for the LR monitor). Muon groups also
    take ``momentum``, ``nesterov`` and ``ns_steps``; AdamW groups ``betas`` and ``eps``.

    Args:
        params: Parameter groups (dicts), each with ``"muon": True`` or ``False``; Muon groups hold 2-D tensors.
        lr, weight_decay, momentum, nesterov, ns_steps, betas, eps: Defaults for groups that do not set them.
        ns_dtype: ``"auto"``, ``"float32"`` or ``"bfloat16"``: the dtype of the Newton–Schulz iteration.
        fused: Use the fused AdamW kernel (CPU and CUDA, floating-point parameters).
    """

    def __init__(
        self,
        params: Iterable[dict[str, Any]],
        lr: float = 1e-3,
        weight_decay: float = 0.0,
        momentum: float = 0.95,
        nesterov: bool = True,
        ns_steps: int = 5,
        betas: tuple[float, float] = (0.9, 0.95),
        eps: float = 1e-8,
        ns_dtype: str = "auto",
        fused: bool = False,
    ) -> None:
        if ns_dtype != "auto" and ns_dtype not in NS_DTYPES:
            raise ValueError(f"ns_dtype must be 'auto' or one of {sorted(NS_DTYPES)}, got {ns_dtype!r}")
        defaults = dict(lr=lr, weight_decay=weight_decay, momentum=momentum, nesterov=nesterov, ns_steps=ns_steps,
                        betas=betas, eps=eps, muon=False)
        super().__init__(params, defaults)
        self.ns_dtype = ns_dtype
        self.fused = fused
        for group in self.param_groups:
            if group["muon"] and any(p.dim() != 2 for p in group["params"]):
                raise ValueError(f"Muon group {group.get('name')!r} holds a parameter that is not a matrix")

    @torch.no_grad()
    def step(self, closure=None):  # noqa: D102 (torch's signature)
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            if group["muon"]:
                self._muon_step(group)
            else:
                self._adamw_step(group)
        return loss

    def _adamw_step(self, group: dict[str, Any]) -> None:
        params, grads, exp_avgs, exp_avg_sqs, steps = [], [], [], [], []
        for p in group["params"]:
            if p.grad is None:
                continue
            state = self.state[p]
            if not state:
                # float32 step counters on the parameter's device, as torch's fused AdamW keeps them
                state["step"] = torch.zeros((), dtype=torch.float32, device=p.device)
                state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
            params.append(p)
            grads.append(p.grad)
            exp_avgs.append(state["exp_avg"])
            exp_avg_sqs.append(state["exp_avg_sq"])
            steps.append(state["step"])
        if not params:
            return
        beta1, beta2 = group["betas"]
        adamw(params, grads, exp_avgs, exp_avg_sqs, [], steps, fused=self.fused or None,
              foreach=None if self.fused else True, amsgrad=False, beta1=beta1, beta2=beta2, lr=group["lr"],
              weight_decay=group["weight_decay"], eps=group["eps"], maximize=False)

    def _muon_step(self, group: dict[str, Any]) -> None:
        lr, momentum, wd = group["lr"], group["momentum"], group["weight_decay"]
        # (oriented shape, device) -> [(param, update, transposed)]: orthogonalized together
        by_shape: dict[tuple, list[tuple[Tensor, Tensor, bool]]] = defaultdict(list)
        for p in group["params"]:
            if p.grad is None:
                continue
            state = self.state[p]
            if not state:
                state["momentum_buffer"] = torch.zeros_like(p.grad, memory_format=torch.preserve_format)
            buf = state["momentum_buffer"]
            buf.lerp_(p.grad, 1 - momentum)
            update = p.grad.lerp(buf, momentum) if group["nesterov"] else buf
            tall = update.size(0) > update.size(1)
            if tall:
                update = update.mT
            by_shape[(tuple(update.shape), p.device)].append((p, update, tall))
        for (shape, device), items in by_shape.items():
            dtype = resolve_ns_dtype(self.ns_dtype, device)
            stacked = torch.stack([u for _, u, _ in items])
            orthogonal = newton_schulz(stacked, group["ns_steps"], dtype)
            # torch.optim.Muon's "original" adjustment: tall matrices (fan-out > fan-in) step by sqrt(rows/cols)
            for (p, _, tall), o in zip(items, orthogonal.unbind(0)):
                rows, cols = p.shape
                adjusted_lr = lr * max(1.0, rows / cols) ** 0.5
                if wd != 0:
                    p.mul_(1 - lr * wd)
                p.add_((o.mT if tall else o).to(p.dtype), alpha=-adjusted_lr)
