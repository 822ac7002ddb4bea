"""BPE training speed and compression: Tiny Shakespeare at vocab 512, 1024, 4096, and a ~50 MB corpus.

The large corpus is made of local text: Tiny Shakespeare plus the Python sources of the installed packages
(sorted, concatenated until ``--mb`` megabytes), a mix of prose and code. Compression is bytes of UTF-8 text
per token, measured by encoding the training text with the trained tokenizer (through tiktoken).

    python bench/bpe_train.py
    python bench/bpe_train.py --mb 100 --num-proc 2
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
from lit_gpt_mini.tokenizers.bpe import count_chunks, train_bpe  # noqa: E402


def large_corpus(shakespeare: str, megabytes: float) -> str:
    parts, size = [shakespeare], len(shakespeare.encode())
    for path in sorted(Path(sysconfig.get_paths()["purelib"]).rglob("*.py")):
        if size >= megabytes * 1e6:
            break
        try:
            text = path.read_text(encoding="utf-8")
        except (UnicodeDecodeError, OSError):
            continue
        parts.append(text)
        size += len(text.encode())
    return "\n".join(parts)


def run(name: str, text: str, vocab_size: int, num_proc: int) -> tuple:
    start = time.perf_counter()
    tokenizer = train_bpe([text], vocab_size, "gpt4", num_proc=num_proc, progress=False)
    seconds = time.perf_counter() - start
    merges = len(tokenizer.merges)
    n_bytes = len(text.encode("utf-8"))
    start = time.perf_counter()
    n_tokens = len(tokenizer.encode(text))
    encode_seconds = time.perf_counter() - start
    return name, n_bytes, vocab_size, num_proc, seconds, merges / seconds, n_bytes / n_tokens, n_bytes / 1e6 / encode_seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    default_text = Path(__file__).resolve().parents[2] / "shared/data/tinyshakespeare.txt"
    parser.add_argument("--text", default=str(default_text), help="Tiny Shakespeare")
    parser.add_argument("--mb", type=float, default=50, help="size of the large corpus in megabytes")
    parser.add_argument("--num-proc", type=int, default=2, help="chunk-counting processes for the large corpus")
    args = parser.parse_args()
    shakespeare = Path(args.text).read_text(encoding="utf-8")
    print(f"{os.cpu_count()} cpus; GPT-4 split pattern; times include splitting and counting")
    rows = [run("tinyshakespeare", shakespeare, v, 1) for v in (512, 1024, 4096)]
    big = large_corpus(shakespeare, args.mb)
    for procs in sorted({1, args.num_proc}):
        start = time.perf_counter()
        count_chunks([big], "gpt4", num_proc=procs)
        print(f"large corpus: splitting and counting {len(big.encode()) / 1e6:.1f} MB with {procs} process(es): "
              f"{time.perf_counter() - start:.2f} s")
    rows.append(run(f"local text {args.mb:.0f} MB", big, 4096, args.num_proc))
    print()
    print(f"{'corpus':22s} {'MB':>6s} {'vocab':>6s} {'procs':>5s} {'train s':>8s} {'merges/s':>9s} "
          f"{'bytes/token':>11s} {'encode MB/s':>11s}")
    for name, n_bytes, vocab, procs, seconds, rate, bpt, enc in rows:
        print(f"{name:22s} {n_bytes / 1e6:6.1f} {vocab:6d} {procs:5d} {seconds:8.2f} {rate:9.0f} {bpt:11.2f} {enc:11.1f}")
    print()
    for name, n_bytes, vocab, procs, seconds, rate, bpt, enc in rows:
        case = f"{name}/vocab{vocab}/procs{procs}"
        emit("bpe_train", case, "train_seconds", round(seconds, 3))
        emit("bpe_train", case, "bytes_per_token", round(bpt, 4))
        emit("bpe_train", case, "encode_mb_per_s", round(enc, 2))


if __name__ == "__main__":
    main()
