"""BPE training from a stream: bounded memory on a large generator, the max_chars cap, any num_proc, and the
fast trainer's merges checked against a plain recount-everything reference trainer."""

from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter

import pytest
import regex
from hypothesis import given, settings
from hypothesis import strategies as st

from lit_gpt_mini.errors import ConfigError
from lit_gpt_mini.tokenizers import bpe
from lit_gpt_mini.tokenizers.bpe import PATTERNS, count_chunks, train_bpe

from .conftest import ROOT

STREAM_MB = 300
# How much the training process's peak memory may grow while it reads the stream (it grew by ~6 MB when written;
# keeping the documents would add ~300 MB).
GROWTH_BOUND_MB = 40

STREAM_SCRIPT = r"""
import json, random, re, sys
from pathlib import Path
from lit_gpt_mini.tokenizers.bpe import train_bpe

def peak_mb():
    # this process's own peak RSS (ru_maxrss would report the forking pytest's peak after exec)
    return int(re.search(r"VmHWM:\s*(\d+) kB", Path("/proc/self/status").read_text()).group(1)) / 1024

megabytes, doc_chars = int(sys.argv[1]), 50_000
rng = random.Random(0)
words = ["".join(rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(rng.randint(1, 9))) for _ in range(2000)]
base = " ".join(rng.choice(words) + ("\n" if rng.random() < 0.05 else "") for _ in range(200_000))

def documents():
    for i in range(megabytes * 1_000_000 // doc_chars):
        start = (i * 7919) % (len(base) - doc_chars)
        yield base[start : start + doc_chars]  # a new string each time: holding on to them would cost memory

before = peak_mb()
tokenizer = train_bpe(documents(), 300, num_proc=2, progress=False)
print(json.dumps({
    "before_mb": before,
    "peak_mb": peak_mb(),
    "merges": len(tokenizer.merges),
}))
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads the peak memory from /proc/self/status")
def test_training_on_a_large_stream_keeps_memory_bounded():
    # 300 MB of documents from a generator (a pool of 2000 words, so the distinct chunks stay few), counted in 2
    # processes: neither the corpus nor a queue of all its batches may be held by the training process.
    out = subprocess.run(
        [sys.executable, "-c", STREAM_SCRIPT, str(STREAM_MB)], cwd=ROOT, capture_output=True, text=True, timeout=300,
        env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"},
    )
    assert out.returncode == 0, out.stderr
    figures = json.loads(out.stdout.strip().splitlines()[-1])
    assert figures["merges"] == 300 - 257
    assert figures["peak_mb"] - figures["before_mb"] < GROWTH_BOUND_MB, figures


def documents(n: int = 60):
    """Documents of very different sizes (a few longer than one counting batch), as a generator."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    # lines that end in spaces or "\r": whitespace runs before a newline split differently under GPT-2's pattern
    text = text.replace(". ", ".  \n", 50).replace(", ", ",\r\n", 50)
    for i in range(n):
        yield text[i * 97 : i * 97 + (i % 7) * 900 + (5000 if i % 13 == 0 else 0)] + f" doc {i}\n\n  "


@pytest.mark.parametrize("pattern", ["gpt2", "gpt4"])
def test_counting_is_the_same_for_any_num_proc_and_batch_size(monkeypatch, pattern):
    expected = Counter()
    for doc in documents():
        expected.update(regex.findall(PATTERNS[pattern], doc))
    assert count_chunks(documents(), pattern, num_proc=1) == expected
    monkeypatch.setattr(bpe, "_TASK_CHARS", 1500)  # many batches, long documents cut into pieces
    assert count_chunks(documents(), pattern, num_proc=1) == expected
    assert count_chunks(documents(), pattern, num_proc=2) == expected
    assert count_chunks(documents(), pattern, num_proc=3) == expected


def test_training_is_the_same_for_any_num_proc(monkeypatch):
    monkeypatch.setattr(bpe, "_TASK_CHARS", 1500)
    assert train_bpe(documents(), 400, num_proc=2, progress=False) == train_bpe(documents(), 400, progress=False)


@pytest.mark.parametrize("num_proc", [1, 2])
def test_max_chars_uses_exactly_the_first_characters_of_the_stream(monkeypatch, num_proc):
    monkeypatch.setattr(bpe, "_TASK_CHARS", 2000)
    docs = list(documents())
    lengths = [len(d) for d in docs]
    cap = sum(lengths[:10]) + lengths[10] // 2  # half way into document 10
    truncated = docs[:10] + [docs[10][: lengths[10] // 2]]
    stream = iter(docs)
    assert count_chunks(stream, "gpt4", num_proc, max_chars=cap) == count_chunks(truncated, "gpt4")
    assert next(stream) == docs[11]  # the stream is not read past the cap
    # a cap on a document boundary takes whole documents; a cap beyond the stream takes all of it
    assert count_chunks(iter(docs), "gpt4", num_proc, max_chars=sum(lengths[:5])) == count_chunks(docs[:5], "gpt4")
    assert count_chunks(iter(docs), "gpt4", num_proc, max_chars=10**9) == count_chunks(docs, "gpt4")
    capped = train_bpe(iter(docs), 500, num_proc=num_proc, progress=False, max_chars=cap)
    assert capped == train_bpe(truncated, 500, progress=False)
    assert capped != train_bpe(docs, 500, progress=False)
    with pytest.raises(ConfigError, match="max_chars must be a positive number of characters or None, got 0"):
        train_bpe(iter(docs), 500, progress=False, max_chars=0)


def reference_merges(texts: list[str], pattern: str, n_merges: int) -> list[tuple[int, int]]:
    """BPE training in the plainest way: recount every pair before each merge, take the most frequent (ties: the
    smallest ids), apply it left to right; a pair spelling an existing token reuses that token."""
    words = Counter(tuple(chunk.encode("utf-8", "replace")) for t in texts for chunk in regex.findall(pattern, t))
    vocab = [bytes([i]) for i in range(256)]
    merges = []
    while len(merges) < n_merges:
        pairs = Counter()
        for word, count in words.items():
            for pair in zip(word, word[1:]):
                pairs[pair] += count
        if not pairs:
            break
        best = min(pairs, key=lambda p: (-pairs[p], p))
        if vocab[best[0]] + vocab[best[1]] in vocab:
            new = vocab.index(vocab[best[0]] + vocab[best[1]])
        else:
            new = len(vocab)
            vocab.append(vocab[best[0]] + vocab[best[1]])
            merges.append(best)
        merged = Counter()
        for word, count in words.items():
            out, i = [], 0
            while i < len(word):
                if word[i : i + 2] == best:
                    out.append(new)
                    i += 2
                else:
                    out.append(word[i])
                    i += 1
            merged[tuple(out)] += count
        words = merged
    return merges


def test_merges_match_the_reference_trainer_on_shakespeare(shakespeare_path):
    text = shakespeare_path.read_text(encoding="utf-8")[:60_000]
    assert train_bpe([text], 256 + 150 + 1, "gpt4", progress=False).merges == reference_merges([text], PATTERNS["gpt4"], 150)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.text(alphabet="aab b\n\u00e9\U0001f600", max_size=40), max_size=6), st.integers(0, 30))
def test_merges_match_the_reference_trainer_on_repetitive_text(texts, n_merges):
    # few letters and long runs: overlapping pairs ("aaa"), merges next to each other, pairs spelling one token
    if not any(texts):
        return
    got = train_bpe(texts, 256 + n_merges + 1, "gpt2", progress=False).merges
    assert got == reference_merges(texts, PATTERNS["gpt2"], n_merges)
