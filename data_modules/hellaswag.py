"""HellaSwag (Zellers et al. 2019), 4-way sentence completion, the usual benchmark of small GPT-2s, as a
LightningDataModule: ``python main.py test --ckpt_path CKPT --data HellaSwagDataModule`` reports its accuracy.

The data: the official jsonl (the validation split: 10,042 examples) is downloaded from the rowanz/hellaswag
repository into ``data_dir`` when missing, or read from a local ``path``; its token ids are cached beside it once
per node, so nodes need no shared filesystem.

The method, standard and completion-style (the numbers are comparable to published ones): each of an example's
four candidates is ``context tokens + tokens of " " + ending``; a candidate's loss is the cross-entropy of the
ending tokens only. ``acc`` picks the candidate with the lowest summed loss, ``acc_norm`` the one with the lowest
mean loss per ending token. An empty context becomes the end-of-text token, so every ending token is predicted
from something. The model scores the batches this module packs (:mod:`lit_gpt_mini.scoring`).

How it is made fast, with the same decisions as scoring each candidate alone (the tests compare them):

- One row per example: the context once, then the four endings, each attending to the context and to itself
  only (an attention mask) at the positions it would have after the context. The context is computed once
  instead of four times, and an ending's last token is not fed (it predicts nothing).
- The language-model head and the cross-entropy run only at the positions that predict an ending token, not
  over the whole vocabulary at every position.
- Rows are sorted by length before batching, and the counts stay on the device until the end. Under several
  processes each scores every ``world_size``-th example, no padding: every example counts once.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Optional, Sequence

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader

from lit_gpt_mini.download import download
from lit_gpt_mini.errors import ConfigError, DataError
from lit_gpt_mini.files import atomic_write, missing_path, sha256_of
from lit_gpt_mini.log import get_logger
from lit_gpt_mini.scoring import MultipleChoiceBatches
from lit_gpt_mini.tokenizers import GPT2Tokenizer, Tokenizer

URL = "https://raw.githubusercontent.com/rowanz/hellaswag/master/data/hellaswag_{split}.jsonl"
CACHE_FORMAT = 1  # bump when the cached ids change meaning (e.g. how an empty context is tokenized)

NUM_ENDINGS = 4
TASK = "hellaswag"  # the name its figures are logged under: hellaswag/acc, hellaswag/acc_norm, hellaswag/examples


@dataclass(frozen=True)
class Example:
    context: str
    endings: tuple[str, ...]
    label: int


@dataclass(frozen=True)
class TokenizedExample:
    """An example's token ids: the context (never empty) and the four endings (each ``" " + ending``)."""

    context: tuple[int, ...]
    endings: tuple[tuple[int, ...], ...]
    label: int


def read_examples(path: Path) -> list[Example]:
    """The examples of a HellaSwag jsonl file (fields ``ctx``, ``endings``, ``label``). A row that is not one
    is a :class:`DataError` naming the file and line: this is a benchmark, no row is skipped."""
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
        if not isinstance(row, dict):
            raise DataError(f"{where}: an example is a JSON object with 'ctx', 'endings' and 'label', not a {type(row).__name__}")
        if not isinstance(row.get("ctx"), str):
            raise DataError(f"{where}: an example needs a 'ctx' string, got {row.get('ctx')!r}")
        endings = row.get("endings")
        if not isinstance(endings, list) or len(endings) != NUM_ENDINGS:
            count = f"{len(endings)}" if isinstance(endings, list) else "no list"
            raise DataError(f"{where}: an example needs {NUM_ENDINGS} 'endings' strings, this one has {count}")
        if not all(isinstance(e, str) for e in endings):
            raise DataError(f"{where}: 'endings' must be {NUM_ENDINGS} strings, got {endings!r}")
        if len(set(endings)) == 1:  # every method scores them alike: the pick would be the first, right or not
            raise DataError(f"{where}: its {NUM_ENDINGS} endings are identical ({endings[0]!r}), so no choice can be "
                            f"right or wrong; fix or remove the line")
        label = row.get("label")
        if isinstance(label, str) and label.isdigit():  # the Hugging Face copy stores labels as strings
            label = int(label)
        # bool is an int in Python: true would silently mean 1
        if isinstance(label, bool) or not isinstance(label, int) or not 0 <= label < NUM_ENDINGS:
            raise DataError(f"{where}: 'label' must be an integer 0 to {NUM_ENDINGS - 1}, got {row.get('label')!r}")
        examples.append(Example(row["ctx"], tuple(endings), label))
    if not examples:
        raise DataError(f"{path} holds no HellaSwag examples")
    return examples


def tokenize(example: Example, tokenizer: Tokenizer) -> TokenizedExample:
    """The example's token ids; an empty context becomes the end-of-text token (the usual start of a text), so
    that the first ending token is scored too."""
    context = tokenizer.encode(example.context)
    if not context:
        if tokenizer.eot_id is None:
            raise DataError(f"an empty HellaSwag context needs a tokenizer with an end-of-text token, not {tokenizer.kind}")
        context = [tokenizer.eot_id]
    endings = tuple(tuple(tokenizer.encode(" " + ending)) for ending in example.endings)
    return TokenizedExample(tuple(context), endings, example.label)


def candidates(example: TokenizedExample, max_length: int) -> list[tuple[tuple[int, ...], list[tuple[int, ...]]]]:
    """The example as ``(context, endings)`` groups whose candidates fit ``max_length`` tokens: one group of four
    when they all fit, else four groups, each candidate keeping the end of its context that fits. An ending of
    ``max_length`` tokens or more keeps its last ``max_length - 1`` (the one before needs a context token)."""
    endings = [e[-(max_length - 1) :] for e in example.endings]
    if len(example.context) + max(len(e) for e in endings) <= max_length:
        return [(example.context, endings)]
    return [(example.context[max(0, len(example.context) + len(e) - max_length) :], [e]) for e in endings]


@dataclass(frozen=True)
class Packed:
    """One example as one row: ``tokens``/``pos`` fed to the model; ``group`` and ``branch`` say which tokens see
    which (``branch`` 0 is a context, ``k + 1`` ending ``k``); ``scored`` holds, for each ending token, the row
    index of the token that predicts it, the token and the candidate (0 to 3)."""

    tokens: np.ndarray
    pos: np.ndarray
    group: np.ndarray
    branch: np.ndarray
    scored: np.ndarray  # (S, 3): predicting index, target token, candidate
    label: int

    def __len__(self) -> int:
        return len(self.tokens)


def pack(example: TokenizedExample, max_length: int) -> Packed:
    """The row that scores all four candidates of ``example`` in one pass (see :func:`candidates`)."""
    tokens: list[int] = []
    pos: list[int] = []
    group: list[int] = []
    branch: list[int] = []
    scored: list[tuple[int, int, int]] = []
    candidate = 0
    for g, (context, endings) in enumerate(candidates(example, max_length)):
        tokens += context
        pos += range(len(context))
        group += [g] * len(context)
        branch += [0] * len(context)
        last_context = len(tokens) - 1
        for ending in endings:
            before = last_context  # the token that predicts the next ending token
            for j, token in enumerate(ending):
                scored.append((before, token, candidate))
                if j + 1 < len(ending):  # an ending's last token predicts nothing: it is not fed
                    tokens.append(token)
                    pos.append(len(context) + j)
                    group.append(g)
                    branch.append(candidate + 1)
                    before = len(tokens) - 1
            candidate += 1
    return Packed(
        np.array(tokens, dtype=np.int64),
        np.array(pos, dtype=np.int64),
        np.array(group, dtype=np.int8),
        np.array(branch, dtype=np.int8),
        np.array(scored, dtype=np.int64).reshape(-1, 3),
        example.label,
    )


def collate(rows: Sequence[Packed]) -> dict[str, Any]:
    """A batch of packed examples, padded to the longest (sort rows by length first to waste little), in the
    multiple-choice form the model scores (:mod:`lit_gpt_mini.scoring`): ``tokens``, ``pos``, ``group``,
    ``branch`` (E, T); ``index`` (flat row-major indices into (E, T)), ``targets`` and ``candidate`` (index into
    (E, 4)) for each scored token; ``labels`` (E,); ``choices`` 4 and ``task`` ``"hellaswag"``."""
    length = max(len(r) for r in rows)
    n = len(rows)
    tokens = np.zeros((n, length), dtype=np.int64)
    pos = np.zeros((n, length), dtype=np.int64)
    group = np.full((n, length), -1, dtype=np.int8)  # padding: a group of its own that no real token sees
    branch = np.full((n, length), -1, dtype=np.int8)
    index, targets, candidate = [], [], []
    for e, r in enumerate(rows):
        tokens[e, : len(r)] = r.tokens
        pos[e, : len(r)] = r.pos
        group[e, : len(r)] = r.group
        branch[e, : len(r)] = r.branch
        index.append(e * length + r.scored[:, 0])
        targets.append(r.scored[:, 1])
        candidate.append(e * NUM_ENDINGS + r.scored[:, 2])
    return {
        "tokens": torch.from_numpy(tokens),
        "pos": torch.from_numpy(pos),
        "group": torch.from_numpy(group),
        "branch": torch.from_numpy(branch),
        "index": torch.from_numpy(np.concatenate(index)),
        "targets": torch.from_numpy(np.concatenate(targets)),
        "candidate": torch.from_numpy(np.concatenate(candidate)),
        "labels": torch.tensor([r.label for r in rows], dtype=torch.long),
        "choices": NUM_ENDINGS,
        "task": TASK,
    }


def batches(rows: Sequence[Packed], examples_per_batch: int) -> list[dict[str, Any]]:
    """``rows`` sorted by length and collated ``examples_per_batch`` at a time: little padding."""
    ordered = sorted(rows, key=len)
    return [collate(ordered[i : i + examples_per_batch]) for i in range(0, len(ordered), examples_per_batch)]


def shard(count: int, rank: int, world_size: int, limit: Optional[int] = None) -> range:
    """The examples rank ``rank`` scores: every ``world_size``-th, no padding, so none counts twice."""
    return range(rank, count if limit is None else min(limit, count), world_size)


# --- the file and its token ids, on this node -------------------------------------------------------------------


def write_token_cache(examples: list[TokenizedExample], path: Path, source_sha256: str, tokenizer: str) -> None:
    """The examples' ids as one ``.npz`` (all ids end to end, five lengths per example), written atomically."""
    lengths = np.array([[len(e.context)] + [len(x) for x in e.endings] for e in examples], dtype=np.int64)
    ids = np.fromiter(
        (t for e in examples for part in (e.context, *e.endings) for t in part), dtype=np.int32, count=int(lengths.sum())
    )
    with atomic_write(path, "wb") as f:
        np.savez(f, ids=ids, lengths=lengths, labels=np.array([e.label for e in examples], dtype=np.int8),
                 source_sha256=np.array(source_sha256), tokenizer=np.array(tokenizer),
                 format=np.array(CACHE_FORMAT))


def read_token_cache(path: Path, source_sha256: str, tokenizer: str) -> Optional[list[TokenizedExample]]:
    """The cached examples, or ``None`` when ``path`` is missing or was made from other data or settings."""
    try:
        with np.load(path, allow_pickle=False) as f:
            if (str(f["source_sha256"]), str(f["tokenizer"]), int(f["format"])) != (source_sha256, tokenizer, CACHE_FORMAT):
                return None
            ids, lengths, labels = f["ids"].tolist(), f["lengths"], f["labels"].tolist()
    except (OSError, KeyError, ValueError):
        return None
    examples, at = [], 0
    for row, label in zip(lengths.tolist(), labels):
        parts = []
        for n in row:
            parts.append(tuple(ids[at : at + n]))
            at += n
        examples.append(TokenizedExample(parts[0], tuple(parts[1:]), label))
    return examples


class HellaSwagDataModule(L.LightningDataModule):
    """HellaSwag's examples as multiple-choice test batches: ``python main.py test --ckpt_path CKPT --data
    HellaSwagDataModule`` logs ``hellaswag/acc``, ``hellaswag/acc_norm`` and ``hellaswag/examples``; a GPT-2
    recipe's ``hellaswag:`` section scores it during training and beside the test loss.

    Its tokenizer is GPT-2's: only a model over GPT-2's vocabulary can be scored. Under several processes each
    rank scores every ``world_size``-th example (no padding, no repeats) and the counts are summed.

    Args:
        path: A local HellaSwag jsonl file to use instead of downloading.
        split: ``val`` (10,042 examples with labels; what is reported), ``train`` or ``test`` (no labels).
        limit: Score only the first ``limit`` examples (``None``: all).
        examples_per_batch: Examples (x4 candidates) per forward pass.
        data_dir: Where the downloaded jsonl and the token ids are cached (on each node).
    """

    benchmark = "HellaSwag"  # named in the error for a model over another vocabulary (GPTModule.setup)

    def __init__(
        self,
        path: Optional[str] = None,
        split: Literal["val", "train", "test"] = "val",
        limit: Optional[int] = None,
        examples_per_batch: int = 8,
        data_dir: str = "data/hellaswag",
    ) -> None:
        super().__init__()
        if examples_per_batch < 1:
            raise ConfigError(f"data.examples_per_batch must be at least 1, got {examples_per_batch}")
        if limit is not None and limit < 1:
            raise ConfigError(f"data.limit must be at least 1 (or null for all examples), got {limit}")
        self.data_dir = Path(data_dir)
        self.path = Path(path) if path is not None else None
        self.split = split
        self.examples_per_batch = examples_per_batch
        self.limit = limit
        self.max_length: Optional[int] = None  # the model's context (connect)
        self._tokenizer: Optional[Tokenizer] = None
        self._tokenized: Optional[list[TokenizedExample]] = None
        self._batches: dict[tuple[int, int, int], list[dict[str, Any]]] = {}

    @property
    def file(self) -> Path:
        return self.path if self.path is not None else self.data_dir / f"hellaswag_{self.split}.jsonl"

    @property
    def tokenizer(self) -> Tokenizer:
        """GPT-2's, loaded when first needed (making the module from a config loads nothing)."""
        if self._tokenizer is None:
            self._tokenizer = GPT2Tokenizer()
        return self._tokenizer

    def connect(self, block_size: int) -> Tokenizer:
        """Take the model's context length (longer candidates lose the start of their context); the model takes
        GPT-2's tokenizer, and refuses it when its own vocabulary is another."""
        self.max_length = block_size
        return self.tokenizer

    def cache_file(self, source_sha256: str) -> Path:
        """Where the token ids of the file with this SHA-256 are cached: another file gets another name."""
        return self.data_dir / f"{self.file.stem}.{source_sha256[:16]}.{self.tokenizer.name}.npz"

    def fetch(self) -> None:
        """Download the file when it is missing (or check the local ``path``)."""
        if self.path is not None:
            if not self.path.is_file():
                raise missing_path(self.path, "HellaSwag file")
        elif not self.file.is_file():
            url = URL.format(split=self.split)
            try:
                download(url, self.file)
            except OSError as e:
                raise DataError(
                    f"could not download HellaSwag from {url}: {e}. Without internet, put the file at {self.file} "
                    f"or give a local copy with --data.path (in a recipe: hellaswag.data.init_args.path)"
                ) from None

    def prepare_data(self) -> None:
        """Fetch the file, then tokenize it once into :meth:`cache_file` (skipped when cached). Once per node."""
        self.fetch()
        sha = sha256_of(self.file)
        if read_token_cache(self.cache_file(sha), sha, self.tokenizer.name) is None:
            tokenized = [tokenize(e, self.tokenizer) for e in read_examples(self.file)]
            write_token_cache(tokenized, self.cache_file(sha), sha, self.tokenizer.name)

    def setup(self, stage: str) -> None:
        # every rank checks its node has the data now, rather than failing at the first batch
        self.tokenized  # noqa: B018

    @property
    def tokenized(self) -> list[TokenizedExample]:
        """The examples' token ids, from the cache :meth:`prepare_data` wrote on this node."""
        if self._tokenized is None:
            if not self.file.is_file():
                raise DataError(f"HellaSwag file {self.file} is missing on this node: each node prepares its own copy")
            sha = sha256_of(self.file)
            self._tokenized = read_token_cache(self.cache_file(sha), sha, self.tokenizer.name)
            if self._tokenized is None:
                raise DataError(
                    f"HellaSwag's token ids {self.cache_file(sha)} are missing or were made from another file on this "
                    f"node: each node prepares its own copy"
                )
        return self._tokenized

    def batches(self, max_length: int, rank: int = 0, world_size: int = 1, pin_memory: bool = False) -> list[dict[str, Any]]:
        """Rank ``rank``'s batches, sorted by length, built once; ``max_length`` is the model's context.
        ``pin_memory`` pins them (once) for asynchronous copies to a GPU."""
        key = (max_length, rank, world_size)
        if key not in self._batches:
            tokenized = self.tokenized
            mine = shard(len(tokenized), rank, world_size, self.limit)
            self._batches[key] = batches([pack(tokenized[i], max_length) for i in mine], self.examples_per_batch)
        ready = self._batches[key]
        if pin_memory and ready and not ready[0]["tokens"].is_pinned():
            self._batches[key] = ready = [{k: v.pin_memory() if isinstance(v, torch.Tensor) else v for k, v in b.items()}
                                          for b in ready]
        return ready

    def test_dataloader(self) -> DataLoader:
        """This rank's share of the examples, as ready batches (the model's context from :meth:`connect`)."""
        if self.max_length is None:
            raise ConfigError("HellaSwagDataModule needs the model's context length: a model connects to it in setup")
        trainer = self.trainer
        rank, world_size = (trainer.global_rank, trainer.world_size) if trainer is not None else (0, 1)
        on_gpu = trainer is not None and trainer.strategy.root_device.type == "cuda"
        ready = self.batches(self.max_length, rank, world_size, pin_memory=on_gpu)
        return DataLoader(MultipleChoiceBatches(TASK, ready), batch_size=None)


# --- the train split as training text -----------------------------------------------------------------------------


def write_training_text(examples: list[Example], out: Path) -> int:
    """Each example as a document ``context + " " + right ending``, as ``{"text": ...}`` jsonl rows that
    :class:`~data_modules.fineweb.FineWebDataModule` reads with ``path``. Returns the number written."""
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out, "w", encoding="utf-8") as f:
        for example in examples:
            f.write(json.dumps({"text": example.context + " " + example.endings[example.label]}) + "\n")
    return len(examples)


def main(args: Optional[list[str]] = None) -> None:
    """``python -m data_modules.hellaswag --split train --out data/hellaswag/train_text.jsonl``: HellaSwag as
    training text (train the model on the train split, score it on val; never train on val)."""
    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("--split", default="train", choices=["train", "val"])
    parser.add_argument("--data_dir", default="data/hellaswag")
    parser.add_argument("--path", help="a local HellaSwag jsonl instead of downloading")
    parser.add_argument("--out", required=True, help="the jsonl to write")
    ns = parser.parse_args(args)
    data = HellaSwagDataModule(data_dir=ns.data_dir, path=ns.path, split=ns.split)
    data.fetch()
    count = write_training_text(read_examples(data.file), Path(ns.out))
    get_logger(__name__).info(f"wrote {count} documents to {ns.out}; train on them with --data.path {ns.out}")


if __name__ == "__main__":
    main()
