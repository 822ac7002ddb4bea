"""What a model is asked to continue when people talk to it: the turns of a conversation rendered as its training
text was, cut to fit the model's context.

A model trained on conversations (``text_format: chat``, the Discord data module) read documents that start
with the end-of-text token and hold a line ``name: text`` per message, rendered by
:func:`lit_gpt_mini.chat_format.line`. A turn here is rendered by that same function, and the prompt ends
with the next speaker's ``name:`` (or a line break, to let the model pick who speaks). A plain-text model
continues the text as it is. Both drop the oldest text to keep ``reserve`` positions of the context free for
the answer. Used by ``main.py chat`` and ``main.py serve``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

from lit_gpt_mini.chat_format import check_name, line
from lit_gpt_mini.errors import UserError
from lit_gpt_mini.tokenizers import Tokenizer

__all__ = ["Conversation", "Transcript", "check_name", "encode", "render_turn"]


def render_turn(name: Optional[str], text: str) -> str:
    """A turn as a line of a conversation (``name: text``, as the Discord data module renders a message); without
    a name, the text as it is (a reply whose speaker the model wrote itself)."""
    return line(name, text) if name else text.strip()


def encode(tokenizer: Tokenizer, text: str, what: str = "the text") -> list[int]:
    """``tokenizer.encode(text)``, a character outside a char-level alphabet refused by name."""
    try:
        return tokenizer.encode(text)
    except ValueError as e:
        raise UserError(f"{what} cannot be encoded by the checkpoint's tokenizer: {e}") from None


@dataclass
class Conversation:
    """The turns so far, each a rendered line, and the prompt that asks the model for the next one.

    Args:
        tokenizer: The model's tokenizer.
        block_size: The model's context, in tokens.
        reserve: Positions of the context kept free for the answer: the prompt is at most
            ``block_size - reserve`` tokens (the oldest turns are dropped, for good, to get there).
    """

    tokenizer: Tokenizer
    block_size: int
    reserve: int
    lines: list[str] = field(default_factory=list)

    @property
    def budget(self) -> int:
        return max(1, self.block_size - self.reserve)

    def add(self, name: Optional[str], text: str) -> str:
        """Append a turn (see :func:`render_turn`); returns its line."""
        rendered = render_turn(name, text)
        encode(self.tokenizer, rendered, f"the turn {rendered[:40]!r}")  # refused now, not when prompting
        self.lines.append(rendered)
        return rendered

    def prompt(self, speaker: Optional[str], cut_last: bool = True) -> list[int]:
        """Token ids asking for the next turn: the document's start (end-of-text), the turns a line each, then
        ``speaker:`` on a new line (``None``: only the line break, the model writes who speaks). When the last
        turn alone is over the budget, its end is kept (``cut_last``) or it is refused."""
        head = [] if self.tokenizer.eot_id is None else [self.tokenizer.eot_id]
        tail = f"\n{speaker}:" if speaker else "\n"
        while True:
            text = "\n".join(self.lines) + (tail if self.lines else tail.lstrip("\n"))
            ids = head + encode(self.tokenizer, text, "the conversation")
            if len(ids) <= self.budget or len(self.lines) <= 1:
                break
            self.lines.pop(0)  # the oldest turn goes (for good: the history only grows)
        if len(ids) > self.budget and not cut_last:
            raise UserError(f"the last turn is {len(ids)} tokens with the prompt around it, over the {self.budget} "
                            f"the context of {self.block_size} leaves with {self.reserve} kept for the answer")
        return ids[-self.budget :]


@dataclass
class Transcript:
    """A plain-text model's running text: what was typed and what the model wrote, continued as one text."""

    tokenizer: Tokenizer
    block_size: int
    reserve: int
    text: str = ""

    def check(self, typed: str) -> str:
        """``typed``, or a :class:`UserError` when the tokenizer cannot encode it (before it joins the text)."""
        encode(self.tokenizer, typed, "the text")
        return typed

    def prompt(self, typed: str) -> list[int]:
        """Token ids of the text so far with ``typed`` appended, its last ``block_size - reserve`` tokens."""
        self.check(typed)
        self.text += typed
        ids = encode(self.tokenizer, self.text, "the text")
        budget = max(1, self.block_size - self.reserve)
        if len(ids) > 2 * budget:  # what the model can no longer see is forgotten: the text stays bounded
            self.text = self.tokenizer.decode(ids[-budget:])
        return ids[-budget:]

    def add(self, reply: str) -> None:
        """Append what the model wrote."""
        self.text += reply
