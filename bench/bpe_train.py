"""BPE training speed and compression, ours against Hugging Face ``tokenizers``' BpeTrainer on the same corpus.

Tiny Shakespeare alone at vocab 512, 1024 and 4096 (ours only), then a large corpus at vocab 4096 and 32768
for both trainers. The large corpus is local text: Tiny Shakespeare plus the Python sources of the installed
packages (sorted, one document per file, until ``--mb`` megabytes), a mix of prose and code. Both trainers get
the same documents, the GPT-4 split pattern, 256 byte tokens and the ``<|endoftext|>`` special token, and use
the CPUs as they do by default (ours: ``--num-proc`` counting processes; HF: its own thread pool). Times
include splitting and counting. Compression is bytes of UTF-8 text per token, from encoding the training
documents with each trained tokenizer. Each large-corpus time is the best of ``--repeat`` runs, the two trainers
taking turns; the load average printed with it shows how busy the machine was.

    python bench/bpe_train.py
    python bench/bpe_train.py --mb 50 --vocab 32768 --num-proc 2
"""

from __future__ import annotations

import argparse
import os
import sys
import sysconfig
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.report import emit  # noqa: E402
from lit_gpt_mini.tokenizers.bpe import EOT, PATTERNS, count_chunks, train_bpe  # noqa: E402


def large_corpus(shakespeare: str, megabytes: float) -> list[str]:
    docs, size = [shakespeare], len(shakespeare.encode())
    for path in sorted(Path(sysconfig.get_paths()["purelib"]).rglob("*.py")):
        if size >= megabytes * 1e6:
            break
        try:
            text = path.read_text(encoding="utf-8")
        except (UnicodeDecodeError, OSError):
            continue
        docs.append(text)
        size += len(text.encode())
    return docs


def ours(docs: list[str], vocab_size: int, num_proc: int) -> tuple[float, float]:
    """(training seconds, bytes per token)"""
    start = time.perf_counter()
    tokenizer = train_bpe(docs, vocab_size, "gpt4", num_proc=num_proc, progress=False)
    seconds = time.perf_counter() - start
    n_tokens = sum(len(tokens) for tokens in tokenizer.encoding.encode_ordinary_batch(docs))
    return seconds, sum(len(d.encode()) for d in docs) / n_tokens


def hugging_face(docs: list[str], vocab_size: int) -> tuple[float, float]:
    """(training seconds, bytes per token) of HF's BpeTrainer set up like ours: the GPT-4 split, then bytes."""
    from tokenizers import Regex, Tokenizer, models, pre_tokenizers, trainers

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(PATTERNS["gpt4"]), behavior="isolated"),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=[EOT], initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    start = time.perf_counter()
    tokenizer.train_from_iterator(docs, trainer)
    seconds = time.perf_counter() - start
    assert tokenizer.get_vocab_size() == vocab_size, tokenizer.get_vocab_size()
    n_tokens = sum(len(e.ids) for e in tokenizer.encode_batch(docs))
    return seconds, sum(len(d.encode()) for d in docs) / n_tokens


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    default_text = Path(__file__).resolve().parents[2] / "shared/data/tinyshakespeare.txt"
    parser.add_argument("--text", default=str(default_text), help="Tiny Shakespeare")
    parser.add_argument("--mb", type=float, default=20, help="size of the large corpus in megabytes")
    parser.add_argument("--vocab", type=int, nargs="+", default=[4096, 32768], help="vocab sizes, large corpus")
    parser.add_argument("--num-proc", type=int, default=2, help="our chunk-counting processes (large corpus)")
    parser.add_argument("--repeat", type=int, default=2, help="timed runs of each trainer (alternating); best kept")
    args = parser.parse_args()
    shakespeare = Path(args.text).read_text(encoding="utf-8")
    print(f"{os.cpu_count()} cpus, load average {os.getloadavg()[0]:.2f}; GPT-4 split pattern")
    small = [(v, *ours([shakespeare], v, 1)) for v in (512, 1024, 4096)]
    print(f"{'Tiny Shakespeare, ours':24s} {'vocab':>6s} {'train s':>8s} {'bytes/token':>11s}")
    for vocab, seconds, bpt in small:
        print(f"{'':24s} {vocab:6d} {seconds:8.2f} {bpt:11.3f}")
    docs = large_corpus(shakespeare, args.mb)
    megabytes = sum(len(d.encode()) for d in docs) / 1e6
    start = time.perf_counter()
    count_chunks(docs, "gpt4", num_proc=args.num_proc)
    counting = time.perf_counter() - start
    print(f"\nlarge corpus: {megabytes:.1f} MB in {len(docs)} documents; our splitting and counting alone "
          f"({args.num_proc} processes): {counting:.2f} s")
    rows = []
    for vocab in args.vocab:
        # alternate the trainers and keep each one's best time, so that a burst of load elsewhere on the machine
        # does not decide the ratio
        runs = [(ours(docs, vocab, args.num_proc), hugging_face(docs, vocab)) for _ in range(args.repeat)]
        (our_s, our_bpt), (hf_s, hf_bpt) = min(r[0] for r in runs), min(r[1] for r in runs)
        rows.append((vocab, our_s, our_bpt, hf_s, hf_bpt, os.getloadavg()[0]))
    print(f"{'vocab':>6s} {'ours s':>7s} {'HF s':>7s} {'ours/HF':>8s} {'ours B/token':>12s} {'HF B/token':>10s} "
          f"{'load':>5s}")
    for vocab, our_s, our_bpt, hf_s, hf_bpt, load in rows:
        print(f"{vocab:6d} {our_s:7.2f} {hf_s:7.2f} {our_s / hf_s:8.2f} {our_bpt:12.3f} {hf_bpt:10.3f} {load:5.2f}")
    print()
    for vocab, seconds, bpt in small:
        case = f"tinyshakespeare/vocab{vocab}/procs1"
        emit("bpe_train", case, "train_seconds", round(seconds, 3))
        emit("bpe_train", case, "bytes_per_token", round(bpt, 4))
    emit("bpe_train", f"local text {megabytes:.0f} MB/procs{args.num_proc}", "count_seconds", round(counting, 3))
    for vocab, our_s, our_bpt, hf_s, hf_bpt, load in rows:
        emit("bpe_train", f"local text {megabytes:.0f} MB/vocab{vocab}/procs{args.num_proc}", "ratio_ours_over_hf",
             round(our_s / hf_s, 3), ours_seconds=round(our_s, 3), hf_seconds=round(hf_s, 3),
             ours_bytes_per_token=round(our_bpt, 4), hf_bytes_per_token=round(hf_bpt, 4), load_average=round(load, 2))


if __name__ == "__main__":
    main()
