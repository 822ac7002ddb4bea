"""Discord chat as training text: DiscordChatExporter exports (JSON or CSV), or channels fetched from the API.

Messages become lines ``author: content``, oldest first; a silence longer than ``conversation_gap_minutes``
ends a conversation (a document, separated from the next by the end-of-text token). Bot and system messages
and messages with no text (attachments only) are dropped by default; user, channel and role mentions and custom
emoji are rendered readably; authors can be anonymised.

Fetching (``channel_ids``) uses Discord's HTTP API with a token read from the environment variable named by
``token_env``: the token itself is never printed, logged, cached, or saved in configs, hyperparameters or
checkpoints. Rate limits are honoured (HTTP 429 ``retry_after``, the ``X-RateLimit-*`` headers), 401/403 stop
with a message, and fetched messages are cached so a re-run only asks for newer ones.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import re
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Literal, Optional, Union

import numpy as np
from tqdm import tqdm

from data_modules.base import TokenDataModule
from lit_gpt_mini.errors import ConfigError, DataError
from lit_gpt_mini.tokenizers import GPT2Tokenizer, Tokenizer
from lit_gpt_mini.tokenizers.bpe import load_or_train

API_URL = "https://discord.com/api/v10"
_CONTENT_TYPES = {"Default", "Reply", 0, 19}  # ordinary messages and replies; everything else is a system event


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


def _time(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def from_export_json(row: dict[str, Any]) -> Message:
    author = row.get("author") or {}
    return Message(
        id=str(row["id"]),
        time=_time(row["timestamp"]),
        author=author.get("nickname") or author.get("name") or "unknown",
        author_id=str(author.get("id", "")),
        is_bot=bool(author.get("isBot", False)),
        kind=row.get("type", "Default"),
        content=row.get("content") or "",
        attachments=len(row.get("attachments") or []) + len(row.get("embeds") or []),
        mentions={str(m.get("id")): m.get("nickname") or m.get("name") or "someone" for m in row.get("mentions") or []},
    )


def from_api(row: dict[str, Any]) -> Message:
    author = row.get("author") or {}
    return Message(
        id=str(row["id"]),
        time=_time(row["timestamp"]),
        author=author.get("global_name") or author.get("username") or "unknown",
        author_id=str(author.get("id", "")),
        is_bot=bool(author.get("bot", False)),
        kind=row.get("type", 0),
        content=row.get("content") or "",
        attachments=len(row.get("attachments") or []) + len(row.get("embeds") or []),
        mentions={str(m.get("id")): m.get("global_name") or m.get("username") or "someone" for m in row.get("mentions") or []},
    )


def read_export(path: Path) -> list[Message]:
    """The messages of one DiscordChatExporter file (JSON or CSV)."""
    try:
        if path.suffix.lower() == ".json":
            data = json.loads(path.read_text(encoding="utf-8"))
            return [from_export_json(m) for m in data["messages"]]
        messages = []
        with open(path, newline="", encoding="utf-8-sig") as f:
            for number, row in enumerate(csv.DictReader(f), start=2):
                messages.append(Message(
                    id=f"{path.name}:{number}", time=_time(row["Date"]), author=row["Author"],
                    author_id=row.get("AuthorID", ""), is_bot=False, kind="Default", content=row.get("Content") or "",
                    attachments=len([a for a in (row.get("Attachments") or "").split(",") if a.strip()]), mentions={},
                ))
        return messages
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError, ValueError) as e:
        raise DataError(
            f"{path} is not a readable DiscordChatExporter export ({type(e).__name__}: {e}); export the channel "
            f"again as JSON or CSV"
        ) from None


def discord_get(url: str, token: str, bot: bool) -> tuple[int, dict[str, str], Any]:
    """One GET to Discord's API: (status, headers, decoded JSON). This module's one network boundary."""
    request = urllib.request.Request(url, headers={
        "Authorization": f"Bot {token}" if bot else token,
        "User-Agent": "lit-gpt-mini (https://github.com/lit-gpt-mini, 0.1)",
    })
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, dict(response.headers), json.loads(response.read() or b"null")
    except urllib.error.HTTPError as e:
        body = e.read()
        try:
            payload = json.loads(body or b"null")
        except json.JSONDecodeError:
            payload = None
        return e.code, dict(e.headers), payload


class DiscordDataModule(TokenDataModule):
    """Discord conversations, tokenized with GPT-2's vocabulary or our own BPE.

    Args:
        path: A DiscordChatExporter export (``.json`` or ``.csv``) or a directory of them.
        channel_ids: Channels to fetch through the API (cached in ``data_dir/channels``; reruns fetch only newer
            messages).
        token_env: Name of the environment variable holding the API token (never the token itself).
        bot_token: The token is a bot's (sent as ``Bot <token>``); false for a user token.
        api_url: The API's base URL.
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
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]{0,39}", token_env):  # (the value is not echoed: it may be a token)
            raise ConfigError("data.token_env must be the NAME of an environment variable holding the token, not the token")
        self.path = Path(path) if path is not None else None
        self.channel_ids = [str(c) for c in channel_ids or []]
        self.token_env = token_env
        self.bot_token = bot_token
        self.api_url = api_url.rstrip("/")
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
        self._conversations: Optional[list[str]] = None

    # --- fetching ---------------------------------------------------------------------------------------------

    def _token(self) -> str:
        token = os.environ.get(self.token_env)
        if not token:
            raise DataError(f"fetching Discord channels needs a token in the environment variable {self.token_env}")
        return token

    def _get(self, url: str, token: str) -> list[dict[str, Any]]:
        while True:
            status, headers, payload = discord_get(url, token, self.bot_token)
            headers = {k.lower(): v for k, v in headers.items()}
            if status == 429:
                wait = float((payload or {}).get("retry_after") or headers.get("retry-after") or 1.0)
                _say(f"Discord rate limit: waiting {wait:.2f} s")
                time.sleep(wait)
                continue
            if status in (401, 403):
                raise DataError(
                    f"Discord refused {url} (HTTP {status}): the token in ${self.token_env} is invalid or cannot read "
                    f"this channel (a bot needs the View Channel and Read Message History permissions)"
                )
            if status != 200 or not isinstance(payload, list):
                raise DataError(f"Discord answered {url} with HTTP {status}: {str(payload)[:200]}")
            if headers.get("x-ratelimit-remaining") == "0":  # the next request would be refused: wait it out
                time.sleep(float(headers.get("x-ratelimit-reset-after", "1")))
            return payload

    def fetch_channel(self, channel: str) -> list[dict[str, Any]]:
        """The channel's messages (API objects, oldest first), cached; only newer ones are fetched again."""
        cache = self.data_dir / "channels" / f"{channel}.jsonl"
        messages = [json.loads(line) for line in cache.read_text(encoding="utf-8").splitlines()] if cache.is_file() else []
        token = self._token()
        base = f"{self.api_url}/channels/{channel}/messages?limit=100"
        new: list[dict[str, Any]] = []
        if messages:  # newer than the newest cached message, page by page
            after = max(int(m["id"]) for m in messages)
            while page := self._get(f"{base}&after={after}", token):
                new += page
                after = max(int(m["id"]) for m in page)
                if len(page) < 100:
                    break
        else:  # the history, newest first, page by page
            before = None
            while self.max_messages is None or len(new) < self.max_messages:
                page = self._get(base + (f"&before={before}" if before else ""), token)
                new += page
                if len(page) < 100:
                    break
                before = min(int(m["id"]) for m in page)
            new = new[: self.max_messages]
        if new:
            messages = sorted({m["id"]: m for m in messages + new}.values(), key=lambda m: int(m["id"]))
            cache.parent.mkdir(parents=True, exist_ok=True)
            tmp = cache.with_suffix(".part")
            tmp.write_text("".join(json.dumps(m, ensure_ascii=False) + "\n" for m in messages), encoding="utf-8")
            tmp.replace(cache)
        _say(f"Discord channel {channel}: {len(new)} new messages fetched, {len(messages)} in the cache")
        return messages

    # --- messages -> conversations ----------------------------------------------------------------------------

    def messages(self) -> list[Message]:
        messages: list[Message] = []
        if self.path is not None:
            if self.path.is_dir():
                files = sorted(p for p in self.path.rglob("*") if p.suffix.lower() in (".json", ".csv"))
            elif self.path.is_file():
                files = [self.path]
            else:
                raise DataError(f"data.path {self.path} does not exist")
            if not files:
                raise DataError(f"{self.path} holds no .json or .csv exports")
            for file in files:
                messages += read_export(file)
        for channel in self.channel_ids:
            messages += [from_api(m) for m in self.fetch_channel(channel)]
        return messages

    def conversations(self) -> list[str]:
        """The training documents: one per conversation, a line per message."""
        if self._conversations is not None:
            return self._conversations
        names: dict[str, str] = {}
        dropped: dict[str, int] = {}

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
                dropped[reason] = dropped.get(reason, 0) + 1
                continue
            if last is not None and (m.time - last).total_seconds() > self.gap and lines:
                documents.append("\n".join(lines))
                lines = []
            last = m.time
            author = name(m.author_id, m.author)
            content = self.render(m.content, {i: name(i, n) for i, n in m.mentions.items()}) or "[attachment]"
            lines.append(f"{author}: {content}")
        if lines:
            documents.append("\n".join(lines))
        if dropped:
            _say(f"Discord: dropped {dropped} messages")
        if not documents:
            raise DataError("no Discord message with text to train on (all were dropped or there were none)")
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
            extra={"documents": len(documents)},
        )
