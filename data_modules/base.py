"""What every data source shares: directories, windows over a token stream, DDP-aware and resumable loading.

A source subclasses :class:`TokenDataModule` and provides two things: ``prepare_data`` (download, tokenize,
cache: rank 0 only, sets no attributes) and ``load_tokens`` (return the token stream and the tokenizer, on
every process). Everything after that, splitting, windows, batches, ranks and resuming, lives here once.

The training stream is a pure function of ``(seed, global batch index, rank)``: batch ``i`` of a run is the
same whatever happened before it, so a run resumed from a checkpoint continues the stream exactly where it
stopped, and every DDP rank draws its own windows.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterator, Optional

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, IterableDataset

from lit_gpt_mini.errors import DataError
from lit_gpt_mini.tokenizers import Tokenizer


Batch = tuple[torch.Tensor, torch.Tensor]


def _to_batch(windows: np.ndarray) -> Batch:
    # windows: (B, T + 1) token ids; inputs are the first T, targets the last T
    w = torch.from_numpy(windows.astype(np.int64))
    return w[:, :-1], w[:, 1:]


class RandomWindows(IterableDataset):
    """An endless stream of batches of random windows of ``block_size + 1`` tokens (nanoGPT's sampling).

    Batch ``i`` on rank ``r`` draws its window offsets from a generator seeded with ``(seed, i, r)``. With
    several DataLoader workers, worker ``w`` makes batches ``i ≡ w (mod num_workers)``; the DataLoader takes
    them round-robin, so the stream is the same for any number of workers.
    """

    def __init__(
        self,
        tokens: np.ndarray,
        block_size: int,
        batch_size: int,
        seed: int,
        rank: int = 0,
        start_batch: int = 0,
    ) -> None:
        if len(tokens) < block_size + 1:
            raise DataError(f"the training split has {len(tokens)} tokens, fewer than block_size + 1")
        self.tokens = tokens
        self.block_size = block_size
        self.batch_size = batch_size
        self.seed = seed
        self.rank = rank
        self.start_batch = start_batch

    def batch(self, index: int) -> Batch:
        """The batch at position ``index`` of this rank's stream."""
        rng = np.random.default_rng([self.seed, index, self.rank])
        offsets = rng.integers(0, len(self.tokens) - self.block_size, size=self.batch_size)
        windows = self.tokens[offsets[:, None] + np.arange(self.block_size + 1)]
        return _to_batch(windows)

    def __iter__(self) -> Iterator[Batch]:
        info = torch.utils.data.get_worker_info()
        step, first = (1, 0) if info is None else (info.num_workers, info.id)
        index = self.start_batch + first
        while True:
            yield self.batch(index)
            index += step


class SequentialWindows(IterableDataset):
    """Non-overlapping windows covering a split once, in order: a deterministic evaluation set.

    Under DDP each rank takes every ``world_size``-th window with no padding, so no window is counted twice
    and the token-weighted mean over ranks is the exact loss over the split.
    """

    def __init__(self, tokens: np.ndarray, block_size: int, batch_size: int, rank: int = 0, world_size: int = 1):
        if len(tokens) < block_size + 1:
            raise DataError(f"the evaluation split has {len(tokens)} tokens, fewer than block_size + 1")
        self.tokens = tokens
        self.block_size = block_size
        self.batch_size = batch_size
        num_windows = (len(tokens) - 1) // block_size
        self.window_ids = np.arange(rank, num_windows, world_size)

    def __len__(self) -> int:
        return -(-len(self.window_ids) // self.batch_size)

    def __iter__(self) -> Iterator[Batch]:
        # Like RandomWindows, worker w makes every num_workers-th batch; the DataLoader restores the order.
        info = torch.utils.data.get_worker_info()
        step, first = (1, 0) if info is None else (info.num_workers, info.id)
        span = np.arange(self.block_size + 1)
        for i in range(first * self.batch_size, len(self.window_ids), step * self.batch_size):
            starts = self.window_ids[i : i + self.batch_size] * self.block_size
            yield _to_batch(self.tokens[starts[:, None] + span])


class TokenDataModule(L.LightningDataModule):
    """Base data module: a token stream split into train/val and served as windows of ``block_size + 1``.

    Args:
        data_dir: Where this source downloads and caches its files.
        block_size: Tokens per training window (the model's context); must match ``model.block_size``.
        batch_size: Windows per batch on each device (the micro-batch).
        val_fraction: The tail fraction of the token stream held out for validation and test.
        seed: Seed of the training stream; the same seed gives the same batches.
        num_workers: DataLoader worker processes; batches are identical for any number.
    """

    def __init__(
        self,
        data_dir: str = "data",
        block_size: int = 256,
        batch_size: int = 12,
        val_fraction: float = 0.1,
        seed: int = 1337,
        num_workers: int = 0,
    ) -> None:
        super().__init__()
        if block_size < 1 or batch_size < 1:
            raise DataError(f"block_size ({block_size}) and batch_size ({batch_size}) must be positive")
        if not 0.0 < val_fraction < 1.0:
            raise DataError(f"val_fraction must be between 0 and 1, got {val_fraction}")
        self.data_dir = Path(data_dir)
        self.block_size = block_size
        self.batch_size = batch_size
        self.val_fraction = val_fraction
        self.seed = seed
        self.num_workers = num_workers
        self._tokenizer: Optional[Tokenizer] = None
        self.train_tokens: Optional[np.ndarray] = None
        self.val_tokens: Optional[np.ndarray] = None
        # Training batches consumed so far; saved in checkpoints so a resumed run continues the stream.
        self.train_batches_seen = 0

    # --- what a source provides ---------------------------------------------------------------------------------

    def load_tokens(self) -> tuple[np.ndarray, Tokenizer]:
        """The whole token stream (1-D, unsigned ints) and its tokenizer. Runs on every process."""
        raise NotImplementedError

    # --- shared machinery ---------------------------------------------------------------------------------------

    @property
    def tokenizer(self) -> Tokenizer:
        if self._tokenizer is None:
            self.setup("fit")
        return self._tokenizer

    @property
    def vocab_size(self) -> int:
        """Linked into ``model.vocab_size`` by the CLI."""
        return self.tokenizer.vocab_size

    def setup(self, stage: str) -> None:
        if self.train_tokens is not None:
            return
        tokens, self._tokenizer = self.load_tokens()
        n_val = int(len(tokens) * self.val_fraction)
        self.train_tokens, self.val_tokens = tokens[: len(tokens) - n_val], tokens[len(tokens) - n_val :]
        for name, split in (("training", self.train_tokens), ("validation", self.val_tokens)):
            if len(split) < self.block_size + 1:
                raise DataError(
                    f"data.block_size ({self.block_size}) is too large: the {name} split of {type(self).__name__} "
                    f"has only {len(split)} tokens (of {len(tokens)} in all, val_fraction={self.val_fraction}); "
                    f"use a smaller block_size or more data"
                )

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
        )

    def train_dataloader(self) -> DataLoader:
        rank, _ = self._rank_and_world()
        return self._loader(
            RandomWindows(
                self.train_tokens,
                self.block_size,
                self.batch_size,
                self.seed,
                rank=rank,
                start_batch=self.train_batches_seen,
            )
        )

    def val_dataloader(self) -> DataLoader:
        rank, world = self._rank_and_world()
        return self._loader(SequentialWindows(self.val_tokens, self.block_size, self.batch_size, rank, world))

    def test_dataloader(self) -> DataLoader:
        return self.val_dataloader()

    def on_before_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        # Called once for each batch a step actually uses (not for batches the loader fetched ahead), so this
        # counts what training consumed.
        if self.trainer is not None and self.trainer.training:
            self.train_batches_seen += 1
        return batch

    def state_dict(self) -> dict[str, Any]:
        return {"train_batches_seen": self.train_batches_seen, "seed": self.seed}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.train_batches_seen = int(state_dict["train_batches_seen"])
