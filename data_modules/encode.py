"""Tokenizing a stream of documents, in a pool of processes, in input order (identical ids for any pool size)."""

from __future__ import annotations

from typing import Any, Iterable, Iterator, Optional

import numpy as np

from lit_gpt_mini.streams import ordered_map, process_pool
from lit_gpt_mini.tokenizers import Tokenizer, tokenizer_from_dict

TASK_CHARS = 1 << 20  # text per task sent to a tokenizer process: large enough to amortize the transfer
_worker_tokenizer: Optional[Tokenizer] = None


def _init_worker(tokenizer: dict[str, Any]) -> None:
    global _worker_tokenizer
    _worker_tokenizer = tokenizer_from_dict(tokenizer)


def encode_documents(
    texts: list[str], tokenizer: Optional[Tokenizer] = None
) -> tuple[np.ndarray, np.ndarray]:
    """The texts as one array of ids (of the tokenizer's dtype), each document ``[end-of-text] + ids``
    (end-of-text starts every document; a vocabulary without one, a character alphabet, runs the documents
    together), and the documents' lengths."""
    tokenizer = tokenizer or _worker_tokenizer
    eot = tokenizer.eot_id
    ids: list[int] = []
    lengths = np.empty(len(texts), dtype=np.int64)
    for i, text in enumerate(texts):
        start = len(ids)
        if eot is not None:
            ids.append(eot)
        ids.extend(tokenizer.encode(text))
        lengths[i] = len(ids) - start
    return np.array(ids, dtype=tokenizer.dtype), lengths


class Encoder:
    """``encode(batches)`` yields each batch's token arrays in input order, from a process pool when
    ``num_proc > 1``; the same order for any ``num_proc``, so the shards are identical."""

    def __init__(self, num_proc: int, tokenizer: Tokenizer) -> None:
        self.num_proc = num_proc
        self.tokenizer = tokenizer
        self.pool = None

    def __enter__(self):
        if self.num_proc > 1:
            self.pool = process_pool(self.num_proc, _init_worker, (self.tokenizer.to_dict(),))
        return self.encode

    def encode(self, batches: Iterable[list[str]]) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        if self.pool is None:
            return ordered_map(encode_documents, batches, self.tokenizer)
        # the workers hold their own tokenizer (_init_worker)
        return ordered_map(encode_documents, batches, pool=self.pool, num_proc=self.num_proc)

    def __exit__(self, *exc: Any) -> None:
        if self.pool is not None:
            self.pool.terminate()
            self.pool.join()
