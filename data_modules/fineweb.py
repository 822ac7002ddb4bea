"""FineWeb-Edu (or any text dataset) as GPT-2 tokens: stream, tokenize in parallel, write token shards.

By default the documents stream from the Hugging Face hub (``HuggingFaceFW/fineweb-edu``, config
``sample-10BT``) with ``datasets``; nothing is downloaded beyond what is tokenized, so ``max_tokens`` makes a
small experiment cheap. ``path`` reads local ``.jsonl`` (optionally ``.gz``) or ``.parquet`` files instead,
a file or a directory of them. Every row goes through one check (:class:`DocumentReader`): a bad row (not
JSON, not an object, no text, a line over ``max_line_bytes``) is reported by file and line, counted in the
manifest and skipped; a file that stops early (a truncated ``.gz``, corrupt parquet pages) keeps the rows read
before and is reported and counted too.
"""

from __future__ import annotations

import gzip
import json
import os
import socket
import zlib
from collections import Counter
from pathlib import Path
from typing import Any, Iterable, Iterator, Optional
from urllib.parse import urlsplit


from data_modules.base import StreamedTokenDataModule, positive
from lit_gpt_mini.files import missing_path
from data_modules.lines import DEFAULT_MAX_LINE_BYTES, capped_lines, line_cap_setting
from lit_gpt_mini.errors import DataError
from lit_gpt_mini.log import get_logger
from lit_gpt_mini.tokenizers import TokenizerRecipe

log = get_logger(__name__)

LOCAL_SUFFIXES = (".jsonl", ".json", ".jsonl.gz", ".json.gz", ".parquet")
_REPORTED_ROWS = 10  # bad rows reported one by one; the rest are only counted


def stream_dataset(dataset: str, name: Optional[str], split: str) -> Iterable[dict[str, Any]]:
    """Rows of a dataset streamed by ``datasets`` (from the hub, or a local folder ``datasets`` can read).

    This is the module's one network boundary. A hub dataset is streamed only after the hub answered a
    connection: offline, ``datasets`` would retry for half a minute, a warning line each time, before failing.
    """
    from datasets import load_dataset  # imported here: it is slow to import and only preparation needs it

    if not Path(dataset).exists():
        _check_hub_reachable(dataset)
    return load_dataset(dataset, name=name, split=split, streaming=True)


def _check_hub_reachable(dataset: str) -> None:
    if any(os.environ.get(key, "").upper() in ("1", "ON", "YES", "TRUE")
           for key in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE")):
        return  # offline mode: datasets answers from its cache, or says itself that it cannot
    endpoint = os.environ.get("HF_ENDPOINT", "https://huggingface.co")  # huggingface_hub's own setting
    url = urlsplit(endpoint)
    try:
        socket.create_connection((url.hostname, url.port or (443 if url.scheme == "https" else 80)), timeout=15).close()
    except OSError as e:  # name resolution, refused, unreachable, timed out: no request can succeed
        reason = e.strerror or type(e).__name__
        raise DataError(
            f"cannot stream {dataset}: the Hugging Face hub ({endpoint}) cannot be reached ({reason}). Connect to "
            f"the internet, or set data.path to local .jsonl/.parquet files"
        ) from None


def local_files(path: Path) -> list[Path]:
    """The data files at ``path`` (a file, or a directory searched recursively), in a stable order."""
    if path.is_file():
        files = [path]
    elif path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.is_file() and p.name.endswith(LOCAL_SUFFIXES))
    else:
        raise missing_path(path)
    unknown = [f for f in files if not f.name.endswith(LOCAL_SUFFIXES)]
    if unknown:
        raise DataError(f"{unknown[0]}: unknown file type; data.path takes {', '.join(LOCAL_SUFFIXES)} files")
    if not files:
        raise DataError(f"{path} holds no {', '.join(LOCAL_SUFFIXES)} files")
    return files


def _is_text(kind: Any) -> bool:
    # an Arrow type whose values read as Python strings (plain, large, view, or dictionary-encoded)
    import pyarrow as pa

    if pa.types.is_dictionary(kind):
        kind = kind.value_type
    return pa.types.is_string(kind) or pa.types.is_large_string(kind) or getattr(pa.types, "is_string_view",
                                                                                    lambda _: False)(kind)


class DocumentReader:
    """Yields the non-empty ``text_field`` of each row, counting (and reporting) the rows it skips."""

    def __init__(self, text_field: str, max_line_bytes: int = DEFAULT_MAX_LINE_BYTES) -> None:
        self.text_field = text_field
        self.max_line_bytes = max_line_bytes
        self.skipped: Counter[str] = Counter()
        self.rows = 0

    def _skip(self, reason: str, where: str, detail: str = "") -> None:
        self.skipped[reason] += 1
        if sum(self.skipped.values()) <= _REPORTED_ROWS:
            log.warning(f"{where}: skipped a row ({reason}{': ' + detail if detail else ''})")

    def _text(self, row: Any, where: str) -> Optional[str]:
        self.rows += 1
        if not isinstance(row, dict):
            self._skip("not an object", where)
            return None
        text = row.get(self.text_field)
        if text is None:
            self._skip(f"no '{self.text_field}' field", where)
            return None
        if not isinstance(text, str):
            self._skip(f"'{self.text_field}' is not a string", where)
            return None
        if not text:
            self._skip(f"empty '{self.text_field}'", where)
            return None
        return text

    def _stopped(self, path: Path, where: str, e: BaseException) -> None:
        self.skipped["unreadable file tail"] += 1
        problem = " ".join(str(e).split())  # pyarrow's messages span lines
        log.warning(f"{path}: stopped reading after an error ({type(e).__name__}: {problem}) past {where}; the rows "
                f"before it are kept")

    def _chunks(self, path: Path) -> Iterator[bytes]:
        opener = gzip.open if path.name.endswith(".gz") else open
        with opener(path, "rb") as f:
            # small reads: on a truncated .gz the read that meets the end raises and loses what it had decoded
            while chunk := f.read1(1 << 16):
                yield chunk

    def jsonl(self, path: Path) -> Iterator[str]:
        number = 0
        try:
            for number, line in capped_lines(self._chunks(path), self.max_line_bytes):
                where = f"{path}:{number}"
                if line is None:
                    self.rows += 1
                    self._skip("line too long", where, f"over data.max_line_bytes={self.max_line_bytes}")
                    continue
                if number == 1 and line.startswith(b"\xef\xbb\xbf"):  # a UTF-8 byte order mark
                    line = line[3:]
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except (UnicodeDecodeError, ValueError, RecursionError) as e:
                    self.rows += 1
                    self._skip("malformed JSON", where, f"{type(e).__name__}: {str(e)[:100]}")
                    continue
                text = self._text(row, where)
                if text is not None:
                    yield text
        except (OSError, EOFError, zlib.error) as e:  # e.g. a truncated .gz: keep what was read, say where it stopped
            self._stopped(path, f"line {number}", e)

    def parquet(self, path: Path) -> Iterator[str]:
        import pyarrow as pa
        import pyarrow.parquet as pq

        try:
            table = pq.ParquetFile(path)
        except Exception as e:  # pyarrow raises its own error types for files that are not parquet
            raise DataError(f"{path} is not a readable parquet file ({e}): replace or remove it") from None
        schema = table.schema_arrow
        if self.text_field not in schema.names:
            raise DataError(
                f"{path} has no column '{self.text_field}' (columns: {', '.join(schema.names)}); "
                f"set data.text_field"
            )
        kind = schema.field(self.text_field).type
        if not _is_text(kind):
            raise DataError(f"{path}: column '{self.text_field}' holds {kind}, not text; set data.text_field to the "
                            f"column of the documents' text")
        number = 0
        try:
            for batch in table.iter_batches(batch_size=1024, columns=[self.text_field]):
                for value in batch.column(0).to_pylist():
                    number += 1
                    text = self._text({self.text_field: value}, f"{path}:row {number}")
                    if text is not None:
                        yield text
        except (pa.ArrowException, OSError) as e:  # a sound footer over corrupt data pages
            self._stopped(path, f"row {number}", e)

    def files(self, files: list[Path]) -> Iterator[str]:
        for path in files:
            yield from (self.parquet(path) if path.suffix == ".parquet" else self.jsonl(path))

    def rows_of(self, rows: Iterable[dict[str, Any]], source: str) -> Iterator[str]:
        number = 0
        iterator = iter(rows)
        while True:
            try:
                row = next(iterator)
            except StopIteration:
                return
            except Exception as e:  # datasets raises many types mid-stream (connection, bad shard file...)
                raise DataError(
                    f"streaming {source} stopped after row {number}: {type(e).__name__}: {str(e)[:300]}. Run prepare "
                    f"again to resume where it stopped"
                ) from None
            number += 1
            text = self._text(row, f"{source}:row {number}")
            if text is not None:
                yield text


class FineWebDataModule(StreamedTokenDataModule):
    """FineWeb-Edu, or any dataset of documents with a text field, by default tokenized with GPT-2's vocabulary.

    Args:
        dataset: A ``datasets`` dataset id (streamed from the hub) or a local folder ``datasets`` can read;
            ``None``: local files only (``path`` must be set).
        name: The dataset's configuration (FineWeb-Edu: ``sample-10BT``, ``sample-100BT``, ...).
        split: The dataset split to stream.
        path: Local ``.jsonl``/``.jsonl.gz``/``.parquet`` file or directory to read instead of ``dataset``.
        text_field: The field/column holding each document's text.
        max_line_bytes: A longer line of a local jsonl file is skipped and counted as too long, never held
            whole, so memory stays bounded whatever the file holds.

    The other arguments are :class:`~data_modules.base.StreamedTokenDataModule`'s; the tokenizer's default kind
    here is ``gpt2`` (a ``char`` or ``bpe`` recipe learns from the stream: set its ``max_chars`` for a large dataset).
    Preparation writes into ``data_dir/shards``, resumes where an interrupted run stopped, and is skipped once
    complete; a directory prepared with other settings is refused (use another ``data_dir``).
    """

    def __init__(
        self,
        data_dir: str = "data/fineweb_edu",
        dataset: Optional[str] = "HuggingFaceFW/fineweb-edu",
        name: Optional[str] = "sample-10BT",
        split: str = "train",
        path: Optional[str] = None,
        text_field: str = "text",
        max_line_bytes: int = DEFAULT_MAX_LINE_BYTES,
        tokenizer: TokenizerRecipe = TokenizerRecipe("gpt2"),
        batch_size: int = 16,
        **kwargs: Any,
    ) -> None:
        super().__init__(data_dir=data_dir, tokenizer=tokenizer, batch_size=batch_size, **kwargs)
        positive("max_line_bytes", max_line_bytes)
        self.dataset = dataset
        self.name = name
        self.split = split
        self.path = Path(path) if path is not None else None
        self.text_field = text_field
        self.max_line_bytes = max_line_bytes
        self.reader = DocumentReader(text_field, max_line_bytes)

    @property
    def source(self) -> str:
        if self.path is not None:
            return str(self.path)
        return f"{self.dataset}" + (f"/{self.name}" if self.name else "") + f" [{self.split}]"

    def corpus(self) -> dict[str, Any]:
        if self.path is not None:
            source: dict[str, Any] = {"path": str(self.path.resolve())}
        else:
            source = {"dataset": self.dataset, "name": self.name, "split": self.split}
        return {**source, "text_field": self.text_field, **line_cap_setting(self.max_line_bytes)}

    def documents(self) -> Iterator[str]:
        if self.path is not None:
            return self.reader.files(local_files(self.path))
        if self.dataset is None:
            raise DataError("data.path is not set, and this recipe streams no dataset (data.dataset is null): give "
                            "it local .jsonl/.parquet files with --data.path")
        try:
            rows = stream_dataset(self.dataset, self.name, self.split)
        except DataError:
            raise
        except Exception as e:  # datasets raises many types (connection, missing config, auth...)
            raise DataError(
                f"could not stream {self.source} with datasets: {type(e).__name__}: {e}. Check data.dataset/"
                f"name/split, or set data.path to local .jsonl/.parquet files"
            ) from None
        return self.reader.rows_of(rows, self.source)

    def summary(self) -> dict[str, Any]:
        return {"rows_skipped": dict(self.reader.skipped)}

    def empty(self) -> str:
        skipped = f"; skipped: {dict(self.reader.skipped)}" if self.reader.skipped else ""
        return f"no documents with a non-empty '{self.text_field}' ({self.reader.rows} rows read{skipped})"

    def write_shards(self) -> Optional[dict[str, Any]]:
        self.reader = DocumentReader(self.text_field, self.max_line_bytes)  # counts this pass only
        manifest = super().write_shards()
        if manifest is not None and self.reader.skipped:
            log.warning(f"skipped {sum(self.reader.skipped.values())} rows: {dict(self.reader.skipped)}")
        return manifest
