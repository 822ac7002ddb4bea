"""Files written whole or not at all, and their checksums: the one implementation every writer uses.

A reader (another rank, a resumed run, a second node on a shared filesystem) must see a finished file or no
file, never a truncated one: everything is written to a temporary file beside the target, flushed, then
renamed into place.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import stat
import tempfile
from pathlib import Path
from typing import IO, Any, Iterable, Iterator

from lit_gpt_mini.errors import DataError, StorageError

_UMASK = os.umask(0)
os.umask(_UMASK)


# Errors of a write that say nothing about the data: the place it goes cannot take it. Raised by the body of an
# atomic write too (a write(2) that finds the disk full), where other errors are the caller's own.
_NO_ROOM = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)
_WHAT_TO_DO = {
    errno.ENOSPC: "free some space",
    errno.EDQUOT: "free some space (a disk quota is reached)",
    errno.EFBIG: "the file is larger than this system or process allows (ulimit -f)",
    errno.EACCES: "the directory is read-only for this user: make it writable, or use another directory",
    errno.EPERM: "the directory is read-only for this user: make it writable, or use another directory",
    errno.EROFS: "the file system is read-only: use another directory",
}


def storage_error(path: Path, error: OSError) -> StorageError:
    """One line for a write to ``path`` that failed with ``error``: which file, why, and what to do. What was
    finished before stays valid (every file is written whole or not at all), so the same command resumes."""
    advice = _WHAT_TO_DO.get(error.errno, "check the disk and the directory")
    return StorageError(
        f"cannot write {path} ({error.strerror or error}): {advice}; then run the same command again (finished "
        f"files are kept)"
    )


@contextlib.contextmanager
def atomic_write(path: Path, mode: str = "wb", fsync: bool = False, **open_kwargs: Any) -> Iterator[IO]:
    """Open a temporary file beside ``path`` for writing; on success it replaces ``path`` (atomically, with the
    usual permissions rather than mkstemp's 0600); on any error it is removed and ``path`` is untouched.
    ``fsync`` also forces the bytes to disk before the rename (for files a crash must not leave empty).

    A write that cannot be done (a read-only directory, a full disk, a file size limit) is one
    :class:`~lit_gpt_mini.errors.StorageError` naming ``path``: the one place every writer's failure enters."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".part")
    except OSError as e:
        raise storage_error(path, e) from None
    try:
        with os.fdopen(fd, mode, **open_kwargs) as f:
            try:
                yield f
            except OSError as e:
                if e.errno in _NO_ROOM:  # a write in the body: the disk, not the caller's data
                    raise storage_error(path, e) from None
                raise
            try:  # the last buffered bytes go now, so that closing has nothing left to fail on
                f.flush()
                if fsync:
                    os.fsync(f.fileno())
            except OSError as e:
                raise storage_error(path, e) from None
        try:
            os.chmod(tmp, 0o666 & ~_UMASK)
            os.replace(tmp, path)
        except OSError as e:
            raise storage_error(path, e) from None
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def check_writable(directory: Path) -> None:
    """Refuse, as :func:`atomic_write` would, a ``directory`` that cannot take a new file: called before work
    whose result would then be lost (training a tokenizer). Leaves nothing behind (an anonymous file)."""
    directory = Path(directory)
    try:
        directory.mkdir(parents=True, exist_ok=True)
        tempfile.TemporaryFile(dir=directory).close()
    except OSError as e:
        raise storage_error(directory, e) from None


def write_json(path: Path, data: Any, indent: int = 2) -> None:
    """Write ``data`` as JSON, atomically (a manifest marks a directory complete: never half written)."""
    with atomic_write(path, "w", encoding="utf-8") as f:
        json.dump(data, f, indent=indent, sort_keys=True)
        f.write("\n")


def remove(path: Path) -> None:
    """Delete a file this project wrote (a killed writer's leftover): a directory that cannot change (read-only)
    is one :class:`~lit_gpt_mini.errors.StorageError` naming the file, as a failed write is."""
    try:
        path.unlink(missing_ok=True)
    except OSError as e:
        raise storage_error(path, e) from None


def sha256_of(path: Path) -> str:
    """The sha256 of a file's bytes, read in 1 MiB blocks (files may be far larger than memory)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def documents_sha256(documents: Iterable[str]) -> str:
    """The sha256 of a stream of documents (each UTF-8, surrogates kept, then a NUL): what identifies a corpus
    read whole, so a saved tokenizer is reused only for the same text."""
    digest = hashlib.sha256()
    for text in documents:
        digest.update(text.encode("utf-8", "surrogatepass") + b"\x00")
    return digest.hexdigest()


def missing_path(path: Path, what: str = "data.path", fix: str = "") -> DataError:
    """The error for an input ``path`` that is neither a file nor a directory. A pipe (``<(command)`` on a
    command line gives ``/dev/fd/63``) is named as one: a source reads its input more than once (to identify
    the corpus, to learn the tokenizer, to write the shards), which a pipe cannot give."""
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return DataError(f"{what} {path} does not exist" + (f"; {fix}" if fix else ""))
    kind = "a pipe" if stat.S_ISFIFO(mode) else "a socket" if stat.S_ISSOCK(mode) else "a device"
    return DataError(
        f"{what} {path} is {kind}, not a file: the data is read more than once (to identify it, learn the "
        f"tokenizer and write the shards), so a pipe is not accepted; save it to a file first and give that"
    )
