"""HellaSwag scoring speed for the GPT-2 124M shape: examples/s, the packed scorer against the one it replaced.

The examples are synthetic token ids with the lengths of the real format's (contexts ~64 tokens, endings ~28,
like Tiny Shakespeare words in HellaSwag's shape), so no tokenizer or download is needed; ``--path`` scores
a real jsonl instead (needs GPT-2's vocabulary). The weights are random: this measures speed, not accuracy.
The times include the warm-up (first batches, compilation); packing the rows (once per process) is separate.
On a CPU the previous scorer's batches are spread among the packed ones, so that both see the same load
on a shared machine.

The baseline is the previous scorer, kept here only: each candidate padded to a multiple of 64 and run
alone through the full forward, the cross-entropy over the whole vocabulary at every position. On the first
``--baseline-examples`` both must take the same decisions (printed).

    python bench/hellaswag_eval.py                                    # CPU: 200 examples, the baseline on 24
    python bench/hellaswag_eval.py --device cuda --examples 10042 --precision bf16 [--compile]
    python bench/hellaswag_eval.py --device cuda --path data/hellaswag/hellaswag_val.jsonl --examples 0
"""

from __future__ import annotations

import argparse
import contextlib
import os
import random
import sys
import time
from pathlib import Path

import torch
from torch.nn import functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.report import emit  # noqa: E402

from data_modules import hellaswag  # noqa: E402
from lit_gpt_mini import scoring  # noqa: E402
from lit_gpt_mini.model import GPT, GPTConfig  # noqa: E402

MAX_LENGTH = 1024


def synthetic_examples(n: int, vocab_size: int, seed: int = 0) -> list[hellaswag.TokenizedExample]:
    """Random ids; context and ending lengths as the GPT-2 tokens of the former synthetic text (45 and 20 words
    of Tiny Shakespeare: 64 +- 18 and 28 +- 8.5 tokens)."""
    rng = random.Random(seed)

    def ids(mean: float, std: float) -> tuple[int, ...]:
        return tuple(rng.randrange(vocab_size) for _ in range(max(1, round(rng.gauss(mean, std)))))

    return [hellaswag.TokenizedExample(ids(64, 18), tuple(ids(28, 8.5) for _ in range(4)), rng.randrange(4))
            for _ in range(n)]


# --- the previous scorer (the baseline) ----------------------------------------------------------------------


def baseline_batch(examples: list[hellaswag.TokenizedExample], max_length: int) -> dict[str, torch.Tensor]:
    rendered = []
    for e in examples:
        candidates = [(list(e.context) + list(x))[-max_length:] for x in e.endings]
        rendered.append([(ids, len(ids) - len(x)) for ids, x in zip(candidates, e.endings)])
    length = min(-(-max(len(ids) for r in rendered for ids, _ in r) // 64) * 64, max_length)
    tokens = torch.zeros(len(examples), 4, length, dtype=torch.long)
    mask = torch.zeros(len(examples), 4, length, dtype=torch.bool)
    for i, r in enumerate(rendered):
        for c, (ids, start) in enumerate(r):
            tokens[i, c, : len(ids)] = torch.tensor(ids)
            mask[i, c, start : len(ids)] = True
    return {"tokens": tokens, "mask": mask, "labels": torch.tensor([e.label for e in examples])}


@torch.no_grad()
def baseline_evaluate(model: GPT, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    tokens, mask, labels = batch["tokens"], batch["mask"], batch["labels"]
    n, c, length = tokens.shape
    out = model(tokens.view(n * c, length))
    logits = out[0] if isinstance(out, tuple) else out
    targets, scored = tokens.view(n * c, length)[:, 1:], mask.view(n * c, length)[:, 1:].float()
    nll = F.cross_entropy(logits[:, :-1].flatten(0, 1).float(), targets.flatten(), reduction="none")
    total = (nll.view_as(scored) * scored).sum(1)
    mean = total / scored.sum(1).clamp(min=1)
    return total.view(n, c).argmin(1) == labels, mean.view(n, c).argmin(1) == labels


# --- timing ----------------------------------------------------------------------------------------------------


def timed(device: str, run) -> float:
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    start = time.perf_counter()
    run()
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--path", help="a real HellaSwag jsonl (default: synthetic ids)")
    parser.add_argument("--examples", type=int, default=200, help="score the first N examples (0: all of --path)")
    parser.add_argument("--baseline-examples", type=int, default=None,
                        help="examples for the previous scorer (default 24 on a CPU, 512 on a GPU; 0: skip)")
    parser.add_argument("--examples-per-batch", type=int, default=None, help="default 8 on a CPU, 64 on a GPU")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--precision", default="fp32", choices=["fp32", "bf16"], help="bf16: autocast")
    parser.add_argument("--compile", action="store_true", help="the scorer under torch.compile(dynamic=True)")
    parser.add_argument("--threads", type=int, help="CPU threads (default: torch's; 1 suits a CPU shared with others)")
    args = parser.parse_args()
    if args.examples < 1 and not args.path:
        parser.error("--examples must be at least 1 for synthetic examples (0 means all only with --path)")
    if args.threads:
        torch.set_num_threads(args.threads)
    on_gpu = args.device.startswith("cuda")
    per_batch = args.examples_per_batch or (64 if on_gpu else 8)
    baseline_n = args.baseline_examples if args.baseline_examples is not None else (512 if on_gpu else 24)

    torch.manual_seed(0)
    model = GPT(GPTConfig.from_name("gpt2")).to(args.device).eval()
    if args.path:
        os.environ.setdefault("TIKTOKEN_CACHE_DIR", str(Path(__file__).resolve().parents[2] / "shared/data/tiktoken_cache"))
        from lit_gpt_mini.tokenizers import GPT2Tokenizer

        tokenizer = GPT2Tokenizer()
        examples = [hellaswag.tokenize(e, tokenizer) for e in hellaswag.read_examples(Path(args.path))]
        examples = examples[: args.examples or None]
        source = f"{args.path}"
    else:
        examples = synthetic_examples(args.examples, model.config.vocab_size)
        source = "synthetic ids"
    n = len(examples)

    start = time.perf_counter()
    batches = hellaswag.batches([hellaswag.pack(e, MAX_LENGTH) for e in examples], per_batch)
    if on_gpu:
        batches = [{k: v.pin_memory() if torch.is_tensor(v) else v for k, v in b.items()} for b in batches]
    pack_seconds = time.perf_counter() - start

    score = torch.compile(scoring.candidate_losses, dynamic=True) if args.compile else scoring.candidate_losses
    autocast = (torch.autocast(device_type=args.device.split(":")[0], dtype=torch.bfloat16)
                if args.precision == "bf16" else contextlib.nullcontext())

    chosen = examples[:baseline_n]
    old_batches = [baseline_batch(chosen[i : i + 8], MAX_LENGTH) for i in range(0, len(chosen), 8)]
    right = torch.zeros(2, device=args.device)  # stays on the device: no sync per batch
    old_decisions: list[tuple[bool, bool]] = []

    def run_packed(batch: dict[str, torch.Tensor]) -> None:
        nonlocal right
        with torch.no_grad(), autocast:
            batch = {k: v.to(args.device, non_blocking=True) if torch.is_tensor(v) else v for k, v in batch.items()}
            total, mean = score(model, batch)
            labels = batch["labels"]
            right += torch.stack(((total.argmin(1) == labels).sum(), (mean.argmin(1) == labels).sum()))

    def run_previous(batch: dict[str, torch.Tensor]) -> None:
        with autocast:
            a, b = baseline_evaluate(model, {k: v.to(args.device) for k, v in batch.items()})
        old_decisions.extend(zip(a.tolist(), b.tolist()))

    if on_gpu:  # all packed batches in one go, one sync at the end: the figure a training run's callback sees
        seconds = timed(args.device, lambda: [run_packed(b) for b in batches])
        old_seconds = timed(args.device, lambda: [run_previous(b) for b in old_batches])
    else:  # a shared CPU's speed drifts: spread the previous scorer's batches among the packed ones
        seconds = old_seconds = 0.0
        done = 0
        for i, batch in enumerate(batches):
            seconds += timed(args.device, lambda: run_packed(batch))
            while done < len(old_batches) and (done + 0.5) / len(old_batches) <= (i + 1) / len(batches):
                old_seconds += timed(args.device, lambda: run_previous(old_batches[done]))
                done += 1
    rows = [("packed (this scorer)", n, seconds)]
    if baseline_n:
        rows.append(("previous (per candidate, full vocab)", len(chosen), old_seconds))
        new_decisions = []
        with torch.no_grad(), autocast:
            for example in chosen:  # one example a batch: decisions in the baseline's order
                batch = hellaswag.collate([hellaswag.pack(example, MAX_LENGTH)])
                a, b = scoring.evaluate_batch(model, {k: v.to(args.device) if torch.is_tensor(v) else v
                                                      for k, v in batch.items()})
                new_decisions.append((bool(a), bool(b)))
        agree = sum(x == y for x, y in zip(old_decisions, new_decisions))

    # matmul FLOPs (attention's left out): 2 per weight of the blocks per fed position, 2 * n_embd * vocab
    # per position that gets logits
    body = 2 * sum(p.numel() for p in model.transformer.h.parameters())
    head = 2 * model.config.n_embd * model.config.vocab_size
    flops = sum(b["tokens"].numel() * body + b["index"].numel() * head for b in batches) / n
    old_flops = sum(b["tokens"].numel() * (body + head) for b in old_batches) / max(1, len(chosen))
    print(f"GPT-2 124M shape, random weights, on {args.device} ({args.precision}{', compiled' if args.compile else ''}, "
          f"{torch.get_num_threads()} threads, torch {torch.__version__}); {source}; {per_batch} examples per batch "
          f"(packed), 8 (previous)")
    print(f"packing {n} examples into rows: {pack_seconds:.2f} s (once per process)")
    print(f"{'scorer':40} {'examples':>9} {'seconds':>9} {'examples/s':>11} {'GFLOP/example':>14}")
    for (name, count, secs), per_example in zip(rows, (flops, old_flops)):
        print(f"{name:40} {count:>9} {secs:>9.2f} {count / secs:>11.2f} {per_example / 1e9:>14.1f}")
    if baseline_n:
        print(f"speed-up {(n / seconds) / (len(chosen) / old_seconds):.1f}x; decisions (acc, acc_norm) identical on "
              f"{agree} of {len(chosen)} examples")
    print(f"acc / acc_norm of the random weights: {right[0].item() / n:.3f} / {right[1].item() / n:.3f}")
    case = f"gpt2-124m_{args.device.split(':')[0]}_{args.precision}{'_compiled' if args.compile else ''}"
    figures = [(f"packed_{case}_{n}ex", "examples_per_s", n / seconds), (f"packed_{case}_{n}ex", "seconds_incl_warmup", seconds),
               (f"packed_{case}_{n}ex", "gflop_per_example", flops / 1e9)]
    if baseline_n:
        figures.append((f"previous_{case}_{len(chosen)}ex", "examples_per_s", len(chosen) / old_seconds))
        figures.append((f"previous_{case}_{len(chosen)}ex", "gflop_per_example", old_flops / 1e9))
        figures.append((f"{case}_{len(chosen)}ex", "decisions_identical_fraction", agree / len(chosen)))
    for name, metric, value in figures:
        emit("hellaswag_eval", name, metric, round(value, 4))


if __name__ == "__main__":
    main()
