"""What every tokenizer offers, and how one is rebuilt from the plain dict stored in a checkpoint."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, Optional

import numpy as np


def token_dtype(vocab_size: int) -> np.dtype:
    """The narrowest unsigned integer dtype that holds every id of a vocabulary: uint16 up to 65,536 tokens."""
    return np.dtype(np.uint16 if vocab_size <= 2**16 else np.uint32)


class Tokenizer(ABC):
    """Text <-> token ids. ``to_dict`` holds only plain types so checkpoints load with ``weights_only=True``."""

    kind: str  # the key under which the class is registered in :data:`TOKENIZERS`

    @property
    @abstractmethod
    def vocab_size(self) -> int: ...

    @property
    @abstractmethod
    def name(self) -> str:
        """A short identifier of this exact vocabulary, written into token shards to catch mixed-up data."""

    @property
    def eot_id(self) -> Optional[int]:
        """The end-of-text token that separates documents in a token stream; ``None`` if the vocabulary has none."""
        return None

    @abstractmethod
    def encode(self, text: str) -> list[int]: ...

    @abstractmethod
    def decode(self, ids: list[int]) -> str: ...

    @abstractmethod
    def to_dict(self) -> dict[str, Any]: ...

    @classmethod
    @abstractmethod
    def from_dict(cls, data: dict[str, Any]) -> "Tokenizer": ...

    def encode_to_array(self, text: str) -> np.ndarray:
        """Token ids of ``text`` as the smallest unsigned dtype that holds the vocabulary."""
        return np.asarray(self.encode(text), dtype=self.dtype)

    @property
    def dtype(self) -> np.dtype:
        """The dtype of this vocabulary's ids in arrays and shards (see :func:`token_dtype`)."""
        return token_dtype(self.vocab_size)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Tokenizer) and self.to_dict() == other.to_dict()

    def __hash__(self) -> int:
        return hash(repr(self.to_dict()))
