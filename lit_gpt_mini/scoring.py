"""Multiple-choice scoring: a batch of packed candidates to the summed and mean loss of each one's ending, and the
counts of right picks by both. The model scores whatever multiple-choice batch a data module hands it (HellaSwag's
is :class:`~data_modules.hellaswag.HellaSwagDataModule`); another benchmark is another data module.

A multiple-choice batch is a dict of tensors (see :func:`is_multiple_choice`):

- ``tokens``, ``pos``, ``group``, ``branch`` (E, T): one row per example, the context once and each candidate's
  ending after it. ``group`` and ``branch`` say which tokens see which: ``branch`` 0 is a context, ``k + 1``
  candidate ``k``; a token sees the earlier tokens of its group that are context or on its own branch. Padding
  has group -1.
- ``index`` (S,): for each scored ending token, the flat index into (E, T) of the token that predicts it;
  ``targets`` (S,) the token; ``candidate`` (S,) its candidate as a flat index into (E, choices).
- ``labels`` (E,): the right candidate of each example.

and two plain values: ``choices`` (candidates per example) and ``task`` (the name its figures are logged under).
"""

from __future__ import annotations

from typing import Any, Iterator, Sequence

import torch
from torch.nn import functional as F
from torch.utils.data import IterableDataset

KEYS = ("tokens", "pos", "group", "branch", "index", "targets", "candidate", "labels", "choices", "task")


def is_multiple_choice(batch: Any) -> bool:
    """Whether ``batch`` asks for candidate scoring (rather than being a language-modelling batch)."""
    return isinstance(batch, dict) and all(key in batch for key in KEYS)


def attention_mask(group: torch.Tensor, branch: torch.Tensor) -> torch.Tensor:
    """(E, T, T) bool: token ``i`` sees token ``j <= i`` of its group when ``j`` is context or on its branch."""
    length = group.size(1)
    causal = torch.ones(length, length, dtype=torch.bool, device=group.device).tril()
    same_group = group[:, :, None] == group[:, None, :]
    visible = (branch[:, None, :] == 0) | (branch[:, :, None] == branch[:, None, :])
    return causal & same_group & visible


def candidate_losses(model: torch.nn.Module, batch: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
    """Summed and mean cross-entropy of each candidate's ending tokens, both (E, choices), in float32.

    ``model`` is a :class:`~lit_gpt_mini.model.GPT`. Only the positions that predict an ending token go through
    the head, and only the real vocabulary's columns of it count (the padded ones are never a target and must
    not take probability).
    """
    tokens = batch["tokens"]
    hidden = model.hidden_states(tokens, batch["pos"], attention_mask(batch["group"], batch["branch"]))
    hidden = hidden.flatten(0, 1)[batch["index"]]  # (S, C)
    logits = F.linear(hidden, model.lm_head.weight[: model.config.vocab_size])
    return losses_from_logits(logits, batch["targets"], batch["candidate"], tokens.size(0), batch["choices"])


def losses_from_logits(
    logits: torch.Tensor, targets: torch.Tensor, candidate: torch.Tensor, examples: int, choices: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Summed and mean cross-entropy per candidate, (E, choices) each, from the logits (S, V) of the scored tokens
    ``targets`` (S,) of candidates ``candidate`` (S,, indices into E x choices)."""
    nll = F.cross_entropy(logits.float(), targets, reduction="none")
    total = torch.zeros(examples * choices, dtype=torch.float32, device=nll.device).index_add_(0, candidate, nll)
    count = torch.zeros_like(total).index_add_(0, candidate, torch.ones_like(nll))  # bincount would sync a GPU
    return total.view(examples, choices), (total / count).view(examples, choices)


@torch.no_grad()
def evaluate_batch(model: torch.nn.Module, batch: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
    """Whether ``acc`` (lowest summed loss) and ``acc_norm`` (lowest mean loss per ending token) pick the right
    candidate, per example (two bool tensors of shape (E,))."""
    total, mean = candidate_losses(model, batch)
    labels = batch["labels"]
    return total.argmin(1) == labels, mean.argmin(1) == labels


def counts(model: torch.nn.Module, batch: dict[str, Any]) -> torch.Tensor:
    """(3,) float32 on the batch's device: examples, right by ``acc``, right by ``acc_norm``. Summed over batches
    and ranks, then made figures by :func:`figures`; nothing is read back to the host here."""
    right, right_norm = evaluate_batch(model, batch)
    return torch.stack((torch.tensor(float(len(right)), device=right.device), right.sum(), right_norm.sum())).float()


def figures(total: Sequence[float]) -> dict[str, float]:
    """``acc``, ``acc_norm`` and ``examples`` from summed :func:`counts`."""
    examples, right, right_norm = (float(x) for x in total)
    if examples == 0:
        return {"acc": float("nan"), "acc_norm": float("nan"), "examples": 0}
    return {"acc": right / examples, "acc_norm": right_norm / examples, "examples": int(examples)}


class MultipleChoiceBatches(IterableDataset):
    """A rank's ready multiple-choice batches under the name ``task``, for a ``DataLoader(batch_size=None)``.

    Iterable so that Lightning leaves it alone under DDP: its ``DistributedSampler`` would pad the ranks' shares
    with repeated examples, and the data module has already given each rank its exact share.
    """

    def __init__(self, task: str, batches: Sequence[dict[str, Any]]) -> None:
        self.task = task
        self.batches = batches

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return iter(self.batches)

    def __len__(self) -> int:
        return len(self.batches)
