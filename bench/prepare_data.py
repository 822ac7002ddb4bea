"""Data preparation throughput: jsonl documents -> GPT-2 tokens -> shards, with 1 and 2 tokenizer processes.

The corpus is Tiny Shakespeare cut into its speeches and repeated to ``--mb`` megabytes of text (one jsonl row a
speech), prepared by the FineWeb data module exactly as a local FineWeb file would be. Each process count
prepares the same corpus into its own directory; the shards must come out identical.

    python bench/prepare_data.py                 # ~50 MB, 1 and 2 processes
    python bench/prepare_data.py --mb 200 --procs 1 2 4
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.report import emit  # noqa: E402
from data_modules.fineweb import FineWebDataModule  # noqa: E402
from data_modules.shards import read_manifest  # noqa: E402


def make_corpus(text_path: Path, megabytes: float, out: Path) -> tuple[int, int]:
    speeches = [s for s in text_path.read_text(encoding="utf-8").split("\n\n") if s.strip()]
    target, written, docs = int(megabytes * 1e6), 0, 0
    with open(out, "w", encoding="utf-8") as f:
        while written < target:
            for speech in speeches:
                f.write(json.dumps({"text": speech}) + "\n")
                written += len(speech.encode("utf-8"))
                docs += 1
    return written, docs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    default_text = Path(__file__).resolve().parents[2] / "shared/data/tinyshakespeare.txt"
    parser.add_argument("--text", default=str(default_text), help="Tiny Shakespeare")
    parser.add_argument("--mb", type=float, default=50, help="megabytes of text in the corpus")
    parser.add_argument("--procs", type=int, nargs="+", default=[1, 2], help="tokenizer process counts to time")
    parser.add_argument("--shard-size", type=int, default=10_000_000, help="tokens per shard")
    args = parser.parse_args()
    os.environ.setdefault("TIKTOKEN_CACHE_DIR", str(Path(args.text).parent / "tiktoken_cache"))
    with tempfile.TemporaryDirectory(prefix="bench-prepare-") as tmp:
        corpus = Path(tmp) / "corpus.jsonl"
        text_bytes, docs = make_corpus(Path(args.text), args.mb, corpus)
        print(f"corpus: {text_bytes / 1e6:.1f} MB of text in {docs:,} documents, {os.cpu_count()} cpus")
        results, shards = [], {}
        for procs in args.procs:
            dm = FineWebDataModule(data_dir=f"{tmp}/p{procs}", path=str(corpus), shard_size=args.shard_size,
                                   val_tokens=args.shard_size, num_proc=procs)
            start = time.perf_counter()
            dm.prepare_data()
            seconds = time.perf_counter() - start
            manifest = read_manifest(dm.shard_dir)
            tokens = sum(manifest["tokens"].values())  # every split
            shards[procs] = [s["sha256"] for s in manifest["shards"]]
            results.append((procs, seconds, tokens))
        print()
        print(f"{'processes':>9s} {'seconds':>8s} {'tokens':>12s} {'tokens/s':>11s} {'MB/s':>6s} {'speed-up':>8s}")
        for procs, seconds, tokens in results:
            print(f"{procs:9d} {seconds:8.2f} {tokens:12,d} {tokens / seconds:11,.0f} {text_bytes / 1e6 / seconds:6.1f} "
                  f"{results[0][1] / seconds:8.2f}")
        same = all(s == shards[args.procs[0]] for s in shards.values())
        print(f"identical shards for every process count: {same}")
        print()
        for procs, seconds, tokens in results:
            emit("prepare_data", f"jsonl/procs{procs}", "tokens_per_s", round(tokens / seconds, 1))
        emit("prepare_data", "jsonl", "identical_shards", same)


if __name__ == "__main__":
    main()
