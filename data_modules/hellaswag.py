"""HellaSwag (Zellers et al. 2019): 4-way sentence completion, the usual accuracy benchmark of small GPT-2s.

The official jsonl files are downloaded from the rowanz/hellaswag repository into ``data_dir`` when missing
(the validation split: 10,042 examples), or read from a local ``path``; preparation also tokenizes the examples
once and caches the ids in ``data_dir``. Preparation runs once per node (Lightning's ``prepare_data`` on each
node's local rank 0), so nodes need no shared filesystem. Each batch holds whole examples (one packed row each,
see :mod:`lit_gpt_mini.hellaswag`), sorted by length; under DDP each rank scores every ``world_size``-th
example, so the accuracy summed over ranks counts each example exactly once.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Iterator, Literal, Optional

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, IterableDataset

from data_modules.base import missing_path
from data_modules.download import download
from lit_gpt_mini import hellaswag
from lit_gpt_mini.errors import ConfigError, DataError
from lit_gpt_mini.files import atomic_write, sha256_of
from lit_gpt_mini.log import get_logger
from lit_gpt_mini.tokenizers import GPT2Tokenizer, Tokenizer

URL = "https://raw.githubusercontent.com/rowanz/hellaswag/master/data/hellaswag_{split}.jsonl"
CACHE_FORMAT = 1  # bump when the cached ids change meaning (e.g. how an empty context is tokenized)


def write_token_cache(examples: list[hellaswag.TokenizedExample], path: Path, source_sha256: str, tokenizer: str) -> None:
    """The examples' ids as one ``.npz`` (all ids end to end, five lengths per example), written atomically."""
    lengths = np.array([[len(e.context)] + [len(x) for x in e.endings] for e in examples], dtype=np.int64)
    ids = np.fromiter(
        (t for e in examples for part in (e.context, *e.endings) for t in part), dtype=np.int32, count=int(lengths.sum())
    )
    with atomic_write(path, "wb") as f:
        np.savez(f, ids=ids, lengths=lengths, labels=np.array([e.label for e in examples], dtype=np.int8),
                 source_sha256=np.array(source_sha256), tokenizer=np.array(tokenizer),
                 format=np.array(CACHE_FORMAT))


def read_token_cache(path: Path, source_sha256: str, tokenizer: str) -> Optional[list[hellaswag.TokenizedExample]]:
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
        examples.append(hellaswag.TokenizedExample(parts[0], tuple(parts[1:]), label))
    return examples


class HellaSwagBatches(IterableDataset):
    """Ready batches (see :func:`lit_gpt_mini.hellaswag.batches`), in order; an iterable dataset, so Lightning adds
    no DistributedSampler (the batches are already this rank's share)."""

    def __init__(self, batches: list[dict[str, torch.Tensor]]) -> None:
        self.batches = batches

    def __len__(self) -> int:
        return len(self.batches)

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        return iter(self.batches)


class HellaSwagDataModule(L.LightningDataModule):
    """HellaSwag examples for ``test`` (and for :class:`~lit_gpt_mini.callbacks.HellaSwagEval`).

    Args:
        data_dir: Where the downloaded jsonl and the token ids are cached (on each node).
        path: A local HellaSwag jsonl file to use instead of downloading.
        split: ``val`` (10,042 examples with labels; what is reported), ``train`` or ``test`` (no labels).
        examples_per_batch: Examples (x4 candidates) per forward pass.
        limit: Score only the first ``limit`` examples (``None``: all).
    """

    def __init__(
        self,
        data_dir: str = "data/hellaswag",
        path: Optional[str] = None,
        split: Literal["val", "train", "test"] = "val",
        examples_per_batch: int = 8,
        limit: Optional[int] = None,
    ) -> None:
        super().__init__()
        if examples_per_batch < 1:
            raise ConfigError(f"hellaswag.examples_per_batch must be at least 1, got {examples_per_batch}")
        if limit is not None and limit < 1:
            raise ConfigError(f"hellaswag.limit must be at least 1 (or null for all examples), got {limit}")
        self.data_dir = Path(data_dir)
        self.path = Path(path) if path is not None else None
        self.split = split
        self.examples_per_batch = examples_per_batch
        self.limit = limit
        self._examples: Optional[list[hellaswag.Example]] = None
        self._tokenized: Optional[list[hellaswag.TokenizedExample]] = None
        self._batches: dict[tuple[int, int, int], list[dict[str, torch.Tensor]]] = {}

    @property
    def file(self) -> Path:
        return self.path if self.path is not None else self.data_dir / f"hellaswag_{self.split}.jsonl"

    @property
    def tokenizer(self) -> Tokenizer:
        return GPT2Tokenizer()

    def connect(self, block_size: int) -> Tokenizer:
        """The model's side of the data contract (see ``TokenDataModule.connect``): examples are cut to the model's
        context, and the model scores them with GPT-2's vocabulary."""
        self.block_size = block_size
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
                    f"or set the HellaSwag path to a local copy"
                ) from None

    def prepare_data(self) -> None:
        """Fetch the file, then tokenize it once into :meth:`cache_file` (skipped when cached)."""
        self.fetch()
        sha = sha256_of(self.file)
        cache, tokenizer = self.cache_file(sha), self.tokenizer
        if read_token_cache(cache, sha, tokenizer.name) is None:
            tokenized = [hellaswag.tokenize(e, tokenizer) for e in hellaswag.read_examples(self.file)]
            write_token_cache(tokenized, cache, sha, tokenizer.name)

    @property
    def examples(self) -> list[hellaswag.Example]:
        if self._examples is None:
            self._examples = hellaswag.read_examples(self.file)
        return self._examples

    @property
    def tokenized(self) -> list[hellaswag.TokenizedExample]:
        """The examples' token ids, from the cache :meth:`prepare_data` wrote on this node."""
        if self._tokenized is None:
            if not self.file.is_file():
                raise DataError(
                    f"HellaSwag file {self.file} is missing on this node: prepare the data on every node (python "
                    f"main.py prepare --config ... on each; training and test do it on each node's local rank 0 "
                    f"unless data.prepare_data_per_node is false)"
                )
            sha = sha256_of(self.file)
            self._tokenized = read_token_cache(self.cache_file(sha), sha, self.tokenizer.name)
            if self._tokenized is None:
                raise DataError(
                    f"HellaSwag's token ids {self.cache_file(sha)} are missing or were made from another file on "
                    f"this node: prepare the data on every node (python main.py prepare --config ... on each)"
                )
        return self._tokenized

    def batches(
        self, max_length: int, rank: int = 0, world_size: int = 1, pin_memory: bool = False
    ) -> list[dict[str, torch.Tensor]]:
        """This rank's batches, sorted by length, built once; ``max_length`` is the model's context (longer
        candidates lose the start of their context). ``pin_memory`` pins them (once) for asynchronous copies."""
        key = (max_length, rank, world_size)
        if key not in self._batches:
            tokenized = self.tokenized
            shard = hellaswag.shard(len(tokenized), rank, world_size, self.limit)
            self._batches[key] = hellaswag.batches([hellaswag.pack(tokenized[i], max_length) for i in shard],
                                                   self.examples_per_batch)
        batches = self._batches[key]
        if pin_memory and batches and not batches[0]["tokens"].is_pinned():
            self._batches[key] = batches = [{k: v.pin_memory() for k, v in b.items()} for b in batches]
        return batches

    def loader(self, trainer: L.Trainer) -> DataLoader:
        """``test``'s loader: this rank's batches, cut to the model's context (not ``data.block_size``, the
        training window), pinned for an asynchronous copy to a GPU."""
        batches = self.batches(trainer.lightning_module.config.block_size, trainer.global_rank, trainer.world_size)
        return DataLoader(HellaSwagBatches(batches), batch_size=None,
                          pin_memory=trainer.strategy.root_device.type == "cuda")

    def test_dataloader(self) -> DataLoader:
        return self.loader(self.trainer)


def write_training_text(examples: list[hellaswag.Example], out: Path) -> int:
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
    count = write_training_text(data.examples, Path(ns.out))
    get_logger(__name__).info(f"wrote {count} documents to {ns.out}; train on them with --data.path {ns.out}")


if __name__ == "__main__":
    main()
