"""What bf16-mixed costs against 32-true for a training step on this CPU, at the GPT-2 124M shape (and the char shape).

The same model, batch and fused AdamW step (with clipping), once under ``torch.autocast("cpu", bfloat16)`` as
Lightning's ``bf16-mixed`` runs it, once in fp32 as ``32-true`` does; rounds alternate which precision goes first
and the best time of each counts. Prints a table, then one JSON line per figure, and the CPU's bf16 support.

    python bench/cpu_precision.py                       # GPT-2 124M at B=4, T=256, and the char CPU shape
    python bench/cpu_precision.py --only gpt2_124m --rounds 3
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.report import emit  # noqa: E402
from lit_gpt_mini.model import GPT, GPTConfig  # noqa: E402
from lit_gpt_mini.optim import param_groups  # noqa: E402

SHAPES = {
    # name: model shape, batch size, timed steps
    "gpt2_124m": (dict(vocab_size=50257, n_layer=12, n_head=12, n_embd=768, block_size=256, bias=True), 4, 2),
    "char_cpu": (dict(vocab_size=65, n_layer=4, n_head=4, n_embd=128, block_size=64, bias=False), 12, 30),
}


def cpu_bf16_support() -> str:
    """The CPU's bf16 instructions, as /proc/cpuinfo names them (empty where it has none or cannot say)."""
    try:
        flags = Path("/proc/cpuinfo").read_text().split()
    except OSError:
        return "unknown"
    return " ".join(sorted({f for f in flags if "bf16" in f})) or "none"


def seconds_per_step(shape: dict, batch_size: int, steps: int, bf16: bool) -> float:
    torch.manual_seed(0)
    model = GPT(GPTConfig(**shape)).train()
    optimizer = torch.optim.AdamW(param_groups(model, 0.1), lr=1e-4, fused=True)
    x = torch.randint(0, shape["vocab_size"], (batch_size, shape["block_size"]))
    y = torch.randint(0, shape["vocab_size"], (batch_size, shape["block_size"]))
    timings = []
    for step in range(steps + 1):  # the first step (allocations, one-time setup) is not timed
        t0 = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss = model(x, y)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if step:
            timings.append(time.perf_counter() - t0)
    return min(timings)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", choices=sorted(SHAPES), help="one shape")
    parser.add_argument("--rounds", type=int, default=2, help="alternating rounds; the best time of each side counts")
    args = parser.parse_args()
    torch.set_flush_denormal(True)
    context = dict(device=f"CPU, {os.cpu_count()} cores, bf16 instructions: {cpu_bf16_support()}",
                   threads=torch.get_num_threads(), torch=torch.__version__)
    print(f"torch {torch.__version__}, {context['device']}, {context['threads']} threads")
    results = []
    for name, (shape, batch_size, steps) in SHAPES.items():
        if args.only and name != args.only:
            continue
        best = {"32-true": float("inf"), "bf16-mixed": float("inf")}
        for r in range(args.rounds):
            for precision in (("32-true", "bf16-mixed") if r % 2 == 0 else ("bf16-mixed", "32-true")):
                s = seconds_per_step(shape, batch_size, steps, bf16=precision == "bf16-mixed")
                best[precision] = min(best[precision], s)
                print(f"{name} round {r} {precision}: {s * 1e3:.1f} ms/step", flush=True)
        results.append((name, batch_size * shape["block_size"], best))
    print()
    print(f"{'shape':12s} {'precision':12s} {'ms/step':>10s} {'tokens/s':>10s}")
    for name, tokens, best in results:
        for precision, s in best.items():
            print(f"{name:12s} {precision:12s} {s * 1e3:10.1f} {tokens / s:10.1f}")
        print(f"{name:12s} {'bf16 / fp32':12s} {best['bf16-mixed'] / best['32-true']:10.2f}")
    print()
    for name, tokens, best in results:
        for precision, s in best.items():
            emit("cpu_precision", f"{name}/{precision}", "ms_per_step", round(s * 1e3, 2), **context)
            emit("cpu_precision", f"{name}/{precision}", "tokens_per_s", round(tokens / s, 1), **context)
        emit("cpu_precision", name, "ratio_bf16_over_fp32_time", round(best["bf16-mixed"] / best["32-true"], 3), **context)


if __name__ == "__main__":
    main()
