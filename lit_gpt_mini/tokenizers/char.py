"""Character-level tokenizer: one id per distinct character of the training text."""

from __future__ import annotations

import hashlib
from typing import Any

import numpy as np

from lit_gpt_mini.tokenizers.base import Tokenizer


class CharTokenizer(Tokenizer):
    """Maps each character of a fixed alphabet to its index in the sorted alphabet."""

    kind = "char"

    def __init__(self, chars: list[str]) -> None:
        if not chars:
            raise ValueError("a character tokenizer needs at least one character")
        if len(set(chars)) != len(chars) or any(len(c) != 1 for c in chars):
            raise ValueError("CharTokenizer expects a list of distinct single characters")
        self.chars = list(chars)
        self.stoi = {c: i for i, c in enumerate(self.chars)}

    @classmethod
    def from_text(cls, text: str) -> "CharTokenizer":
        return cls(sorted(set(text)))

    @property
    def vocab_size(self) -> int:
        return len(self.chars)

    @property
    def name(self) -> str:
        digest = hashlib.sha256("".join(self.chars).encode("utf-8", "surrogatepass")).hexdigest()
        return f"char{len(self.chars)}-{digest[:12]}"

    def encode(self, text: str) -> list[int]:
        try:
            return [self.stoi[c] for c in text]
        except KeyError as e:
            raise ValueError(
                f"character {e.args[0]!r} is not in this tokenizer's alphabet of {len(self.chars)} characters"
            ) from None

    def encode_to_array(self, text: str) -> np.ndarray:
        # Vectorised: a lookup table indexed by code point is ~20x faster than a dict per character.
        codes = np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32)
        table = np.full(max(map(ord, self.chars)) + 1, -1, dtype=np.int64)
        table[[ord(c) for c in self.chars]] = np.arange(len(self.chars))
        ids = table[np.minimum(codes, len(table) - 1)]
        bad = (codes >= len(table)) | (ids < 0)
        if bad.any():
            c = chr(codes[np.argmax(bad)])
            raise ValueError(f"character {c!r} is not in this tokenizer's alphabet of {len(self.chars)} characters")
        return ids.astype(self.dtype)

    def decode(self, ids: list[int]) -> str:
        return "".join(self.chars[i] for i in ids)

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "chars": "".join(self.chars)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "CharTokenizer":
        return cls(list(data["chars"]))
