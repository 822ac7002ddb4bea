"""The private names of Lightning and torch this project cannot do without, in one place.

Everything else uses public APIs. These two have no public equivalent; setup.cfg pins Lightning's minor range they
were written against (the suite exercises both: DDP and FSDP scoring, 16-mixed clipping).
"""

from __future__ import annotations

from typing import Any

import torch
from lightning.pytorch.plugins import Precision
from lightning.pytorch.strategies import Strategy


def forward_redirection(strategy: Strategy, wrapper: torch.nn.Module, module: Any, method: str, *args: Any) -> Any:
    """Run ``module.method(*args)`` inside ``wrapper``'s forward (DDP, FSDP), as Lightning runs ``test_step``: FSDP
    gathers a sharded module's weights only there. (Lightning's ``Strategy._forward_redirection``.)"""
    return strategy._forward_redirection(wrapper, module, method, *args)


def unscale_for_clipping(precision: Precision, optimizer: torch.optim.Optimizer) -> None:
    """Unscale the gradients of an optimizer that would unscale them inside its own step (fused AdamW), when the
    precision has a gradient scaler (``16-mixed``), so they are measured and clipped at their true size.

    Lightning unscales before clipping only the optimizers that do not (torch marks the others with the private
    ``_step_supports_amp_scaling``) and refuses to clip those. ``GradScaler.step`` then sees the gradients
    unscaled and passes the optimizer no scale, only whether any was infinite. Without a scaler (``32-true``,
    ``bf16-mixed``) there is nothing to do.
    """
    scaler = getattr(precision, "scaler", None)
    if scaler is not None and getattr(optimizer, "_step_supports_amp_scaling", False):
        scaler.unscale_(optimizer)
