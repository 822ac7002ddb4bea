"""The data module every source extends: one preparation (once per node, locked, resumable) of the tokenizer
and the token shards, then DDP-aware, resumable loading of windows over them.

The path of one run. Instantiating a data module only checks its arguments: no request, no decompression, no
training. ``prepare_data`` (Lightning runs it on local rank 0 of each node, the other ranks waiting; or
``main.py prepare``) takes the data directory's lock, then: ``fetch`` (download or fetch what the source needs),
the tokenizer (:mod:`lit_gpt_mini.tokenizers.recipe`: reused from ``data_dir/tokenizer.json`` when it was made
from the same recipe and corpus, else built from the source's ``documents()`` stream and saved there), then
``write_shards`` (:mod:`data_modules.shards` in ``shard_dir``; the manifest names the tokenizer file and its
sha256). ``setup`` runs on every rank: it loads the tokenizer file and opens the shards; the model's ``setup``
then calls :meth:`TokenDataModule.connect` with its context length and takes the returned tokenizer's
vocabulary size. Windows (:mod:`data_modules.windows`), batches, ranks and resuming live here once. The module
counts the windows training consumed and saves that count in the checkpoint, so a resumed run continues the
stream exactly where it stopped (with any number of devices).

A source provides ``documents()`` (its text, one document at a time: the tokenizer's training and the shards
read the same stream), ``corpus()`` (what identifies that stream), and ``write_shards()``; ``fetch()`` when it
downloads something.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import itertools
import json
import os
import sys
from pathlib import Path
from typing import IO, Any, Callable, ClassVar, Iterable, Iterator, Optional

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, IterableDataset
from tqdm import tqdm

from data_modules.encode import TASK_CHARS, Encoder
from data_modules.shards import MANIFEST, ShardSet, ShardWriter, check_settings, read_manifest
from data_modules.windows import SequentialWindows, ShuffledWindows, split_windows
from lit_gpt_mini.errors import ConfigError, DataError
from lit_gpt_mini.files import sha256_of, storage_error
from lit_gpt_mini.log import EVERY_RANK, get_logger
from lit_gpt_mini.streams import batched
from lit_gpt_mini.tokenizers import GPT2Tokenizer, Tokenizer, TokenizerRecipe
from lit_gpt_mini.tokenizers.recipe import FILENAME as TOKENIZER_FILE
from lit_gpt_mini.tokenizers.recipe import load_or_build, load_tokenizer_file

log = get_logger(__name__)
_held: set[Path] = set()  # data directories whose lock this process holds (the lock is re-entrant)
LOCK_FILE = ".prepare.lock"


@contextlib.contextmanager
def exclusive_preparation(directory: Path) -> Iterator[None]:
    """One preparation at a time in ``directory``, across processes and across nodes that share a filesystem.

    Lightning prepares data once per node (``prepare_data_per_node``): right when each node has its own disk,
    but nodes sharing a filesystem would write the same shards at once. The first to take the lock prepares;
    the others wait, then find the shards complete. Where the filesystem has no locks, preparation goes on
    unlocked: run ``main.py prepare`` first there. A process that holds the lock may enter again.
    A directory this process cannot write (a prepared dataset shared read-only) gets no lock file: complete,
    it is read as it is; incomplete, the first write needed says so in one line.
    Its messages are this node's own (``EVERY_RANK``): only the waiting node knows it waits.

    Messages of the preparation: ``prepare_data`` runs on local rank 0 of every node, each node preparing its
    own data directory, so what a node did to its directory (tokenizer built, shards written, waiting for the
    lock) is printed by each node that did it (``EVERY_RANK``, prefixed with its rank). What the source says
    about its input (skipped rows, missing articles, filter counts) is the same on every node and is printed
    once per job (global rank zero).
    """
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise storage_error(directory, e) from None
    key = directory.resolve()
    if key in _held:
        yield
        return
    lock = _open_lock(directory / LOCK_FILE)
    with lock if lock is not None else contextlib.nullcontext():
        if lock is not None:
            _take_lock(lock, directory)
        _held.add(key)
        try:
            yield
        finally:
            _held.discard(key)
            if lock is not None:
                try:
                    fcntl.flock(lock, fcntl.LOCK_UN)
                except OSError:
                    pass


def _open_lock(path: Path) -> Optional[IO]:
    # The lock file, open for writing; in a directory this process cannot write (a prepared dataset shared
    # read-only, a read-only mount), the lock file a writer left, open for reading, or None: nothing is written
    # there (a write found to be needed fails in atomic_write with one line), so no lock needs to be created.
    try:
        return open(path, "a")
    except OSError as e:
        if e.errno not in (errno.EACCES, errno.EPERM, errno.EROFS):
            raise storage_error(path, e) from None
    try:
        return open(path)
    except OSError:
        return None


def _take_lock(lock: IO, directory: Path) -> None:
    # Exclusive to prepare; shared to only read a read-only directory (which still waits for a writer there).
    mode = fcntl.LOCK_EX if lock.writable() else fcntl.LOCK_SH
    try:
        fcntl.flock(lock, mode | fcntl.LOCK_NB)
    except BlockingIOError:
        log.info(f"Waiting for another process (or node) preparing {directory}", extra=EVERY_RANK)
        fcntl.flock(lock, mode)
    except OSError as e:  # e.g. a network filesystem mounted without lock support
        log.warning(f"cannot lock {directory} ({e}); preparing without a lock", extra=EVERY_RANK)


class TokenDataModule(L.LightningDataModule):
    """Base data module: a source's token shards served as windows of ``block_size + 1`` tokens.

    These arguments are every source's (a source changes only some defaults). A source extends one of the two
    kinds below, which differ in how they write the shards and hold out the validation and test splits (three
    disjoint parts of the token stream that together cover it): :class:`StreamedTokenDataModule` and
    :class:`InMemoryTokenDataModule`.

    Args:
        data_dir: Where this source downloads and caches its files; the tokenizer is saved as
            ``data_dir/tokenizer.json`` and the shards go to ``data_dir/shards``.
        batch_size: Windows per batch on each device (the micro-batch).
        seed: Seed of the training order; the same seed gives the same batches.
        num_workers: DataLoader worker processes; batches are identical for any number.
        tokenizer: How the tokenizer is made (``kind``: char, bpe or gpt2, and its settings); built once in
            ``prepare_data`` and reused while the recipe and the corpus stay the same. Each source has its own
            default kind and accepts all three.
        num_proc: Processes that tokenize the documents and count the BPE's chunks; ``None``: every CPU core.
            The shards and the tokenizer are the same for any number.

    The window length is the model's context (``model.block_size``), which the data learns from the model in
    :meth:`connect`, the one exchange between the two.
    """

    # What the documents look like, recorded in checkpoints (lit_gpt_mini.chat_format.TEXT_FORMATS): "chat" where
    # they are conversations, a line `name: text` per message (main.py chat and serve then take turns).
    text_format: ClassVar[str] = "text"

    def __init__(
        self,
        data_dir: str = "data",
        batch_size: int = 12,
        seed: int = 1337,
        num_workers: int = 0,
        tokenizer: TokenizerRecipe = TokenizerRecipe("gpt2"),
        num_proc: Optional[int] = None,
    ) -> None:
        super().__init__()
        positive("batch_size", batch_size)
        if not 0 <= seed < 2**63:  # numpy's generators take non-negative seeds only
            raise ConfigError(f"data.seed is {seed}; it must be a non-negative integer")
        if num_workers < 0:
            raise ConfigError(f"data.num_workers is {num_workers}; it must be 0 (load in the main process) or more")
        if not isinstance(tokenizer, TokenizerRecipe):
            raise ConfigError(f"data.tokenizer must be a tokenizer recipe (kind: char, bpe or gpt2), got {tokenizer!r}")
        if num_proc is not None:
            positive("num_proc", num_proc, "or null (every core)")
        self.data_dir = Path(data_dir)
        self.batch_size = batch_size
        self.seed = seed
        self.num_workers = num_workers
        self.recipe = tokenizer
        self.num_proc = num_proc if num_proc is not None else max(1, os.cpu_count() or 1)
        self.block_size: Optional[int] = None  # the model's context, given by connect()
        self._tokenizer: Optional[Tokenizer] = None
        self.train_shards: Optional[ShardSet] = None
        self.val_shards: Optional[ShardSet] = None
        self.test_shards: Optional[ShardSet] = None
        # Training windows consumed so far by all ranks together; saved in checkpoints so that a resumed run
        # continues the stream where it stopped.
        self.train_windows_seen = 0

    # --- the contract with the model ----------------------------------------------------------------------------

    def connect(self, block_size: int) -> Tokenizer:
        """The one exchange between data and model, made by the model's ``setup`` once the data is prepared: the
        data takes the model's context length (windows of ``block_size + 1`` tokens: inputs and targets), and the
        model takes the data's tokenizer (its vocabulary size is the model's; checkpoints carry the tokenizer)."""
        positive("block_size", block_size, key="model.block_size")
        self.block_size = block_size
        return self.tokenizer

    # --- what a source provides ---------------------------------------------------------------------------------

    def fetch(self) -> None:
        """Download or fetch what ``documents`` reads (nothing by default). Runs in ``prepare_data`` only."""

    def documents(self) -> Iterator[str]:
        """The source's text, one document at a time, in a fixed order: what the tokenizer learns from and what
        the shards hold."""
        raise NotImplementedError

    def corpus(self) -> dict[str, Any]:
        """JSON-able values that identify the document stream (a hash of the text, or the settings that select
        it): the saved tokenizer is reused only for the same corpus."""
        raise NotImplementedError

    @property
    def source(self) -> str:
        """What the text comes from, in messages (a path, a dataset's name)."""
        return type(self).__name__

    def summary(self) -> dict[str, Any]:
        """What the source has to say about the stream it gave (skipped rows by reason...), once it was read:
        added to the shard manifest."""
        return {}

    def shard_settings(self) -> dict[str, Any]:
        """What the shards were made from (a directory made otherwise is refused): the corpus, and the settings
        that only change the shards."""
        return self.corpus()

    def write_shards(self) -> None:
        """Write the shards with :attr:`tokenizer`; return at once when they are complete (the two kinds of
        source below implement it, each in its one way)."""
        raise NotImplementedError

    # --- the preparation ----------------------------------------------------------------------------------------

    def prepare_data(self) -> None:
        """Fetch, make (or reuse) the tokenizer, write the shards: once per node, under the directory's lock."""
        with exclusive_preparation(self.data_dir):
            self.fetch()
            corpus = self.corpus()
            # Shards made from another recipe or corpus are refused before their tokenizer is replaced.
            check_settings(self.shard_dir, self._settings())
            self._tokenizer, built = load_or_build(
                self.tokenizer_path, self.recipe, corpus, self.documents, self.num_proc,
                lambda message: log.info(message, extra=EVERY_RANK),
            )
            if built:
                log.info(f"Tokenizer: {self._tokenizer.name} ({self._tokenizer.vocab_size:,} tokens) saved as "
                         f"{self.tokenizer_path}", extra=EVERY_RANK)
            else:
                self._check_shards_tokenizer()
            self.write_shards()

    def _check_shards_tokenizer(self) -> None:
        # The manifest records the tokenizer its shards were made with: a tokenizer file changed since then (an
        # edit, a copy from another directory) is named here, not taken for shards of other settings.
        manifest = read_manifest(self.shard_dir)
        if manifest is not None and json.loads(json.dumps(self._tokenizer.to_dict())) != manifest["tokenizer"]:
            raise DataError(
                f"{self.tokenizer_path} is not the tokenizer the shards in {self.shard_dir} were made with (it was "
                f"changed after they were written; {MANIFEST} holds the original): put the original file back, "
                f"or delete {self.data_dir} and prepare again"
            )

    def _settings(self, extra: Optional[dict[str, Any]] = None) -> dict[str, Any]:
        return {**self.shard_settings(), "tokenizer_recipe": self.recipe.identity(), **(extra or {})}

    def _tokenizer_entry(self) -> dict[str, Any]:
        # the manifest names the tokenizer file the shards were made with (relative to the shard directory)
        return {"file": os.path.relpath(self.tokenizer_path, self.shard_dir), "sha256": sha256_of(self.tokenizer_path)}

    def _encoded(self, encode: Callable, texts: Iterable[str]) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        # A character alphabet learned from the first max_chars characters may lack one that comes later.
        try:
            yield from encode(batched(texts, TASK_CHARS))
        except ValueError as e:
            if self.tokenizer.kind != "char":
                raise
            raise DataError(
                f"{e}: the alphabet in {self.tokenizer_path} was learned from the first data.tokenizer.max_chars="
                f"{self.recipe.max_chars} characters; raise or unset max_chars (or use kind bpe)"
            ) from None

    # --- loading ------------------------------------------------------------------------------------------------

    @property
    def shard_dir(self) -> Path:
        return self.data_dir / "shards"

    @property
    def tokenizer_path(self) -> Path:
        """The tokenizer file ``prepare_data`` writes and every rank's ``setup`` reads."""
        return self.data_dir / TOKENIZER_FILE

    @property
    def tokenizer(self) -> Tokenizer:
        """The data's tokenizer: the one ``prepare_data`` made, or read from :attr:`tokenizer_path`. A ``gpt2``
        recipe needs no file (its vocabulary is fixed), the others need the preparation first."""
        if self._tokenizer is None:
            if self.recipe.kind == "gpt2" and not self.tokenizer_path.is_file():
                self._tokenizer = GPT2Tokenizer()
            else:
                self._tokenizer = load_tokenizer_file(self.tokenizer_path)[0]
        return self._tokenizer

    @property
    def train_tokens_seen(self) -> int:
        """Training tokens consumed so far, over all devices (logged as ``train/tokens``)."""
        return self.train_windows_seen * (self.block_size or 0)

    def setup(self, stage: str) -> None:
        """On every rank: load the tokenizer file (the same for all ranks) and open the shards."""
        if self.train_shards is not None:
            return
        if self.tokenizer_path.is_file():
            self._tokenizer = load_tokenizer_file(self.tokenizer_path)[0]
        self.train_shards = ShardSet.open(self.shard_dir, "train", self.tokenizer)
        self.val_shards = ShardSet.open(self.shard_dir, "val", self.tokenizer)
        self.test_shards = ShardSet.open(self.shard_dir, "test", self.tokenizer)

    def _rank_and_world(self) -> tuple[int, int]:
        trainer = self.trainer
        return (trainer.global_rank, trainer.world_size) if trainer is not None else (0, 1)

    def _window(self) -> int:
        if self.block_size is None:
            raise ConfigError(f"{type(self).__name__} has no window length yet: connect(block_size) gives it the model's")
        return self.block_size

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
                self._window(),
                self.batch_size,
                self.seed,
                rank=rank,
                world_size=world,
                start_window=self.train_windows_seen,
            )
        )

    def val_dataloader(self) -> DataLoader:
        rank, world = self._rank_and_world()
        return self._loader(SequentialWindows(self.val_shards, self._window(), self.batch_size, rank, world))

    def test_dataloader(self) -> DataLoader:
        """The held-out test split, read like validation (every window once, in order): data neither training
        nor validation saw."""
        rank, world = self._rank_and_world()
        return self._loader(SequentialWindows(self.test_shards, self._window(), self.batch_size, rank, world, "test"))

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


class StreamedTokenDataModule(TokenDataModule):
    """A source streamed once, of unknown length (FineWeb, Reddit dumps): its documents are tokenized as they
    come into shards of ``shard_size`` tokens; the head of the stream is validation, the tokens right after it
    are the test split, and the rest is training.

    Args:
        val_tokens: The first ``val_tokens`` tokens of the stream are validation (``None``: the first shard).
        test_tokens: The ``test_tokens`` tokens after them are the test split (``None``: as many as validation).
        shard_size: Tokens per shard file (100M: 200 MB as uint16).
        max_tokens: Stop after this many tokens in all (``None``: the whole stream).

    The other arguments are :class:`TokenDataModule`'s. The preparation resumes where an interrupted one
    stopped, and gives the same shards.
    """

    def __init__(
        self,
        val_tokens: Optional[int] = None,
        test_tokens: Optional[int] = None,
        shard_size: int = 100_000_000,
        max_tokens: Optional[int] = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        positive("shard_size", shard_size)
        if val_tokens is not None:
            positive("val_tokens", val_tokens, "or null (the first shard)")
        if test_tokens is not None:
            positive("test_tokens", test_tokens, "or null (as many as validation)")
        self.val_tokens = val_tokens
        self.test_tokens = test_tokens
        self.shard_size = shard_size
        self.max_tokens = max_tokens
        held_out = self.held_out_tokens
        if max_tokens is not None and max_tokens <= sum(held_out):
            raise ConfigError(
                f"data.max_tokens ({max_tokens}) leaves nothing to train on after the first {held_out[0]} tokens "
                f"for validation and {held_out[1]} for test: raise max_tokens or lower val_tokens/test_tokens/shard_size"
            )

    @property
    def held_out_tokens(self) -> tuple[int, int]:
        """(validation, test) tokens at the head of the stream, the defaults resolved."""
        val = self.val_tokens if self.val_tokens is not None else self.shard_size
        return val, self.test_tokens if self.test_tokens is not None else val

    def shard_settings(self) -> dict[str, Any]:
        return {**self.corpus(), "max_tokens": self.max_tokens}

    def empty(self) -> str:
        """What was wrong when the stream gave no document at all."""
        return "no documents"

    def write_shards(self) -> Optional[dict[str, Any]]:
        """Tokenize the stream into shards (see :class:`~data_modules.shards.ShardWriter`), in ``num_proc``
        processes with a progress bar; resume an interrupted run; do nothing when already done. Returns the
        manifest (``None`` when the shards were already complete)."""
        val_tokens, test_tokens = self.held_out_tokens
        with exclusive_preparation(self.data_dir):  # nodes sharing a filesystem prepare one at a time
            writer = ShardWriter(self.shard_dir, self.tokenizer, self.shard_size, val_tokens, self._settings(),
                                 test_tokens=test_tokens)
            if writer.is_complete():
                return None
            next_doc, next_token = writer.resume()
            # Documents before the resume point are read (to count them) but not tokenized again.
            texts = itertools.islice(self.documents(), next_doc, None)
            doc = next_doc
            bar = tqdm(total=self.max_tokens, initial=writer.total_tokens, unit="tok", unit_scale=True,
                       desc=f"Tokenizing {self.source}", file=sys.stderr, dynamic_ncols=True)
            with bar, Encoder(self.num_proc, self.tokenizer) as encode:
                for tokens, lengths in self._encoded(encode, texts):
                    first = 0
                    if doc == next_doc and next_token:  # resuming inside this document: skip what is written
                        first, tokens, lengths = next_token, tokens[next_token:], lengths.copy()
                        lengths[0] -= next_token
                    before = writer.total_tokens
                    done = writer.add_documents(doc, tokens, lengths, first, self.max_tokens)
                    # documents taken so far, counting one that max_tokens cut in the middle
                    doc = writer.position[0] + (writer.position[1] > 0) if done else doc + len(lengths)
                    bar.update(writer.total_tokens - before)
                    bar.set_postfix(docs=f"{doc:,}", refresh=False)
                    if done:
                        break
            if doc == 0:
                raise DataError(f"{self.source} gave {self.empty()}")
            manifest = writer.finish({"documents": doc, "tokenizer_file": self._tokenizer_entry(), **self.summary()})
            tokens = manifest["tokens"]
            log.info(
                f"Prepared {doc:,} documents from {self.source}: {tokens['train']:,} training, {tokens['val']:,} "
                f"validation and {tokens['test']:,} test tokens in {len(manifest['shards'])} shards in {self.shard_dir}",
                extra=EVERY_RANK,
            )
            return manifest


class InMemoryTokenDataModule(TokenDataModule):
    """A source read whole, whose token stream fits in memory (a text file, articles, chat exports): every
    document tokenized (end-of-text first); the tail of the stream is validation, its head the test split, and
    the rest (the middle) training.

    Args:
        val_fraction: The last ``val_fraction`` of the token stream is validation.
        test_fraction: The first ``test_fraction`` of the token stream is the test split.

    The other arguments are :class:`TokenDataModule`'s.
    """

    def __init__(self, val_fraction: float = 0.1, test_fraction: float = 0.05, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if not 0.0 < val_fraction < 1.0:
            raise ConfigError(f"data.val_fraction must be between 0 and 1, got {val_fraction}")
        if not 0.0 < test_fraction < 1.0 - val_fraction:
            raise ConfigError(
                f"data.test_fraction must be above 0 and below 1 - val_fraction ({1.0 - val_fraction:g}) so that "
                f"training keeps some data, got {test_fraction}"
            )
        self.val_fraction = val_fraction
        self.test_fraction = test_fraction

    def shard_settings(self) -> dict[str, Any]:
        return {**self.corpus(), "val_fraction": self.val_fraction, "test_fraction": self.test_fraction}

    def write_shards(self) -> None:
        """The whole token stream, its last ``val_fraction`` as one validation shard, its first ``test_fraction``
        as one test shard and the rest as one training shard (tokenized in ``num_proc`` processes, in the
        tokenizer's dtype). Nothing is done when complete."""
        with exclusive_preparation(self.data_dir):
            if self._complete():
                return
            with Encoder(self.num_proc, self.tokenizer) as encode:
                parts = [tokens for tokens, _ in self._encoded(encode, self.documents())]
            stream = np.concatenate(parts) if parts else np.empty(0, dtype=self.tokenizer.dtype)
            # The validation part is the tail whatever test_fraction is, and the test part is the head: training
            # keeps the text just before validation (in a book or a chat log, the text most like it), so validation
            # figures stay comparable across settings of test_fraction (a test part cut from just before the tail
            # raised the Shakespeare recipes' validation loss by ~0.1 nats).
            n_val = int(len(stream) * self.val_fraction)
            n_test = int(len(stream) * self.test_fraction)
            if n_val == 0 or n_test == 0 or n_val + n_test >= len(stream):
                raise DataError(
                    f"{len(stream)} tokens of {self.source} are too few to hold out val_fraction={self.val_fraction} "
                    f"and test_fraction={self.test_fraction}: add data or raise the fraction that is too small"
                )
            test, train, val = stream[:n_test], stream[n_test : len(stream) - n_val], stream[len(stream) - n_val :]
            writer = self._writer(len(stream), n_val, n_test)
            # the writer makes the stream's first val_tokens tokens validation and the next test_tokens the test
            # split: the parts go to it in that order
            parts = [val, test, train]
            next_part, next_token = writer.resume()
            for part in range(next_part, len(parts)):
                first = next_token if part == next_part else 0
                writer.add(part, parts[part][first:], first)
            writer.finish({"tokenizer_file": self._tokenizer_entry(), **self.summary()})
            log.info(f"Prepared {len(train):,} training, {len(val):,} validation and {len(test):,} test tokens in "
                     f"{self.shard_dir}", extra=EVERY_RANK)

    def _writer(self, shard_size: int, val_tokens: int, test_tokens: int) -> ShardWriter:
        return ShardWriter(self.shard_dir, self.tokenizer, shard_size=max(1, shard_size), val_tokens=max(1, val_tokens),
                           settings=self._settings(), test_tokens=max(0, test_tokens))

    def _complete(self) -> bool:
        # Whether the shards are complete (their sizes are in the manifest's settings, not known before tokenizing).
        manifest = read_manifest(self.shard_dir)
        if manifest is None:
            return False
        settings = manifest["settings"]
        return self._writer(settings.get("shard_size", 1), settings.get("val_tokens", 1),
                            settings.get("test_tokens", 0)).is_complete()


def positive(name: str, value: int, alternative: str = "", key: Optional[str] = None) -> None:
    """Refuse a count below 1, naming its config key (``data.<name>`` unless ``key`` says otherwise)."""
    if value < 1:
        raise ConfigError(f"{key or 'data.' + name} is {value}; it must be positive{' ' + alternative if alternative else ''}")
