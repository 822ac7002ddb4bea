"""Files written whole or not at all, and their checksums: the one implementation every writer uses.

A reader (another rank, a resumed run, a second node on a shared filesystem) must see a finished file or no
file, never a truncated one: everything is written to a temporary file beside the target, flushed, then
renamed into place.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import IO, Any, Iterable, Iterator

_UMASK = os.umask(0)
os.umask(_UMASK)


@contextlib.contextmanager
def atomic_write(path: Path, mode: str = "wb", fsync: bool = False, **open_kwargs: Any) -> Iterator[IO]:
    """Open a temporary file beside ``path`` for writing; on success it replaces ``path`` (atomically, with the
    usual permissions rather than mkstemp's 0600); on any error it is removed and ``path`` is untouched.
    ``fsync`` also forces the bytes to disk before the rename (for files a crash must not leave empty)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".part")
    try:
        with os.fdopen(fd, mode, **open_kwargs) as f:
            yield f
            if fsync:
                f.flush()
                os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_UMASK)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json(path: Path, data: Any, indent: int = 2) -> None:
    """Write ``data`` as JSON, atomically (a manifest marks a directory complete: never half written)."""
    with atomic_write(path, "w", encoding="utf-8") as f:
        json.dump(data, f, indent=indent, sort_keys=True)
        f.write("\n")


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
