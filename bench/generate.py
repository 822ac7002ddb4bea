"""Sampling speed with and without the KV cache: tokens/s for the char CPU shape and the GPT-2 124M shape.

Random weights (speed does not depend on them), a 64-token prompt, 256 new tokens, greedy decoding, batch 1,
fp32 on the CPU. Without the cache every new token re-runs the model over the whole window; with it, over one
position. The two runs must also produce the same tokens.

    python bench/generate.py
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.report import emit  # noqa: E402
from lit_gpt_mini.model import GPT, GPTConfig  # noqa: E402

SHAPES = {
    "shakespeare_char_cpu": GPTConfig(vocab_size=65, block_size=64, n_layer=4, n_head=4, n_embd=128, bias=False),
    "gpt2_124m": GPTConfig.from_name("gpt2"),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--prompt", type=int, default=64)
    parser.add_argument("--new", type=int, default=256)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, prompt {args.prompt}, {args.new} new tokens")
    print(f"{'shape':22s} {'block':>5s} {'no cache tok/s':>15s} {'cache tok/s':>12s} {'speed-up':>9s} {'same tokens':>11s}")
    figures = []
    for name, config in SHAPES.items():
        torch.manual_seed(0)
        model = GPT(config).to(args.device).eval()
        prompt = torch.randint(0, config.vocab_size, (1, args.prompt), device=args.device)
        model.generate(prompt[:, :8], 4, temperature=0)  # warm up allocations
        rates, outputs = {}, {}
        for use_cache in (False, True):
            start = time.perf_counter()
            outputs[use_cache] = model.generate(prompt, args.new, temperature=0, use_cache=use_cache)
            rates[use_cache] = args.new / (time.perf_counter() - start)
        same = torch.equal(outputs[False], outputs[True])
        print(f"{name:22s} {config.block_size:5d} {rates[False]:15.1f} {rates[True]:12.1f} "
              f"{rates[True] / rates[False]:8.1f}x {str(same):>11s}")
        figures.append((name, rates, same))
    print()
    for name, rates, same in figures:
        emit("generate", f"{name}/no_cache", "tokens_per_s", round(rates[False], 2), device=args.device)
        emit("generate", f"{name}/kv_cache", "tokens_per_s", round(rates[True], 2), device=args.device)
        emit("generate", name, "ratio_cache_over_no_cache", round(rates[True] / rates[False], 3), device=args.device)
        emit("generate", name, "same_tokens", same, device=args.device)


if __name__ == "__main__":
    main()
