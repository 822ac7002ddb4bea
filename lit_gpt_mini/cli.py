"""The command line: LightningCLI for ``fit``/``validate``/``test``/``predict``, plus ``generate``.

``python main.py fit --config configs/shakespeare_char_cpu.yaml`` reads the YAML into the LightningModule,
the data module and the Trainer (every key is also a command-line flag), links the data's vocabulary size
into the model, and runs. Errors in the user's input end in one line on stderr, not a traceback.
"""

from __future__ import annotations

import sys
import warnings
from typing import Any, Literal, Optional, Union

import torch

from lightning.pytorch.cli import LightningCLI

from data_modules.base import TokenDataModule
from lit_gpt_mini.errors import UserError
from lit_gpt_mini.lit_module import GPTModule


class GPTCLI(LightningCLI):
    """LightningCLI over any :class:`GPTModule` and any :class:`TokenDataModule`, chosen by ``class_path``."""

    def add_arguments_to_parser(self, parser) -> None:
        # The vocabulary is a property of the data (its tokenizer); the model's embedding follows it.
        parser.link_arguments("data.vocab_size", "model.init_args.vocab_size", apply_on="instantiate")
        parser.add_argument(
            "--float32_matmul_precision",
            type=MatmulPrecision,
            default="high",
            help="torch.set_float32_matmul_precision on CUDA: 'high' lets fp32 matmuls use TF32 tensor cores "
            "(what 32-true runs and fp32 parts of mixed precision run on); 'highest' keeps full fp32.",
        )

    def before_instantiate_classes(self) -> None:
        config = self.config[self.subcommand] if self.subcommand else self.config
        set_matmul_precision(config.get("float32_matmul_precision", "high"))


MatmulPrecision = Literal["highest", "high", "medium"]


def set_matmul_precision(precision: MatmulPrecision) -> None:
    """Apply ``torch.set_float32_matmul_precision`` where it matters (CUDA); CPUs keep full fp32."""
    if torch.cuda.is_available():
        torch.set_float32_matmul_precision(precision)


# SequentialWindows shards itself across DataLoader workers, so Lightning's warning about a sized
# IterableDataset under several workers does not apply; the pytree one is Lightning's own, with newer torch.
warnings.filterwarnings("ignore", message=r".*`IterableDataset` has `__len__` defined.*")
warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\)` is deprecated.*")


def main(args: Optional[list[str]] = None) -> Optional[GPTCLI]:
    """Entry point of ``main.py``; ``args`` default to the command line. Returns the CLI (None for generate)."""
    argv = sys.argv[1:] if args is None else args
    try:
        if argv and argv[0] == "generate":
            from lit_gpt_mini.generate import main as generate_main

            generate_main(argv[1:])
            return None
        if argv and argv[0] == "export":
            from lit_gpt_mini.export import main as export_main

            export_main(argv[1:])
            return None
        if argv and argv[0] == "prepare":
            prepare(argv[1:])
            return None
        return GPTCLI(
            GPTModule,
            TokenDataModule,
            subclass_mode_model=True,
            subclass_mode_data=True,
            save_config_kwargs={"overwrite": True},
            args=args,
        )
    except Exception as e:
        user_error = _find_user_error(e)
        if user_error is None:
            raise
        sys.exit(f"error: {user_error}")


def prepare(args: list[str]) -> TokenDataModule:
    """``python main.py prepare --config <yaml>``: run the config's ``data.prepare_data()`` (download, tokenize,
    write shards) and nothing else, on a machine without the training hardware if need be.

    Training prepares the data itself (on one process per node, the others waiting), but a preparation of hours
    would outlast DDP's 30-minute barrier timeout, and nodes sharing a filesystem should not prepare it twice:
    prepare first, then train (the training's preparation then finds the shards complete and returns).
    """
    from jsonargparse import ActionConfigFile, ArgumentParser

    parser = ArgumentParser(
        prog="main.py prepare",
        description="Prepare a config's data (download, tokenize, write shards) without training.",
    )
    parser.add_argument("--config", action=ActionConfigFile, help="a training config; only its data section is used")
    parser.add_subclass_arguments(TokenDataModule, "data", required=True)
    # The rest of a training config is accepted and ignored.
    for section in ("trainer", "model", "optimizer", "lr_scheduler", "ckpt_path", "float32_matmul_precision"):
        parser.add_argument(f"--{section}", type=Optional[Any], default=None)
    parser.add_argument("--seed_everything", type=Union[bool, int], default=True)
    config = parser.parse_args(args)
    data = parser.instantiate_classes(config).data
    data.prepare_data()
    print(f"{type(data).__name__}: data ready in {data.shard_dir}", file=sys.stderr)
    return data


def _find_user_error(exc: Optional[BaseException]) -> Optional[UserError]:
    # jsonargparse re-raises errors from a class's __init__ as its own ValueError, chained to the original.
    seen = set()
    while exc is not None and id(exc) not in seen:
        if isinstance(exc, UserError):
            return exc
        seen.add(id(exc))
        exc = exc.__cause__ or exc.__context__
    return None
