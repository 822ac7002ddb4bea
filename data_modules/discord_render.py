"""Discord messages rendered as training text: one document per conversation, a line ``author: content`` per
message, mentions and custom emoji made readable, authors optionally anonymised."""

from __future__ import annotations

from collections import Counter
from typing import Iterable

from data_modules.discord_messages import CONTENT_TYPES, Message
from lit_gpt_mini import chat_format


def line(author: str, content: str, mentions: dict[str, str] | None = None) -> str:
    """One message as a line of a conversation (:func:`lit_gpt_mini.chat_format.line`), the author made a valid
    speaker's name."""
    return chat_format.line(chat_format.speaker(author), content, mentions)


def conversations(
    messages: Iterable[Message],
    gap_seconds: float,
    anonymize_authors: bool,
    keep_bots: bool,
    keep_system: bool,
    keep_attachment_only: bool,
    counts: Counter,
) -> list[str]:
    """The messages (any order) as documents, oldest first: a silence longer than ``gap_seconds`` starts a new
    one. Bot, system and text-less messages are dropped unless kept; ``counts`` tallies what was kept and what
    was dropped, by reason."""
    names: dict[str, str] = {}

    def name(author_id: str, display: str) -> str:
        if not anonymize_authors:
            return display
        return names.setdefault(author_id or display, f"User{len(names) + 1}")

    documents, lines, last = [], [], None
    for m in sorted(messages, key=lambda m: (m.time, m.id)):
        reason = None
        if m.is_bot and not keep_bots:
            reason = "bot"
        elif m.kind not in CONTENT_TYPES and not keep_system:
            reason = "system"
        elif not m.content.strip() and not (m.attachments and keep_attachment_only):
            reason = "no text"
        if reason:
            counts[reason] += 1
            continue
        if last is not None and (m.time - last).total_seconds() > gap_seconds and lines:
            documents.append("\n".join(lines))
            lines = []
        last = m.time
        lines.append(line(name(m.author_id, m.author), m.content, {i: name(i, n) for i, n in m.mentions.items()}))
        counts["kept"] += 1
    if lines:
        documents.append("\n".join(lines))
    return documents
