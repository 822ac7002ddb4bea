"""Step cost: milliseconds per training step of the bare model (forward, backward, optimizer), block by block.

It isolates the model's own work from Lightning's (bench/train_throughput.py compares the two): each case builds
a :class:`~lit_gpt_mini.model.GPT`, its optimizer (AdamW or Muon + AdamW, the project's parameter groups) and
trains it on fixed random batches; the median of the timed steps after warmup counts. Cases alternate
within each round, so both blocks see the same machine. ``--profile`` prints torch.profiler's table of the
top operators for each case (where the time of a step goes).

    python bench/step_cost.py                                    # GPT-2 vs modern block at the baby shape
    python bench/step_cost.py --compile --steps 100 --threads 1
    python bench/step_cost.py --profile --steps 20
    python bench/step_cost.py --cases modern-autograd:muon,modern:muon   # the model's own backward formulas
                                                                         # against autograd's (before/after)

A block name ending in ``-autograd`` runs the modern block with plain autograd through ``F.rms_norm``, the
rotation and relu().square() instead of the model's closed-form backward functions: the same numbers, more
elementwise passes.
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.report import emit  # noqa: E402
from torch.nn import functional as F  # noqa: E402

import lit_gpt_mini.model as model_module  # noqa: E402
from lit_gpt_mini.model import GPT, GPTConfig  # noqa: E402
from lit_gpt_mini.muon import MuonAdamW  # noqa: E402
from lit_gpt_mini.optim import matrix_names, muon_param_groups, param_groups  # noqa: E402


@contextlib.contextmanager
def plain_autograd(on: bool):
    """The modern block through autograd's generic backward (the reference the closed forms are measured against)."""
    if not on:
        yield
        return
    saved = model_module.rms_norm, model_module.apply_rotary, model_module.ReLU2.forward
    model_module.rms_norm = lambda x: F.rms_norm(x, (x.size(-1),))
    model_module.apply_rotary = lambda x, cos, sin: model_module._rotate(x, cos.to(x.dtype), sin.to(x.dtype))
    model_module.ReLU2.forward = lambda self, x: F.relu(x).square()
    try:
        yield
    finally:
        model_module.rms_norm, model_module.apply_rotary, model_module.ReLU2.forward = saved


def make(block: str, optimizer: str, args) -> tuple[GPT, torch.optim.Optimizer]:
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=65, block_size=args.context, n_layer=args.n_layer, n_head=args.n_head,
                          n_embd=args.n_embd, bias=False, block=block.removesuffix("-autograd")))
    if optimizer == "muon":
        opt = MuonAdamW(muon_param_groups(model, 0.03, 0.0, 3e-3, 0.1), fused=True)
    else:
        opt = torch.optim.AdamW(param_groups(model, 0.1, matrix_names(model)), lr=1e-3, betas=(0.9, 0.99), fused=True)
    if args.compile:
        model.compile()
    return model, opt


def step(model: GPT, opt: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    loss = model(x, y)
    loss.backward()
    opt.step()
    opt.zero_grad(set_to_none=True)
    return loss


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cases", default="gpt2:adamw,gpt2:muon,modern:muon", help="block:optimizer, comma-separated")
    parser.add_argument("--batch-size", type=int, default=12)
    parser.add_argument("--context", type=int, default=64)
    parser.add_argument("--n-layer", type=int, default=4)
    parser.add_argument("--n-head", type=int, default=4)
    parser.add_argument("--n-embd", type=int, default=128)
    parser.add_argument("--steps", type=int, default=200, help="timed steps per case and round")
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--compile", action="store_true", help="torch.compile each model (compile time not counted)")
    parser.add_argument("--threads", type=int, help="torch threads (default: torch's)")
    parser.add_argument("--profile", action="store_true", help="print torch.profiler's top operators per case")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    cases = [tuple(c.split(":")) for c in args.cases.split(",")]
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 65, (args.batch_size, args.context), generator=g)
    y = torch.randint(0, 65, (args.batch_size, args.context), generator=g)
    built = {c: make(*c, args) for c in cases}
    times: dict[tuple, list[float]] = {c: [] for c in cases}
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, B={args.batch_size} T={args.context} "
          f"{args.n_layer}x{args.n_embd}, compile={args.compile}")
    for r in range(args.rounds):
        for c in (cases if r % 2 == 0 else cases[::-1]):
            model, opt = built[c]
            with plain_autograd(c[0].endswith("-autograd")):
                for _ in range(args.warmup):
                    step(model, opt, x, y)
                for _ in range(args.steps):
                    t = time.perf_counter()
                    step(model, opt, x, y)
                    times[c].append(time.perf_counter() - t)
    for c in cases:
        ms = 1e3 * statistics.median(times[c])
        print(f"{c[0]:16s} {c[1]:6s} {ms:7.2f} ms/step  {args.batch_size * args.context / ms * 1e3:9.0f} tok/s")
        emit("step_cost", f"{c[0]}:{c[1]}", "ms_per_step", ms, batch_size=args.batch_size, context=args.context,
             compile=args.compile, threads=torch.get_num_threads())
    if len(cases) > 1:
        base = statistics.median(times[cases[0]])
        for c in cases[1:]:
            emit("step_cost", f"{c[0]}:{c[1]}/{cases[0][0]}:{cases[0][1]}", "ratio",
                 statistics.median(times[c]) / base, compile=args.compile, threads=torch.get_num_threads())
    if args.profile:
        from torch.profiler import ProfilerActivity, profile

        for c in cases:
            model, opt = built[c]
            with plain_autograd(c[0].endswith("-autograd")), profile(activities=[ProfilerActivity.CPU]) as prof:
                for _ in range(args.steps):
                    step(model, opt, x, y)
            print(f"\n== {c[0]} {c[1]}: {args.steps} steps")
            print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=18))


if __name__ == "__main__":
    main()
