"""Training throughput: this project's LightningModule + Trainer + data module vs a bare PyTorch loop.

Both sides train the same model shape on the same batches (the base data module's shuffled windows over token
shards, one contiguous window per batch sliced on the device) with the same AdamW groups, gradient clipping
and per-step LR schedule, and read the loss back only every ``LOG_EVERY`` steps. The Lightning side runs with
the callbacks of the configs (TensorBoard logger, LR monitor, throughput monitor, progress bar) but no
validation. Each side runs ``--rounds`` times, alternating which goes first, and the best steady-state time
(after warmup steps) counts: on a shared 2-core machine single runs vary by several percent.

    python bench/train_throughput.py                       # the CPU shapes
    python bench/train_throughput.py --only shakespeare_char_cpu --steps 300
    python bench/train_throughput.py --device cuda         # GPT-2 124M, T=1024, bf16-mixed, compiled, B=64

On CUDA it measures one static shape (``--batch-size``, 64 by default, halved until it fits), so that the model
compiles once: the bare loop autocasts as Lightning does (``cache_enabled=False``), and the Lightning side reuses
its graphs. It reports MFU (against the card's dense bf16 peak, :mod:`lit_gpt_mini.flops`) and peak memory
(``torch.cuda.max_memory_allocated``), and prints each side's figures as soon as they are measured.
``--loss-outside`` adds a bare run with the loss outside the compiled graph (compiled logits, eager
cross-entropy: one more compilation) to show what computing the loss inside the model saves.
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
from torch.nn import functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.report import emit  # noqa: E402
from data_modules.base import TokenDataModule  # noqa: E402
from data_modules.windows import ShuffledWindows, split_windows  # noqa: E402
from data_modules.shards import ShardSet, ShardWriter  # noqa: E402
from lit_gpt_mini.callbacks import TokenThroughput  # noqa: E402
from lit_gpt_mini.flops import peak_flops as device_peak_flops  # noqa: E402
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
CUDA_STEPS, CUDA_WARMUP = 30, 10  # bf16-mixed, compiled; the warmup steps cover compilation
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
    """The token array as shards (10% validation, 5% test), as every data module writes them."""
    writer = ShardWriter(directory, tokenizer, shard_size=len(tokens), val_tokens=len(tokens) // 10, settings={},
                         test_tokens=len(tokens) // 20)
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
    data = ShardDataModule(tokenizer, data_dir=data_dir, batch_size=batch_size,
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
    # as Lightning's bf16-mixed autocasts (no weight cache): the compiled graphs are then the same on both sides
    autocast = torch.autocast(setup.device, dtype=torch.bfloat16, enabled=setup.precision == "bf16-mixed",
                              cache_enabled=False)
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
    """Dense bf16 peak FLOP/s of the GPU (lit_gpt_mini.flops: H100/H200 SXM 989e12, A100 312e12); None on CPUs."""
    if device != "cuda":
        return None
    return device_peak_flops(torch.device("cuda"), torch.bfloat16)


def report(name: str, side: str, run: Run, tokens_per_step: int, flops_per_token: int, peak: Optional[float],
           context: dict) -> None:
    """One side's row and its JSON lines, printed as soon as it is measured."""
    tps = tokens_per_step / run.seconds_per_step
    mfu = tps * flops_per_token / peak if peak else float("nan")
    print(f"{name:24s} {side:24s} {run.seconds_per_step * 1e3:9.2f} ms/step {tps:11.0f} tok/s  MFU {mfu:6.1%}  "
          f"peak {run.peak_memory_gb:6.2f} GB", flush=True)
    case = f"{name}/{side}"
    emit("train_throughput", case, "ms_per_step", round(run.seconds_per_step * 1e3, 3), **context)
    emit("train_throughput", case, "tokens_per_s", round(tps, 1), **context)
    if peak:
        emit("train_throughput", case, "mfu", round(mfu, 4), **context)
    if run.peak_memory_gb == run.peak_memory_gb:  # not NaN
        emit("train_throughput", case, "peak_memory_gb", round(run.peak_memory_gb, 3), **context)


def shape_data(name: str, shape: dict, text_path: str) -> tuple[str, Tokenizer]:
    """Shards for a shape in a temporary directory, and their tokenizer."""
    if name.startswith("shakespeare"):
        text = Path(text_path).read_text(encoding="utf-8")
        tokenizer = CharTokenizer.from_text(text)
        tokens = tokenizer.encode_to_array(text)
    else:  # GPT-2 vocabulary; the token values do not change the cost of a step
        tokenizer = CharTokenizer([chr(0x100 + i) for i in range(50257)])
        tokens = np.random.default_rng(0).integers(0, 50257, size=4_000_000).astype(np.uint16)
    data_dir = tempfile.mkdtemp(prefix="bench-")
    write_shards(Path(data_dir) / "shards", tokens, tokenizer)
    return data_dir, tokenizer


def cuda_main(args: argparse.Namespace, setup: Setup, context: dict) -> None:
    """GPT-2 124M at T=1024 and one static batch size (the largest of --batch-size, halved, that fits)."""
    peak = peak_flops("cuda")
    shape = GPT2_124M_T1024
    steps, warmup = args.steps or CUDA_STEPS, args.warmup if args.warmup is not None else CUDA_WARMUP
    data_dir, tokenizer = shape_data("gpt2", shape, args.text)
    flops_per_token = GPT(GPTConfig(vocab_size=tokenizer.vocab_size, **shape)).flops_per_token()
    batch_size = args.batch_size
    while True:
        try:
            run_args = (data_dir, tokenizer, shape, batch_size, steps, warmup, 1337, setup)
            bare = bare_run(*run_args)
            break
        except torch.cuda.OutOfMemoryError:
            if batch_size == 1:
                raise
            print(f"B={batch_size} does not fit: trying {batch_size // 2}", flush=True)
            batch_size //= 2
            torch.cuda.empty_cache()
    name = f"gpt2_124m_B{batch_size}_T1024"
    tokens_per_step = batch_size * shape["block_size"]
    report(name, "bare", bare, tokens_per_step, flops_per_token, peak, context)
    lit = lightning_run(*run_args)
    report(name, "lightning", lit, tokens_per_step, flops_per_token, peak, context)
    print(f"{name:24s} {'lightning / bare':24s} {bare.seconds_per_step / lit.seconds_per_step:9.3f}", flush=True)
    emit("train_throughput", name, "ratio_lightning_over_bare", round(bare.seconds_per_step / lit.seconds_per_step, 4),
         **context)
    if args.loss_outside:
        outside = bare_run(*run_args, loss_in_graph=False)
        report(name, "bare_loss_outside_graph", outside, tokens_per_step, flops_per_token, peak, context)
    shutil.rmtree(data_dir)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    default_text = Path(__file__).resolve().parents[2] / "shared/data/tinyshakespeare.txt"
    parser.add_argument("--text", default=str(default_text), help="Tiny Shakespeare (for the char shape)")
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--only", help="CPU: run one shape (see SHAPES)")
    parser.add_argument("--steps", type=int, help="steps per run (default per shape)")
    parser.add_argument("--warmup", type=int, help="untimed steps at the start of each run")
    parser.add_argument("--rounds", type=int, default=4, help="CPU: alternating runs per side; the best counts")
    parser.add_argument("--batch-size", type=int, default=64, help="CUDA: the micro-batch (halved until it fits)")
    parser.add_argument("--loss-outside", action="store_true", help="CUDA: also a run with the loss outside the graph")
    args = parser.parse_args()
    cuda = args.device == "cuda"
    if cuda and not torch.cuda.is_available():
        sys.exit("error: --device cuda but torch sees no CUDA device")
    setup = Setup("cuda", "bf16-mixed", True) if cuda else Setup("cpu", "32-true", False)
    device_name = torch.cuda.get_device_name() if cuda else f"CPU, {os.cpu_count()} cores"
    print(f"torch {torch.__version__}, lightning {L.__version__}, {device_name}, precision {setup.precision}, "
          f"compile {setup.compile}", flush=True)
    context = dict(device=device_name, precision=setup.precision, compile=setup.compile)
    if cuda:
        torch.set_float32_matmul_precision("high")
        cuda_main(args, setup, context)
        return
    for name, (shape, batch_size, steps, warmup) in SHAPES.items():
        if args.only and name != args.only:
            continue
        steps, warmup = args.steps or steps, args.warmup if args.warmup is not None else warmup
        data_dir, tokenizer = shape_data(name, shape, args.text)
        run_args = (data_dir, tokenizer, shape, batch_size, steps, warmup, 1337, setup)
        bare: list[Run] = []
        lit: list[Run] = []
        for r in range(args.rounds):
            # alternate which side goes first: a run is a little slower after another in the same process
            for side in (("bare", "lightning") if r % 2 == 0 else ("lightning", "bare")):
                (bare if side == "bare" else lit).append((bare_run if side == "bare" else lightning_run)(*run_args))
            print(f"{name} round {r}: bare {bare[-1].seconds_per_step * 1e3:.2f} ms/it, "
                  f"lightning {lit[-1].seconds_per_step * 1e3:.2f} ms/it", flush=True)
        shutil.rmtree(data_dir)
        tokens_per_step = batch_size * shape["block_size"]
        flops_per_token = GPT(GPTConfig(vocab_size=tokenizer.vocab_size, **shape)).flops_per_token()
        b = min(bare, key=lambda run: run.seconds_per_step)
        li = min(lit, key=lambda run: run.seconds_per_step)
        report(name, "bare", b, tokens_per_step, flops_per_token, None, context)
        report(name, "lightning", li, tokens_per_step, flops_per_token, None, context)
        print(f"{name:24s} {'lightning / bare':24s} {b.seconds_per_step / li.seconds_per_step:9.3f}", flush=True)
        emit("train_throughput", name, "ratio_lightning_over_bare",
             round(b.seconds_per_step / li.seconds_per_step, 4), **context)


if __name__ == "__main__":
    main()
