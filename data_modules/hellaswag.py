"""HellaSwag (Zellers et al. 2019): 4-way sentence completion, the usual accuracy benchmark of small GPT-2s.

The official jsonl files are downloaded from the rowanz/hellaswag repository into ``data_dir`` when missing
(the validation split: 10,042 examples), or read from a local ``path``. Batches hold whole examples (all four
candidates, padded to a few fixed lengths); under DDP each rank scores every ``world_size``-th example, so the
accuracy summed over ranks counts each example exactly once.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Iterator, Literal, Optional

import lightning as L
from torch.utils.data import DataLoader, IterableDataset

from data_modules.base import download
from lit_gpt_mini import hellaswag
from lit_gpt_mini.errors import DataError
from lit_gpt_mini.tokenizers import GPT2Tokenizer, Tokenizer

URL = "https://raw.githubusercontent.com/rowanz/hellaswag/master/data/hellaswag_{split}.jsonl"


class HellaSwagBatches(IterableDataset):
    """This rank's examples, rendered with ``tokenizer`` and collated ``examples_per_batch`` at a time."""

    def __init__(
        self,
        examples: list[hellaswag.Example],
        tokenizer: Tokenizer,
        max_length: int,
        examples_per_batch: int,
        rank: int = 0,
        world_size: int = 1,
        limit: Optional[int] = None,
    ) -> None:
        self.examples = examples
        self.tokenizer = tokenizer
        self.max_length = max_length
        self.examples_per_batch = examples_per_batch
        self.indices = list(hellaswag.shard(len(examples), rank, world_size, limit))

    def __len__(self) -> int:
        return -(-len(self.indices) // self.examples_per_batch)

    def __iter__(self) -> Iterator[dict]:
        for i in range(0, len(self.indices), self.examples_per_batch):
            chosen = [self.examples[j] for j in self.indices[i : i + self.examples_per_batch]]
            rendered = [hellaswag.render(e, self.tokenizer, self.max_length) for e in chosen]
            yield hellaswag.collate(rendered, [e.label for e in chosen], self.max_length)


class HellaSwagDataModule(L.LightningDataModule):
    """HellaSwag examples for ``test`` (and for :class:`~lit_gpt_mini.callbacks.HellaSwagEval`).

    Args:
        data_dir: Where the downloaded jsonl is cached.
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
        self.data_dir = Path(data_dir)
        self.path = Path(path) if path is not None else None
        self.split = split
        self.examples_per_batch = examples_per_batch
        self.limit = limit
        self._examples: Optional[list[hellaswag.Example]] = None

    @property
    def file(self) -> Path:
        return self.path if self.path is not None else self.data_dir / f"hellaswag_{self.split}.jsonl"

    @property
    def tokenizer(self) -> Tokenizer:
        return GPT2Tokenizer()

    @property
    def vocab_size(self) -> int:
        return self.tokenizer.vocab_size

    def prepare_data(self) -> None:
        if self.path is not None:
            if not self.path.is_file():
                raise DataError(f"HellaSwag file {self.path} does not exist")
            return
        if self.file.is_file():
            return
        url = URL.format(split=self.split)
        try:
            download(url, self.file)
        except OSError as e:
            raise DataError(
                f"could not download HellaSwag from {url}: {e}. Without internet, put the file at {self.file} or "
                f"set the HellaSwag path to a local copy"
            ) from None

    @property
    def examples(self) -> list[hellaswag.Example]:
        if self._examples is None:
            self._examples = hellaswag.read_examples(self.file)
        return self._examples

    def batches(self, max_length: int, rank: int = 0, world_size: int = 1) -> HellaSwagBatches:
        """This rank's batches; ``max_length`` is the model's context (longer candidates lose the start of
        their context)."""
        return HellaSwagBatches(
            self.examples, self.tokenizer, max_length, self.examples_per_batch, rank, world_size, self.limit
        )

    def test_dataloader(self) -> DataLoader:
        trainer = self.trainer
        return DataLoader(
            self.batches(trainer.lightning_module.config.block_size, trainer.global_rank, trainer.world_size),
            batch_size=None,
        )


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
    data.prepare_data()
    count = write_training_text(data.examples, Path(ns.out))
    print(f"wrote {count} documents to {ns.out}; train on them with --data.path {ns.out}")


if __name__ == "__main__":
    main()
