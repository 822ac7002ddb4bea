"""The chat-line format, owned here alone: a conversation is a document of lines ``name: text``, one per message.

The Discord data module writes it (its renderer), ``chat`` and ``serve`` write the user's turns in it and read the
model's next speaker out of it (:mod:`lit_gpt_mini.inference.textstream`), and a checkpoint records which format
its model was trained on. A name the writer is given is made valid here (:func:`speaker`); a name a user types is
refused when it is not (:func:`check_name`): both follow the same rule, so every line written is a line the
reader recognises.
"""

from __future__ import annotations

import re
from typing import Optional

from lit_gpt_mini.errors import UserError

# What a model's text looks like, recorded in its checkpoint: "chat" for conversations in this format, "text" for
# anything else.
TEXT_FORMATS = ("text", "chat")

# A speaker's name: 1 to MAX_NAME characters, without a colon or a line break (the colon ends the name).
MAX_NAME = 40
SPEAKER_LINE = re.compile(r"\n[^\n:]{1,%d}: " % MAX_NAME)  # the start of a speaker's line, after a line break
MAYBE_SPEAKER = re.compile(r"\n[^\n:]{0,%d}:?\Z" % MAX_NAME)  # the end of a text that may still become one

_NOT_IN_NAME = re.compile(r"[:\r\n]+")


def check_name(name: str, what: str) -> None:
    """Refuse a speaker's name that cannot start a line ``name: text`` (``what`` names where it was given)."""
    if not name.strip() or _NOT_IN_NAME.search(name) or len(name) > MAX_NAME:
        raise UserError(f"{what} {name!r}: a name is 1 to {MAX_NAME} characters, without ':' or a line break")


def speaker(name: str) -> str:
    """A name from data (a Discord display name) made valid: colons and line breaks become spaces, whitespace is
    squeezed, the name is cut to ``MAX_NAME`` characters; an empty name becomes ``someone``."""
    cleaned = " ".join(_NOT_IN_NAME.sub(" ", name).split())[:MAX_NAME].strip()
    return cleaned or "someone"


def readable(content: str, mentions: Optional[dict[str, str]] = None) -> str:
    """A message's text as the model reads it: chat markup made readable (``<@id>`` -> ``@name`` through
    ``mentions``, ``<@&id>`` -> ``@role``, ``<#id>`` -> ``#channel``, ``<:name:id>`` -> ``:name:``), stripped."""
    mentions = mentions or {}
    content = re.sub(r"<@!?(\d+)>", lambda m: "@" + mentions.get(m.group(1), "someone"), content)
    content = re.sub(r"<@&\d+>", "@role", content)
    content = re.sub(r"<#\d+>", "#channel", content)
    return re.sub(r"<a?:(\w+):\d+>", r":\1:", content).strip()


def line(name: str, content: str, mentions: Optional[dict[str, str]] = None) -> str:
    """One message as a line of a conversation: ``name: text``, the text made :func:`readable` (``[attachment]``
    when none is left). ``name`` must be valid (:func:`check_name`, or made so by :func:`speaker`)."""
    return f"{name}: {readable(content, mentions) or '[attachment]'}"
