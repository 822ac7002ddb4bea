"""Sampled token ids -> text as it becomes final: incomplete characters, stop strings and the next speaker's line
held back until they are decided, and the point where a reply ends.

Used by every place that shows text while it is sampled (``generate``, ``chat``, ``serve``), so that they all
stop at the same place and never show a piece of a stop string or half a UTF-8 character.
"""

from __future__ import annotations

import re
from typing import Optional, Sequence

from lit_gpt_mini.chat_format import MAYBE_SPEAKER as _MAYBE_SPEAKER, SPEAKER_LINE as _SPEAKER_LINE
from lit_gpt_mini.tokenizers import Tokenizer


class TextStream:
    """Feed sampled token ids to :meth:`add`; it returns the text that is final so far.

    Args:
        tokenizer: Decodes the ids (byte-level vocabularies may split a character over several tokens).
        stop: Strings that end the text; the text returned stops before the first of them.
        speaker_lines: End the text where a new line starts with a speaker (``\\nname: ``): the next message of
            a conversation rendered as the Discord data module renders it.
        stop_at_eot: End the text at the tokenizer's end-of-text token; otherwise the token is left out of the
            text and the text goes on.
        lstrip: Leave out the whitespace the text starts with (an answer after a prompt ending ``name:``).

    :attr:`stopped` turns true at the tokenizer's end-of-text token, a stop string or a speaker's line; the
    caller then stops sampling. :meth:`finish` returns what is left (text held back because it might have begun
    a stop string).
    """

    def __init__(self, tokenizer: Tokenizer, stop: Sequence[str] = (), speaker_lines: bool = False,
                 stop_at_eot: bool = True, lstrip: bool = False) -> None:
        self.tokenizer = tokenizer
        self.stop = [s for s in stop if s]
        self.speaker_lines = speaker_lines
        self.stop_at_eot = stop_at_eot
        self.lstrip = lstrip
        self.text = ""  # every complete character decoded so far
        self.pending: list[int] = []  # ids whose bytes do not end a character yet
        self.emitted = 0  # how much of ``text`` has been returned
        self.end: Optional[int] = None  # where the text ends (a stop string or a speaker's line begins)
        self.stopped = False
        self.tokens = 0  # ids fed, the end-of-text token included

    def add(self, token: int) -> str:
        """The text that became final with ``token`` ('' while it may still be part of something held back)."""
        self.tokens += 1
        if self.stopped:
            return ""
        if token == self.tokenizer.eot_id:
            self.stopped = self.stop_at_eot
            return ""
        self.pending.append(token)
        piece = self.tokenizer.decode(self.pending)
        if piece.endswith("\ufffd"):  # a character split over tokens: wait for its other bytes
            return ""
        self.pending = []
        self.text += piece
        if self.lstrip and not self.emitted:  # (nothing returned yet: the start may still change)
            self.text = self.text.lstrip()
        end = self._end()
        if end is not None:
            self.end, self.stopped = end, True
            return self._emit(end)
        return self._emit(len(self.text) - self._held())

    def finish(self) -> str:
        """The rest of the text once sampling is over (at a stop, or out of tokens)."""
        if self.end is None:
            if self.pending:  # bytes that never made a character: shown as U+FFFD, as decode does
                self.text += self.tokenizer.decode(self.pending)
                self.pending = []
            self.end = len(self.text)
        return self._emit(self.end)

    @property
    def result(self) -> str:
        """The whole text, up to where it ends."""
        return self.text[: self.end if self.end is not None else len(self.text)]

    def _emit(self, upto: int) -> str:
        out = self.text[self.emitted : upto] if upto > self.emitted else ""
        self.emitted = max(self.emitted, upto)
        return out

    def _end(self) -> Optional[int]:
        # Searched from a little before the text not yet returned: a match may begin in what was held back.
        since = max(0, self.emitted - 1)
        ends = [i for i in (self.text.find(s, since) for s in self.stop) if i >= 0]
        if self.speaker_lines:
            match = _SPEAKER_LINE.search(self.text, since)
            if match:
                ends.append(match.start())
        return min(ends) if ends else None

    def _held(self) -> int:
        """How many characters at the end of the text may begin a stop string or a speaker's line."""
        tail = self.text[self.emitted :]
        held = 0
        for s in self.stop:
            for n in range(min(len(s) - 1, len(tail)), held, -1):
                if tail.endswith(s[:n]):
                    held = n
                    break
        if self.speaker_lines:
            match = _MAYBE_SPEAKER.search(tail)
            if match:
                held = max(held, len(tail) - match.start())
        return held
