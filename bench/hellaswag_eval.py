"""HellaSwag scoring speed for the GPT-2 124M shape: examples/s (4 candidates each, batched and padded).

On a CPU it scores the first ``--examples`` (200) of a synthetic set in the real format (contexts of ~45
words and endings of ~20, like hellaswag_val.jsonl); on a GPU, give ``--path`` the real validation file to
time all 10,042 examples. The weights are random: this measures speed, not accuracy.

    python bench/hellaswag_eval.py
    python bench/hellaswag_eval.py --path data/hellaswag/hellaswag_val.jsonl --examples 0 --device cuda --dtype bfloat16
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from data_modules.hellaswag import HellaSwagBatches  # noqa: E402
from lit_gpt_mini import hellaswag  # noqa: E402
from lit_gpt_mini.model import GPT, GPTConfig  # noqa: E402
from lit_gpt_mini.tokenizers import GPT2Tokenizer  # noqa: E402


def synthetic_file(path: Path, n: int, seed: int = 0) -> None:
    text = (Path(__file__).resolve().parents[2] / "shared/data/tinyshakespeare.txt")
    words = text.read_text(encoding="utf-8").split() if text.is_file() else "the quick brown fox jumps".split()
    rng = random.Random(seed)

    def sentence(mean: int) -> str:
        start = rng.randrange(len(words) - 2 * mean)
        return " ".join(words[start : start + max(3, int(rng.gauss(mean, mean / 4)))])

    with open(path, "w", encoding="utf-8") as f:
        for i in range(n):
            f.write(json.dumps({"ind": i, "ctx": sentence(45), "endings": [sentence(20) for _ in range(4)],
                                "label": rng.randrange(4)}) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--path", help="a HellaSwag jsonl file (default: a synthetic one)")
    parser.add_argument("--examples", type=int, default=200, help="score the first N examples (0: all)")
    parser.add_argument("--examples-per-batch", type=int, default=8)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    parser.add_argument("--compile", action="store_true")
    args = parser.parse_args()
    os.environ.setdefault("TIKTOKEN_CACHE_DIR", str(Path(__file__).resolve().parents[2] / "shared/data/tiktoken_cache"))
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(args.path) if args.path else Path(tmp) / "synthetic.jsonl"
        if not args.path:
            synthetic_file(path, max(args.examples, 1))
        examples = hellaswag.read_examples(path)
    torch.manual_seed(0)
    model = GPT(GPTConfig.from_name("gpt2")).to(args.device).eval()
    if args.compile:
        model.compile()
    batches = list(HellaSwagBatches(examples, GPT2Tokenizer(), 1024, args.examples_per_batch,
                                    limit=args.examples or None))
    scored = sum(len(b["labels"]) for b in batches)
    lengths = sorted({b["tokens"].shape[-1] for b in batches})
    dtype = getattr(torch, args.dtype)
    autocast = torch.autocast(device_type=args.device.split(":")[0], dtype=dtype, enabled=dtype != torch.float32)
    with autocast:  # one batch untimed: first-call allocations (and compilation)
        hellaswag.evaluate_batch(model, {k: v.to(args.device) for k, v in batches[0].items()})
    start = time.perf_counter()
    right = 0
    with autocast:
        for batch in batches:
            correct, _ = hellaswag.evaluate_batch(model, {k: v.to(args.device) for k, v in batch.items()})
            right += int(correct.sum())
    if args.device.startswith("cuda"):
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    print(f"GPT-2 124M on {args.device} ({args.dtype}{', compiled' if args.compile else ''}, "
          f"{torch.get_num_threads()} threads): {scored} examples, {args.examples_per_batch} per batch, "
          f"padded lengths {lengths}")
    print(f"{seconds:.1f} s, {scored / seconds:.1f} examples/s ({4 * scored / seconds:.1f} candidates/s); "
          f"acc of random weights {right / scored:.3f}")


if __name__ == "__main__":
    main()
