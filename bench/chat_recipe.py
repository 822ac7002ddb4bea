"""The laptop chat recipe end to end: configs/discord_cpu.yaml as shipped on Tiny Shakespeare's Discord export.

Makes the export, prepares the data (BPE + shards), trains, then prints: the minutes (preparation and training),
training tokens/s, the validation loss per token over the whole validation split and per character (the loss
times the split's tokens over the characters they decode to), and a sample conversation from ``main.py chat``.
Everything runs in a temporary directory (``--keep DIR`` keeps it).

    python bench/chat_recipe.py                      # ~10 minutes on 2 CPU cores
    python bench/chat_recipe.py --text ../shared/data/tinyshakespeare.txt --keep /tmp/chat_recipe
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.report import emit  # noqa: E402
from data_modules.shakespeare_discord import convert  # noqa: E402
from data_modules.shards import open_tokens, read_header, read_manifest  # noqa: E402
from lit_gpt_mini.inference.chat import chat  # noqa: E402
from lit_gpt_mini.checkpoint import load_model  # noqa: E402
from lit_gpt_mini.cli.main import main as cli_main  # noqa: E402

CONFIG = ROOT / "configs" / "discord_cpu.yaml"
TURNS = "Good morrow, sweet lady.\nWhat news from Mantua?\nI will be gone tonight.\n"


def chars_per_token(shards: Path, tokenizer) -> tuple[int, int]:
    """(tokens, characters) of the validation split: the end-of-text tokens decode to no character."""
    manifest = read_manifest(shards)
    tokens = chars = 0
    for entry in manifest["shards"]:
        if entry["split"] != "val":
            continue
        path = shards / entry["file"]
        ids = open_tokens(path, read_header(path)).tolist()
        tokens += len(ids)
        chars += len(tokenizer.decode([i for i in ids if i != tokenizer.eot_id]))
    return tokens, chars


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--text", default=str(ROOT.parent / "shared" / "data" / "tinyshakespeare.txt"),
                        help="Tiny Shakespeare (a local copy)")
    parser.add_argument("--keep", default=None, help="work in this directory and keep it")
    parser.add_argument("--override", action="append", default=[],
                        help="an extra `main.py fit` argument, e.g. --override=--model.block=modern (repeatable)")
    parser.add_argument("--threads", type=int, help="torch threads (default: torch's)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    load = os.getloadavg()[0]
    with contextlib.ExitStack() as stack:
        work = Path(args.keep) if args.keep else Path(stack.enter_context(tempfile.TemporaryDirectory()))
        work.mkdir(parents=True, exist_ok=True)
        os.chdir(work)  # the config's relative paths (data/, out/) land here
        convert("data/shakespeare_discord/export.json", path=args.text)
        start = time.perf_counter()
        cli_main(["prepare", "--config", str(CONFIG)])
        prepared = time.perf_counter()
        cli = cli_main(["fit", "--config", str(CONFIG), *args.override])
        trained = time.perf_counter()
        steps = cli.trainer.global_step
        tokens_seen = steps * cli.datamodule.batch_size * cli.datamodule.block_size
        ckpt = work / "out/discord_cpu/checkpoints/last.ckpt"
        validated = cli_main(["validate", "--config", str(CONFIG), *args.override, "--ckpt_path", str(ckpt),
                              "--trainer.limit_val_batches", "1.0"])
        val_loss = validated.trainer.callback_metrics["val/loss"].item()
        tokens, chars = chars_per_token(cli.datamodule.shard_dir, load_model(ckpt).tokenizer)
        sample = io.StringIO()
        stdin = sys.stdin
        sys.stdin = io.StringIO(TURNS)
        try:
            with contextlib.redirect_stdout(sample):
                chat(str(ckpt), user="ROMEO", bot="JULIET", max_new_tokens=80)
        finally:
            sys.stdin = stdin
    load_end = os.getloadavg()[0]
    minutes = (trained - start) / 60
    rate = tokens_seen / (trained - prepared)
    per_char = val_loss * tokens / chars
    print(f"\nload average {load:.2f} at the start, {load_end:.2f} at the end")
    print(f"preparation {prepared - start:.1f} s, training {trained - prepared:.1f} s ({steps} steps, "
          f"{tokens_seen:,} tokens, {rate:,.0f} tokens/s): {minutes:.2f} minutes")
    print(f"validation loss {val_loss:.4f} per token, {per_char:.4f} per character ({tokens:,} tokens, "
          f"{chars:,} characters)")
    print("\n" + sample.getvalue())
    context = {"load_start": round(load, 2), "load_end": round(load_end, 2)}
    emit("chat_recipe", "discord_cpu", "minutes", round(minutes, 2), **context)
    emit("chat_recipe", "discord_cpu", "train_tokens_per_s", round(rate, 1), **context)
    emit("chat_recipe", "discord_cpu", "val_loss_per_token", round(val_loss, 4), **context)
    emit("chat_recipe", "discord_cpu", "val_loss_per_char", round(per_char, 4), **context)


if __name__ == "__main__":
    main()
