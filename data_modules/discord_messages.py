"""Discord messages read from DiscordChatExporter exports (JSON, CSV) and API objects, through one shape check:
a message that does not fit is skipped, reported by file and index (CSV: line) and counted by reason; a file
that cannot be read at all is a :class:`~lit_gpt_mini.errors.DataError` naming it."""

from __future__ import annotations

import csv
import json
from collections import Counter
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterator

from lit_gpt_mini.errors import DataError
from lit_gpt_mini.log import get_logger

log = get_logger(__name__)

CONTENT_TYPES = {"Default", "Reply", 0, 19}  # ordinary messages and replies; everything else is a system event
_REPORTED = 10  # skipped messages reported one by one; the rest are only counted
_CSV_COLUMNS = ("Author", "Date")  # DiscordChatExporter's CSV: AuthorID, Author, Date, Content, Attachments, ...


@dataclass
class Message:
    id: str
    time: datetime
    author: str
    author_id: str
    is_bot: bool
    kind: Any
    content: str
    attachments: int
    mentions: dict[str, str]  # user id -> display name
    naive_time: bool = False  # the timestamp had no UTC offset (read as UTC)


class BadMessage(ValueError):
    """A message whose shape does not fit; it is skipped and counted by ``reason`` (which field is wrong; a
    few kinds), and reported with ``detail`` (the offending value) too."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(reason + (f": {detail}" if detail else ""))
        self.reason = reason
        self.detail = detail


_TYPE_NAMES = {str: "a string", int: "a number", float: "a number", dict: "an object", list: "a list",
               bool: "true/false"}


def _field(row: dict[str, Any], key: str, *types: type) -> Any:
    """``row[key]`` when absent/null (``None``) or of one of ``types``; otherwise the message is bad."""
    value = row.get(key)
    if value is None:
        return None
    if isinstance(value, bool) and bool not in types or not isinstance(value, types):
        expected = " or ".join(dict.fromkeys(_TYPE_NAMES[t] for t in types))
        raise BadMessage(f"'{key}' is {_TYPE_NAMES.get(type(value), type(value).__name__)}, not {expected}")
    return value


def _id(row: dict[str, Any], key: str = "id") -> str:
    value = _field(row, key, str, int)
    if value is None or str(value).strip() == "":
        raise BadMessage(f"no '{key}'")
    return str(value)


def _time(value: Any, key: str = "timestamp") -> tuple[datetime, bool]:
    """(aware datetime, whether it had no offset). Timestamps without an offset are read as UTC, so that one
    such message among offset-aware ones can still be ordered."""
    if value is None:
        raise BadMessage(f"no '{key}'")
    if not isinstance(value, str):
        kind = _TYPE_NAMES.get(type(value), type(value).__name__)
        raise BadMessage(f"'{key}' is {kind}, not an ISO 8601 date string")
    try:
        time = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
        naive = time.tzinfo is None
        # in UTC now: ordering aware times converts them, which fails for years 1 and 9999 with an offset
        return (time.replace(tzinfo=timezone.utc) if naive else time.astimezone(timezone.utc)), naive
    except (ValueError, OverflowError):
        raise BadMessage(f"'{key}' is not an ISO 8601 date", repr(value[:40])) from None


def _mentions(row: dict[str, Any], *name_keys: str) -> dict[str, str]:
    mentions = {}
    for mention in _field(row, "mentions", list) or []:
        if not isinstance(mention, dict):
            raise BadMessage("'mentions' holds something that is not an object")
        names = [_field(mention, k, str) for k in name_keys]
        if _field(mention, "id", str, int) in (None, ""):
            raise BadMessage("'mentions' holds an entry without an 'id'")
        mentions[_id(mention)] = next((n for n in names if n), "someone")
    return mentions


def _message(row: Any, names: tuple[str, ...], bot_key: str, default_kind: Any) -> Message:
    if not isinstance(row, dict):
        raise BadMessage(f"a message is an object, not {_TYPE_NAMES.get(type(row), type(row).__name__)}")
    author = _field(row, "author", dict) or {}
    author_names = [_field(author, k, str) for k in names]
    kind = _field(row, "type", str, int)
    time, naive = _time(row.get("timestamp"))
    return Message(
        id=_id(row),
        time=time,
        author=next((n for n in author_names if n), "unknown"),
        author_id=str(_field(author, "id", str, int) or ""),
        is_bot=bool(_field(author, bot_key, bool)),
        kind=default_kind if kind is None else kind,
        content=_field(row, "content", str) or "",
        attachments=len(_field(row, "attachments", list) or []) + len(_field(row, "embeds", list) or []),
        mentions=_mentions(row, *names),
        naive_time=naive,
    )


def from_export_json(row: Any) -> Message:
    """A message of a DiscordChatExporter JSON export; :class:`BadMessage` when its shape does not fit."""
    return _message(row, ("nickname", "name"), "isBot", "Default")


def from_api(row: Any) -> Message:
    """A message object of Discord's API; :class:`BadMessage` when its shape does not fit."""
    return _message(row, ("global_name", "username"), "bot", 0)


def from_export_csv(row: dict[str, str], line: str) -> Message:
    """A row of a DiscordChatExporter CSV export (no ids there: ``line`` identifies it)."""
    time, naive = _time(row["Date"], "Date")
    return Message(
        id=line, time=time, author=row["Author"] or "unknown", author_id=row.get("AuthorID") or "", is_bot=False,
        kind="Default", content=row.get("Content") or "",
        attachments=len([a for a in (row.get("Attachments") or "").split(",") if a.strip()]), mentions={},
        naive_time=naive,
    )


class MessageReader:
    """Reads exports and API messages into :class:`Message` s, skipping (and counting, and reporting where) the
    messages whose shape does not fit. A file that cannot be read at all is a :class:`DataError`."""

    def __init__(self) -> None:
        self.skipped: Counter[str] = Counter()

    def _skip(self, reason: str, where: str, detail: str = "") -> None:
        self.skipped[reason] += 1
        if sum(self.skipped.values()) <= _REPORTED:
            log.warning(f"{where}: message skipped ({reason}{': ' + detail if detail else ''})")

    def _unreadable(self, path: Path, problem: str) -> DataError:
        return DataError(f"{path} is not a readable DiscordChatExporter export ({problem}); export the channel "
                         f"again as JSON or CSV, or remove the file")

    def export(self, path: Path) -> Iterator[Message]:
        """The messages of one DiscordChatExporter file (JSON or CSV)."""
        if path.suffix.lower() == ".json":
            yield from self.export_json(path)
        else:
            yield from self.export_csv(path)

    def export_json(self, path: Path) -> Iterator[Message]:
        try:
            text = path.read_bytes().decode("utf-8-sig")
        except (OSError, UnicodeDecodeError) as e:
            raise self._unreadable(path, f"{type(e).__name__}: {e}") from None
        if not text.strip():
            raise self._unreadable(path, "the file is empty")
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:  # typically an export cut off while it was written
            raise self._unreadable(path, f"invalid JSON at line {e.lineno} column {e.colno}: {e.msg}") from None
        except RecursionError:
            raise self._unreadable(path, "JSON nested too deeply") from None
        if not isinstance(data, dict) or not isinstance(data.get("messages"), list):
            raise self._unreadable(path, "no 'messages' list at the top")
        for index, row in enumerate(data["messages"]):
            try:
                yield from_export_json(row)
            except BadMessage as e:
                self._skip(e.reason, f"{path}: messages[{index}]", e.detail)

    def export_csv(self, path: Path) -> Iterator[Message]:
        try:
            with open(path, newline="", encoding="utf-8-sig") as f:
                reader = csv.reader(f)
                header = next(reader, None)
                if header is None:
                    raise self._unreadable(path, "the file is empty")
                missing = [c for c in _CSV_COLUMNS if c not in header]
                if missing:
                    raise self._unreadable(
                        path, f"line 1 has no column {', '.join(missing)}; it has {', '.join(header)}"
                    )
                end = reader.line_num
                for fields in reader:
                    line, end = end + 1, reader.line_num  # a quoted field may span lines: report the first
                    if not fields:
                        continue
                    where = f"{path}:{line}"
                    if len(fields) != len(header):
                        self._skip("wrong number of fields", where, f"{len(fields)} where the header has {len(header)}")
                        continue
                    try:
                        yield from_export_csv(dict(zip(header, fields)), where)
                    except BadMessage as e:
                        self._skip(e.reason, where, e.detail)
        except csv.Error as e:  # a NUL byte, a field over csv's size limit...
            raise self._unreadable(path, f"line {reader.line_num}: {e}") from None
        except (OSError, UnicodeDecodeError) as e:
            raise self._unreadable(path, f"{type(e).__name__}: {e}") from None

    def api(self, rows: list[Any], where: str) -> Iterator[Message]:
        """Fetched (cached) API message objects; ``where`` names their cache file, reported with the line."""
        for number, row in enumerate(rows, start=1):
            try:
                yield from_api(row)
            except BadMessage as e:
                self._skip(e.reason, f"{where}:{number}", e.detail)


