"""The command line: ``fit``/``validate``/``test`` through LightningCLI, plus ``generate``, ``chat``, ``serve``,
``export``, ``prepare``.

``python main.py fit --config configs/shakespeare_char_cpu.yaml`` reads the YAML into the LightningModule,
the data module and the Trainer (every key is also a command-line flag), and runs; the model learns the
data's vocabulary size in its ``setup``, after the data's preparation made the tokenizer.
``python main.py test --ckpt_path X`` without a config scores HellaSwag (GPT-2 vocabulary). Errors in the
user's input end in one line on stderr, not a traceback.
"""

from __future__ import annotations

import dataclasses
import difflib
import importlib
import inspect
import re
import sys
import typing
import warnings
from argparse import ArgumentError
from pathlib import Path
from typing import Any, Callable, Literal, Optional, Union

import lightning as L
import torch
import yaml
from lightning.fabric.utilities.exceptions import MisconfigurationException
from lightning.pytorch.callbacks import ProgressBar
from lightning.pytorch.cli import LightningCLI

from data_modules.base import TokenDataModule
from lit_gpt_mini.callbacks import FinalModelCheckpoint, GradientAccumulation, LossProgressBar, SampleText
from lit_gpt_mini.checkpoint import check_ckpt_path
from lit_gpt_mini.evals.callback import HellaSwagEval
from lit_gpt_mini.errors import ConfigError, ParseError, UserError
from lit_gpt_mini.lit_module import GPTModule
from lit_gpt_mini.log import get_logger, global_rank

log = get_logger(__name__)

# Every command of main.py, with the line `python main.py --help` shows for it.
COMMANDS = {
    "fit": "Train a model from a config (--config), or resume a run (--ckpt_path).",
    "validate": "Compute a checkpoint's validation loss on a config's data.",
    "test": "Compute a checkpoint's test loss on a config's data.",
    "eval": "Score a checkpoint on a benchmark (HellaSwag: GPT-2 vocabulary), on any number of devices.",
    "generate": "Sample text from a checkpoint.",
    "chat": "Talk to a checkpoint in the terminal: turns for a conversation model, else a continuation loop.",
    "serve": "Serve a checkpoint over HTTP: OpenAI-compatible completions and chat, and a playground page.",
    "export": "Write a checkpoint as a plain .pth or a Hugging Face GPT-2 directory.",
    "prepare": "Prepare a config's data (download, tokenize, write shards) without training.",
}
TRAINER_COMMANDS = ("fit", "validate", "test")  # run by LightningCLI; the others are plain functions
PLAIN_COMMANDS = ("generate", "chat", "serve", "export")  # lit_gpt_mini.<command>.<command>, through auto_cli

# What every recipe starts from (a config file states only what differs; --print_config shows it all).
RECIPE_DEFAULTS: dict[str, Any] = {
    "trainer.check_val_every_n_epoch": None,  # the training stream is endless: validate by step, not by epoch
    "trainer.log_every_n_steps": 10,
    "trainer.gradient_clip_val": 1.0,
    "trainer.logger": {"class_path": "lightning.pytorch.loggers.TensorBoardLogger",
                       "init_args": {"save_dir": "out", "name": "lit_gpt_mini"}},  # a recipe names its run
    "trainer.callbacks": [
        {"class_path": "lit_gpt_mini.callbacks.StopOnNonFinite"},  # a NaN/inf loss stops the run with an error
        {"class_path": "lit_gpt_mini.callbacks.RandomState"},  # random states in checkpoints: exact resume
        {"class_path": "lightning.pytorch.callbacks.LearningRateMonitor", "init_args": {"logging_interval": "step"}},
        {"class_path": "lit_gpt_mini.callbacks.TokenThroughput"},  # tokens/s, MFU
        {"class_path": "lit_gpt_mini.callbacks.RunTimeEstimate"},  # says early when a run will take very long
    ],
    "checkpoint.filename": "best-{step}",
    "checkpoint.monitor": "val/loss",
    "checkpoint.save_top_k": 1,
    "checkpoint.save_last": True,
}
SEED = 1337


class GPTCLI(LightningCLI):
    """LightningCLI over any :class:`GPTModule` and any :class:`TokenDataModule`, chosen by ``class_path``."""

    @staticmethod
    def subcommands() -> dict[str, set[str]]:
        # Lightning's, less predict: the model has no predict_step.
        return {name: skip for name, skip in LightningCLI.subcommands().items() if name in TRAINER_COMMANDS}

    def init_parser(self, **kwargs: Any):
        # A parse error raises (main() prints it as one line) instead of printing the whole usage and exiting;
        # a misspelt key (--trainer.max_step) is an error, not silently the key it begins (--trainer.max_steps).
        kwargs.setdefault("exit_on_error", False)
        kwargs.setdefault("allow_abbrev", False)
        return super().init_parser(**kwargs)

    def parse_arguments(self, parser, args) -> None:
        # main() always passes the arguments (read from sys.argv when run as a script): Lightning's warning
        # about being given both does not apply.
        self.config = parser.parse_args(args)

    def add_arguments_to_parser(self, parser) -> None:
        # (No link of the vocabulary: the model takes the data's in its setup, after prepare_data made the
        # tokenizer; parsing and instantiating stay free of downloads and training.)
        parser.add_argument(
            "--float32_matmul_precision",
            type=MatmulPrecision,
            default="high",
            help="torch.set_float32_matmul_precision on CUDA: 'high' lets fp32 matmuls use TF32 tensor cores "
            "(what 32-true runs and fp32 parts of mixed precision run on); 'highest' keeps full fp32.",
        )
        # The callbacks a recipe tunes get a section of their own (checkpoint:, sample:, accumulation:,
        # hellaswag:), so a recipe states only its values, not a copy of the whole callback list.
        parser.add_class_arguments(FinalModelCheckpoint, "checkpoint", help="Checkpoints (out/<run name>/checkpoints "
                                   "unless dirpath says otherwise); none with trainer.enable_checkpointing false.")
        parser.add_lightning_class_args(SampleText, "sample")
        parser.add_lightning_class_args(GradientAccumulation, "accumulation")
        parser.add_lightning_class_args(HellaSwagEval, "hellaswag")
        parser.set_defaults(RECIPE_DEFAULTS)

    def instantiate_trainer(self, **kwargs: Any) -> L.Trainer:
        # The checkpoint section and the progress bar join the callbacks unless the trainer is told to do without
        # them (Lightning refuses a ModelCheckpoint or a progress bar with enable_checkpointing/enable_progress_bar
        # false).
        config = self.config_init[self.subcommand] if self.subcommand else self.config_init
        trainer = config["trainer"]
        callbacks = list(trainer.get("callbacks") or [])
        if trainer.get("enable_checkpointing") is not False:
            callbacks.append(config["checkpoint"])
        if trainer.get("enable_progress_bar") is not False and not any(isinstance(c, ProgressBar) for c in callbacks):
            callbacks.append(LossProgressBar())
        return super().instantiate_trainer(callbacks=callbacks, **kwargs)

    def before_instantiate_classes(self) -> None:
        config = self.config[self.subcommand] if self.subcommand else self.config
        set_matmul_precision(config.get("float32_matmul_precision", "high"))
        if self.subcommand is not None:
            check_trainer_args(config.get("trainer"))

    def _run_subcommand(self, subcommand: str) -> None:
        # Lightning answers Ctrl-C by tearing the run down and exiting with status 1: say instead where it stopped
        # and how to go on, in main()'s one line.
        try:
            super()._run_subcommand(subcommand)
        except SystemExit as e:
            if not isinstance(e.__context__, KeyboardInterrupt):
                raise
            raise Interrupted(_where_it_stopped(self.trainer, subcommand, self.config[subcommand].get("ckpt_path"))) from None

    def _parse_ckpt_path(self) -> None:
        # Lightning loads --ckpt_path here (to re-parse the model's hyperparameters), then again to restore:
        # a missing or wrong file is refused first, in one line.
        subcommand = self.config.get("subcommand")
        if subcommand:
            check_ckpt_path(self.config[subcommand].get("ckpt_path"), training=subcommand == "fit")
        super()._parse_ckpt_path()


class Interrupted(KeyboardInterrupt):
    """Ctrl-C during a run, with where it stopped and how to go on (printed by :func:`main`)."""


def _where_it_stopped(trainer: Any, subcommand: str, ckpt_path: Optional[str]) -> str:
    if subcommand != "fit":
        return f": nothing was changed; run the same command again to {subcommand} from the start"
    saved = [getattr(cb, name, "") for cb in trainer.checkpoint_callbacks for name in ("last_model_path", "best_model_path")]
    saved = [Path(path) for path in saved + [ckpt_path] if path and Path(path).is_file()]
    if not saved:
        return (f" at step {trainer.global_step}, before any checkpoint was written: run the same command again to "
                f"start over (a data preparation resumes where it stopped)")
    last = max(saved, key=lambda path: path.stat().st_mtime)
    return f" at step {trainer.global_step}; the last checkpoint is {last}: resume with --ckpt_path {last}"


def check_trainer_args(trainer: Any) -> None:
    """Refuse Trainer settings that Lightning would turn into a ZeroDivisionError or a traceback mid-run."""
    if trainer is None:
        return
    def get(key: str) -> Any:
        # numbers only: val_check_interval may also be a duration ("00:00:10:00"), which Lightning checks
        value = trainer.get(key) if hasattr(trainer, "get") else getattr(trainer, key, None)
        return value if isinstance(value, (int, float)) and not isinstance(value, bool) else None

    def bad(key: str, expected: str) -> ConfigError:
        return ConfigError(f"trainer.{key} is {get(key)!r}; it must be {expected}")

    max_steps = get("max_steps")
    if max_steps is not None and max_steps < -1:
        raise bad("max_steps", "0 or more (or -1: no limit, with model.lr_decay_steps set)")
    interval = get("val_check_interval")
    if interval is not None and (interval <= 0 or (isinstance(interval, float) and interval > 1)):
        raise bad("val_check_interval", "a number of steps (1 or more) or a fraction of an epoch in (0, 1]")
    for key in ("accumulate_grad_batches", "check_val_every_n_epoch", "log_every_n_steps"):
        value = get(key)
        if value is not None and value < 1:
            raise bad(key, "at least 1")
    clip = get("gradient_clip_val")
    if clip is not None and not clip >= 0:
        raise bad("gradient_clip_val", "0 or more (or null: no clipping)")


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
    """Entry point of ``main.py``; ``args`` default to the command line. Returns the CLI (None for the commands
    that are plain functions)."""
    argv = sys.argv[1:] if args is None else args
    try:
        _check_config_files(argv)
        if argv and argv[0] in PLAIN_COMMANDS:
            _plain_command(argv[0])(argv[1:])
            return None
        if argv and argv[0] == "prepare":
            prepare(argv[1:])
            return None
        if argv and argv[0] == "eval":
            from lit_gpt_mini.evals.command import main as eval_main

            eval_main(argv[1:])
            return None
        if not argv or argv[0] in ("-h", "--help"):
            print(usage())
            if not argv:
                sys.exit(2)  # a command is required, as argparse would say
            return None
        if not argv[0].startswith("-") and argv[0] not in COMMANDS:
            close = difflib.get_close_matches(argv[0], COMMANDS, n=1)
            hint = f"did you mean {close[0]}? " if close else ""
            raise ParseError(f"main.py has no command {argv[0]!r}: {hint}the commands are {', '.join(COMMANDS)} "
                             f"(python main.py --help describes them)")
        return GPTCLI(
            GPTModule,
            TokenDataModule,
            subclass_mode_model=True,
            subclass_mode_data=True,
            save_config_kwargs={"overwrite": True},
            seed_everything_default=SEED,
            parser_kwargs={"prog": "main.py", **{name: {"description": COMMANDS[name]} for name in TRAINER_COMMANDS}},
            args=argv,
        )
    except KeyboardInterrupt as e:  # Ctrl-C: finished files are whole (written atomically), so a re-run resumes
        if global_rank() == 0:
            how = str(e) or {
                "prepare": ": run the same command again to resume the preparation (finished shards are kept)",
            }.get(argv[0] if argv else "", ": nothing was saved; run the same command again")
            print(f"error: interrupted (Ctrl-C){how}", file=sys.stderr)
        sys.exit(130)
    except ArgumentError as e:  # jsonargparse's, raised with exit_on_error=False
        print(f"error: {_parse_error_line(str(e), argv)}", file=sys.stderr)
        sys.exit(2)
    except MisconfigurationException as e:  # Lightning's own refusal of a setting: a config error too
        sys.exit(f"error: the Trainer refused the configuration: {' '.join(str(e).split())}")
    except Exception as e:
        user_error = _find_user_error(e)
        if user_error is None:
            raise
        if isinstance(user_error, ParseError):
            print(f"error: {user_error}", file=sys.stderr)
            sys.exit(2)
        sys.exit(f"error: {_one_line(user_error)}")


def _plain_command(name: str) -> Callable[[list[str]], None]:
    # Imported only when run: serve's imports (LitServe, FastAPI) are not every command's.
    if name == "generate":
        from lit_gpt_mini.generate import main
    elif name == "chat":
        from lit_gpt_mini.chat import main
    elif name == "serve":
        from lit_gpt_mini.serve import main
    else:
        from lit_gpt_mini.export import main
    return main


def usage() -> str:
    """What ``python main.py --help`` prints: every command in one line, and where each one's options are."""
    width = max(map(len, COMMANDS))
    lines = ["usage: python main.py <command> [options]", "", "commands:"]
    lines += [f"  {name:<{width}}  {description}" for name, description in COMMANDS.items()]
    lines += ["", "python main.py <command> --help shows a command's options."]
    return "\n".join(lines)


def _config_files(argv: list[str]) -> list[str]:
    files = []
    for i, arg in enumerate(argv):
        if arg in ("--config", "-c") and i + 1 < len(argv):
            files.append(argv[i + 1])
        elif arg.startswith("--config="):
            files.append(arg.split("=", 1)[1])
    return files


def _check_config_files(argv: list[str]) -> None:
    # Read each --config file as jsonargparse will, so an error names the file (and line) it is in.
    for name in _config_files(argv):
        path = Path(name)
        if not path.exists():
            continue  # jsonargparse says so (and --config may also be an inline YAML string)
        if path.is_dir():
            raise ParseError(f"config file {name} is a directory: give a YAML file")
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError as e:
            raise ParseError(f"config file {name} is not UTF-8 text (byte {e.start}): give a YAML file") from None
        except OSError as e:
            raise ParseError(f"cannot read config file {name}: {e.strerror or e}") from None
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as e:
            mark = getattr(e, "problem_mark", None)
            where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
            problem = getattr(e, "problem", None) or str(e).splitlines()[0]
            raise ParseError(f"config file {name}: YAML syntax error{where}: {problem}") from None
        if data is not None and not isinstance(data, dict):
            raise ParseError(f"config file {name} holds a {type(data).__name__}, not a mapping of keys to values")


def _parse_error_line(message: str, argv: list[str]) -> str:
    """jsonargparse's error (nested, many lines) as one line: the full key, what is wrong, the closest name."""
    keys: list[str] = []
    detail = None
    class_path = None
    for line in (raw.strip().lstrip("- ").strip() for raw in message.splitlines()):
        if not line or line.startswith(("Does not validate", "Subtypes:", "Errors:", "Given value", "Expected a <class 'NoneType'>")):
            continue
        if detail is not None:
            break  # what follows restates the first problem (jsonargparse nests it once more)
        nested = re.match(r'Parser key "([^"]+)":?\s*(.*)', line)
        if nested:
            keys.append(nested.group(1))
            line = nested.group(2)
            if not line:
                continue
        given = re.match(r"Problem with given class_path '([^']+)'", line)
        if given:
            class_path = given.group(1)
            continue
        detail = detail or line
    detail = detail or message.strip().splitlines()[0]
    given_value = re.search(r"^\s*Given value: (?!NestedArg)(.*)$", message, re.MULTILINE)
    if detail.startswith("Expected a") and "Got value" not in detail and given_value:  # an Optional's message
        detail = f"{detail}. Got value: {given_value.group(1)}"
    where = _source_of(".".join(keys), argv)
    help_hint = f" (main.py {argv[0]} --help lists every option)" if argv and not argv[0].startswith("-") else ""
    given = re.match(r"Unable to load config '(.*)'", detail)
    if given and keys:  # a value where a group of settings belongs (tokenizer: bpe)
        return _group_expected(".".join(keys), class_path, given.group(1), where) + help_hint
    required = re.match(r"the following arguments are required: (.+)", detail)
    if required and argv and argv[0] in TRAINER_COMMANDS:  # a command run without a config
        missing = [key.split(".", 1)[-1] for key in required.group(1).split(", ")]
        alone = " (HellaSwag: main.py eval --ckpt_path X)" if argv[0] == "test" else ""
        return f"{argv[0]} needs {' and '.join(missing)}: give --config <yaml>{alone}{help_hint}"
    unknown = re.match(r"Option '([^']+)' is not accepted", detail)
    if unknown:  # a key inside a class_path's init_args
        name, valid = unknown.group(1), _init_args(class_path)
    else:  # a key at the top level or in the trainer section
        unknown = re.search(r"does not accept option '([^']+)'", detail)
        if unknown:
            *keys, name = unknown.group(1).split(".")
            valid = _init_args("lightning.pytorch.Trainer") if keys == ["trainer"] else _TOP_LEVEL if not keys else []
        else:  # an option of generate or export, or a flag on the command line (abbreviations are not taken)
            unknown = re.match(r"[Uu]nrecognized arguments: --([\w.]+)", detail)
            if unknown:
                *prefix, name = unknown.group(1).split(".")
                if argv and argv[0] in PLAIN_COMMANDS:
                    valid = _init_args(f"lit_gpt_mini.{argv[0]}.{argv[0]}")
                elif prefix == ["trainer"]:
                    valid = _init_args("lightning.pytorch.Trainer")
                else:
                    valid = [] if prefix else _TOP_LEVEL
                close = difflib.get_close_matches(name, valid, n=1)
                suggestion = f": did you mean --{'.'.join(prefix + close)}?" if close else ""
                return f"unknown option --{'.'.join(prefix + [name])}{suggestion}{help_hint}"
    if unknown:
        close = difflib.get_close_matches(name, valid, n=1)
        suggestion = f": did you mean {'.'.join(keys + close)}?" if close else ""
        moved = MOVED.get(".".join(keys + [name]))
        if moved:
            suggestion = f": {moved}"
        where = _source_of(".".join(keys + [name]), argv)
        return f"unknown key {'.'.join(keys + [name])}{where}{suggestion}{help_hint}"
    return f"{'.'.join(keys) + ': ' if keys else ''}{detail}{where}{help_hint}"


def _source_of(key: str, argv: list[str]) -> str:
    """Where the refused value of ``key`` came from, as " (in FILE)" or " (on the command line)": the last of the
    ``--config`` files and options that sets it or a section above it (the parser applies them in order). All
    the config files when none is found to."""
    def plain(name: str) -> list[str]:
        return [part for part in name.split(".") if part and part != "init_args"]

    wanted = plain(key)
    source = None
    for i, arg in enumerate(argv):
        if arg in ("--config", "-c") and i + 1 < len(argv) or arg.startswith("--config="):
            name = argv[i + 1] if "=" not in arg else arg.split("=", 1)[1]
            if _yaml_sets(name, wanted):
                source = f"in {name}"
        elif arg.startswith("--") and not arg.startswith("--config"):
            given = plain(arg[2:].split("=", 1)[0])
            shorter = min(len(given), len(wanted))
            # (a lone --data or --model names a class, not settings)
            if (len(given) > 1 or given == wanted) and given[:shorter] == wanted[:shorter]:
                source = "on the command line"
    if source is None:
        files = _config_files(argv)
        return f" (in {', '.join(files)})" if files else ""
    return f" ({source})"


def _yaml_sets(config: str, key: list[str]) -> bool:
    # Whether a --config file (or inline YAML) sets the key, or a section above it, with or without init_args.
    try:
        path = Path(config)
        node = yaml.safe_load(path.read_text(encoding="utf-8-sig") if path.is_file() else config)
    except (OSError, ValueError, yaml.YAMLError):
        return False
    for part in key:
        if not isinstance(node, dict):
            return True  # a value where a section of settings belongs
        if part not in node and isinstance(node.get("init_args"), dict):
            node = node["init_args"]
        if part not in node:
            return False
        node = node[part]
    return True


def _group_expected(key: str, class_path: Optional[str], value: str, where: str) -> str:
    """What to say when a plain value is given for ``key``, a group of settings (a dataclass argument)."""
    names: list[str] = []
    module, _, name = (class_path or "").rpartition(".")
    try:
        target = getattr(importlib.import_module(module), name)
        for cls in target.__mro__:
            hint = typing.get_type_hints(cls.__init__).get(key.rsplit(".", 1)[-1]) if "__init__" in vars(cls) else None
            if hint is not None:
                names = [f.name for f in dataclasses.fields(hint)] if dataclasses.is_dataclass(hint) else []
                break
    except (ImportError, AttributeError, ValueError, TypeError, NameError):
        pass
    settings = f" ({', '.join(names)})" if names else ""
    example = f": e.g. --{key}.{names[0]} {value}" if names else ""
    return f"{key} takes a mapping of its settings{settings} or a YAML file of them, not {value!r}{where}{example}"


# Keys that older configs hold, and where their value is declared now.
MOVED = {
    "data.block_size": "the window length is the model's context, model.block_size (declared once, for both)",
}

_TOP_LEVEL = ["trainer", "model", "data", "ckpt_path", "seed_everything", "optimizer", "lr_scheduler", "config",
              "float32_matmul_precision"]


def _init_args(class_path: Optional[str]) -> list[str]:
    # The argument names a class's __init__ (or a function) accepts, for "did you mean"; none if not importable.
    if not class_path:
        return []
    module, _, name = class_path.rpartition(".")
    try:
        target = getattr(importlib.import_module(module), name)
        # A class whose __init__ passes **kwargs on to its base's accepts the base's arguments too.
        targets = [c.__init__ for c in target.__mro__ if "__init__" in vars(c)] if inspect.isclass(target) else [target]
        names: list[str] = []
        for function in targets:
            parameters = inspect.signature(function).parameters
            names += [p for p in parameters if p not in ("self", "args", "kwargs") and p not in names]
            if not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values()):
                break
        return names
    except (ImportError, AttributeError, ValueError, TypeError):
        return []


def prepare(args: list[str]) -> TokenDataModule:
    """``python main.py prepare --config <yaml>``: run the config's ``data.prepare_data()`` (download, tokenize,
    write shards) and nothing else, on a machine without the training hardware if need be.

    Training prepares the data itself (on one process per node, the others waiting), but a preparation of hours
    would outlast DDP's 30-minute barrier timeout, and nodes sharing a filesystem should not prepare it twice:
    prepare first, then train (the training's preparation then finds the shards complete and returns).
    """
    from jsonargparse import ActionConfigFile, ArgumentParser

    parser = ArgumentParser(exit_on_error=False, allow_abbrev=False, prog="main.py prepare",
                            description=COMMANDS["prepare"])
    parser.add_argument("--config", action=ActionConfigFile, help="a training config; only its data section is used")
    parser.add_subclass_arguments(TokenDataModule, "data", required=True)
    # The rest of a training config is accepted and ignored.
    for section in ("trainer", "model", "optimizer", "lr_scheduler", "ckpt_path", "float32_matmul_precision",
                    "checkpoint", "sample", "accumulation", "hellaswag"):
        parser.add_argument(f"--{section}", type=Optional[Any], default=None)
    parser.add_argument("--seed_everything", type=Union[bool, int], default=True)
    config = parser.parse_args(args)
    data = parser.instantiate_classes(config).data
    data.prepare_data()
    log.info(f"{type(data).__name__}: data ready in {data.shard_dir} (tokenizer: {data.tokenizer_path})")
    return data


def _one_line(error: UserError) -> str:
    # An error raised in a DataLoader worker reaches here re-raised by torch with the worker's traceback as its
    # message; its last line is the original: "lit_gpt_mini.errors.DataError: <message>".
    text = str(error)
    if "\nOriginal Traceback" in text:
        text = text.rstrip().splitlines()[-1].split(": ", 1)[-1]
    return text


def _find_user_error(exc: Optional[BaseException]) -> Optional[UserError]:
    # jsonargparse re-raises errors from a class's __init__ as its own ValueError, chained to the original.
    seen = set()
    while exc is not None and id(exc) not in seen:
        if isinstance(exc, UserError):
            return exc
        seen.add(id(exc))
        exc = exc.__cause__ or exc.__context__
    return None
