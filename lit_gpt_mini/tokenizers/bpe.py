"""Our own byte-level BPE: a fast streaming trainer, and encoding through tiktoken's core.

Training (:func:`train_bpe`) splits the text with a GPT-style regex (GPT-2's or GPT-4's pattern), counts each
distinct chunk once, and then merges the most frequent adjacent pair of tokens again and again. Pair counts
are kept up to date incrementally: a merge only revisits the distinct chunks that contain the merged pair,
and a heap with lazy deletion finds the next most frequent pair, so no merge rescans the corpus. The documents
are streamed in bounded batches (any iterable, optionally capped at ``max_chars``), so memory grows with the
number of distinct chunks, not with the corpus.

A trained tokenizer is ``256`` byte tokens, then one token per merge (its bytes are the two merged tokens'
bytes), then the special tokens. Encoding is tiktoken's: the ranks of those byte strings and the split pattern
make a ``tiktoken.Encoding``, so encoding our vocabulary is exactly as fast as encoding GPT-2's. Like tiktoken,
a merge applies to the adjacent pair whose concatenation has the lowest rank.

Text round-trips exactly (``decode(encode(s)) == s``) for every string that is valid Unicode. Python strings
can also hold surrogates (``"\\ud800"``), which no UTF-8 byte sequence represents: by design, as tiktoken
does, a high + low surrogate pair is read as the character it encodes in UTF-16 and a lone surrogate as U+FFFD
(the replacement character).
"""

from __future__ import annotations

import contextlib
import hashlib
import heapq
import json
import sys
from collections import Counter, defaultdict
from operator import add
from typing import Any, Iterable, Iterator, Optional

import regex
import tiktoken
from tqdm import tqdm

from lit_gpt_mini.errors import ConfigError, DataError
from lit_gpt_mini.streams import batched, ordered_map, process_pool
from lit_gpt_mini.tokenizers.base import Tokenizer

PATTERNS = {
    # GPT-2's split: contractions, letters, numbers, other symbols, each with an optional leading space
    "gpt2": r"""'(?:[sdmt]|ll|ve|re)| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+""",
    # GPT-4's (cl100k): case-insensitive contractions, numbers in groups of at most 3, newlines kept apart
    "gpt4": r"""'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]++[\r\n]*|\s*[\r\n]|\s+(?!\S)|\s+""",
}
EOT = "<|endoftext|>"
_TASK_CHARS = 1 << 20  # text per counting task


class BPETokenizer(Tokenizer):
    """A byte-level BPE vocabulary: ``merges[k] = (a, b)`` makes token ``256 + k`` from tokens ``a`` and ``b``.

    Args:
        merges: The merges in the order they were learned.
        pattern: The regex that splits text into chunks before BPE (a key of :data:`PATTERNS` or a regex).
        special_tokens: Tokens that are never produced by encoding text, only put in by the data pipeline
            (the first is the end-of-text token that separates documents).
    """

    kind = "bpe"

    def __init__(self, merges: list[tuple[int, int]], pattern: str = "gpt4", special_tokens: Iterable[str] = (EOT,)):
        self.pattern = PATTERNS.get(pattern, pattern)
        self.merges = [(int(a), int(b)) for a, b in merges]
        self.special_tokens = list(special_tokens)
        self.vocab: list[bytes] = [bytes([i]) for i in range(256)]
        for k, (a, b) in enumerate(self.merges):
            if not (0 <= a < len(self.vocab) and 0 <= b < len(self.vocab)):
                raise ValueError(f"merge {k} ({a}, {b}) refers to a token that does not exist yet")
            self.vocab.append(self.vocab[a] + self.vocab[b])
        ranks = {token: rank for rank, token in enumerate(self.vocab)}
        if len(ranks) != len(self.vocab):
            raise ValueError("two merges make the same token: the merges are corrupt")
        self.special_ids = {token: len(self.vocab) + i for i, token in enumerate(self.special_tokens)}
        digest = hashlib.sha256(
            json.dumps([self.pattern, self.merges, self.special_tokens]).encode("utf-8")
        ).hexdigest()
        self._name = f"bpe{len(self.vocab) + len(self.special_tokens)}-{digest[:12]}"
        self.encoding = tiktoken.Encoding(
            name=self._name, pat_str=self.pattern, mergeable_ranks=ranks, special_tokens=self.special_ids
        )

    @property
    def vocab_size(self) -> int:
        return len(self.vocab) + len(self.special_tokens)

    @property
    def name(self) -> str:
        return self._name

    @property
    def eot_id(self) -> Optional[int]:
        return self.special_ids.get(EOT)

    def encode(self, text: str) -> list[int]:
        return self.encoding.encode_ordinary(text)

    def decode(self, ids: list[int]) -> str:
        return self.encoding.decode(list(ids), errors="replace")

    def token_bytes(self, token: int) -> bytes:
        return self.vocab[token] if token < len(self.vocab) else self.special_tokens[token - len(self.vocab)].encode()

    # --- storage --------------------------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "pattern": self.pattern,
            "merges": [list(m) for m in self.merges],
            "special_tokens": list(self.special_tokens),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "BPETokenizer":
        return cls([tuple(m) for m in data["merges"]], data["pattern"], data["special_tokens"])


# --- training -------------------------------------------------------------------------------------------------


# A safe place to cut a document: after a lone newline between two non-spaces. No chunk of either pattern spans
# it, and the chunks on each side are the same as in the whole text (a longer whitespace run is not safe: GPT-2's
# "\s+(?!\S)" splits "  \n" before "x" into "  " and "\n", but takes it whole at the end of a piece).
_CUT = regex.compile(r"\S\n(?=\S)")


def _pieces(text: str, size: int) -> list[str]:
    """``text`` cut into pieces of about ``size`` characters or more, counting separately to the same chunks."""
    pieces, start = [], 0
    while start < len(text):
        cut = _CUT.search(text, start + size - 2) if start + size < len(text) else None
        end = cut.end() if cut else len(text)
        pieces.append(text[start:end])
        start = end
    return pieces


def first_chars(texts: Iterable[str], max_chars: Optional[int]) -> Iterator[str]:
    """The documents a vocabulary is learned from: all of ``texts`` (``max_chars`` None), or exactly their first
    ``max_chars`` characters, the documents in order, the one that reaches the cap cut there and the rest not
    read (as nanochat samples its tokenizer corpus). Lazy: an endless generator is fine."""
    if max_chars is not None and max_chars <= 0:
        raise ConfigError(f"max_chars must be a positive number of characters or None, got {max_chars}")
    left = max_chars
    for text in texts:
        if left is not None:
            text = text[:left]
            left -= len(text)
        yield text
        if left is not None and left <= 0:
            return


def _tasks(texts: Iterable[str], max_chars: Optional[int], bar: tqdm) -> Iterator[list[str]]:
    """The documents in batches of about ``_TASK_CHARS`` characters (a longer document is cut into pieces where
    no chunk can span the cut), stopping after ``max_chars`` characters; reads ``texts`` lazily."""

    def pieces() -> Iterator[str]:
        for text in first_chars(texts, max_chars):
            bar.update(len(text))
            yield from _pieces(text, _TASK_CHARS) if len(text) > _TASK_CHARS else [text]

    return batched(pieces(), _TASK_CHARS)


def _count_batch(batch: list[str], pattern: str) -> Counter:
    chunks: list[str] = []
    for text in batch:
        chunks += regex.findall(pattern, text)  # each document on its own: no chunk spans two documents
    return Counter(chunks)


def count_chunks(
    texts: Iterable[str],
    pattern: str,
    num_proc: int = 1,
    max_chars: Optional[int] = None,
    progress: bool = False,
) -> Counter:
    """How often each pre-split chunk occurs in the documents ``texts`` (each document is split on its own).

    ``texts`` may be any iterable, an endless generator included: it is read batch by batch and never held
    whole, so memory grows with the number of distinct chunks, not with the corpus. With ``max_chars``, only
    the first ``max_chars`` characters of the stream are used: the documents in order, the one that reaches
    the cap cut there, the rest not read. ``num_proc > 1`` splits in that many processes, with a bounded
    number of batches in flight; the counts are the same for any ``num_proc``. A document longer than a batch
    is cut at lone newlines (see ``_CUT``), which changes no chunk of the GPT-2 and GPT-4 patterns; a custom
    pattern whose chunks can span such a newline would count differently there.
    """
    pattern = PATTERNS.get(pattern, pattern)
    if max_chars is not None and max_chars <= 0:  # (first_chars checks it too, but only once it is iterated)
        raise ConfigError(f"max_chars must be a positive number of characters or None, got {max_chars}")
    counts: Counter = Counter()
    bar = tqdm(total=max_chars, desc="Counting BPE chunks", unit="char", unit_scale=True, disable=not progress,
               file=sys.stderr)
    with bar:
        tasks = _tasks(texts, max_chars, bar)
        with contextlib.ExitStack() as stack:
            pool = stack.enter_context(process_pool(num_proc)) if num_proc > 1 else None
            for partial in ordered_map(_count_batch, tasks, pattern, pool=pool, num_proc=num_proc):
                counts.update(partial)
    return counts


def _learn_merges(chunks: Counter, n_merges: int, bar: tqdm) -> list[tuple[int, int]]:
    """The ``n_merges`` merges (fewer if the pairs run out) learned from the chunk counts.

    Each distinct chunk is a "word": a ``str`` with one character per token (character ``chr(i)`` is token
    ``i``), so that applying a merge to a word is one C-speed ``str.replace`` and a pair is a 2-character
    string. Pair counts are kept up to date by revisiting only the words that contain the merged pair;
    a heap of integer keys with lazy deletion finds the most frequent pair.
    """
    # Chunks with the same UTF-8 bytes (lone surrogates all become "?") are one word; one-byte words never
    # take part in a merge.
    word_counts: dict[str, int] = defaultdict(int)
    for chunk, count in chunks.items():
        word = chunk.encode("utf-8", "replace").decode("latin-1")
        if len(word) > 1:
            word_counts[word] += count
    words, counts = list(word_counts), list(word_counts.values())
    del word_counts
    pair_counts: dict[str, int] = defaultdict(int)
    where: dict[str, list[int]] = defaultdict(list)  # the words a pair occurs in (or once did)
    for w, (word, count) in enumerate(zip(words, counts)):
        pairs = list(map(add, word, word[1:]))
        for pair in pairs:
            pair_counts[pair] += count
        for pair in set(pairs):
            where[pair].append(w)
    # Heap key of a pair (a, b) with count c: -c * 2^(2 bits) + a * 2^bits + b, so the smallest key is the most
    # frequent pair and, among equally frequent ones, the pair of smallest ids (an int compares faster than a
    # tuple).
    bits = (256 + n_merges).bit_length()
    low = (1 << bits) - 1
    scale = 1 << (2 * bits)

    def key(pair: str, count: int) -> int:
        return -count * scale + (ord(pair[0]) << bits | ord(pair[1]))

    heap = [key(pair, count) for pair, count in pair_counts.items()]
    heapq.heapify(heap)
    vocab = [bytes([i]) for i in range(256)]
    token_of = {token: i for i, token in enumerate(vocab)}
    merges: list[tuple[int, int]] = []
    while len(merges) < n_merges and heap:
        top = heapq.heappop(heap)
        count, ids = -(top // scale), top % scale
        a, b = ids >> bits, ids & low
        pair = chr(a) + chr(b)
        actual = pair_counts.get(pair, 0)
        if actual != count:  # a stale entry: the pair's count fell since it was pushed
            if actual > 0:
                heapq.heappush(heap, key(pair, actual))
            continue
        merged = vocab[a] + vocab[b]
        new = token_of.get(merged)
        reused = new is not None  # (a pair can spell a token another merge already made: reuse it, keep ids unique)
        if not reused:
            new = len(vocab)
            vocab.append(merged)
            token_of[merged] = new
            merges.append((a, b))
            bar.update()
        token, first, second = chr(new), chr(a), chr(b)
        grown = set()
        for w in where.pop(pair):
            old = words[w]
            word = old.replace(pair, token)
            if len(word) == len(old):
                continue  # the word lost this pair in an earlier merge
            count = counts[w]
            if reused:  # the token may be in the word already: recount all of its pairs
                for p in map(add, old, old[1:]):
                    pair_counts[p] -= count
                for p in map(add, word, word[1:]):
                    pair_counts[p] += count
            # Only the neighbours of each merged place change: (x, a) becomes (x, new) and (b, y) becomes
            # (new, y); between two merged places (b, a) becomes (new, new). The pairs that hold the new token
            # are the only ones new to this word.
            last = len(word) - 1
            i = word.find(token)
            while i >= 0:
                if i > 0:
                    p = word[i - 1 : i + 1]
                    if not reused:
                        pair_counts[second + first if p[0] == token else p[0] + first] -= count
                        pair_counts[p] += count
                    grown.add(p)
                    where[p].append(w)
                if i < last and word[i + 1] != token:
                    p = word[i : i + 2]
                    if not reused:
                        pair_counts[second + p[1]] -= count
                        pair_counts[p] += count
                    grown.add(p)
                    where[p].append(w)
                i = word.find(token, i + 1)
            words[w] = word
        pair_counts.pop(pair, None)
        for p in grown:
            heapq.heappush(heap, key(p, pair_counts[p]))
    return merges


def train_bpe(
    texts: Iterable[str],
    vocab_size: int,
    pattern: str = "gpt4",
    special_tokens: Iterable[str] = (EOT,),
    num_proc: int = 1,
    progress: bool = True,
    max_chars: Optional[int] = None,
) -> BPETokenizer:
    """Learn ``vocab_size - 256 - len(special_tokens)`` merges from the documents ``texts``; deterministic for
    the same input, whatever ``num_proc``.

    ``texts`` may be any iterable of documents, streamed with bounded memory, and ``max_chars`` caps the
    characters used (see :func:`count_chunks`). Ties between equally frequent pairs go to the pair of
    smallest token ids. If the corpus runs out of pairs first, the vocabulary is smaller than asked (the
    tokenizer reports its real ``vocab_size``).
    """
    special_tokens = list(special_tokens)
    if pattern not in PATTERNS and not isinstance(pattern, str):
        raise ConfigError(f"pattern must be one of {sorted(PATTERNS)} or a regex, got {pattern!r}")
    n_merges = vocab_size - 256 - len(special_tokens)
    if n_merges < 0:
        raise ConfigError(
            f"vocab_size ({vocab_size}) must be at least 256 byte tokens + {len(special_tokens)} special tokens "
            f"= {256 + len(special_tokens)}"
        )
    chunks = count_chunks(texts, pattern, num_proc, max_chars=max_chars, progress=progress)
    if not chunks:
        raise DataError("the tokenizer's training text is empty: there is nothing to learn merges from")
    with tqdm(total=n_merges, desc="Training BPE", unit="merge", disable=not progress, file=sys.stderr) as bar:
        merges = _learn_merges(chunks, n_merges, bar)
    return BPETokenizer(merges, pattern, special_tokens)
