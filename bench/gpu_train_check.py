"""A short GPT-2 training run through the real recipe and CLI: the loss must fall and nothing may recompile.

Takes ``configs/gpt2_fineweb.yaml``, points its data at local text (the Python sources installed beside torch,
as jsonl: no network), makes the optimizer step ``batch_size x 1024`` tokens so that a few hundred steps take
seconds on a GPU, turns HellaSwag off (scored separately by bench/hellaswag_eval.py), and trains with
``torch.compile``. After warm-up (the first validation and the first training step after it) the number of
frames Dynamo has compiled must not grow: a recompilation mid-run costs seconds each time and usually means a
shape or guard that changes every step. ``TORCH_LOGS=recompiles`` prints the reasons if it happens.

    python bench/gpu_train_check.py                      # CUDA: GPT-2 124M, 150 steps of 64 x 1024 tokens
    python bench/gpu_train_check.py --smoke              # CPU: a tiny model, a few dozen steps (what CI runs)
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Optional

import lightning as L
import torch
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.report import emit  # noqa: E402

BENCH = "gpu_train_check"


class RecompileGuard(L.Callback):
    """Counts the frames Dynamo compiles after warm-up (the first validation and one training step after it)
    and writes ``{"frames_after_warmup": n, ...}`` to ``path`` when training ends."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.after_validation = False
        self.frames_at_warmup: Optional[int] = None
        self.warmup_step: Optional[int] = None

    @staticmethod
    def frames() -> int:
        from torch._dynamo.utils import counters

        return int(counters["frames"]["ok"])

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.sanity_checking:
            self.after_validation = True

    def on_train_batch_end(self, trainer: L.Trainer, *args: Any) -> None:
        if self.after_validation and self.frames_at_warmup is None:
            self.frames_at_warmup, self.warmup_step = self.frames(), trainer.global_step

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        after = None if self.frames_at_warmup is None else self.frames() - self.frames_at_warmup
        Path(self.path).write_text(json.dumps(
            {"frames_after_warmup": after, "warmup_step": self.warmup_step, "frames_total": self.frames()}
        ))


def write_corpus(path: Path, max_chars: int) -> int:
    """Installed Python sources as jsonl documents (one file each), up to ``max_chars``; returns the count."""
    import json as _json

    roots = [Path(torch.__file__).parent, Path(L.__file__).parent]
    chars = docs = 0
    with open(path, "w", encoding="utf-8") as out:
        for root in roots:
            for source in sorted(root.rglob("*.py")):
                text = source.read_text(encoding="utf-8", errors="replace")
                if len(text) < 200:
                    continue
                out.write(_json.dumps({"text": text}) + "\n")
                chars, docs = chars + len(text), docs + 1
                if chars >= max_chars:
                    return docs
    return docs


def make_config(work: Path, corpus: Path, args: argparse.Namespace) -> Path:
    config = yaml.safe_load((ROOT / "configs/gpt2_fineweb.yaml").read_text())
    trainer, model, data = config["trainer"], config["model"]["init_args"], config["data"]["init_args"]
    trainer.update(
        accelerator=args.device, devices=1, max_steps=args.steps, val_check_interval=args.val_every,
        limit_val_batches=args.val_batches, log_every_n_steps=10,
    )
    trainer["logger"]["init_args"]["save_dir"] = str(work / "out")
    trainer["enable_progress_bar"] = False  # one line a step in a log
    if args.device == "cpu":
        trainer["precision"] = "32-true"
    config["hellaswag"]["every_n_steps"] = None  # scored separately, by bench/hellaswag_eval.py
    config["accumulation"]["total_batch_tokens"] = args.batch_size * args.block_size
    config["checkpoint"]["dirpath"] = str(work / "out/checkpoints")
    config["sample"]["max_new_tokens"] = 16
    # the recipe's default callbacks, and the guard
    from lit_gpt_mini.cli.main import RECIPE_DEFAULTS

    trainer["callbacks"] = [*RECIPE_DEFAULTS["trainer.callbacks"], {
        "class_path": "bench.gpu_train_check.RecompileGuard", "init_args": {"path": str(work / "recompiles.json")}}]
    model.update(warmup_steps=max(1, args.steps // 10), compile=True, block_size=args.block_size)
    if args.smoke:
        model.update(n_layer=2, n_head=2, n_embd=64, learning_rate=3e-3, min_lr=3e-4)
    data.update(
        data_dir=str(work / "data"), path=str(corpus), batch_size=args.batch_size,
        max_tokens=args.max_tokens, shard_size=min(args.max_tokens // 4, 10_000_000),
        val_tokens=args.batch_size * args.block_size * args.val_batches + 1, num_workers=2,
    )
    path = work / "config.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def train_losses(log_dir: Path) -> list[tuple[int, float]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    (events,) = log_dir.rglob("events.out.tfevents.*")
    acc = EventAccumulator(str(events))
    acc.Reload()
    return [(e.step, e.value) for e in acc.Scalars("train/loss")]


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", choices=["cuda", "cpu"], default="cuda")
    parser.add_argument("--smoke", action="store_true", help="a tiny model on the CPU (checks the check)")
    parser.add_argument("--steps", type=int, default=150)
    # 64 x 1024, the shape bench/train_throughput.py measures: gpu_check.sh runs it next, from the cached graphs
    parser.add_argument("--batch-size", type=int, default=64, help="windows per step (one micro-batch)")
    parser.add_argument("--block-size", type=int, default=1024)
    parser.add_argument("--val-every", type=int, default=100, help="optimizer steps between validations")
    parser.add_argument("--val-batches", type=int, default=8)
    parser.add_argument("--max-tokens", type=int, default=8_000_000, help="tokens of local text to train on")
    parser.add_argument("--work", help="working directory (default: a temporary one)")
    args = parser.parse_args(argv)
    if args.smoke:
        args.device, args.steps, args.batch_size, args.block_size = "cpu", 40, 8, 64
        args.val_every, args.val_batches, args.max_tokens = 15, 2, 300_000
    if args.device == "cuda" and not torch.cuda.is_available():
        sys.exit("error: --device cuda but torch sees no CUDA device (use --smoke on a CPU)")
    work = Path(args.work or tempfile.mkdtemp(prefix="gpu-train-check-"))
    work.mkdir(parents=True, exist_ok=True)
    corpus = work / "corpus.jsonl"
    docs = write_corpus(corpus, max_chars=args.max_tokens * 3)  # ~3 characters per GPT-2 token of code
    config = make_config(work, corpus, args)
    print(f"{docs:,} source files as documents; config {config}", flush=True)

    from lit_gpt_mini.cli.main import main as cli_main

    t0 = time.perf_counter()
    cli_main(["fit", "--config", str(config)])
    seconds = time.perf_counter() - t0
    losses = train_losses(work / "out")
    guard = json.loads((work / "recompiles.json").read_text())
    first, last = losses[0][1], losses[-1][1]
    falls = last < first - 1.0
    no_recompiles = guard["frames_after_warmup"] == 0
    case = "tiny_cpu_smoke" if args.smoke else f"gpt2_124m_B{args.batch_size}_T{args.block_size}"
    print()
    print(f"{'check':34s} {'value':>12s}  result")
    print(f"{'train/loss first logged step':34s} {first:12.3f}")
    print(f"{'train/loss last logged step':34s} {last:12.3f}  {'PASS' if falls else 'FAIL'} (falls by > 1.0)")
    print(f"{'frames compiled after warm-up':34s} {str(guard['frames_after_warmup']):>12s}  "
          f"{'PASS' if no_recompiles else 'FAIL'} (warm-up ended at step {guard['warmup_step']})")
    print(f"{'wall seconds (incl. data, compile)':34s} {seconds:12.1f}")
    emit(BENCH, case, "loss_first", round(first, 4))
    emit(BENCH, case, "loss_last", round(last, 4))
    emit(BENCH, case, "frames_compiled_after_warmup", guard["frames_after_warmup"])
    emit(BENCH, case, "wall_seconds", round(seconds, 1))
    return 0 if falls and no_recompiles else 1


if __name__ == "__main__":
    sys.exit(main())
