"""The registry of tokenizer kinds: how a checkpoint's (or a data directory's) stored tokenizer dict becomes a
tokenizer again."""

from __future__ import annotations

from typing import Any

from lit_gpt_mini.tokenizers.base import Tokenizer
from lit_gpt_mini.tokenizers.bpe import BPETokenizer
from lit_gpt_mini.tokenizers.char import CharTokenizer
from lit_gpt_mini.tokenizers.gpt2 import GPT2Tokenizer

TOKENIZERS: dict[str, type[Tokenizer]] = {
    t.kind: t for t in (CharTokenizer, GPT2Tokenizer, BPETokenizer)
}


def tokenizer_from_dict(data: dict[str, Any]) -> Tokenizer:
    """Rebuild the tokenizer that :meth:`Tokenizer.to_dict` described."""
    kind = data.get("kind")
    if kind not in TOKENIZERS:
        raise ValueError(f"unknown tokenizer kind {kind!r}; known kinds: {sorted(TOKENIZERS)}")
    return TOKENIZERS[kind].from_dict(data)
