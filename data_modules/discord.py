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

import json
import os
import re
from collections import Counter
from pathlib import Path
from typing import Any, Iterator, Optional, Union

from data_modules.base import InMemoryTokenDataModule
from data_modules.discord_api import API_URL, DiscordClient, RetryPolicy, check_api_url
from data_modules.discord_messages import Message, MessageReader
from data_modules.discord_render import conversations
from lit_gpt_mini.errors import ConfigError, DataError
from lit_gpt_mini.files import atomic_write, documents_sha256, missing_path
from lit_gpt_mini.log import get_logger
from lit_gpt_mini.tokenizers import TokenizerRecipe

log = get_logger(__name__)
# Environment variable names by convention: upper case, digits and "_". A Discord token always has lower-case
# letters, so a token pasted into token_env is refused here, before any file is written.
_ENV_NAME = re.compile(r"[A-Z_][A-Z0-9_]{0,63}")
_SNOWFLAKE = re.compile(r"[0-9]{1,20}")  # Discord ids (ASCII digits: str.isdigit also takes "²", which int refuses)


class DiscordDataModule(InMemoryTokenDataModule):
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
        api_max_total_wait: The longest total waiting while retrying one request before the run ends (each wait is
            logged with its reason and the next try; see :class:`~data_modules.discord_api.RetryPolicy`).
        max_messages: At most this many messages per channel on the first fetch (``None``: the whole history).
        conversation_gap_minutes: A silence longer than this starts a new conversation (document).
        anonymize_authors: Replace names by ``User1``, ``User2``... (in order of appearance, mentions too).
        keep_bots, keep_system: Keep bot messages / system events (joins, pins...).
        keep_attachment_only: Keep messages with no text (rendered as ``[attachment]``).

    The other arguments are :class:`~data_modules.base.InMemoryTokenDataModule`'s; the tokenizer's default kind
    here is ``gpt2``, and ``val_fraction`` holds out the latest conversations. The messages are read whole (they are
    sorted and deduplicated by id) and the conversations stay in memory during the preparation.
    """

    text_format = "chat"

    def __init__(
        self,
        data_dir: str = "data/discord",
        path: Optional[str] = None,
        channel_ids: Optional[list[Union[int, str]]] = None,
        token_env: str = "DISCORD_TOKEN",
        bot_token: bool = True,
        api_url: str = API_URL,
        api_max_wait: float = RetryPolicy.max_wait,
        api_max_total_wait: float = RetryPolicy.max_total_wait,
        max_messages: Optional[int] = None,
        conversation_gap_minutes: float = 60.0,
        anonymize_authors: bool = False,
        keep_bots: bool = False,
        keep_system: bool = False,
        keep_attachment_only: bool = False,
        tokenizer: TokenizerRecipe = TokenizerRecipe("gpt2"),
        batch_size: int = 16,
        **kwargs: Any,
    ) -> None:
        super().__init__(data_dir=data_dir, tokenizer=tokenizer, batch_size=batch_size, **kwargs)
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
        self.reader = MessageReader()
        self.counts: Counter[str] = Counter()  # what happened to the messages: kept, dropped (by reason)
        self._conversations: Optional[list[str]] = None

    # --- fetching ---------------------------------------------------------------------------------------------

    def _client(self) -> DiscordClient:
        token = os.environ.get(self.token_env, "").strip()
        if not token:
            raise DataError(f"fetching Discord channels needs a token in the environment variable {self.token_env}")
        return DiscordClient(self.api_url, token, self.bot_token, f"${self.token_env}", self.retry, log.warning)

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
            # ASCII escapes: a fetched message may hold a lone surrogate, which UTF-8 cannot encode
            with atomic_write(cache, "w", encoding="ascii") as f:
                f.write("".join(json.dumps(m) + "\n" for m in messages))
        log.info(f"Discord channel {channel}: {len(new)} new messages fetched, {len(messages)} in the cache")
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
            raise missing_path(self.path, fix=(
                f"make one from Tiny Shakespeare with `python -m data_modules.shakespeare_discord --out {self.path}`, "
                f"or export your own chats (README.md, 'Talk to your model'; docs/data-sources.md, Discord)"))
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
            log.info(f"Discord: {naive} message(s) had a timestamp without a UTC offset; they were read as UTC")
        return list(unique.values())

    def conversations(self) -> list[str]:
        """The training documents: one per conversation, a line per message."""
        if self._conversations is not None:
            return self._conversations
        documents = conversations(
            self.messages(), self.gap, self.anonymize_authors, self.keep_bots, self.keep_system,
            self.keep_attachment_only, self.counts,
        )
        dropped = {k: v for k, v in self.counts.items() if k != "kept"}
        if dropped:
            log.info(f"Discord: dropped {dropped} messages")
        if self.reader.skipped:
            skipped = self.reader.skipped
            log.info(f"Discord: skipped {sum(skipped.values())} malformed messages: {dict(skipped)}")
        if not documents:
            raise DataError("no Discord message with text to train on (all were dropped or there were none"
                            + (f"; skipped as malformed: {dict(self.reader.skipped)}" if self.reader.skipped else "")
                            + ")")
        self._conversations = documents
        return documents

    # --- the document stream and the shards ------------------------------------------------------------------

    def fetch(self) -> None:
        self.conversations()

    def documents(self) -> Iterator[str]:
        return iter(self.conversations())

    def corpus(self) -> dict[str, Any]:
        return {"corpus_sha256": documents_sha256(self.conversations())}

    source = "Discord text"

    def summary(self) -> dict[str, Any]:
        return {"documents": len(self.conversations()), "messages": dict(self.counts),
                "messages_skipped": dict(self.reader.skipped)}
