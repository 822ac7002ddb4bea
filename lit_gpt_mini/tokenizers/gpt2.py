"""GPT-2's byte-level BPE vocabulary (50,257 tokens), through tiktoken.

tiktoken names this vocabulary twice: ``"gpt2"`` (built from OpenAI's original ``encoder.json``/``vocab.bpe``)
and ``"r50k_base"`` (one ``.tiktoken`` file). Both give the same ids; we load ``"r50k_base"`` because it is a
single file, so a ``TIKTOKEN_CACHE_DIR`` holding it is enough to work offline.
"""

from __future__ import annotations

import functools
from typing import Any, Optional

import numpy as np
import tiktoken

from lit_gpt_mini.errors import DataError
from lit_gpt_mini.tokenizers.base import Tokenizer

ENCODING = "r50k_base"
EOT = "<|endoftext|>"


@functools.lru_cache(maxsize=1)
def load_encoding() -> tiktoken.Encoding:
    """tiktoken's GPT-2 encoding; downloads it once (to tiktoken's cache) when it is not cached yet."""
    try:
        return tiktoken.get_encoding(ENCODING)
    except Exception as e:  # network errors come from requests, cache errors as ValueError/OSError
        raise DataError(
            f"could not load tiktoken's {ENCODING!r} encoding (the GPT-2 vocabulary): {type(e).__name__}: {e}. "
            f"It is downloaded once on first use; offline, point TIKTOKEN_CACHE_DIR at a directory that holds it"
        ) from None


class GPT2Tokenizer(Tokenizer):
    """GPT-2's tokenizer. Text is encoded as ordinary text: a literal ``<|endoftext|>`` in a document stays
    text, so only the data pipeline puts end-of-text tokens (between documents)."""

    kind = "gpt2"

    def __init__(self) -> None:
        self.encoding = load_encoding()

    @property
    def vocab_size(self) -> int:
        return self.encoding.n_vocab

    @property
    def name(self) -> str:
        return "gpt2"

    @property
    def eot_id(self) -> Optional[int]:
        return self.encoding.eot_token

    def encode(self, text: str) -> list[int]:
        return self.encoding.encode_ordinary(text)

    def encode_to_array(self, text: str) -> np.ndarray:
        return np.asarray(self.encoding.encode_ordinary(text), dtype=self.dtype)

    def decode(self, ids: list[int]) -> str:
        # A sample may stop inside a multi-byte character: replace the partial bytes rather than fail.
        return self.encoding.decode(list(ids), errors="replace")

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "GPT2Tokenizer":
        return cls()
