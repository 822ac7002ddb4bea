"""What every data source shares: token shards on disk, windows over them, DDP-aware and resumable loading.

A source subclasses :class:`TokenDataModule` and provides two things: ``load_tokenizer`` (cheap, every
process; the CLI needs the vocabulary before training starts) and ``prepare_data`` (download, tokenize and
write :mod:`data_modules.shards` into ``shard_dir``: rank 0 only, skipped when done, sets no attributes).
Everything after that, windows, batches, ranks and resuming, lives here once.

The training stream is a pure function of the seed and a global window position: epoch after epoch, every
window of the training shards once per epoch in a seeded order (shards shuffled, windows shuffled inside
each shard, window grid shifted by a random offset per epoch). Global batch ``g`` is the ``B * world_size``
windows at positions ``[g * B * W, (g + 1) * B * W)``; rank ``r`` takes the ``r``-th run of ``B`` of them, so
ranks never share a window. The module counts the windows training consumed and saves that count in the
checkpoint, so a resumed run continues the stream exactly where it stopped (with any number of devices).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import itertools
import multiprocessing
import os
import sys
import tempfile
import urllib.request
from collections import deque
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Optional

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, IterableDataset
from tqdm import tqdm

from data_modules.shards import ShardSet, ShardWriter, publish
from lit_gpt_mini.errors import DataError
from lit_gpt_mini.tokenizers import Tokenizer, tokenizer_from_dict


# A batch leaves the loader as one contiguous (B, T + 1) window tensor in the shards' integer dtype (uint16
# for vocabularies up to 65,536): the smallest host-to-device copy, pinned and asynchronous on a GPU. Inputs
# and targets are cut from it on the device (TokenDataModule.on_after_batch_transfer).
Batch = torch.Tensor


def download(url: str, dest: Path) -> None:
    """Fetch ``url`` into ``dest`` atomically (a temporary file renamed into place), with a progress bar.

    The network boundary of the sources that download files.
    """
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".part")
    try:
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=60) as response:
            total = int(response.headers.get("Content-Length") or 0) or None
            with tqdm(total=total, unit="B", unit_scale=True, desc=f"Downloading {dest.name}") as bar:
                while chunk := response.read(1 << 16):
                    out.write(chunk)
                    bar.update(len(chunk))
        publish(tmp, dest)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


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


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


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
    return out


_TASK_CHARS = 1 << 20  # text per task sent to a tokenizer process: large enough to amortize the transfer
_worker_tokenizer: Optional[Tokenizer] = None


def _init_worker(tokenizer: dict[str, Any]) -> None:
    global _worker_tokenizer
    _worker_tokenizer = tokenizer_from_dict(tokenizer)


def encode_documents(
    texts: list[str], tokenizer: Optional[Tokenizer] = None
) -> tuple[np.ndarray, np.ndarray]:
    """The texts as one array of ids, each document ``[end-of-text] + ids`` (end-of-text starts every
    document), and the documents' lengths."""
    tokenizer = tokenizer or _worker_tokenizer
    eot = tokenizer.eot_id
    ids: list[int] = []
    lengths = np.empty(len(texts), dtype=np.int64)
    for i, text in enumerate(texts):
        start = len(ids)
        ids.append(eot)
        ids.extend(tokenizer.encode(text))
        lengths[i] = len(ids) - start
    return np.array(ids, dtype=np.uint16), lengths


def _batched(texts: Iterable[str], chars: int) -> Iterator[list[str]]:
    batch: list[str] = []
    size = 0
    for text in texts:
        batch.append(text)
        size += len(text)
        if size >= chars:
            yield batch
            batch, size = [], 0
    if batch:
        yield batch


class _Encoder:
    """``encode(batches)`` yields each batch's token arrays in input order, from a process pool when
    ``num_proc > 1``; the same order for any ``num_proc``, so the shards are identical."""

    def __init__(self, num_proc: int, tokenizer: Tokenizer) -> None:
        self.num_proc = num_proc
        self.tokenizer = tokenizer
        self.pool = None

    def __enter__(self):
        if self.num_proc > 1:
            self.pool = multiprocessing.get_context("fork").Pool(
                self.num_proc, initializer=_init_worker, initargs=(self.tokenizer.to_dict(),)
            )
        return self.encode

    def encode(self, batches: Iterable[list[str]]) -> Iterator[list[np.ndarray]]:
        if self.pool is None:
            for batch in batches:
                yield encode_documents(batch, self.tokenizer)
            return
        # Pool.imap would read the whole (possibly endless) stream into its queue: keep a bounded window of
        # tasks in flight instead.
        pending: deque = deque()
        for batch in batches:
            pending.append(self.pool.apply_async(encode_documents, (batch,)))
            # hand on what is done (in order) before reading more: a slow stream must not hold finished work
            while pending and (pending[0].ready() or len(pending) >= 2 * self.num_proc):
                yield pending.popleft().get()
        while pending:
            yield pending.popleft().get()

    def __exit__(self, *exc: Any) -> None:
        if self.pool is not None:
            self.pool.terminate()
            self.pool.join()


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
                f"data.block_size ({block_size}) is too large for the training data: a shard must hold "
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

    def __init__(self, shards: ShardSet, block_size: int, batch_size: int, rank: int = 0, world_size: int = 1):
        self.shards = shards
        self.block_size = block_size
        self.batch_size = batch_size
        self.windows_per_shard = np.maximum(shards.lengths - 1, 0) // block_size
        if self.windows_per_shard.sum() == 0:
            raise DataError(
                f"data.block_size ({block_size}) is too large for the validation data: a shard must hold "
                f"block_size + 1 tokens, and the largest holds {int(shards.lengths.max())}; use a smaller "
                f"block_size or more validation data"
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
            with bar, _Encoder(num_proc, self.tokenizer) as encode:
                for tokens, lengths in encode(_batched(texts, _TASK_CHARS)):
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
