"""``python main.py prepare --config <yaml>``: prepare a training config's data (download, tokenize, write shards)
and nothing else.

Training prepares the data itself (one process per node, the others waiting), but a preparation of hours would
outlast DDP's 30-minute barrier timeout, and nodes sharing a filesystem should not prepare it twice: prepare
first, on a machine without the training hardware if need be, then train (the training's preparation then finds
the shards complete and returns).
"""

from __future__ import annotations

from typing import Any, Optional, Union

import lightning as L

from lit_gpt_mini.cli.commands import CONFIG_KEYS
from lit_gpt_mini.log import get_logger

log = get_logger(__name__)

def prepare(data: L.LightningDataModule) -> L.LightningDataModule:
    """Run ``data.prepare_data()``: the tokenizer and the shards, resumed where an earlier run stopped."""
    data.prepare_data()
    where = getattr(data, "shard_dir", None)
    tokenizer = getattr(data, "tokenizer_path", None)
    log.info(f"{type(data).__name__}: data ready" + (f" in {where}" if where else "")
             + (f" (tokenizer: {tokenizer})" if tokenizer else ""))
    return data


def main(args: Optional[list[str]] = None) -> L.LightningDataModule:
    """``main.py prepare``: a config's ``data`` section through jsonargparse, as LightningCLI reads it."""
    from jsonargparse import ActionConfigFile, ArgumentParser

    parser = ArgumentParser(exit_on_error=False, allow_abbrev=False, prog="main.py prepare",
                            description=__doc__)
    parser.add_argument("--config", action=ActionConfigFile, help="a training config; only its data section is used")
    parser.add_subclass_arguments(L.LightningDataModule, "data", required=True)
    # The rest of a training config is accepted and ignored.
    for section in (key for key in CONFIG_KEYS if key not in ("config", "data", "seed_everything")):
        parser.add_argument(f"--{section}", type=Optional[Any], default=None)
    parser.add_argument("--seed_everything", type=Union[bool, int], default=True)
    return prepare(parser.instantiate_classes(parser.parse_args(args)).data)
