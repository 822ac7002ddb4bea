"""Training throughput: this project's LightningModule + Trainer + data module vs a bare PyTorch loop.

Both sides train the same model shape on the same batches (the base data module's shuffled windows over token
shards) with the
same AdamW groups, gradient clipping and per-step LR schedule. The Lightning side runs with the callbacks of
the configs (TensorBoard logger, LR monitor, throughput monitor, progress bar) but no validation. Each side runs
``--rounds`` times, alternating which goes first, and the best steady-state time (after warmup steps) counts:
on a shared 2-core machine single runs vary by several percent.

    python bench/train_throughput.py                       # both shapes below
    python bench/train_throughput.py --only shakespeare_char_cpu --steps 300
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
import warnings
from pathlib import Path

import lightning as L
import numpy as np
import torch
from torch.nn import functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from data_modules.base import ShuffledWindows, TokenDataModule  # noqa: E402
from data_modules.shards import ShardSet, ShardWriter  # noqa: E402
from lit_gpt_mini.callbacks import TokenThroughput  # noqa: E402
from lit_gpt_mini.lit_module import GPTModule  # noqa: E402
from lit_gpt_mini.model import GPT  # noqa: E402
from lit_gpt_mini.optim import param_groups, warmup_cosine_lr  # noqa: E402
from lit_gpt_mini.tokenizers import CharTokenizer, Tokenizer  # noqa: E402

warnings.filterwarnings("ignore")

SHAPES = {
    # name: model kwargs, batch size, default steps, default warmup steps
    "shakespeare_char_cpu": (dict(n_layer=4, n_head=4, n_embd=128, block_size=64, bias=False), 12, 500, 50),
    "gpt2_124m_B4_T256": (dict(n_layer=12, n_head=12, n_embd=768, block_size=256, bias=True), 4, 6, 2),
}
OPTIM = dict(learning_rate=1e-3, min_lr=1e-4, warmup_steps=10, weight_decay=0.1, beta1=0.9, beta2=0.99, eps=1e-8)


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
        self._tok = tokenizer

    def load_tokenizer(self) -> Tokenizer:
        return self._tok

    def prepare_data(self) -> None:
        pass


class StepTimer(L.Callback):
    def __init__(self, warmup: int) -> None:
        self.warmup, self.t0, self.t1 = warmup, None, None

    def on_train_batch_start(self, trainer, *_):
        if trainer.global_step == self.warmup:
            self.t0 = time.perf_counter()

    def on_train_batch_end(self, trainer, *_):
        self.t1 = time.perf_counter()


def lightning_run(data_dir, tokenizer, shape, batch_size, steps, warmup, seed) -> float:
    torch.manual_seed(seed)
    module = GPTModule(vocab_size=tokenizer.vocab_size, lr_decay_steps=steps, **shape, **OPTIM)
    data = ShardDataModule(tokenizer, data_dir=data_dir, block_size=shape["block_size"], batch_size=batch_size,
                           seed=seed)
    timer = StepTimer(warmup)
    with tempfile.TemporaryDirectory() as tmp:
        trainer = L.Trainer(
            accelerator="cpu",
            devices=1,
            precision="32-true",
            max_steps=steps,
            limit_val_batches=0,
            gradient_clip_val=1.0,
            log_every_n_steps=10,
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
    return (timer.t1 - timer.t0) / (steps - warmup)


def bare_run(data_dir, tokenizer, shape, batch_size, steps, warmup, seed) -> float:
    torch.manual_seed(seed)
    module = GPTModule(vocab_size=tokenizer.vocab_size, **shape)  # the same init path, used bare
    module.configure_model()
    model: GPT = module.model.train()
    optimizer = torch.optim.AdamW(
        param_groups(model, OPTIM["weight_decay"]), lr=OPTIM["learning_rate"], fused=True,
        betas=(OPTIM["beta1"], OPTIM["beta2"]), eps=OPTIM["eps"],
    )
    shards = ShardSet.open(Path(data_dir) / "shards", "train", tokenizer)
    windows = ShuffledWindows(shards, shape["block_size"], batch_size, seed)
    for step in range(steps):
        if step == warmup:
            t0 = time.perf_counter()
        lr = warmup_cosine_lr(step, OPTIM["learning_rate"], OPTIM["min_lr"], OPTIM["warmup_steps"], steps)
        for group in optimizer.param_groups:
            group["lr"] = lr
        x, y = windows.batch(step)
        logits = model(x)
        loss = F.cross_entropy(logits.reshape(-1, logits.size(-1)), y.reshape(-1))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        loss.item()  # Lightning reads the loss every step for the progress bar: do the same sync here
    return (time.perf_counter() - t0) / (steps - warmup)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    default_text = Path(__file__).resolve().parents[2] / "shared/data/tinyshakespeare.txt"
    parser.add_argument("--text", default=str(default_text), help="Tiny Shakespeare (for the char shape)")
    parser.add_argument("--only", choices=sorted(SHAPES), help="run one shape")
    parser.add_argument("--steps", type=int, help="steps per run (default per shape)")
    parser.add_argument("--warmup", type=int, help="untimed steps at the start of each run")
    parser.add_argument("--rounds", type=int, default=4, help="alternating runs per side; the best counts")
    args = parser.parse_args()
    print(f"torch {torch.__version__}, lightning {L.__version__}, {torch.get_num_threads()} threads, "
          f"{os.cpu_count()} cpus")
    results = []
    for name, (shape, batch_size, steps, warmup) in SHAPES.items():
        if args.only and name != args.only:
            continue
        steps, warmup = args.steps or steps, args.warmup if args.warmup is not None else warmup
        if name.startswith("shakespeare"):
            text = Path(args.text).read_text(encoding="utf-8")
            tokenizer = CharTokenizer.from_text(text)
            tokens = tokenizer.encode_to_array(text)
        else:  # GPT-2 vocabulary; the token values do not change the cost of a step
            tokenizer = CharTokenizer([chr(0x100 + i) for i in range(50257)])
            tokens = np.random.default_rng(0).integers(0, 50257, size=2_000_000).astype(np.uint16)
        data_dir = tempfile.mkdtemp(prefix="bench-")
        write_shards(Path(data_dir) / "shards", tokens, tokenizer)
        bare, lit = [], []
        for r in range(args.rounds):
            # alternate which side goes first: a run is a little slower after another in the same process
            for side in (("bare", "lightning") if r % 2 == 0 else ("lightning", "bare")):
                if side == "bare":
                    bare.append(bare_run(data_dir, tokenizer, shape, batch_size, steps, warmup, seed=1337))
                else:
                    lit.append(lightning_run(data_dir, tokenizer, shape, batch_size, steps, warmup, seed=1337))
            print(f"{name} round {r}: bare {bare[-1] * 1e3:.2f} ms/it, lightning {lit[-1] * 1e3:.2f} ms/it",
                  flush=True)
        shutil.rmtree(data_dir)
        tokens_per_step = batch_size * shape["block_size"]
        b, li = min(bare), min(lit)
        results.append((name, tokens_per_step / b, tokens_per_step / li, b / li, b * 1e3, li * 1e3))
    print()
    print(f"{'shape':24s} {'bare tok/s':>11s} {'lightning tok/s':>16s} {'ratio':>7s} {'bare ms/it':>11s} "
          f"{'lightning ms/it':>16s}")
    for name, bare_tps, lit_tps, ratio, bare_ms, lit_ms in results:
        print(f"{name:24s} {bare_tps:11.1f} {lit_tps:16.1f} {ratio:7.3f} {bare_ms:11.2f} {lit_ms:16.2f}")


if __name__ == "__main__":
    main()
