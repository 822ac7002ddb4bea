"""Time to loss: train a config until its validation loss (the whole split, every N steps) reaches a target.

Tokens/s is not what a user waits for: the wall-clock time to a given loss is. Each case trains one of the
project's configs through ``main.py fit`` (its own model, optimizer, schedule, callbacks and checkpoints), with
two changes: validation runs on the whole validation split every ``--eval-every`` optimizer steps for every
case, and the run stops at the first validation at or below the case's target. Reported per case: the steps and
wall-clock seconds (from the first training step) to the target, the training seconds without validation, and
the final validation loss.

Cases:
    char_adamw   configs/shakespeare_char_cpu.yaml: what `make run` trains (AdamW, nanoGPT's baby recipe)
    char_muon    the same with model.optimizer muon (its default muon_lr 0.02)
    char_tuned   configs/shakespeare_char_cpu_fast.yaml: the tuned CPU recipe (same 4x128 model)
    gpt2_adamw   a debug_gpt2-sized model (2 layers, 32 wide) over GPT-2 tokens of Tiny Shakespeare, AdamW
    gpt2_muon    the same with Muon
    char_tuned_2000  (not in the default list) the tuned recipe stretched to 2000 steps, run to the end
    char_modern  configs/shakespeare_char_cpu_modern.yaml: the modern block + Muon, what `make run` trains

``--as-shipped`` (the laptop race): each config's own schedule and validation interval, on the whole split, to
its last step; the wall clock runs from the start of ``main.py fit`` (building, data, compiling) to its end,
its validations included. ``--plot`` writes validation loss against those seconds, one line per case.

    python bench/time_to_loss.py --as-shipped --cases char_adamw,char_tuned,char_modern --plot docs/time_to_loss.png

Cases that are compared run in one process, one after the other, and every round reverses the order (the
second group starts reversed), so that neither side always runs first on a shared machine.

    python bench/time_to_loss.py                                   # the default cases, ~10-15 min on 2 cores
    python bench/time_to_loss.py --cases char_adamw,char_tuned --rounds 2
    python bench/time_to_loss.py --cases char_muon --eval-every 50 --target 1.85 --max-steps 1000 \
        --override=--model.muon_lr=0.03

``--max-steps`` changes the configs' ``trainer.max_steps``, and with it the length of their cosine schedules.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

import lightning as L
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.report import emit  # noqa: E402

from lit_gpt_mini.cli.main import main as cli_main  # noqa: E402

warnings.filterwarnings("ignore")
logging.getLogger("lightning").setLevel(logging.ERROR)
logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)

CHAR_TARGET = 1.90
GPT2_TARGET = 6.0
# The GPT-2-vocabulary pair: debug_gpt2's model (2 layers, 2 heads, 32 wide, context 32, 256 tokens a step) for
# long enough to learn something, on GPT-2 tokens of Tiny Shakespeare (the first 30k for validation).
GPT2_ARGS = ["--trainer.max_steps", "600", "--model.warmup_steps", "50", "--model.learning_rate", "3e-3",
             "--model.min_lr", "3e-4", "--data.val_tokens", "30000", "--data.shard_size", "200000"]
CASES = {
    # name: (config, extra arguments, default target, stop at the target)
    "char_adamw": ("configs/shakespeare_char_cpu.yaml", [], CHAR_TARGET, True),
    "char_muon": ("configs/shakespeare_char_cpu.yaml", ["--model.optimizer", "muon"], CHAR_TARGET, True),
    "char_tuned": ("configs/shakespeare_char_cpu_fast.yaml", [], CHAR_TARGET, True),
    "gpt2_adamw": ("configs/debug_gpt2.yaml", GPT2_ARGS, GPT2_TARGET, True),
    "gpt2_muon": ("configs/debug_gpt2.yaml", [*GPT2_ARGS, "--model.optimizer", "muon"], GPT2_TARGET, True),
    "char_tuned_2000": ("configs/shakespeare_char_cpu_fast.yaml", ["--trainer.max_steps", "2000"], CHAR_TARGET,
                        False),
    "char_modern": ("configs/shakespeare_char_cpu_modern.yaml", [], CHAR_TARGET, True),
}
GROUPS = [["char_adamw", "char_muon", "char_tuned", "char_modern"], ["gpt2_adamw", "gpt2_muon"], ["char_tuned_2000"]]
LABELS = {"char_adamw": "baby recipe (GPT-2 block, AdamW)", "char_tuned": "tuned GPT-2 block (Muon)",
          "char_modern": "modern block (Muon): make run"}
_FIT_START: list[float] = [0.0]  # set just before each `main.py fit` starts
DEFAULT_CASES = "char_adamw,char_muon,char_tuned,gpt2_adamw,gpt2_muon"


class TimeToLoss(L.Callback):
    """Times training and validation separately and stops at the first validation at or below ``target``."""

    def __init__(self, target: float, stop_at_target: bool = True) -> None:
        self.target, self.stop_at_target = target, stop_at_target
        self.t0 = None
        self.val_seconds = 0.0
        self.val_started = None
        self.evals: list[tuple[int, float, float, float]] = []  # (step, wall s, train s, val loss)
        self.hit = None

    def on_train_start(self, trainer, pl_module) -> None:
        self.t0 = time.perf_counter()
        self.fit_start = _FIT_START[0]
        self.curve: list[tuple[int, float, float]] = []  # (step, seconds since fit started, val loss)

    def on_validation_start(self, trainer, pl_module) -> None:
        self.val_started = time.perf_counter()

    def on_validation_end(self, trainer, pl_module) -> None:
        if trainer.sanity_checking or self.t0 is None:
            return
        now = time.perf_counter()
        self.val_seconds += now - self.val_started
        wall = now - self.t0
        loss = float(trainer.callback_metrics["val/loss"])
        self.evals.append((trainer.global_step, wall, wall - self.val_seconds, loss))
        self.curve.append((trainer.global_step, now - self.fit_start, loss))
        print(f"    step {trainer.global_step:5d}  val {loss:.4f}  wall {wall:7.1f} s", file=sys.__stdout__,
              flush=True)
        if self.hit is None and loss <= self.target:
            self.hit = self.evals[-1]
            if self.stop_at_target:
                trainer.should_stop = True


def write_corpus(text_path: Path, out: Path) -> Path:
    """Tiny Shakespeare's speeches as FineWeb-style jsonl documents, for the GPT-2 tokenizer."""
    speeches = [s for s in text_path.read_text(encoding="utf-8").split("\n\n") if s.strip()]
    with open(out, "w", encoding="utf-8") as f:
        for i, s in enumerate(speeches):
            f.write(json.dumps({"text": s, "id": str(i)}) + "\n")
    return out


def run_case(name: str, args, work: Path, corpus: Path) -> dict:
    config, extra, target, stop = CASES[name]
    target = args.target if args.target is not None else target
    run_dir = work / f"{name}-{time.monotonic_ns()}"
    run_dir.mkdir()
    argv = ["fit", "--config", str(ROOT / config), *extra, "--trainer.limit_val_batches", "1.0",
            "--trainer.num_sanity_val_steps", "0"]
    if not args.as_shipped:
        argv += ["--trainer.val_check_interval", str(args.eval_every)]
    if "gpt2" in name:
        argv += ["--data.path", str(corpus), "--data.data_dir", str(work / "data_gpt2")]
    else:
        argv += ["--data.path", str(args.text), "--data.data_dir", str(work / "data_char")]
    if args.max_steps:
        argv += ["--trainer.max_steps", str(args.max_steps)]
    argv += args.override
    stop = stop and not (args.run_to_max or args.as_shipped)
    cwd = os.getcwd()
    os.chdir(run_dir)  # checkpoints and TensorBoard logs of the run land in the scratch directory
    try:
        # the run's own output (progress bar, model summary) goes to a log beside it; this bench prints the evals
        with open(run_dir / "fit.log", "w") as log, contextlib.redirect_stdout(log):
            _FIT_START[0] = time.perf_counter()
            cli = cli_main([*argv, "--trainer.callbacks+=__main__.TimeToLoss", "--trainer.callbacks.target",
                            str(target), "--trainer.callbacks.stop_at_target", str(stop).lower()])
            fit_seconds = time.perf_counter() - _FIT_START[0]
    finally:
        os.chdir(cwd)
    (timer,) = [c for c in cli.trainer.callbacks if isinstance(c, TimeToLoss)]
    last = timer.evals[-1]
    hit = timer.hit
    return {
        "case": name, "target": target, "reached": hit is not None,
        "steps_to_target": hit[0] if hit else None, "seconds_to_target": hit[1] if hit else None,
        "train_seconds_to_target": hit[2] if hit else None,
        "final_step": last[0], "final_loss": last[3], "total_seconds": last[1],
        "ms_per_step": 1e3 * last[2] / max(1, last[0]),
        "fit_seconds": fit_seconds, "curve": timer.curve,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cases", default=DEFAULT_CASES, help=f"comma-separated, of {', '.join(CASES)}")
    parser.add_argument("--text", default=str(ROOT.parent / "shared/data/tinyshakespeare.txt"),
                        help="Tiny Shakespeare (a local copy: the bench never downloads)")
    parser.add_argument("--target", type=float, help="validation loss to reach (default: 1.90 char, 6.0 GPT-2)")
    parser.add_argument("--eval-every", type=int, default=100, help="optimizer steps between validations")
    parser.add_argument("--max-steps", type=int, help="override trainer.max_steps (and so the LR schedule)")
    parser.add_argument("--rounds", type=int, default=1, help="runs per case, alternating the order; median")
    parser.add_argument("--run-to-max", action="store_true", help="do not stop at the target")
    parser.add_argument("--as-shipped", action="store_true", help="each config's own validation interval, run to "
                        "its last step, timed from the start of `main.py fit` to its end")
    parser.add_argument("--plot", help="write validation loss against wall-clock seconds to this PNG "
                        "(needs matplotlib: pip install -e '.[bench]')")
    parser.add_argument("--threads", type=int, help="torch threads (1 on a machine shared with other jobs: two "
                        "threads that wait on each other's busy cores can be 5-10x slower)")
    parser.add_argument("--override", action="append", default=[],
                        help="an extra `main.py fit` argument for every case, e.g. --override=--model.muon_lr=0.03; "
                        "repeat for more")
    args = parser.parse_args()
    cases = args.cases.split(",")
    unknown = [c for c in cases if c not in CASES]
    if unknown:
        parser.error(f"unknown case(s) {unknown}; choose from {list(CASES)}")
    if args.threads:
        torch.set_num_threads(args.threads)
    every = "each config's own interval" if args.as_shipped else f"every {args.eval_every} steps"
    print(f"torch {torch.__version__}, lightning {L.__version__}, {torch.get_num_threads()} threads, "
          f"{os.cpu_count()} cpus, load average {os.getloadavg()[0]:.2f}; validation on the whole split {every}")
    results: dict[str, list[dict]] = {c: [] for c in cases}
    with tempfile.TemporaryDirectory(prefix="ttl-") as tmp:
        work = Path(tmp)
        corpus = write_corpus(Path(args.text), work / "shakespeare.jsonl")
        for r in range(args.rounds):
            for g, group in enumerate(GROUPS):
                order = [c for c in group if c in cases]
                if (r + g) % 2 == 1:  # alternate: every round, and the second group of a round, reversed
                    order.reverse()
                for name in order:
                    print(f"round {r} {name}", flush=True)
                    results[name].append(run_case(name, args, work, corpus))

    def median(name: str, key: str):
        values = [run[key] for run in results[name] if run[key] is not None]
        return statistics.median(values) if values else None

    print()
    print(f"{'case':16s} {'target':>6s} {'steps':>6s} {'wall s':>8s} {'train s':>8s} {'final step':>10s} "
          f"{'final loss':>10s} {'ms/step':>8s} {'fit s':>7s}")
    rows = []
    for name in cases:
        row = {k: median(name, k) for k in ("steps_to_target", "seconds_to_target", "train_seconds_to_target",
                                           "final_step", "final_loss", "ms_per_step", "fit_seconds")}
        row["target"] = results[name][0]["target"]
        rows.append((name, row))

        def fmt(v, spec):
            return format(v, spec) if v is not None else "not reached"

        print(f"{name:16s} {row['target']:6.2f} {fmt(row['steps_to_target'], '6.0f'):>6s} "
              f"{fmt(row['seconds_to_target'], '8.1f'):>8s} {fmt(row['train_seconds_to_target'], '8.1f'):>8s} "
              f"{row['final_step']:10.0f} {row['final_loss']:10.4f} {row['ms_per_step']:8.1f} {row['fit_seconds']:7.1f}")
    print()
    for name, row in rows:
        for metric in ("steps_to_target", "seconds_to_target", "train_seconds_to_target", "final_loss",
                       "final_step", "ms_per_step", "fit_seconds"):
            emit("time_to_loss", name, metric, row[metric], target=row["target"])
    by_name = dict(rows)
    for tuned, baseline in (("char_tuned", "char_adamw"), ("char_muon", "char_adamw"), ("gpt2_muon", "gpt2_adamw")):
        if tuned in by_name and baseline in by_name:
            a, b = by_name[tuned]["seconds_to_target"], by_name[baseline]["seconds_to_target"]
            metric = "ratio_tuned_over_baseline" if tuned == "char_tuned" else "ratio_over_baseline"
            emit("time_to_loss", f"{tuned}/{baseline}", metric, a / b if a is not None and b is not None else None,
                 target=by_name[tuned]["target"])
    if "char_modern" in by_name and "char_adamw" in by_name:  # the laptop race: `make run` against the baby recipe
        emit("time_to_loss", "char_modern/char_adamw", "fit_seconds_ratio",
             by_name["char_modern"]["fit_seconds"] / by_name["char_adamw"]["fit_seconds"],
             as_shipped=args.as_shipped)
    if args.plot:
        plot(results, args.plot)


def plot(results: dict[str, list[dict]], out: str) -> None:
    """Validation loss against seconds since `main.py fit` started, one line per case (its first round)."""
    import matplotlib

    matplotlib.use("Agg")  # no display needed
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=120)
    for name, runs in results.items():
        curve = runs[0]["curve"]
        ax.plot([c[1] for c in curve], [c[2] for c in curve], marker="o", label=LABELS.get(name, name))
    ax.set_xlabel("wall-clock seconds since `main.py fit` started")
    ax.set_ylabel("validation loss (whole split, nats/char)")
    ax.set_title("Tiny Shakespeare, character level, CPU")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(out)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
