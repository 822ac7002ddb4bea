"""The one on-disk format for tokenized data: shards of token ids with a self-describing header.

Every source (Shakespeare, FineWeb, Wikipedia, Discord, Reddit) writes its token stream with
:class:`ShardWriter` and every training run reads it back with :class:`ShardSet`.

A shard is ``<split>_<index>.bin``: a 256-byte header, then ``num_tokens`` token ids as little-endian uint16
(uint32 when the vocabulary does not fit 16 bits). The header holds a magic string and format version, the id
width, the token count, the tokenizer's name, vocabulary size and end-of-text id, a sha256 of the ids, and
the position in the document stream where the shard ends, which lets an interrupted preparation resume
exactly. Documents are separated by the tokenizer's end-of-text token, which starts each document (GPT-2's
convention), so a window never has to guess where one text ended.

A directory of shards is complete when its ``manifest.json`` exists: it is written last, atomically, and
lists the shards with their splits, token counts and checksums, the tokenizer and the preparation settings.

What is checked, and when. Every read (each process's ``setup``): the manifest's structure, each header
(magic, version, id width, a tokenizer name that decodes, end-of-text and largest id below the vocabulary
size), its size against its token count, and header against manifest (file, split, count, checksum) and the
run's tokenizer: a few hundred bytes per shard. Once per change of the directory (``prepare_data``, rank 0):
the full check, every shard re-hashed against its checksum and scanned for ids outside the vocabulary; it
leaves ``verified.json`` (each shard's size and modification time) so the next run only compares those. The
first read of each shard in a process (:meth:`ShardSet.read`): the same re-hash, which catches a shard changed
in place with its size and time kept; and every batch is checked for ids outside the vocabulary where the
windows are cut (:mod:`data_modules.windows`).
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import numpy as np

from lit_gpt_mini.errors import DataError, StorageError
from lit_gpt_mini.files import atomic_write, remove, write_json
from lit_gpt_mini.tokenizers import Tokenizer
from lit_gpt_mini.tokenizers.base import token_dtype

MAGIC = b"LGMTOKS\x00"
VERSION = 1
HEADER_BYTES = 256
MANIFEST = "manifest.json"
SETTINGS = "settings.json"
VERIFIED = "verified.json"
SPLITS = ("train", "val", "test")
# magic, version, itemsize, num_tokens, vocab_size, eot (-1: none), split, end_doc, end_token, sha256, tokenizer
_HEADER = struct.Struct("<8sIIQIiB7xQQ32s64s")
# Added after format 1 shipped, in what was zero padding: the largest id plus one (0: not recorded).
_MAX_ID = struct.Struct("<I")
assert _HEADER.size + _MAX_ID.size <= HEADER_BYTES


def dtype_for(vocab_size: int) -> np.dtype:
    """The shards' dtype for a vocabulary: the narrowest that holds every id, little-endian on disk."""
    return token_dtype(vocab_size).newbyteorder("<")


@dataclass(frozen=True)
class ShardHeader:
    """What a shard says about itself. ``end_doc``/``end_token``: the stream position right after its last
    token (document index, token index inside that document), where the next shard starts."""

    num_tokens: int
    itemsize: int
    vocab_size: int
    eot_id: Optional[int]
    split: str
    end_doc: int
    end_token: int
    sha256: str
    tokenizer: str
    max_id: Optional[int] = None  # the largest id in the shard (None in shards written before it was recorded)

    @property
    def dtype(self) -> np.dtype:
        return np.dtype(np.uint16 if self.itemsize == 2 else np.uint32).newbyteorder("<")

    def pack(self) -> bytes:
        packed = _HEADER.pack(
            MAGIC,
            VERSION,
            self.itemsize,
            self.num_tokens,
            self.vocab_size,
            -1 if self.eot_id is None else self.eot_id,
            SPLITS.index(self.split),
            self.end_doc,
            self.end_token,
            bytes.fromhex(self.sha256),
            self.tokenizer.encode("utf-8"),
        )
        packed += _MAX_ID.pack(0 if self.max_id is None else self.max_id + 1)
        return packed.ljust(HEADER_BYTES, b"\x00")


def _redo(path: Path) -> str:
    return f"delete {path.name} (finished shards are kept) and run the preparation again"


def read_header(path: Path) -> ShardHeader:
    """Read and check a shard's header, and that the file holds exactly the tokens it announces."""
    try:
        with open(path, "rb") as f:
            raw = f.read(HEADER_BYTES)
        size = os.path.getsize(path)
    except OSError as e:
        raise DataError(f"cannot read shard {path}: {e}") from None
    if len(raw) < HEADER_BYTES or raw[:8] != MAGIC:
        raise DataError(f"{path} is not a lit-gpt-mini token shard (bad header): {_redo(path)}")
    _, version, itemsize, num_tokens, vocab_size, eot, split, end_doc, end_token, digest, name = _HEADER.unpack(
        raw[: _HEADER.size]
    )
    if version != VERSION:
        raise DataError(f"{path} has shard format version {version}, this code reads {VERSION}: {_redo(path)}")
    if itemsize not in (2, 4) or split >= len(SPLITS):
        raise DataError(f"{path} has a corrupt header (itemsize {itemsize}, split {split}): {_redo(path)}")
    try:
        tokenizer = name.rstrip(b"\x00").decode("utf-8")
    except UnicodeDecodeError:
        tokenizer = ""
    (max_id,) = _MAX_ID.unpack_from(raw, _HEADER.size)
    max_id = None if max_id == 0 else max_id - 1
    problem = None
    if not tokenizer:
        problem = "its tokenizer name is not valid UTF-8" if name.strip(b"\x00") else "it names no tokenizer"
    elif vocab_size < 1 or dtype_for(vocab_size).itemsize != itemsize:
        problem = f"vocabulary size {vocab_size} does not fit its {itemsize}-byte ids"
    elif eot >= vocab_size:
        problem = f"end-of-text id {eot} is outside its vocabulary of {vocab_size}"
    elif max_id is not None and max_id >= vocab_size:
        problem = f"it holds id {max_id}, outside its vocabulary of {vocab_size}"
    if problem:
        raise DataError(f"{path} has a corrupt header ({problem}): {_redo(path)}")
    expected = HEADER_BYTES + num_tokens * itemsize
    if size != expected:
        raise DataError(
            f"{path} is {size} bytes but its header announces {num_tokens} tokens ({expected} bytes): the file "
            f"is truncated or was changed; {_redo(path)}"
        )
    return ShardHeader(
        num_tokens=num_tokens,
        itemsize=itemsize,
        vocab_size=vocab_size,
        eot_id=None if eot < 0 else eot,
        split=SPLITS[split],
        end_doc=end_doc,
        end_token=end_token,
        sha256=digest.hex(),
        tokenizer=tokenizer,
        max_id=max_id,
    )


def open_tokens(path: Path, header: ShardHeader) -> np.memmap:
    """The shard's ids as a read-only memmap (no copy; pages are read on access)."""
    return np.memmap(path, dtype=header.dtype, mode="r", offset=HEADER_BYTES, shape=(header.num_tokens,))


def verify_checksum(path: Path) -> ShardHeader:
    """Re-hash a shard's ids and compare with its header, and check every id is inside the vocabulary: catches
    corruption the size check cannot (and ids that would index past the model's embedding)."""
    header = read_header(path)
    digest = hashlib.sha256()
    largest = -1
    try:
        with open(path, "rb") as f:
            f.seek(HEADER_BYTES)
            while chunk := f.read(1 << 24):
                digest.update(chunk)
                largest = max(largest, int(np.frombuffer(chunk, dtype=header.dtype).max()))
    except OSError as e:
        raise DataError(f"cannot read shard {path}: {e}") from None
    if digest.hexdigest() != header.sha256:
        raise DataError(f"{path}: the token ids do not match the checksum in its header (corrupt file); {_redo(path)}")
    if largest >= header.vocab_size or (header.max_id is not None and header.num_tokens and largest != header.max_id):
        raise DataError(
            f"{path} holds token id {largest} but its header says ids are below {header.vocab_size} (largest "
            f"{header.max_id}): the shard was written by other code or damaged; {_redo(path)}"
        )
    return header


def write_shard(path: Path, tokens: np.ndarray, header: ShardHeader) -> None:
    """Write one shard atomically: a reader sees the whole file or no file, never a truncated one."""
    with atomic_write(path, "wb", fsync=True) as f:
        f.write(header.pack())
        f.write(np.ascontiguousarray(tokens, dtype=header.dtype).tobytes())


def read_manifest(directory: Path) -> Optional[dict[str, Any]]:
    """The directory's manifest (its structure checked), or ``None`` while its preparation has not finished."""
    path = Path(directory) / MANIFEST
    if not path.exists():
        return None
    redo = "delete it and run the preparation again"
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise DataError(f"{path} is unreadable ({e}): {redo}") from None
    problem = _manifest_problem(manifest)
    if problem:
        raise DataError(f"{path} is not a valid shard manifest ({problem}): {redo}")
    return manifest


def _manifest_problem(manifest: Any) -> Optional[str]:
    # What is wrong with a manifest's structure, or None: every key the readers use, with its type.
    if not isinstance(manifest, dict):
        return f"a JSON object was expected, not {type(manifest).__name__}"
    for key, kind in (("shards", list), ("settings", dict), ("tokenizer", dict), ("tokens", dict)):
        if not isinstance(manifest.get(key), kind):
            return f"{key!r} is missing or not a {kind.__name__}"
    if not manifest["shards"]:
        return "'shards' is empty"
    names = set()
    for i, entry in enumerate(manifest["shards"]):
        if not isinstance(entry, dict):
            return f"shards[{i}] is not an object"
        file, split, tokens, sha = (entry.get(k) for k in ("file", "split", "tokens", "sha256"))
        if not isinstance(file, str) or not file.endswith(".bin") or Path(file).name != file or file.startswith("."):
            return f"shards[{i}].file {file!r} is not a shard file name"
        if file in names:
            return f"shards[{i}].file {file!r} is listed twice"
        names.add(file)
        if split not in SPLITS:
            return f"shards[{i}].split {split!r} is not one of {list(SPLITS)}"
        if isinstance(tokens, bool) or not isinstance(tokens, int) or tokens < 0:
            return f"shards[{i}].tokens {tokens!r} is not a token count"
        if not isinstance(sha, str) or len(sha) != 64 or any(c not in "0123456789abcdef" for c in sha):
            return f"shards[{i}].sha256 {sha!r} is not a sha256"
    return None


def _check_entry(directory: Path, entry: dict[str, Any], header: ShardHeader) -> None:
    # A header against its manifest entry: a manifest edited or mixed up with another directory's is refused.
    path = directory / entry["file"]
    for field, listed, actual in (
        ("split", entry["split"], header.split),
        ("tokens", entry["tokens"], header.num_tokens),
        ("sha256", entry["sha256"], header.sha256),
    ):
        if listed != actual:
            raise DataError(
                f"{path}: {directory / MANIFEST} lists its {field} as {listed!r} but its header says {actual!r}: "
                f"delete {directory / MANIFEST} and run the preparation again (finished shards are kept)"
            )


def _stat(path: Path) -> list[int]:
    st = path.stat()
    return [st.st_size, st.st_mtime_ns]


def _fingerprint(directory: Path, manifest: dict[str, Any]) -> dict[str, list[int]]:
    # What the full check saw: the manifest's and every shard's size and modification time.
    files = [MANIFEST] + [entry["file"] for entry in manifest["shards"]]
    return {name: _stat(directory / name) for name in files}


def verify_directory(directory: Path, manifest: Optional[dict[str, Any]] = None) -> None:
    """The full check of a complete shard directory: every listed shard exists, matches the manifest, hashes
    to its checksum and holds only ids inside its vocabulary. Skipped when ``verified.json`` shows no file
    changed since the last full check (a stat per shard); records a passed check there."""
    directory = Path(directory)
    manifest = manifest if manifest is not None else read_manifest(directory)
    if manifest is None:
        raise DataError(f"{directory} holds no finished token shards ({MANIFEST} is missing): run prepare_data")
    for entry in manifest["shards"]:
        if not (directory / entry["file"]).is_file():
            raise DataError(
                f"shard {directory / entry['file']} listed in {directory / MANIFEST} is missing: delete the "
                f"manifest and run prepare again"
            )
    fingerprint = _fingerprint(directory, manifest)
    try:
        if json.loads((directory / VERIFIED).read_text(encoding="utf-8")) == fingerprint:
            return
    except (OSError, ValueError):
        pass  # never verified, or the record is damaged: verify
    for entry in manifest["shards"]:
        _check_entry(directory, entry, verify_checksum(directory / entry["file"]))
    _record_verified(directory, fingerprint)


def _record_verified(directory: Path, fingerprint: dict[str, list[int]]) -> None:
    try:
        write_json(directory / VERIFIED, fingerprint)
    except StorageError:
        pass  # a read-only data directory: the full check runs again next time, nothing worse


def check_settings(directory: Path, settings: dict[str, Any], every_key: bool = False) -> None:
    """Refuse a directory holding shards prepared, or started, with other ``settings`` (only the keys given,
    unless ``every_key``): called before anything is rebuilt, so shards are never mixed with other data."""
    path = Path(directory) / SETTINGS
    if not path.is_file() or not any(Path(directory).glob("*.bin")):
        return  # nothing prepared yet: a failed start (a wrong path, say) must not pin its settings
    try:
        previous = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise DataError(f"{path} is unreadable ({e}): delete {directory} to prepare it again") from None
    if isinstance(previous, dict) and "test_tokens" not in previous:
        raise DataError(without_test_split(directory))
    settings = json.loads(json.dumps(settings))  # (tuples read back as lists)
    keys = set(previous) | set(settings) if every_key else set(settings)
    changed = sorted(k for k in keys if previous.get(k) != settings.get(k))
    if changed:
        diff = ", ".join(f"{k}: {previous.get(k)!r} -> {settings.get(k)!r}" for k in changed)
        raise DataError(
            f"{directory} was prepared with other settings ({diff}); delete that directory to "
            f"prepare it again, or choose another data_dir"
        )


def without_test_split(directory: Path) -> str:
    """What to do with shards prepared before there was a test split: their training split holds what is now
    test data, so they are never reused as they are."""
    return (f"{directory} was prepared by an earlier version, without a test split (its training shards hold what "
            f"is now the test split): delete {directory} and prepare it again")


class ShardSet:
    """The shards of one split, read through short-lived memmaps.

    A memmap keeps every page it touched resident (and counted in the process's memory) for as long as it is
    open, so a long run over many gigabytes would look like a leak. Reads open the shard, copy the windows out
    and close it again: the page cache still serves repeated reads, but nothing accumulates in the process.
    """

    def __init__(self, paths: list[Path], headers: list[ShardHeader]) -> None:
        self.paths = paths
        self.headers = headers
        self.lengths = np.array([h.num_tokens for h in headers], dtype=np.int64)
        self._hashed: set[int] = set()  # shards this process re-hashed (each DataLoader worker has its own)

    @classmethod
    def open(cls, directory: Path, split: str, tokenizer: Tokenizer) -> "ShardSet":
        """The ``split`` shards listed in ``directory``'s manifest, each checked against it and ``tokenizer``."""
        directory = Path(directory)
        manifest = read_manifest(directory)
        if manifest is None:
            raise DataError(f"{directory} holds no finished token shards ({MANIFEST} is missing): run prepare_data")
        if "test_tokens" not in manifest["settings"]:
            raise DataError(without_test_split(directory))
        paths, headers = [], []
        for entry in manifest["shards"]:
            path = directory / entry["file"]
            if not path.is_file():
                raise DataError(f"shard {path} listed in {directory / MANIFEST} is missing: delete the manifest and run prepare again")
            header = read_header(path)
            _check_entry(directory, entry, header)  # every split: a swapped pair is caught from either side
            if entry["split"] != split:
                continue
            if header.tokenizer != tokenizer.name or header.vocab_size != tokenizer.vocab_size:
                raise DataError(
                    f"{path} was tokenized with {header.tokenizer!r} ({header.vocab_size} tokens) but this run's "
                    f"tokenizer is {tokenizer.name!r} ({tokenizer.vocab_size} tokens): delete {directory} or use "
                    f"another data_dir"
                )
            paths.append(path)
            headers.append(header)
        if not paths:
            raise DataError(f"{directory} has no {split} shards: the data is too small for a {split} split")
        return cls(paths, headers)

    @property
    def num_tokens(self) -> int:
        return int(self.lengths.sum())

    def read(self, shard: int, starts: np.ndarray, length: int) -> np.ndarray:
        """Windows ``tokens[s : s + length]`` of one shard for each start ``s``, as an (n, length) array.

        The first read of a shard in a process re-hashes it against its checksum: the full check of
        ``prepare_data`` skips files whose size and modification time did not change, and this catches a shard
        changed in place all the same (cost: README, "Errors in your input")."""
        if shard not in self._hashed:
            header = verify_checksum(self.paths[shard])
            if header != self.headers[shard]:
                raise DataError(f"{self.paths[shard]} changed while this run was reading it; {_redo(self.paths[shard])}")
            self._hashed.add(shard)
        tokens = open_tokens(self.paths[shard], self.headers[shard])
        windows = np.array(tokens[starts[:, None] + np.arange(length)])
        del tokens  # unmaps the file: the pages leave this process's resident memory
        return windows


class ShardWriter:
    """Cuts a stream of tokenized documents into shards; resumes an interrupted preparation exactly.

    The stream's first ``val_tokens`` tokens form the validation split, the next ``test_tokens`` the test split,
    the rest the training split; every shard holds ``shard_size`` tokens (the last of each split may hold fewer)
    and belongs to one split.
    Shards are written in order, each atomically, with the stream position where it ends; on a restart,
    :meth:`resume` keeps the finished shards and says which document (and token inside it) comes next, so
    the re-run produces byte-identical shards.

    Args:
        directory: Where the shards go; created if missing.
        tokenizer: Its name, vocabulary size and end-of-text id go into every header.
        shard_size: Tokens per shard.
        val_tokens: Tokens at the start of the stream that go to the validation split.
        test_tokens: Tokens right after them that go to the test split (0: no test split).
        settings: What the data was prepared from (source, tokenizer, sizes...); a directory prepared with other
            settings is refused rather than mixed.
    """

    def __init__(
        self,
        directory: Path,
        tokenizer: Tokenizer,
        shard_size: int,
        val_tokens: int,
        settings: dict[str, Any],
        test_tokens: int = 0,
    ) -> None:
        if shard_size < 1 or val_tokens < 1 or test_tokens < 0:
            raise DataError(
                f"shard_size ({shard_size}) and val_tokens ({val_tokens}) must be positive, test_tokens "
                f"({test_tokens}) not negative"
            )
        self.directory = Path(directory)
        self.tokenizer = tokenizer
        self.shard_size = shard_size
        self.val_tokens = val_tokens
        self.test_tokens = test_tokens
        self.settings = {**settings, "tokenizer": tokenizer.name, "shard_size": shard_size, "val_tokens": val_tokens,
                         "test_tokens": test_tokens}
        self.dtype = dtype_for(tokenizer.vocab_size)
        self.shards: list[dict[str, Any]] = []  # manifest entries of the shards written so far
        self.tokens_written = 0  # tokens in finished shards
        self._buffer = np.empty(shard_size, dtype=self.dtype)
        self._filled = 0
        self._position = (0, 0)  # (document, token inside it) where the stream continues

    # --- restarting -------------------------------------------------------------------------------------------

    def check_settings(self) -> None:
        """Refuse a directory holding shards prepared, or started, with other settings."""
        check_settings(self.directory, self.settings, every_key=True)

    def is_complete(self) -> bool:
        """Whether this directory already holds the finished shards of these settings (refuses other settings)."""
        manifest = read_manifest(self.directory)
        if manifest is None:
            return False
        if manifest.get("settings") != self.settings:
            self.check_settings()  # explains which settings differ
            raise DataError(f"{self.directory / MANIFEST} does not match these settings: delete {self.directory}")
        verify_directory(self.directory, manifest)
        return True

    def resume(self) -> tuple[int, int]:
        """Keep the finished shards of an interrupted run; returns the (document, token) to continue from."""
        self.check_settings()
        for part in self.directory.glob(".*.part"):  # temporary files of a killed writer: never data
            remove(part)
        index = 0
        while True:
            path = self._path(index)
            if path is None:
                break
            header = verify_checksum(path)
            if header.tokenizer != self.tokenizer.name or header.num_tokens > self.shard_size:
                raise DataError(f"{path} does not belong to this preparation: {_redo(path)}")
            self.shards.append(self._entry(path, header))
            self.tokens_written += header.num_tokens
            self._position = (header.end_doc, header.end_token)
            index += 1
        # Shards after a gap cannot be trusted to follow the stream: the run rewrites them.
        for stale in self.directory.glob("*_*.bin"):
            if self._index_of(stale) is not None and self._index_of(stale) >= index:
                remove(stale)
        return self._position

    def _path(self, index: int) -> Optional[Path]:
        for split in SPLITS:
            path = self.directory / f"{split}_{index:06d}.bin"
            if path.is_file():
                return path
        return None

    @staticmethod
    def _index_of(path: Path) -> Optional[int]:
        split, _, number = path.stem.partition("_")
        return int(number) if split in SPLITS and number.isdigit() else None

    @staticmethod
    def _entry(path: Path, header: ShardHeader) -> dict[str, Any]:
        return {"file": path.name, "split": header.split, "tokens": header.num_tokens, "sha256": header.sha256}

    # --- writing ----------------------------------------------------------------------------------------------

    @property
    def position(self) -> tuple[int, int]:
        """(document, token inside it) where the stream continues after what was taken."""
        return self._position

    @property
    def total_tokens(self) -> int:
        """Tokens taken so far (in finished shards and in the shard being filled)."""
        return self.tokens_written + self._filled

    def _split_end(self) -> Optional[int]:
        # Where the split of the shard being filled ends in the stream (None: training, to the end).
        for end in (self.val_tokens, self.val_tokens + self.test_tokens):
            if self.tokens_written < end:
                return end
        return None

    def _capacity(self) -> int:
        # A shard never crosses a boundary between splits.
        limit = self.shard_size - self._filled
        end = self._split_end()
        return limit if end is None else min(limit, end - self.total_tokens)

    def add(self, doc: int, tokens: np.ndarray, first: int = 0, max_tokens: Optional[int] = None) -> bool:
        """Append document ``doc``'s ``tokens`` (which start at the document's token ``first``).

        Returns ``True`` once ``max_tokens`` tokens have been taken: the caller stops feeding documents.
        """
        return self.add_documents(doc, tokens, np.array([len(tokens)]), first, max_tokens)

    def add_documents(
        self, doc: int, tokens: np.ndarray, lengths: np.ndarray, first: int = 0, max_tokens: Optional[int] = None
    ) -> bool:
        """Append consecutive documents ``doc, doc + 1, ...`` given as one array cut into ``lengths``; the
        first of them starts at its token ``first``. Returns ``True`` once ``max_tokens`` tokens were taken."""
        ends = np.cumsum(lengths)
        pos = 0
        while pos < len(tokens):
            take = min(self._capacity(), len(tokens) - pos)
            if max_tokens is not None:
                take = min(take, max_tokens - self.total_tokens)
                if take <= 0:
                    return True
            self._buffer[self._filled : self._filled + take] = tokens[pos : pos + take]
            self._filled += take
            pos += take
            # Where the stream continues: inside document k (at the token after this chunk), or after them all.
            k = int(np.searchsorted(ends, pos, side="right"))
            if k == len(lengths):
                self._position = (doc + k, 0)
            else:
                self._position = (doc + k, pos - int(ends[k] - lengths[k]) + (first if k == 0 else 0))
            if self._capacity() == 0:
                self._flush()
        return max_tokens is not None and self.total_tokens >= max_tokens

    def _flush(self) -> None:
        if self._filled == 0:
            return
        tokens = self._buffer[: self._filled]
        header = ShardHeader(
            num_tokens=self._filled,
            itemsize=self.dtype.itemsize,
            vocab_size=self.tokenizer.vocab_size,
            eot_id=self.tokenizer.eot_id,
            split="val" if self.tokens_written < self.val_tokens else "test" if self._split_end() else "train",
            end_doc=self._position[0],
            end_token=self._position[1],
            sha256=hashlib.sha256(tokens.tobytes()).hexdigest(),
            tokenizer=self.tokenizer.name,
            max_id=int(tokens.max()),
        )
        if header.max_id >= self.tokenizer.vocab_size:  # a tokenizer bug must not become a shard
            raise DataError(
                f"the tokenizer {self.tokenizer.name!r} produced id {header.max_id}, outside its vocabulary of "
                f"{self.tokenizer.vocab_size}"
            )
        if not self.shards:  # written before the first shard: any shard on disk has its settings beside it
            write_json(self.directory / SETTINGS, self.settings)
        path = self.directory / f"{header.split}_{len(self.shards):06d}.bin"
        write_shard(path, tokens, header)
        self.shards.append(self._entry(path, header))
        self.tokens_written += self._filled
        self._filled = 0

    def finish(self, extra: Optional[dict[str, Any]] = None) -> dict[str, Any]:
        """Write the last partial shard and the manifest (which marks the directory complete); returns it."""
        self._flush()
        splits = {split: sum(s["tokens"] for s in self.shards if s["split"] == split) for split in SPLITS}
        if splits["train"] == 0:
            raise DataError(
                f"the data gave {self.tokens_written} tokens, all of them validation and test (val_tokens="
                f"{self.val_tokens}, test_tokens={self.test_tokens}): there is nothing left to train on; lower "
                f"val_tokens/test_tokens or add data"
            )
        manifest = {
            "format": VERSION,
            "tokenizer": self.tokenizer.to_dict(),
            "settings": self.settings,
            "tokens": splits,
            "shards": self.shards,
            **(extra or {}),
        }
        write_json(self.directory / MANIFEST, manifest)
        # The shards were hashed and range-checked as they were written: the full check is already done.
        _record_verified(self.directory, _fingerprint(self.directory, manifest))
        return manifest


__all__ = [
    "HEADER_BYTES",
    "MANIFEST",
    "ShardHeader",
    "ShardSet",
    "ShardWriter",
    "check_settings",
    "dtype_for",
    "open_tokens",
    "read_header",
    "read_manifest",
    "verify_checksum",
    "verify_directory",
    "write_json",
    "write_shard",
]
