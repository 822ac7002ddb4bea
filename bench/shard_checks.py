"""What reading shards safely costs: the id check on every batch, and re-hashing each shard at its first read.

Every batch the loaders cut is checked for ids outside the vocabulary (``data_modules/windows.py``: one max over
the batch), and each process re-hashes a shard the first time it reads it (``ShardSet.read``: sha256 and the
largest id over the whole file). This times both on a shard of the GPT-2 recipe's size (100M ids, 200 MB,
random GPT-2 ids) for two batch shapes, the CPU char config's (12 x 65) and the GPT-2 recipe's (64 x 1025):

- ``check``: the id check alone, on the batches the loader cut, against the loader's whole time per batch;
- ``rehash``: one first read's re-hash (the file in the page cache), against the time the loader takes to cut
  every window of that shard once (one epoch's reads of it; a GPU takes longer to train on them).

    python bench/shard_checks.py                  # 100M ids
    python bench/shard_checks.py --tokens 10000000
"""

from __future__ import annotations

import argparse
import hashlib
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.report import emit  # noqa: E402
from data_modules.shards import ShardHeader, ShardSet, verify_checksum, write_shard  # noqa: E402
from data_modules.windows import ShuffledWindows  # noqa: E402

VOCAB = 50257  # GPT-2's
SHAPES = {"char_cpu": (12, 64), "gpt2_recipe": (64, 1024)}  # (batch_size, block_size)


def make_shard(directory: Path, tokens: int) -> ShardSet:
    ids = np.random.default_rng(0).integers(0, VOCAB, tokens, dtype=np.uint16)
    header = ShardHeader(num_tokens=tokens, itemsize=2, vocab_size=VOCAB, eot_id=VOCAB - 1, split="train",
                         end_doc=1, end_token=0, sha256=hashlib.sha256(ids.tobytes()).hexdigest(), tokenizer="gpt2",
                         max_id=int(ids.max()))
    path = directory / "train_000000.bin"
    write_shard(path, ids, header)
    return ShardSet([path], [header])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tokens", type=int, default=100_000_000, help="ids in the shard (the GPT-2 recipe's)")
    parser.add_argument("--batches", type=int, default=200, help="batches timed per shape for the id check")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        shards = make_shard(Path(tmp), args.tokens)
        path = shards.paths[0]
        verify_checksum(path)  # the file now in the page cache, as when a run has just prepared or read it
        times = []
        for _ in range(3):
            start = time.perf_counter()
            verify_checksum(path)
            times.append(time.perf_counter() - start)
        rehash = min(times)
        print(f"shard: {args.tokens:,} ids ({path.stat().st_size / 1e6:.0f} MB); re-hash at first read "
              f"(sha256 + largest id): {rehash:.3f} s, best of 3")
        emit("shard_checks", f"{args.tokens}_ids", "rehash_s", round(rehash, 4), mb=round(path.stat().st_size / 1e6))
        print(f"{'shape':12s} {'batch':>9s} {'loader ms/batch':>16s} {'check ms/batch':>15s} {'check share':>12s} "
              f"{'epoch of the shard s':>21s} {'re-hash share':>14s}")
        for name, (batch_size, block_size) in SHAPES.items():
            windows = ShuffledWindows(shards, block_size, batch_size, seed=1337)
            windows.batch(0)  # the first read (re-hash) is timed above
            start = time.perf_counter()
            batches = [windows.batch(i).numpy() for i in range(1, args.batches + 1)]
            loader = (time.perf_counter() - start) / args.batches
            start = time.perf_counter()
            for batch in batches:  # what the check adds to a batch that passes it
                if int(batch.max()) >= VOCAB:
                    raise AssertionError("random ids are below the vocabulary")
            check = (time.perf_counter() - start) / args.batches
            per_epoch = windows.windows_per_epoch / batch_size  # batches that read the whole shard once
            epoch = per_epoch * loader
            print(f"{name:12s} {batch_size:>3d} x {block_size + 1:<4d} {loader * 1e3:16.3f} {check * 1e3:15.4f} "
                  f"{check / loader:12.2%} {epoch:21.1f} {rehash / epoch:14.3%}")
            emit("shard_checks", name, "loader_ms_per_batch", round(loader * 1e3, 4), batch=batch_size,
                 block=block_size)
            emit("shard_checks", name, "check_ms_per_batch", round(check * 1e3, 5))
            emit("shard_checks", name, "check_share_of_loader", round(check / loader, 5))
            emit("shard_checks", name, "rehash_share_of_one_epoch_of_reads", round(rehash / epoch, 5),
                 epoch_s=round(epoch, 2))


if __name__ == "__main__":
    main()
