"""Training throughput: this project's LightningModule + Trainer + data module vs a bare PyTorch loop.

Both sides train the same model shape on the same batches (the base data module's shuffled windows over token
shards, one contiguous window per batch sliced on the device) with the same AdamW groups, gradient clipping
and per-step LR schedule, and read the loss back only every ``LOG_EVERY`` steps. The Lightning side runs with
the callbacks of the configs (TensorBoard logger, LR monitor, throughput monitor, progress bar) but no
validation. Each side runs ``--rounds`` times, alternating which goes first, and the best steady-state time
(after warmup steps) counts: on a shared 2-core machine single runs vary by several percent.

    python bench/train_throughput.py                       # the CPU shapes
    python bench/train_throughput.py --only shakespeare_char_cpu --steps 300
    python bench/train_throughput.py --device cuda         # GPT-2 124M, T=1024, bf16-mixed, compiled, B 16/32/64

On CUDA it also reports MFU (against the card's dense bf16 peak) and peak memory
(``torch.cuda.max_memory_allocated``), and a bare run with the loss outside the compiled graph (the old path:
compiled logits, eager cross-entropy) to show what computing the loss inside the model saves.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import lightning as L
import numpy as np
import torch
from lightning.fabric.utilities.throughput import get_available_flops
from torch.nn import functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.report import emit  # noqa: E402
from data_modules.base import TokenDataModule  # noqa: E402
from data_modules.windows import ShuffledWindows, split_windows  # noqa: E402
from data_modules.shards import ShardSet, ShardWriter  # noqa: E402
from lit_gpt_mini.callbacks import TokenThroughput  # noqa: E402
from lit_gpt_mini.lit_module import GPTModule  # noqa: E402
from lit_gpt_mini.model import GPT, GPTConfig  # noqa: E402
from lit_gpt_mini.optim import param_groups, warmup_cosine_lr  # noqa: E402
from lit_gpt_mini.tokenizers import CharTokenizer, Tokenizer  # noqa: E402

warnings.filterwarnings("ignore")

SHAPES = {
    # name: model kwargs, batch size, default steps, default warmup steps
    "shakespeare_char_cpu": (dict(n_layer=4, n_head=4, n_embd=128, block_size=64, bias=False), 12, 500, 50),
    "gpt2_124m_B4_T256": (dict(n_layer=12, n_head=12, n_embd=768, block_size=256, bias=True), 4, 6, 2),
}
GPT2_124M_T1024 = dict(n_layer=12, n_head=12, n_embd=768, block_size=1024, bias=True)
CUDA_SHAPES = {  # bf16-mixed, compiled; warmup covers compilation
    f"gpt2_124m_B{b}_T1024": (GPT2_124M_T1024, b, 30, 10) for b in (16, 32, 64)
}
OPTIM = dict(learning_rate=1e-3, min_lr=1e-4, warmup_steps=10, weight_decay=0.1, beta1=0.9, beta2=0.99, eps=1e-8)
LOG_EVERY = 10  # steps between loss reads, on both sides (Lightning: log_every_n_steps)


@dataclass
class Run:
    """What one timed run measured."""

    seconds_per_step: float
    peak_memory_gb: float = float("nan")


@dataclass
class Setup:
    device: str  # "cpu" or "cuda"
    precision: str  # Lightning's name: "32-true" or "bf16-mixed"
    compile: bool


def write_shards(directory: Path, tokens: np.ndarray, tokenizer: Tokenizer) -> None:
    """The token array as shards (10% validation), as every data module writes them."""
    writer = ShardWriter(directory, tokenizer, shard_size=len(tokens), val_tokens=len(tokens) // 10, settings={})
    writer.resume()
    writer.add(0, tokens)
    writer.finish()


class ShardDataModule(TokenDataModule):
    """The base data module over shards already written by :func:`write_shards`."""

    def __init__(self, tokenizer: Tokenizer, **kwargs) -> None:
        super().__init__(**kwargs)
        self._tokenizer = tokenizer  # already made: no tokenizer file to load

    def prepare_data(self) -> None:
        pass


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def _reset_peak(device: str) -> None:
    if device == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


def _peak_gb(device: str) -> float:
    return torch.cuda.max_memory_allocated() / 2**30 if device == "cuda" else float("nan")


class StepTimer(L.Callback):
    def __init__(self, warmup: int, device: str) -> None:
        self.warmup, self.device, self.t0, self.t1 = warmup, device, None, None

    def on_train_batch_start(self, trainer, *_):
        if trainer.global_step == self.warmup and self.t0 is None:
            _sync(self.device)
            self.t0 = time.perf_counter()

    def on_train_end(self, trainer, *_):
        _sync(self.device)
        self.t1 = time.perf_counter()


def lightning_run(data_dir, tokenizer, shape, batch_size, steps, warmup, seed, setup: Setup) -> Run:
    torch.manual_seed(seed)
    _reset_peak(setup.device)
    module = GPTModule(vocab_size=tokenizer.vocab_size, lr_decay_steps=steps, compile=setup.compile, **shape, **OPTIM)
    data = ShardDataModule(tokenizer, data_dir=data_dir, block_size=shape["block_size"], batch_size=batch_size,
                           seed=seed)
    timer = StepTimer(warmup, setup.device)
    with tempfile.TemporaryDirectory() as tmp:
        trainer = L.Trainer(
            accelerator=setup.device,
            devices=1,
            precision=setup.precision,
            max_steps=steps,
            limit_val_batches=0,
            gradient_clip_val=1.0,
            log_every_n_steps=LOG_EVERY,
            logger=L.pytorch.loggers.TensorBoardLogger(tmp, name="bench"),
            callbacks=[
                timer,
                L.pytorch.callbacks.TQDMProgressBar(refresh_rate=10),
                L.pytorch.callbacks.LearningRateMonitor("step"),
                TokenThroughput(),
            ],
            enable_checkpointing=False,
            enable_model_summary=False,
            enable_progress_bar=True,
        )
        trainer.fit(module, data)
    return Run((timer.t1 - timer.t0) / (steps - warmup), _peak_gb(setup.device))


def bare_run(data_dir, tokenizer, shape, batch_size, steps, warmup, seed, setup: Setup, loss_in_graph=True) -> Run:
    torch.manual_seed(seed)
    _reset_peak(setup.device)
    device = torch.device(setup.device)
    module = GPTModule(vocab_size=tokenizer.vocab_size, **shape)  # the same init path, used bare
    module.configure_model()
    model: GPT = module.model.to(device).train()
    optimizer = torch.optim.AdamW(
        param_groups(model, OPTIM["weight_decay"]), lr=OPTIM["learning_rate"], fused=True,
        betas=(OPTIM["beta1"], OPTIM["beta2"]), eps=OPTIM["eps"],
    )
    if setup.compile:
        model.compile()
    autocast = torch.autocast(setup.device, dtype=torch.bfloat16, enabled=setup.precision == "bf16-mixed")
    shards = ShardSet.open(Path(data_dir) / "shards", "train", tokenizer)
    windows = ShuffledWindows(shards, shape["block_size"], batch_size, seed)
    for step in range(steps):
        if step == warmup:
            _sync(setup.device)
            t0 = time.perf_counter()
        lr = warmup_cosine_lr(step, OPTIM["learning_rate"], OPTIM["min_lr"], OPTIM["warmup_steps"], steps)
        for group in optimizer.param_groups:
            group["lr"] = lr
        batch = windows.batch(step)
        if setup.device == "cuda":
            batch = batch.pin_memory()
        x, y = split_windows(batch.to(device, non_blocking=True))
        with autocast:
            if loss_in_graph:
                loss = model(x, y)
            else:  # before: compiled logits, then an eager fp32 cross-entropy over (B, T, V)
                logits = model(x)
                loss = F.cross_entropy(logits.float().reshape(-1, logits.size(-1)), y.reshape(-1))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        if (step + 1) % LOG_EVERY == 0:
            loss.item()  # what the logging steps read, on both sides
    _sync(setup.device)
    return Run((time.perf_counter() - t0) / (steps - warmup), _peak_gb(setup.device))


def peak_flops(device: str) -> Optional[float]:
    """Dense bf16 peak FLOP/s of the GPU (Lightning's table: H100/H200 SXM 989e12, A100 312e12); None on CPUs."""
    if device != "cuda":
        return None
    return get_available_flops(torch.device("cuda"), torch.bfloat16)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    default_text = Path(__file__).resolve().parents[2] / "shared/data/tinyshakespeare.txt"
    parser.add_argument("--text", default=str(default_text), help="Tiny Shakespeare (for the char shape)")
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--only", help="run one shape (see SHAPES and CUDA_SHAPES)")
    parser.add_argument("--steps", type=int, help="steps per run (default per shape)")
    parser.add_argument("--warmup", type=int, help="untimed steps at the start of each run")
    parser.add_argument("--rounds", type=int, help="alternating runs per side; the best counts (CPU 4, CUDA 1)")
    parser.add_argument("--no-loss-outside", action="store_true", help="CUDA: skip the loss-outside-the-graph run")
    args = parser.parse_args()
    cuda = args.device == "cuda"
    if cuda and not torch.cuda.is_available():
        sys.exit("error: --device cuda but torch sees no CUDA device")
    setup = Setup("cuda", "bf16-mixed", True) if cuda else Setup("cpu", "32-true", False)
    if cuda:
        torch.set_float32_matmul_precision("high")
    rounds = args.rounds or (1 if cuda else 4)
    device_name = torch.cuda.get_device_name() if cuda else f"CPU, {os.cpu_count()} cores"
    print(f"torch {torch.__version__}, lightning {L.__version__}, {device_name}, precision {setup.precision}, "
          f"compile {setup.compile}")
    peak = peak_flops(args.device)
    results = []
    for name, (shape, batch_size, steps, warmup) in (CUDA_SHAPES if cuda else SHAPES).items():
        if args.only and name != args.only:
            continue
        steps, warmup = args.steps or steps, args.warmup if args.warmup is not None else warmup
        if name.startswith("shakespeare"):
            text = Path(args.text).read_text(encoding="utf-8")
            tokenizer = CharTokenizer.from_text(text)
            tokens = tokenizer.encode_to_array(text)
        else:  # GPT-2 vocabulary; the token values do not change the cost of a step
            tokenizer = CharTokenizer([chr(0x100 + i) for i in range(50257)])
            tokens = np.random.default_rng(0).integers(0, 50257, size=4_000_000).astype(np.uint16)
        data_dir = tempfile.mkdtemp(prefix="bench-")
        write_shards(Path(data_dir) / "shards", tokens, tokenizer)
        run_args = (data_dir, tokenizer, shape, batch_size, steps, warmup, 1337, setup)
        bare: list[Run] = []
        lit: list[Run] = []
        for r in range(rounds):
            # alternate which side goes first: a run is a little slower after another in the same process
            for side in (("bare", "lightning") if r % 2 == 0 else ("lightning", "bare")):
                (bare if side == "bare" else lit).append((bare_run if side == "bare" else lightning_run)(*run_args))
            print(f"{name} round {r}: bare {bare[-1].seconds_per_step * 1e3:.2f} ms/it, "
                  f"lightning {lit[-1].seconds_per_step * 1e3:.2f} ms/it", flush=True)
        outside = bare_run(*run_args, loss_in_graph=False) if cuda and not args.no_loss_outside else None
        shutil.rmtree(data_dir)
        tokens_per_step = batch_size * shape["block_size"]
        flops_per_token = GPT(GPTConfig(vocab_size=tokenizer.vocab_size, **shape)).flops_per_token()
        b = min(bare, key=lambda run: run.seconds_per_step)
        li = min(lit, key=lambda run: run.seconds_per_step)
        results.append((name, tokens_per_step, flops_per_token, b, li, outside))
    print()
    print(f"{'shape':24s} {'side':22s} {'ms/step':>9s} {'tokens/s':>11s} {'MFU':>6s} {'peak GB':>8s}")
    for name, tokens_per_step, flops_per_token, b, li, outside in results:
        sides = [("bare", b), ("lightning", li)] + ([("bare_loss_outside_graph", outside)] if outside else [])
        for side, run in sides:
            tps = tokens_per_step / run.seconds_per_step
            mfu = tps * flops_per_token / peak if peak else float("nan")
            print(f"{name:24s} {side:22s} {run.seconds_per_step * 1e3:9.2f} {tps:11.0f} {mfu:6.1%} "
                  f"{run.peak_memory_gb:8.2f}")
        print(f"{name:24s} {'lightning / bare':22s} {b.seconds_per_step / li.seconds_per_step:9.3f}")
    print()
    for name, tokens_per_step, flops_per_token, b, li, outside in results:
        context = dict(device=device_name, precision=setup.precision, compile=setup.compile)
        sides = [("bare", b), ("lightning", li)] + ([("bare_loss_outside_graph", outside)] if outside else [])
        for side, run in sides:
            case = f"{name}/{side}"
            tps = tokens_per_step / run.seconds_per_step
            emit("train_throughput", case, "ms_per_step", round(run.seconds_per_step * 1e3, 3), **context)
            emit("train_throughput", case, "tokens_per_s", round(tps, 1), **context)
            if peak:
                emit("train_throughput", case, "mfu", round(tps * flops_per_token / peak, 4), **context)
            if run.peak_memory_gb == run.peak_memory_gb:  # not NaN
                emit("train_throughput", case, "peak_memory_gb", round(run.peak_memory_gb, 3), **context)
        emit("train_throughput", name, "ratio_lightning_over_bare",
             round(b.seconds_per_step / li.seconds_per_step, 4), **context)


if __name__ == "__main__":
    main()
