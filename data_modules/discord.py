"""Discord chat as training text: DiscordChatExporter exports (JSON or CSV), or channels fetched from the API.

Messages become lines ``author: content``, oldest first; a silence longer than ``conversation_gap_minutes``
ends a conversation (a document, separated from the next by the end-of-text token). Bot and system messages
and messages with no text (attachments only) are dropped by default; user, channel and role mentions and custom
emoji are rendered readably; authors can be anonymised.

Every message, exported or fetched, goes through one check of its shape (:func:`from_export_json`,
:func:`from_api`, CSV rows): a message that does not fit is skipped, reported by file and index (CSV: line)
and counted in the shard manifest; a file that cannot be read at all stops the run with its name.

Fetching (``channel_ids``) goes through :class:`~data_modules.discord_api.DiscordClient` with a token read from
the environment variable named by ``token_env``: the token itself is never printed, logged, cached, or saved in
configs, hyperparameters or checkpoints, and is sent only to ``api_url``'s host. Rate limits are honoured
within bounds, 401/403 stop with a message, and fetched messages are cached so a re-run only asks for newer ones.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import re
import sys
from collections import Counter
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterator, Literal, Optional, Union

import numpy as np
from tqdm import tqdm

from data_modules.base import TokenDataModule
from data_modules.discord_api import API_URL, DiscordClient, RetryPolicy, check_api_url
from lit_gpt_mini.errors import ConfigError, DataError
from lit_gpt_mini.tokenizers import GPT2Tokenizer, Tokenizer
from lit_gpt_mini.tokenizers.bpe import load_or_train

_CONTENT_TYPES = {"Default", "Reply", 0, 19}  # ordinary messages and replies; everything else is a system event
_REPORTED = 10  # skipped messages reported one by one; the rest are only counted
# Environment variable names by convention: upper case, digits and "_". A Discord token always has lower-case
# letters, so a token pasted into token_env is refused here, before any file is written.
_ENV_NAME = re.compile(r"[A-Z_][A-Z0-9_]{0,63}")
_SNOWFLAKE = re.compile(r"[0-9]{1,20}")  # Discord ids (ASCII digits: str.isdigit also takes "²", which int refuses)
_CSV_COLUMNS = ("Author", "Date")  # DiscordChatExporter's CSV: AuthorID, Author, Date, Content, Attachments, ...


def _say(message: str) -> None:
    tqdm.write(message, file=sys.stderr)


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
            _say(f"{where}: message skipped ({reason}{': ' + detail if detail else ''})")

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


class DiscordDataModule(TokenDataModule):
    """Discord conversations, tokenized with GPT-2's vocabulary or our own BPE.

    Args:
        path: A DiscordChatExporter export (``.json`` or ``.csv``) or a directory of them.
        channel_ids: Channels to fetch through the API (cached in ``data_dir/channels``; reruns fetch only newer
            messages).
        token_env: Name of the environment variable holding the API token (never the token itself): upper-case
            letters, digits and ``_``.
        bot_token: The token is a bot's (sent as ``Bot <token>``); false for a user token.
        api_url: The API's base URL (https; the token is sent to its host only).
        api_max_wait: The longest single wait for a rate limit or a retry; a server asking for more ends the run.
        api_max_total_wait: The longest total waiting while retrying one request before the run ends.
        max_messages: At most this many messages per channel on the first fetch (``None``: the whole history).
        conversation_gap_minutes: A silence longer than this starts a new conversation (document).
        anonymize_authors: Replace names by ``User1``, ``User2``... (in order of appearance, mentions too).
        keep_bots, keep_system: Keep bot messages / system events (joins, pins...).
        keep_attachment_only: Keep messages with no text (rendered as ``[attachment]``).
        val_fraction: The tail fraction of the token stream held out for validation (the latest conversations).
        tokenizer_type, bpe_vocab_size, bpe_pattern: GPT-2's tokenizer, or our BPE trained on the conversations.

    The other arguments are :class:`~data_modules.base.TokenDataModule`'s.
    """

    def __init__(
        self,
        data_dir: str = "data/discord",
        path: Optional[str] = None,
        channel_ids: Optional[list[Union[int, str]]] = None,
        token_env: str = "DISCORD_TOKEN",
        bot_token: bool = True,
        api_url: str = API_URL,
        api_max_wait: float = 60.0,
        api_max_total_wait: float = 600.0,
        max_messages: Optional[int] = None,
        conversation_gap_minutes: float = 60.0,
        anonymize_authors: bool = False,
        keep_bots: bool = False,
        keep_system: bool = False,
        keep_attachment_only: bool = False,
        val_fraction: float = 0.1,
        tokenizer_type: Literal["gpt2", "bpe"] = "gpt2",
        bpe_vocab_size: int = 4096,
        bpe_pattern: Literal["gpt2", "gpt4"] = "gpt4",
        block_size: int = 1024,
        batch_size: int = 16,
        seed: int = 1337,
        num_workers: int = 0,
    ) -> None:
        super().__init__(
            data_dir=data_dir, block_size=block_size, batch_size=batch_size, seed=seed, num_workers=num_workers
        )
        if path is None and not channel_ids:
            raise ConfigError("DiscordDataModule needs data.path (exports) or data.channel_ids (to fetch)")
        if not _ENV_NAME.fullmatch(token_env):  # (the value is not echoed: it may be a token)
            raise ConfigError(
                "data.token_env must be the NAME of an environment variable holding the token (upper-case letters, "
                "digits and _, like DISCORD_TOKEN), not the token"
            )
        if not api_max_wait > 0 or not api_max_total_wait >= 0:
            raise ConfigError(f"data.api_max_wait ({api_max_wait}) must be positive and data.api_max_total_wait "
                              f"({api_max_total_wait}) not negative")
        if not 0.0 < val_fraction < 1.0:
            raise ConfigError(f"data.val_fraction must be between 0 and 1, got {val_fraction}")
        if max_messages is not None and max_messages < 1:
            raise ConfigError(f"data.max_messages must be positive or null, got {max_messages}")
        self.path = Path(path) if path is not None else None
        self.channel_ids = [str(c) for c in channel_ids or []]
        bad = [c for c in self.channel_ids if not _SNOWFLAKE.fullmatch(c)]
        if bad:
            raise ConfigError(f"data.channel_ids holds {bad[0]!r}: channel ids are numbers (Developer Mode: Copy ID)")
        self.token_env = token_env
        self.bot_token = bot_token
        self.api_url = check_api_url(api_url)
        self.retry = RetryPolicy(max_wait=api_max_wait, max_total_wait=api_max_total_wait)
        self.max_messages = max_messages
        self.gap = conversation_gap_minutes * 60
        self.anonymize_authors = anonymize_authors
        self.keep_bots = keep_bots
        self.keep_system = keep_system
        self.keep_attachment_only = keep_attachment_only
        self.val_fraction = val_fraction
        self.tokenizer_type = tokenizer_type
        self.bpe_vocab_size = bpe_vocab_size
        self.bpe_pattern = bpe_pattern
        self.reader = MessageReader()
        self.counts: Counter[str] = Counter()  # what happened to the messages: kept, dropped (by reason)
        self._conversations: Optional[list[str]] = None

    # --- fetching ---------------------------------------------------------------------------------------------

    def _client(self) -> DiscordClient:
        token = os.environ.get(self.token_env, "").strip()
        if not token:
            raise DataError(f"fetching Discord channels needs a token in the environment variable {self.token_env}")
        return DiscordClient(self.api_url, token, self.bot_token, f"${self.token_env}", self.retry, _say)

    def _page(self, client: DiscordClient, url: str) -> tuple[list[dict[str, Any]], bool]:
        """One page of messages, and whether it was full (more may follow). Items without a usable id cannot be
        ordered or cached: skipped and counted."""
        page = client.get_json(url)
        if not isinstance(page, list):
            raise DataError(f"Discord answered {url} with {type(page).__name__} JSON, not a list of messages: is "
                            f"data.api_url Discord's API?")
        kept = []
        for index, item in enumerate(page):
            usable = isinstance(item, dict) and isinstance(item.get("id"), (str, int))
            if usable and _SNOWFLAKE.fullmatch(str(item["id"])):
                kept.append(item)
            else:
                self.reader._skip("an API message without a numeric 'id'", f"{url}: item {index}")
        if page and not kept:
            raise DataError(f"Discord answered {url} with {len(page)} items and none has a numeric 'id': is "
                            f"data.api_url Discord's API?")
        return kept, len(page) >= 100

    def _cached(self, cache: Path) -> list[dict[str, Any]]:
        if not cache.is_file():
            return []
        messages = []
        try:
            lines = cache.read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError) as e:
            raise DataError(f"cannot read the cache {cache} ({e}): delete it to fetch the channel again") from None
        for number, line in enumerate(lines, start=1):
            try:
                message = json.loads(line)
                int(message["id"])
            except (ValueError, TypeError, KeyError, RecursionError):
                raise DataError(f"{cache}:{number} is damaged: delete the file to fetch the channel again") from None
            messages.append(message)
        return messages

    def fetch_channel(self, channel: str) -> list[dict[str, Any]]:
        """The channel's messages (API objects, oldest first), cached; only newer ones are fetched again."""
        cache = self.data_dir / "channels" / f"{channel}.jsonl"
        messages = self._cached(cache)
        base = f"{self.api_url}/channels/{channel}/messages?limit=100"
        new: list[dict[str, Any]] = []
        with self._client() as client:
            if messages:  # newer than the newest cached message, page by page
                after = max(int(m["id"]) for m in messages)
                while True:
                    page, full = self._page(client, f"{base}&after={after}")
                    if not page:
                        break
                    new += page
                    newest = max(int(m["id"]) for m in page)
                    if newest <= after:  # a server that does not move forward would loop for ever
                        raise DataError(f"Discord answered {base}&after={after} with no newer message: stopping")
                    after = newest
                    if not full:
                        break
            else:  # the history, newest first, page by page
                before = None
                while self.max_messages is None or len(new) < self.max_messages:
                    url = base + (f"&before={before}" if before else "")
                    page, full = self._page(client, url)
                    new += page
                    if not full or not page:
                        break
                    oldest = min(int(m["id"]) for m in page)
                    if before is not None and oldest >= before:
                        raise DataError(f"Discord answered {url} with no older message: stopping")
                    before = oldest
                new = new[: self.max_messages]
        if new:
            messages = sorted({str(m["id"]): m for m in messages + new}.values(), key=lambda m: int(m["id"]))
            cache.parent.mkdir(parents=True, exist_ok=True)
            tmp = cache.with_suffix(".part")
            # ASCII escapes: a fetched message may hold a lone surrogate, which UTF-8 cannot encode
            tmp.write_text("".join(json.dumps(m) + "\n" for m in messages), encoding="ascii")
            tmp.replace(cache)
        _say(f"Discord channel {channel}: {len(new)} new messages fetched, {len(messages)} in the cache")
        return messages

    # --- messages -> conversations ----------------------------------------------------------------------------

    def export_files(self) -> list[Path]:
        if self.path is None:
            return []
        if self.path.is_dir():
            files = sorted(p for p in self.path.rglob("*") if p.is_file() and p.suffix.lower() in (".json", ".csv"))
        elif self.path.is_file():
            files = [self.path]
        else:
            raise DataError(f"data.path {self.path} does not exist")
        if not files:
            raise DataError(f"{self.path} holds no .json or .csv exports")
        return files

    def messages(self) -> list[Message]:
        """Every readable message of the exports and channels, once each (a message in two exports, or in an
        export and a fetched channel, counts once: same id)."""
        found: list[Message] = []
        for file in self.export_files():
            found += self.reader.export(file)
        for channel in self.channel_ids:
            rows = self.fetch_channel(channel)
            found += self.reader.api(rows, str(self.data_dir / "channels" / f"{channel}.jsonl"))
        unique: dict[str, Message] = {}
        for m in found:
            if m.id in unique:
                self.counts["duplicate (same id)"] += 1
            else:
                unique[m.id] = m
        naive = sum(m.naive_time for m in unique.values())
        if naive:
            _say(f"Discord: {naive} message(s) had a timestamp without a UTC offset; they were read as UTC")
        return list(unique.values())

    def conversations(self) -> list[str]:
        """The training documents: one per conversation, a line per message."""
        if self._conversations is not None:
            return self._conversations
        names: dict[str, str] = {}

        def name(author_id: str, display: str) -> str:
            if not self.anonymize_authors:
                return display
            return names.setdefault(author_id or display, f"User{len(names) + 1}")

        documents, lines, last = [], [], None
        for m in sorted(self.messages(), key=lambda m: (m.time, m.id)):
            reason = None
            if m.is_bot and not self.keep_bots:
                reason = "bot"
            elif m.kind not in _CONTENT_TYPES and not self.keep_system:
                reason = "system"
            elif not m.content.strip() and not (m.attachments and self.keep_attachment_only):
                reason = "no text"
            if reason:
                self.counts[reason] += 1
                continue
            if last is not None and (m.time - last).total_seconds() > self.gap and lines:
                documents.append("\n".join(lines))
                lines = []
            last = m.time
            author = name(m.author_id, m.author)
            content = self.render(m.content, {i: name(i, n) for i, n in m.mentions.items()}) or "[attachment]"
            lines.append(f"{author}: {content}")
            self.counts["kept"] += 1
        if lines:
            documents.append("\n".join(lines))
        dropped = {k: v for k, v in self.counts.items() if k != "kept"}
        if dropped:
            _say(f"Discord: dropped {dropped} messages")
        if self.reader.skipped:
            skipped = self.reader.skipped
            _say(f"Discord: skipped {sum(skipped.values())} malformed messages: {dict(skipped)}")
        if not documents:
            raise DataError("no Discord message with text to train on (all were dropped or there were none"
                            + (f"; skipped as malformed: {dict(self.reader.skipped)}" if self.reader.skipped else "")
                            + ")")
        self._conversations = documents
        return documents

    @staticmethod
    def render(content: str, mentions: dict[str, str]) -> str:
        """Raw Discord markup made readable: ``<@id>`` -> ``@name``, ``<#id>`` -> ``#channel``,
        ``<@&id>`` -> ``@role``, ``<:name:id>`` -> ``:name:``."""
        content = re.sub(r"<@!?(\d+)>", lambda m: "@" + mentions.get(m.group(1), "someone"), content)
        content = re.sub(r"<@&\d+>", "@role", content)
        content = re.sub(r"<#\d+>", "#channel", content)
        return re.sub(r"<a?:(\w+):\d+>", r":\1:", content).strip()

    # --- tokenizer and shards ---------------------------------------------------------------------------------

    def _corpus_sha256(self) -> str:
        digest = hashlib.sha256()
        for document in self.conversations():
            digest.update(document.encode("utf-8", "surrogatepass") + b"\x00")
        return digest.hexdigest()

    def load_tokenizer(self) -> Tokenizer:
        if self.tokenizer_type == "gpt2":
            return GPT2Tokenizer()
        return load_or_train(self.data_dir / "tokenizers", self.conversations(), self._corpus_sha256(),
                             self.bpe_vocab_size, self.bpe_pattern)

    def prepare_data(self) -> None:
        tokenizer = self.tokenizer
        documents = self.conversations()
        stream = np.concatenate([np.concatenate([[tokenizer.eot_id], tokenizer.encode(d)]) for d in documents])
        stream = stream.astype(np.uint16 if tokenizer.vocab_size <= 2**16 else np.uint32)
        n_val = int(len(stream) * self.val_fraction)
        if n_val == 0 or n_val == len(stream):
            raise DataError(f"{len(stream)} tokens of Discord text are too few to hold out val_fraction={self.val_fraction}")
        self.write_splits(
            val=stream[len(stream) - n_val :],
            train=stream[: len(stream) - n_val],
            settings={"corpus_sha256": self._corpus_sha256(), "val_fraction": self.val_fraction},
            extra={"documents": len(documents), "messages": dict(self.counts),
                   "messages_skipped": dict(self.reader.skipped)},
        )
