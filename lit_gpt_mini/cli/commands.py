"""The commands of ``main.py``: their names, their lines in ``main.py --help``, and the keys of a training config."""

from __future__ import annotations

# Every command of main.py, with the line `python main.py --help` shows for it.
COMMANDS = {
    "fit": "Train a model from a config (--config), or resume a run (--ckpt_path).",
    "validate": "Compute a checkpoint's validation loss on a config's data.",
    "test": "Compute a checkpoint's held-out test loss on a config's data, and HellaSwag accuracy (--data "
            "HellaSwagDataModule, or a GPT-2 recipe's hellaswag section).",
    "eval": "The same as test --data HellaSwagDataModule: HellaSwag accuracy of a checkpoint.",
    "generate": "Sample text from a checkpoint.",
    "chat": "Talk to a checkpoint in the terminal: turns for a conversation model, else a continuation loop.",
    "serve": "Serve a checkpoint over HTTP: OpenAI-compatible completions and chat, and a playground page.",
    "export": "Write a checkpoint as a plain .pth or a Hugging Face GPT-2 directory.",
    "prepare": "Prepare a config's data (download, tokenize, write shards) without training.",
}
TRAINER_COMMANDS = ("fit", "validate", "test")  # run by LightningCLI (lit_gpt_mini.cli.main)
# What `eval ARGS` runs: test with HellaSwag's data module (one scoring path).
EVAL_ALIAS = ("test", "--data", "HellaSwagDataModule")
# Data modules by short name (--data HellaSwagDataModule), as class paths: the command line imports none of them
# until one is used (data_modules builds on lit_gpt_mini, not the reverse).
DATA_MODULES = {
    "HellaSwagDataModule": "data_modules.hellaswag.HellaSwagDataModule",
    "ShakespeareDataModule": "data_modules.shakespeare.ShakespeareDataModule",
    "WikipediaDataModule": "data_modules.wikipedia.WikipediaDataModule",
    "DiscordDataModule": "data_modules.discord.DiscordDataModule",
    "RedditDataModule": "data_modules.reddit.RedditDataModule",
    "FineWebDataModule": "data_modules.fineweb.FineWebDataModule",
}
# Every key at the top of a trainer command's config (a config file for one serves `prepare` too). The last four
# are the sections of the callbacks a recipe tunes (lit_gpt_mini.cli.main.SECTIONS).
CONFIG_KEYS = ("trainer", "model", "data", "ckpt_path", "seed_everything", "config",
               "float32_matmul_precision", "checkpoint", "sample", "accumulation", "hellaswag")


def usage() -> str:
    """What ``python main.py --help`` prints: every command in one line, and where each one's options are."""
    width = max(map(len, COMMANDS))
    lines = ["usage: python main.py <command> [options]", "", "commands:"]
    lines += [f"  {name:<{width}}  {description}" for name, description in COMMANDS.items()]
    lines += ["", "python main.py <command> --help shows a command's options."]
    return "\n".join(lines)
