"""Reddit comments and submissions from Pushshift-style ``.zst`` dumps (NDJSON compressed with zstandard).

The dumps are streamed, never loaded whole: zstandard decompresses line by line with the large window these
dumps were compressed with. Comments contribute their ``body``, submissions ``title`` + ``selftext``; rows
are filtered by subreddit, score, length, date, deleted/removed text and bot authors. Every row goes through
one check of its shape (:func:`read_row`): a malformed line (not JSON, not an object, a field of the wrong type)
or one longer than ``max_line_bytes`` is reported with its file and line, counted and skipped; a truncated or
corrupt file is reported where it stopped and what was read before is kept.
"""

from __future__ import annotations

import json
import math
import sys
from collections import Counter
from datetime import datetime, timezone
from pathlib import Path
from dataclasses import dataclass
from typing import Any, Iterator, Optional

import zstandard
from tqdm import tqdm

from data_modules.base import StreamedTokenDataModule, positive
from lit_gpt_mini.files import missing_path
from data_modules.lines import DEFAULT_MAX_LINE_BYTES, capped_lines, line_cap_setting
from lit_gpt_mini.errors import ConfigError, DataError
from lit_gpt_mini.log import get_logger
from lit_gpt_mini.tokenizers import TokenizerRecipe

log = get_logger(__name__)

_REPORTED = 10
_DELETED = ("[deleted]", "[removed]")
_WINDOW = 2**31  # Pushshift dumps are compressed with a 2 GB window (zstd --long=31)
# Compressed input is fed in small pieces: a zstd block of 128 KB of text can take 4 bytes (a run of one byte),
# so 512 bytes of input stand for at most ~16 MB of output at once, however the file was made.
_PIECE = 512


def _date(value: Optional[str], name: str) -> Optional[float]:
    if value is None:
        return None
    try:
        return datetime.strptime(value, "%Y-%m-%d").replace(tzinfo=timezone.utc).timestamp()
    except ValueError:
        raise ConfigError(f"data.{name} must be a date like 2023-01-31, got {value!r}") from None


class BadRow(ValueError):
    """A row whose shape does not fit (the reason says which field); skipped and counted as malformed."""


class _Stopped(Exception):
    """The compressed stream cannot go on (truncated or corrupt); the message says why."""


@dataclass
class Row:
    """The fields of a comment or submission that the filters read, of checked types."""

    text: str
    author: str
    subreddit: str
    score: float
    created: Optional[float]


def _get(row: dict[str, Any], key: str, *types: type) -> Any:
    value = row.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, types):
        raise BadRow(f"'{key}' is {type(value).__name__}, not {' or '.join(t.__name__ for t in types)}")
    if isinstance(value, float) and not math.isfinite(value):
        raise BadRow(f"'{key}' is {value}")
    return value


def read_row(row: Any) -> Row:
    """A dump's row (a decoded JSON line) as a :class:`Row`, or :class:`BadRow` when its shape does not fit.
    Comments have ``body``; submissions ``title`` and ``selftext``."""
    if not isinstance(row, dict):
        raise BadRow(f"a {type(row).__name__}, not an object")
    if "body" in row:
        text = _get(row, "body", str) or ""
    elif "title" in row or "selftext" in row:
        title, body = _get(row, "title", str) or "", _get(row, "selftext", str) or ""
        text = title if body in _DELETED or not body else f"{title}\n\n{body}" if title else body
    else:
        raise BadRow("no 'body' (comment) nor 'title'/'selftext' (submission)")
    created = row.get("created_utc")
    if isinstance(created, str):  # older dumps write it as a string of digits
        try:
            created = float(created)
        except ValueError:
            raise BadRow(f"'created_utc' {created[:20]!r} is not a number") from None
        row = {**row, "created_utc": created}
    score = _get(row, "score", int, float)
    return Row(text=text, author=_get(row, "author", str) or "", subreddit=_get(row, "subreddit", str) or "",
               score=0 if score is None else score, created=_get(row, "created_utc", int, float))


class RedditDataModule(StreamedTokenDataModule):
    """Pushshift-style Reddit dumps as training text, by default tokenized with GPT-2's vocabulary.

    Args:
        path: A ``.zst`` dump (e.g. ``RC_2023-01.zst`` comments, ``RS_2023-01.zst`` submissions) or a directory
            of them.
        subreddits: Keep only these subreddits (case-insensitive); empty keeps all.
        min_score: Keep rows with at least this score.
        min_length: Keep texts of at least this many characters.
        start_date, end_date: Keep rows created in ``[start_date, end_date)`` (``YYYY-MM-DD``, UTC).
        bot_authors: Authors dropped besides those whose name ends in "bot".
        max_line_bytes: Longer lines (decompressed) are skipped and counted as too long, never held whole, so
            memory stays bounded whatever the file holds.

    The other arguments are :class:`~data_modules.base.StreamedTokenDataModule`'s; the tokenizer's default kind
    here is ``gpt2``. A ``bpe`` (or ``char``) recipe learns from the kept text as it streams out of the dumps (which
    are then read a second time for the shards); set its ``max_chars`` for large dumps.
    """

    def __init__(
        self,
        path: str,
        data_dir: str = "data/reddit",
        subreddits: Optional[list[str]] = None,
        min_score: int = 1,
        min_length: int = 20,
        start_date: Optional[str] = None,
        end_date: Optional[str] = None,
        bot_authors: Optional[list[str]] = None,
        max_line_bytes: int = DEFAULT_MAX_LINE_BYTES,
        tokenizer: TokenizerRecipe = TokenizerRecipe("gpt2"),
        batch_size: int = 16,
        **kwargs: Any,
    ) -> None:
        super().__init__(data_dir=data_dir, tokenizer=tokenizer, batch_size=batch_size, **kwargs)
        self.path = Path(path)
        self.subreddits = {s.lower().removeprefix("r/") for s in subreddits or []}
        self.min_score = min_score
        self.min_length = min_length
        self.start = _date(start_date, "start_date")
        self.end = _date(end_date, "end_date")
        self.dates = (start_date, end_date)
        self.bot_authors = {a.lower() for a in (bot_authors if bot_authors is not None else ["AutoModerator"])}
        positive("max_line_bytes", max_line_bytes)
        self.max_line_bytes = max_line_bytes
        self.counts: Counter[str] = Counter()

    def files(self) -> list[Path]:
        if self.path.is_file():
            return [self.path]
        if self.path.is_dir():
            files = sorted(p for p in self.path.rglob("*.zst") if p.is_file())
            if files:
                return files
            raise DataError(f"{self.path} holds no .zst dumps")
        raise missing_path(self.path)

    # --- reading ----------------------------------------------------------------------------------------------

    def _decompressed(self, path: Path, bar: tqdm) -> Iterator[bytes]:
        """The decompressed bytes of a dump (any number of frames), in pieces of bounded size; raises
        :class:`_Stopped` where the data is corrupt or the file ends inside a frame."""
        decompressor, size = None, 0
        try:
            raw = open(path, "rb")
        except OSError as e:
            raise DataError(f"cannot read {path}: {e.strerror or e}") from None
        with raw:
            while True:
                try:
                    chunk = raw.read(1 << 20)
                except OSError as e:
                    raise _Stopped(f"read error ({e.strerror or e})") from None
                if not chunk:
                    break
                bar.update(len(chunk))
                size += len(chunk)
                for i in range(0, len(chunk), _PIECE):
                    piece = chunk[i : i + _PIECE]
                    while piece:
                        if decompressor is None or decompressor.eof:  # the next frame of a multi-frame file
                            decompressor = zstandard.ZstdDecompressor(max_window_size=_WINDOW).decompressobj()
                        try:
                            data = decompressor.decompress(piece)
                        except zstandard.ZstdError as e:
                            raise _Stopped(f"corrupt compressed data ({e})") from None
                        piece = decompressor.unused_data if decompressor.eof else b""
                        if data:
                            yield data
        if size == 0:
            raise _Stopped("the file is empty")
        if not decompressor.eof:
            raise _Stopped("the file ends in the middle of a compressed frame (truncated download?)")

    def lines(self, path: Path, bar: tqdm) -> Iterator[tuple[int, Optional[bytes]]]:
        """(line number, line) of a dump, streamed; ``None`` for a line over ``max_line_bytes``. A file that ends
        inside a compressed frame (truncated) or holds corrupt data is reported where it stopped; the complete
        lines before are kept (the partial last one is dropped)."""
        number = 0
        try:
            for number, line in capped_lines(self._decompressed(path, bar), self.max_line_bytes):
                yield number, line
        except _Stopped as e:
            self.counts["truncated or corrupt files"] += 1
            log.warning(f"{path}: {e} after line {number}; the {number} complete lines before are kept")

    def _skip(self, reason: str, where: str, detail: str = "") -> None:
        self.counts[reason] += 1
        if reason in ("malformed", "too long") and self.counts["malformed"] + self.counts["too long"] <= _REPORTED:
            log.warning(f"{where}: {'malformed' if reason == 'malformed' else 'too long'} line skipped"
                 + (f" ({detail})" if detail else ""))

    def text_of(self, row: Any, where: str) -> Optional[str]:
        """The training text of one row, or ``None`` when it is malformed or a filter drops it (counted by
        reason)."""
        try:
            r = read_row(row)
        except BadRow as e:
            self._skip("malformed", where, str(e))
            return None
        if r.text.strip() in _DELETED:
            self._skip("deleted or removed", where)
        elif r.author.lower() in self.bot_authors or r.author.lower().endswith("bot"):
            self._skip("bot author", where)
        elif self.subreddits and r.subreddit.lower() not in self.subreddits:
            self._skip("other subreddit", where)
        elif r.score < self.min_score:
            self._skip("low score", where)
        elif len(r.text) < self.min_length:
            self._skip("too short", where)
        elif not self._in_dates(r.created):
            self._skip("outside the dates", where)
        else:
            self.counts["kept"] += 1
            return r.text
        return None

    def _in_dates(self, created: Optional[float]) -> bool:
        if self.start is None and self.end is None:
            return True
        if created is None:
            return False
        return (self.start is None or created >= self.start) and (self.end is None or created < self.end)

    def documents(self) -> Iterator[str]:
        files = self.files()
        total = sum(f.stat().st_size for f in files)
        with tqdm(total=total, unit="B", unit_scale=True, desc="Reading Reddit dumps", file=sys.stderr) as bar:
            for path in files:
                for number, line in self.lines(path, bar):
                    where = f"{path}:{number}"
                    if line is None:
                        self._skip("too long", where, f"over data.max_line_bytes={self.max_line_bytes}")
                        continue
                    if not line.strip():
                        continue
                    try:
                        row = json.loads(line)
                    except (UnicodeDecodeError, ValueError, RecursionError) as e:
                        self._skip("malformed", where, f"not JSON: {type(e).__name__}")
                        continue
                    text = self.text_of(row, where)
                    if text is not None:
                        yield text

    # --- tokenizer and shards ---------------------------------------------------------------------------------

    def corpus(self) -> dict[str, Any]:
        return {"path": str(self.path.resolve()), "subreddits": sorted(self.subreddits), "min_score": self.min_score,
                "min_length": self.min_length, "dates": list(self.dates), "bots": sorted(self.bot_authors),
                **line_cap_setting(self.max_line_bytes)}

    @property
    def source(self) -> str:
        return str(self.path)

    def summary(self) -> dict[str, Any]:
        return {"rows": dict(self.counts)}

    def empty(self) -> str:
        return f"no row that passed the filters ({dict(self.counts) or 'no rows'})"

    def write_shards(self) -> Optional[dict[str, Any]]:
        self.counts.clear()  # (a tokenizer that learned from the stream has read it once already)
        manifest = super().write_shards()
        if self.counts:
            log.info(f"Reddit rows: {dict(self.counts)}")
        return manifest
