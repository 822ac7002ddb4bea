"""Datasets of token windows over shards: the seeded, resumable training stream and the sequential evaluation
set, each sharded by DDP rank and DataLoader worker so every window is read once.

The training stream is a pure function of the seed and a global window position: epoch after epoch, every
window of the training shards once per epoch in a seeded order (shards shuffled, windows shuffled inside
each shard, window grid shifted by a random offset per epoch). Global batch ``g`` is the ``B * world_size``
windows at positions ``[g * B * W, (g + 1) * B * W)``; rank ``r`` takes the ``r``-th run of ``B`` of them, so
ranks never share a window. Resuming is starting at a later position (any number of devices).
"""

from __future__ import annotations

from typing import Iterator

import numpy as np
import torch
from torch.utils.data import IterableDataset

from data_modules.shards import ShardSet
from lit_gpt_mini.errors import DataError

# A batch leaves the loader as one contiguous (B, T + 1) window tensor in the shards' integer dtype (uint16
# for vocabularies up to 65,536): the smallest host-to-device copy, pinned and asynchronous on a GPU. Inputs
# and targets are cut from it on the device (TokenDataModule.on_after_batch_transfer).
Batch = torch.Tensor


def _to_batch(windows: np.ndarray) -> Batch:
    # torch has no non-native byte order: the shards are little-endian, like every machine that trains
    return torch.from_numpy(windows.astype(windows.dtype.newbyteorder("="), copy=False))


def split_windows(windows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Inputs ``x`` (the first T tokens) and targets ``y`` (the last T) of (B, T + 1) windows, as int64 on the
    windows' device."""
    w = windows.long()
    return w[:, :-1], w[:, 1:]


def _worker_slice() -> tuple[int, int]:
    # With several DataLoader workers, worker w makes batches i = w, w + n, ...; the DataLoader takes them
    # round-robin, so the stream is the same for any number of workers.
    info = torch.utils.data.get_worker_info()
    return (1, 0) if info is None else (info.num_workers, info.id)


def _read_windows(shards: ShardSet, shard_ids: np.ndarray, starts: np.ndarray, length: int) -> np.ndarray:
    out = np.empty((len(starts), length), dtype=shards.headers[0].dtype)
    for shard in np.unique(shard_ids):
        rows = shard_ids == shard
        out[rows] = shards.read(int(shard), starts[rows], length)
    # An id past the vocabulary would index past the model's embedding: none leaves here, whatever happened
    # to the file since it was checked (one max per batch: bench/shard_checks.py).
    vocab_size = shards.headers[0].vocab_size
    if out.size and int(out.max()) >= vocab_size:
        row, column = np.argwhere(out >= vocab_size)[0]
        path = shards.paths[int(shard_ids[row])]
        raise DataError(
            f"{path} holds token id {int(out[row, column])} at token {int(starts[row]) + int(column)}, outside the "
            f"vocabulary of {vocab_size}: the shard was damaged after it was checked; delete it and run the "
            f"preparation again (finished shards are kept)"
        )
    return out


class ShuffledWindows(IterableDataset):
    """An endless, seeded stream of batches of ``block_size + 1``-token windows of the training shards.

    Epoch ``e`` visits every window once: shards in an order drawn from ``(seed, e)``, windows inside shard
    ``s`` in an order drawn from ``(seed, e, s)``, all windows shifted by an offset in ``[0, block_size)``
    drawn from ``(seed, e)`` so successive epochs cut the text at different places. ``start_window`` is the
    global position to begin at (windows already consumed by all ranks).
    """

    def __init__(
        self,
        shards: ShardSet,
        block_size: int,
        batch_size: int,
        seed: int,
        rank: int = 0,
        world_size: int = 1,
        start_window: int = 0,
    ) -> None:
        self.shards = shards
        self.block_size = block_size
        self.batch_size = batch_size
        self.seed = seed
        self.rank = rank
        self.world_size = world_size
        self.start_window = start_window
        # Windows fit a shard for every offset; windows never span two shards.
        self.windows_per_shard = np.maximum(shards.lengths - block_size, 0) // block_size
        self.windows_per_epoch = int(self.windows_per_shard.sum())
        if self.windows_per_epoch == 0:
            raise DataError(
                f"model.block_size ({block_size}) is too large for the training data: a shard must hold "
                f"2 * block_size tokens, and the largest holds {int(shards.lengths.max())}; use a smaller "
                f"block_size, or more data or larger shards"
            )
        self._epochs: dict[int, tuple[np.ndarray, np.ndarray, int]] = {}
        self._orders: dict[tuple[int, int], np.ndarray] = {}

    def _epoch(self, epoch: int) -> tuple[np.ndarray, np.ndarray, int]:
        # (shard order, cumulative window counts in that order, window offset) of one epoch
        if epoch not in self._epochs:
            rng = np.random.default_rng([self.seed, epoch])
            order = rng.permutation(len(self.windows_per_shard))
            offset = int(rng.integers(self.block_size))
            self._epochs = {epoch: (order, np.cumsum(self.windows_per_shard[order]), offset)}
        return self._epochs[epoch]

    def _window_order(self, epoch: int, shard: int) -> np.ndarray:
        key = (epoch, shard)
        if key not in self._orders:
            if len(self._orders) >= 4:  # a batch touches one or two shards: keep memory flat
                self._orders.pop(next(iter(self._orders)))
            rng = np.random.default_rng([self.seed, epoch, shard])
            self._orders[key] = rng.permutation(int(self.windows_per_shard[shard]))
        return self._orders[key]

    def locate(self, positions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(shard, start token) of the windows at global stream ``positions``."""
        shard_ids = np.empty(len(positions), dtype=np.int64)
        starts = np.empty(len(positions), dtype=np.int64)
        epochs, within = np.divmod(positions, self.windows_per_epoch)
        for epoch in np.unique(epochs):
            rows = np.flatnonzero(epochs == epoch)
            order, ends, offset = self._epoch(int(epoch))
            k = np.searchsorted(ends, within[rows], side="right")
            shard_ids[rows] = order[k]
            index_in_shard = within[rows] - (ends[k] - self.windows_per_shard[order[k]])
            for shard in np.unique(order[k]):
                mine = shard_ids[rows] == shard
                windows = self._window_order(int(epoch), int(shard))[index_in_shard[mine]]
                starts[rows[mine]] = offset + windows * self.block_size
        return shard_ids, starts

    def positions(self, index: int) -> np.ndarray:
        """Global stream positions of this rank's batch ``index`` (counted from ``start_window``)."""
        first = self.start_window + (index * self.world_size + self.rank) * self.batch_size
        return first + np.arange(self.batch_size)

    def batch(self, index: int) -> Batch:
        shard_ids, starts = self.locate(self.positions(index))
        return _to_batch(_read_windows(self.shards, shard_ids, starts, self.block_size + 1))

    def __iter__(self) -> Iterator[Batch]:
        step, index = _worker_slice()
        while True:
            yield self.batch(index)
            index += step


class SequentialWindows(IterableDataset):
    """Non-overlapping windows covering a split once, in order: a deterministic evaluation set.

    Under DDP each rank takes every ``world_size``-th window with no padding, so no window is counted twice
    and the token-weighted mean over ranks is the exact loss over the split.
    """

    def __init__(
        self,
        shards: ShardSet,
        block_size: int,
        batch_size: int,
        rank: int = 0,
        world_size: int = 1,
        split: str = "validation",
    ) -> None:
        self.shards = shards
        self.block_size = block_size
        self.batch_size = batch_size
        self.windows_per_shard = np.maximum(shards.lengths - 1, 0) // block_size
        if self.windows_per_shard.sum() == 0:
            raise DataError(
                f"model.block_size ({block_size}) is too large for the {split} data: a shard must hold "
                f"block_size + 1 tokens, and the largest holds {int(shards.lengths.max())}; use a smaller "
                f"block_size or more {split} data"
            )
        self.window_ids = np.arange(rank, int(self.windows_per_shard.sum()), world_size)

    def __len__(self) -> int:
        return -(-len(self.window_ids) // self.batch_size)

    def __iter__(self) -> Iterator[Batch]:
        step, first = _worker_slice()
        ends = np.cumsum(self.windows_per_shard)
        for i in range(first * self.batch_size, len(self.window_ids), step * self.batch_size):
            ids = self.window_ids[i : i + self.batch_size]
            shard_ids = np.searchsorted(ends, ids, side="right")
            starts = (ids - (ends[shard_ids] - self.windows_per_shard[shard_ids])) * self.block_size
            yield _to_batch(_read_windows(self.shards, shard_ids, starts, self.block_size + 1))
