"""Reddit comments and submissions from Pushshift-style ``.zst`` dumps (NDJSON compressed with zstandard).

The dumps are streamed, never loaded whole: zstandard decompresses line by line with the large window these
dumps were compressed with. Comments contribute their ``body``, submissions ``title`` + ``selftext``; rows
are filtered by subreddit, score, length, date, deleted/removed text and bot authors. A malformed line is
reported with its file and line, counted and skipped; a truncated file is reported where it stopped and
what was read before is kept.
"""

from __future__ import annotations

import hashlib
import json
import sys
from collections import Counter
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterator, Literal, Optional

import zstandard
from tqdm import tqdm

from data_modules.base import TokenDataModule
from lit_gpt_mini.errors import ConfigError, DataError
from lit_gpt_mini.tokenizers import GPT2Tokenizer, Tokenizer
from lit_gpt_mini.tokenizers.bpe import load_or_train

_REPORTED = 10
_DELETED = ("[deleted]", "[removed]")
_WINDOW = 2**31  # Pushshift dumps are compressed with a 2 GB window (zstd --long=31)


def _say(message: str) -> None:
    tqdm.write(message, file=sys.stderr)


def _date(value: Optional[str], name: str) -> Optional[float]:
    if value is None:
        return None
    try:
        return datetime.strptime(value, "%Y-%m-%d").replace(tzinfo=timezone.utc).timestamp()
    except ValueError:
        raise ConfigError(f"data.{name} must be a date like 2023-01-31, got {value!r}") from None


class RedditDataModule(TokenDataModule):
    """Pushshift-style Reddit dumps as training text, tokenized with GPT-2's vocabulary or our own BPE.

    Args:
        path: A ``.zst`` dump (e.g. ``RC_2023-01.zst`` comments, ``RS_2023-01.zst`` submissions) or a directory
            of them.
        subreddits: Keep only these subreddits (case-insensitive); empty keeps all.
        min_score: Keep rows with at least this score.
        min_length: Keep texts of at least this many characters.
        start_date, end_date: Keep rows created in ``[start_date, end_date)`` (``YYYY-MM-DD``, UTC).
        bot_authors: Authors dropped besides those whose name ends in "bot".
        tokenizer_type: ``gpt2`` (tiktoken) or ``bpe`` (trained on the kept text, cached in ``data_dir/tokenizers``).
        bpe_vocab_size, bpe_pattern: The BPE's settings.
        shard_size, val_tokens, max_tokens, num_proc: As in :class:`~data_modules.fineweb.FineWebDataModule`.

    The other arguments are :class:`~data_modules.base.TokenDataModule`'s.
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
        tokenizer_type: Literal["gpt2", "bpe"] = "gpt2",
        bpe_vocab_size: int = 4096,
        bpe_pattern: Literal["gpt2", "gpt4"] = "gpt4",
        shard_size: int = 100_000_000,
        val_tokens: int = 1_000_000,
        max_tokens: Optional[int] = None,
        num_proc: int = 1,
        block_size: int = 1024,
        batch_size: int = 16,
        seed: int = 1337,
        num_workers: int = 0,
    ) -> None:
        super().__init__(
            data_dir=data_dir, block_size=block_size, batch_size=batch_size, seed=seed, num_workers=num_workers
        )
        self.path = Path(path)
        self.subreddits = {s.lower().removeprefix("r/") for s in subreddits or []}
        self.min_score = min_score
        self.min_length = min_length
        self.start = _date(start_date, "start_date")
        self.end = _date(end_date, "end_date")
        self.dates = (start_date, end_date)
        self.bot_authors = {a.lower() for a in (bot_authors if bot_authors is not None else ["AutoModerator"])}
        self.tokenizer_type = tokenizer_type
        self.bpe_vocab_size = bpe_vocab_size
        self.bpe_pattern = bpe_pattern
        self.shard_size = shard_size
        self.val_tokens = val_tokens
        self.max_tokens = max_tokens
        self.num_proc = num_proc
        self.counts: Counter[str] = Counter()

    def files(self) -> list[Path]:
        if self.path.is_file():
            return [self.path]
        if self.path.is_dir():
            files = sorted(self.path.rglob("*.zst"))
            if files:
                return files
            raise DataError(f"{self.path} holds no .zst dumps")
        raise DataError(f"data.path {self.path} does not exist")

    # --- reading ----------------------------------------------------------------------------------------------

    def lines(self, path: Path, bar: tqdm) -> Iterator[tuple[int, bytes]]:
        """(line number, line) of a dump, streamed 1 MB of compressed data at a time. A file that ends inside
        a compressed frame (truncated) or holds corrupt data is reported where it stopped; the complete lines
        before are kept (the partial last one is dropped)."""
        number, pending = 0, b""
        decompressor = zstandard.ZstdDecompressor(max_window_size=_WINDOW).decompressobj()
        problem = None
        with open(path, "rb") as raw:
            while chunk := raw.read(1 << 20):
                bar.update(len(chunk))
                try:
                    data = decompressor.decompress(chunk)
                    while decompressor.eof and decompressor.unused_data:  # the next frame of a multi-frame file
                        rest = decompressor.unused_data
                        decompressor = zstandard.ZstdDecompressor(max_window_size=_WINDOW).decompressobj()
                        data += decompressor.decompress(rest)
                except zstandard.ZstdError as e:
                    problem = f"corrupt compressed data ({e})"
                    break
                *complete, pending = (pending + data).split(b"\n")
                for line in complete:
                    number += 1
                    yield number, line
        if problem is None and not decompressor.eof:
            problem = "the file ends in the middle of a compressed frame (truncated download?)"
        if problem is None and pending.strip():
            number += 1
            yield number, pending
        elif problem is not None:
            self.counts["truncated or corrupt files"] += 1
            _say(f"{path}: {problem} after line {number}; the {number} complete lines before are kept")

    def _skip(self, reason: str, where: str) -> None:
        self.counts[reason] += 1
        if reason == "malformed" and self.counts[reason] <= _REPORTED:
            _say(f"{where}: malformed line skipped")

    def text_of(self, row: Any, where: str) -> Optional[str]:
        """The training text of one row, or ``None`` when a filter drops it (counted by reason)."""
        if not isinstance(row, dict):
            self._skip("malformed", where)
            return None
        if "body" in row:
            text = row.get("body") or ""
        elif "title" in row or "selftext" in row:
            title, body = row.get("title") or "", row.get("selftext") or ""
            text = title if body in _DELETED or not body else f"{title}\n\n{body}"
        else:
            self._skip("malformed", where)
            return None
        author = str(row.get("author") or "")
        if not isinstance(text, str) or text.strip() in _DELETED:
            self._skip("deleted or removed", where)
        elif author.lower() in self.bot_authors or author.lower().endswith("bot"):
            self._skip("bot author", where)
        elif self.subreddits and str(row.get("subreddit", "")).lower() not in self.subreddits:
            self._skip("other subreddit", where)
        elif not isinstance(row.get("score", 0), (int, float)) or row.get("score", 0) < self.min_score:
            self._skip("low score", where)
        elif len(text) < self.min_length:
            self._skip("too short", where)
        elif not self._in_dates(row.get("created_utc")):
            self._skip("outside the dates", where)
        else:
            self.counts["kept"] += 1
            return text
        return None

    def _in_dates(self, created: Any) -> bool:
        if self.start is None and self.end is None:
            return True
        try:
            created = float(created)
        except (TypeError, ValueError):
            return False
        return (self.start is None or created >= self.start) and (self.end is None or created < self.end)

    def documents(self) -> Iterator[str]:
        files = self.files()
        total = sum(f.stat().st_size for f in files)
        with tqdm(total=total, unit="B", unit_scale=True, desc="Reading Reddit dumps", file=sys.stderr) as bar:
            for path in files:
                for number, line in self.lines(path, bar):
                    if not line.strip():
                        continue
                    where = f"{path}:{number}"
                    try:
                        row = json.loads(line)
                    except (UnicodeDecodeError, json.JSONDecodeError):
                        self._skip("malformed", where)
                        continue
                    text = self.text_of(row, where)
                    if text is not None:
                        yield text

    # --- tokenizer and shards ---------------------------------------------------------------------------------

    def _settings(self) -> dict[str, Any]:
        return {"path": str(self.path.resolve()), "subreddits": sorted(self.subreddits), "min_score": self.min_score,
                "min_length": self.min_length, "dates": list(self.dates), "bots": sorted(self.bot_authors),
                "max_tokens": self.max_tokens}

    def load_tokenizer(self) -> Tokenizer:
        if self.tokenizer_type == "gpt2":
            return GPT2Tokenizer()
        texts = list(self.documents())  # the kept text trains the BPE (and is read again for the shards)
        self.counts.clear()
        digest = hashlib.sha256()
        for text in texts:
            digest.update(text.encode("utf-8", "surrogatepass") + b"\x00")
        if not texts:
            raise DataError(f"{self.path}: no row passed the filters, so there is no text to train a tokenizer on")
        return load_or_train(self.data_dir / "tokenizers", texts, digest.hexdigest(), self.bpe_vocab_size,
                             self.bpe_pattern)

    def prepare_data(self) -> None:
        self.tokenizer  # noqa: B018 (trains the BPE first when there is one)
        self.counts.clear()
        self.write_documents(
            self.documents,
            settings=self._settings(),
            shard_size=self.shard_size,
            val_tokens=self.val_tokens,
            max_tokens=self.max_tokens,
            num_proc=self.num_proc,
            source=str(self.path),
            summary=lambda: {"rows": dict(self.counts)},
            empty=lambda: f"no row that passed the filters ({dict(self.counts) or 'no rows'})",
        )
        if self.counts:
            _say(f"Reddit rows: {dict(self.counts)}")
