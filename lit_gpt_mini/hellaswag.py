"""HellaSwag scoring, as pure functions: read examples, render candidates, score them with a language model.

The standard completion-style method (the numbers are comparable to published ones): for each example, each
of the four candidates is ``context tokens + tokens of " " + ending``; a candidate's loss is the cross-entropy
of the ending tokens only. ``acc`` picks the candidate with the lowest summed loss, ``acc_norm`` the one with
the lowest mean loss per ending token.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import torch
from torch.nn import functional as F

from lit_gpt_mini.errors import DataError
from lit_gpt_mini.tokenizers import Tokenizer

NUM_ENDINGS = 4


@dataclass(frozen=True)
class Example:
    context: str
    endings: tuple[str, ...]
    label: int


def read_examples(path: Path) -> list[Example]:
    """The examples of a HellaSwag jsonl file (fields ``ctx``, ``endings``, ``label``); a bad line is a
    :class:`DataError` naming the file and line."""
    examples = []
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise DataError(f"cannot read HellaSwag file {path}: {e}") from None
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        where = f"{path}:{number}"
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise DataError(f"{where}: malformed JSON ({e}); fix or remove the line") from None
        if not isinstance(row, dict) or not isinstance(row.get("ctx"), str):
            raise DataError(f"{where}: an example needs a 'ctx' string")
        endings = row.get("endings")
        if not isinstance(endings, list) or len(endings) != NUM_ENDINGS or not all(isinstance(e, str) for e in endings):
            count = len(endings) if isinstance(endings, list) else "no"
            raise DataError(f"{where}: an example needs {NUM_ENDINGS} 'endings' strings, this one has {count}")
        label = row.get("label")
        if isinstance(label, str) and label.isdigit():
            label = int(label)
        if not isinstance(label, int) or not 0 <= label < NUM_ENDINGS:
            raise DataError(f"{where}: 'label' must be 0 to {NUM_ENDINGS - 1}, got {row.get('label')!r}")
        examples.append(Example(row["ctx"], tuple(endings), label))
    if not examples:
        raise DataError(f"{path} holds no HellaSwag examples")
    return examples


def render(example: Example, tokenizer: Tokenizer, max_length: int) -> tuple[list[list[int]], list[int]]:
    """Token ids of the four candidates and where each ending starts. A candidate longer than ``max_length``
    loses tokens at the start of its context (the ending is what is scored)."""
    context = tokenizer.encode(example.context)
    candidates, starts = [], []
    for ending in example.endings:
        ending_ids = tokenizer.encode(" " + ending)
        ids = (context + ending_ids)[-max_length:]
        candidates.append(ids)
        starts.append(len(ids) - len(ending_ids))
    return candidates, starts


def bucket(length: int, max_length: int) -> int:
    """Pad to a multiple of 64 (at most ``max_length``): a compiled model sees at most 16 shapes for a
    1024-token context, and padding wastes less than 64 positions a row."""
    return min(-(-length // 64) * 64, max_length)


def collate(rendered: list[tuple[list[list[int]], list[int]]], labels: list[int], max_length: int) -> dict:
    """A batch: ``tokens`` and ``mask`` (ending positions) of shape (E, 4, L), ``labels`` (E,)."""
    length = bucket(max(len(ids) for candidates, _ in rendered for ids in candidates), max_length)
    tokens = torch.zeros(len(rendered), NUM_ENDINGS, length, dtype=torch.long)
    mask = torch.zeros(len(rendered), NUM_ENDINGS, length, dtype=torch.bool)
    for e, (candidates, starts) in enumerate(rendered):
        for c, (ids, start) in enumerate(zip(candidates, starts)):
            tokens[e, c, : len(ids)] = torch.tensor(ids)
            mask[e, c, start : len(ids)] = True
    return {"tokens": tokens, "mask": mask, "labels": torch.tensor(labels, dtype=torch.long)}


def candidate_losses(logits: torch.Tensor, tokens: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Summed and mean cross-entropy of each candidate's ending tokens.

    ``logits``: (N, L, V) for ``tokens``/``mask`` (N, L); position ``t`` predicts token ``t + 1``. Padding sits
    after the candidate, so (causal attention) it changes nothing before it, and the mask leaves it out.
    """
    targets, scored = tokens[:, 1:], mask[:, 1:].float()
    nll = F.cross_entropy(logits[:, :-1].flatten(0, 1).float(), targets.flatten(), reduction="none")
    total = (nll.view_as(scored) * scored).sum(1)
    return total, total / scored.sum(1).clamp(min=1)


@torch.no_grad()
def evaluate_batch(model: torch.nn.Module, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """Whether ``acc`` and ``acc_norm`` pick the right ending, per example (two bool tensors of shape (E,))."""
    tokens, mask, labels = batch["tokens"], batch["mask"], batch["labels"]
    n, c, length = tokens.shape
    logits = model(tokens.view(n * c, length))
    total, mean = candidate_losses(logits, tokens.view(n * c, length), mask.view(n * c, length))
    return total.view(n, c).argmin(1) == labels, mean.view(n, c).argmin(1) == labels


def shard(count: int, rank: int, world_size: int, limit: Optional[int] = None) -> range:
    """The examples rank ``rank`` scores: every ``world_size``-th, no padding, so none counts twice."""
    return range(rank, count if limit is None else min(limit, count), world_size)
