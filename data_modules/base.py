"""The data module every source extends: preparation (once per node, locked, resumable) into token shards,
then DDP-aware, resumable loading of windows over them.

A source subclasses :class:`TokenDataModule` and provides two things: ``load_tokenizer`` (cheap, every
process; the CLI needs the vocabulary before training starts) and ``prepare_data`` (download, tokenize and
write :mod:`data_modules.shards` into ``shard_dir``: rank 0 only, skipped when done, sets no attributes).
Everything after that, windows (:mod:`data_modules.windows`), batches, ranks and resuming, lives here once.
The module counts the windows training consumed and saves that count in the checkpoint, so a resumed run
continues the stream exactly where it stopped (with any number of devices).
"""

from __future__ import annotations

import contextlib
import fcntl
import itertools
import sys
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Optional

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, IterableDataset
from tqdm import tqdm

from data_modules.encode import TASK_CHARS, Encoder, batched
from data_modules.shards import ShardSet, ShardWriter
from data_modules.windows import SequentialWindows, ShuffledWindows, split_windows
from lit_gpt_mini.errors import DataError
from lit_gpt_mini.tokenizers import Tokenizer


@contextlib.contextmanager
def exclusive_preparation(directory: Path) -> Iterator[None]:
    """One preparation at a time in ``directory``, across processes and across nodes that share a filesystem.

    Lightning prepares data once per node (``prepare_data_per_node``): right when each node has its own disk,
    but nodes sharing a filesystem would write the same shards at once. The first to take the lock prepares;
    the others wait, then find the shards complete. Where the filesystem has no locks, preparation goes on
    unlocked (as before): run ``main.py prepare`` first there.
    """
    directory.mkdir(parents=True, exist_ok=True)
    with open(directory / ".prepare.lock", "a") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            print(f"Waiting for another process (or node) preparing {directory}", file=sys.stderr)
            fcntl.flock(lock, fcntl.LOCK_EX)
        except OSError as e:  # e.g. a network filesystem mounted without lock support
            print(f"warning: cannot lock {directory} ({e}); preparing without a lock", file=sys.stderr)
        try:
            yield
        finally:
            try:
                fcntl.flock(lock, fcntl.LOCK_UN)
            except OSError:
                pass


class TokenDataModule(L.LightningDataModule):
    """Base data module: a source's token shards served as windows of ``block_size + 1`` tokens.

    Args:
        data_dir: Where this source downloads and caches its files; shards go to ``data_dir/shards``.
        block_size: Tokens per training window (the model's context); must not exceed ``model.block_size``.
        batch_size: Windows per batch on each device (the micro-batch).
        seed: Seed of the training order; the same seed gives the same batches.
        num_workers: DataLoader worker processes; batches are identical for any number.
    """

    def __init__(
        self,
        data_dir: str = "data",
        block_size: int = 256,
        batch_size: int = 12,
        seed: int = 1337,
        num_workers: int = 0,
    ) -> None:
        super().__init__()
        if block_size < 1 or batch_size < 1:
            raise DataError(f"block_size ({block_size}) and batch_size ({batch_size}) must be positive")
        if not 0 <= seed < 2**63:  # numpy's generators take non-negative seeds only
            raise DataError(f"data.seed is {seed}; it must be a non-negative integer")
        if num_workers < 0:
            raise DataError(f"data.num_workers is {num_workers}; it must be 0 (load in the main process) or more")
        self.data_dir = Path(data_dir)
        self.block_size = block_size
        self.batch_size = batch_size
        self.seed = seed
        self.num_workers = num_workers
        self._tokenizer: Optional[Tokenizer] = None
        self.train_shards: Optional[ShardSet] = None
        self.val_shards: Optional[ShardSet] = None
        # Training windows consumed so far by all ranks together; saved in checkpoints so that a resumed run
        # continues the stream where it stopped.
        self.train_windows_seen = 0

    # --- what a source provides ---------------------------------------------------------------------------------

    def load_tokenizer(self) -> Tokenizer:
        """The tokenizer of this source's data. Runs on every process, before ``prepare_data``: keep it cheap."""
        raise NotImplementedError

    def prepare_data(self) -> None:
        """Download, tokenize and write the shards into ``shard_dir`` (see :class:`~data_modules.shards.ShardWriter`);
        return at once when they are complete."""
        raise NotImplementedError

    # --- shared machinery ---------------------------------------------------------------------------------------

    def write_documents(
        self,
        documents: Callable[[], Iterable[str]],
        settings: dict[str, Any],
        shard_size: int,
        val_tokens: int,
        max_tokens: Optional[int],
        num_proc: int,
        source: str,
        summary: Callable[[], dict[str, Any]] = dict,
        empty: Callable[[], str] = lambda: "no documents",
    ) -> Optional[dict[str, Any]]:
        """Tokenize a stream of documents into shards (see :class:`~data_modules.shards.ShardWriter`), in
        ``num_proc`` processes with a progress bar; resume an interrupted run; do nothing when already done.

        ``documents`` makes the stream (called only when there is work); ``summary`` adds to the manifest once
        the stream is read; ``empty`` says what was wrong when it had no document. Returns the manifest
        (``None`` when the shards were already complete).
        """
        with exclusive_preparation(self.data_dir):  # nodes sharing a filesystem prepare one at a time
            writer = ShardWriter(self.shard_dir, self.tokenizer, shard_size, val_tokens, settings)
            if writer.is_complete():
                return None
            next_doc, next_token = writer.resume()
            # Documents before the resume point are read (to count them) but not tokenized again.
            texts = itertools.islice(documents(), next_doc, None)
            doc = next_doc
            bar = tqdm(total=max_tokens, initial=writer.total_tokens, unit="tok", unit_scale=True,
                       desc=f"Tokenizing {source}", file=sys.stderr, dynamic_ncols=True)
            with bar, Encoder(num_proc, self.tokenizer) as encode:
                for tokens, lengths in encode(batched(texts, TASK_CHARS)):
                    first = 0
                    if doc == next_doc and next_token:  # resuming inside this document: skip what is written
                        first, tokens, lengths = next_token, tokens[next_token:], lengths.copy()
                        lengths[0] -= next_token
                    before = writer.total_tokens
                    done = writer.add_documents(doc, tokens, lengths, first, max_tokens)
                    # documents taken so far, counting one that max_tokens cut in the middle
                    doc = writer.position[0] + (writer.position[1] > 0) if done else doc + len(lengths)
                    bar.update(writer.total_tokens - before)
                    bar.set_postfix(docs=f"{doc:,}", refresh=False)
                    if done:
                        break
            if doc == 0:
                raise DataError(f"{source} gave {empty()}")
            manifest = writer.finish({"documents": doc, **summary()})
            print(
                f"Prepared {doc:,} documents from {source}: {manifest['tokens']['train']:,} training and "
                f"{manifest['tokens']['val']:,} validation tokens in {len(manifest['shards'])} shards in {self.shard_dir}",
                file=sys.stderr,
            )
            return manifest

    def write_splits(self, val: np.ndarray, train: np.ndarray, settings: dict[str, Any], extra: dict[str, Any]) -> None:
        """Write a small source's validation and training tokens as one shard each (unless already done).

        For sources whose whole token stream fits in memory (a text file, a set of articles), split by a
        fraction of the stream rather than by shard.
        """
        with exclusive_preparation(self.data_dir):
            writer = ShardWriter(
                self.shard_dir, self.tokenizer, shard_size=len(val) + len(train), val_tokens=len(val),
                settings=settings,
            )
            if writer.is_complete():
                return
            self._write_parts(writer, [val, train], extra)

    @staticmethod
    def _write_parts(writer: ShardWriter, parts: list[np.ndarray], extra: dict[str, Any]) -> None:
        # The writer makes the stream's first val_tokens tokens validation: the validation part goes first.
        next_part, next_token = writer.resume()
        for part in range(next_part, len(parts)):
            first = next_token if part == next_part else 0
            writer.add(part, parts[part][first:], first)
        writer.finish(extra)

    @property
    def shard_dir(self) -> Path:
        return self.data_dir / "shards"

    @property
    def tokenizer(self) -> Tokenizer:
        if self._tokenizer is None:
            self._tokenizer = self.load_tokenizer()
        return self._tokenizer

    @property
    def vocab_size(self) -> int:
        """Linked into ``model.vocab_size`` by the CLI."""
        return self.tokenizer.vocab_size

    @property
    def train_tokens_seen(self) -> int:
        """Training tokens consumed so far, over all devices (logged as ``train/tokens``)."""
        return self.train_windows_seen * self.block_size

    def setup(self, stage: str) -> None:
        if self.train_shards is not None:
            return
        self.train_shards = ShardSet.open(self.shard_dir, "train", self.tokenizer)
        self.val_shards = ShardSet.open(self.shard_dir, "val", self.tokenizer)

    def _rank_and_world(self) -> tuple[int, int]:
        trainer = self.trainer
        return (trainer.global_rank, trainer.world_size) if trainer is not None else (0, 1)

    def _loader(self, dataset: IterableDataset) -> DataLoader:
        # The datasets yield whole batches, so the DataLoader does no batching (batch_size=None). Lightning
        # injects no DistributedSampler for iterable datasets: the datasets shard by rank themselves.
        return DataLoader(
            dataset,
            batch_size=None,
            num_workers=self.num_workers,
            pin_memory=torch.cuda.is_available(),
            persistent_workers=self.num_workers > 0,
            # Its own generator: a loader's iterator otherwise draws its workers' seed from the global one,
            # which dropout uses, and a resumed run (new iterators) would then draw different masks.
            generator=torch.Generator().manual_seed(self.seed),
        )

    def train_dataloader(self) -> DataLoader:
        rank, world = self._rank_and_world()
        return self._loader(
            ShuffledWindows(
                self.train_shards,
                self.block_size,
                self.batch_size,
                self.seed,
                rank=rank,
                world_size=world,
                start_window=self.train_windows_seen,
            )
        )

    def val_dataloader(self) -> DataLoader:
        rank, world = self._rank_and_world()
        return self._loader(SequentialWindows(self.val_shards, self.block_size, self.batch_size, rank, world))

    def test_dataloader(self) -> DataLoader:
        return self.val_dataloader()

    def on_before_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        # Called once for each batch a step actually uses (not for batches the loader fetched ahead), so this
        # counts what training consumed; every rank consumed a batch of the same size.
        if self.trainer is not None and self.trainer.training:
            self.train_windows_seen += batch.size(0) * self.trainer.world_size
        return batch

    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        # The steps take (x, y) int64 pairs; cutting them on the device keeps the copy small and contiguous.
        return split_windows(batch) if isinstance(batch, torch.Tensor) else batch

    def state_dict(self) -> dict[str, Any]:
        return {"train_windows_seen": self.train_windows_seen, "seed": self.seed}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.train_windows_seen = int(state_dict["train_windows_seen"])
