"""The command line: ``fit``/``validate``/``test`` through LightningCLI, the other commands dispatched to their
modules (lit_gpt_mini/cli/commands.py), and every user error printed as one ``error:`` line.

``python main.py fit --config configs/shakespeare_char_cpu.yaml`` reads the YAML into the LightningModule,
the data module and the Trainer (every key is also a command-line flag) over the recipe defaults declared
here once, and runs; the model learns the data's vocabulary in its ``setup`` (``data.connect``).
"""

from __future__ import annotations

import contextlib
import difflib
import importlib
import logging
import sys
import warnings
from argparse import ArgumentError
from pathlib import Path
from typing import Any, Literal, Optional

import lightning as L
import torch
import yaml
from lightning.fabric.utilities.exceptions import MisconfigurationException
from lightning.pytorch.callbacks import LearningRateMonitor, ProgressBar
from lightning.pytorch.cli import LightningCLI

from lit_gpt_mini.benchmark import BenchmarkEval, WithBenchmark
from lit_gpt_mini.callbacks import (ExplainInterrupt, FinalModelCheckpoint, GradientAccumulation, LogLineProgress,
                                    LossProgressBar, SampleText)
from lit_gpt_mini.checkpoint import check_ckpt_path, model_class_path
from lit_gpt_mini.cli.errors import check_config_files, error_line, find_user_error, one_line
from lit_gpt_mini.cli.commands import COMMANDS, CONFIG_KEYS, DATA_MODULES, EVAL_ALIAS, TRAINER_COMMANDS, usage
from lit_gpt_mini.errors import ConfigError, ParseError
from lit_gpt_mini.lit_module import GPTModule
from lit_gpt_mini.log import get_logger, global_rank

log = get_logger(__name__)

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
    "checkpoint.filename": "best-step-{step}",  # best-step-500.ckpt: names hold values only, not "step=500"
    "checkpoint.auto_insert_metric_name": False,
    "checkpoint.enable_version_counter": False,  # last.ckpt is the latest run's (an earlier run's are moved aside)
    "checkpoint.monitor": "val/loss",
    "checkpoint.save_top_k": 1,
    "checkpoint.save_last": True,
}
SEED = 1337

# The callbacks a recipe tunes, each with a section of its own (checkpoint:, sample:...), so that a recipe states
# only its values, not a copy of the whole callback list.
SECTIONS = {"checkpoint": FinalModelCheckpoint, "sample": SampleText, "accumulation": GradientAccumulation,
            "hellaswag": BenchmarkEval}
assert set(SECTIONS) <= set(CONFIG_KEYS)

# The commands that are not a Trainer's: the module whose main(args) parses the options (through jsonargparse)
# and the function they are the arguments of. Imported only when run: serve's imports (LitServe, FastAPI) are not
# every command's.
PLAIN_COMMANDS = {
    "generate": ("lit_gpt_mini.inference.generate", "generate"),
    "chat": ("lit_gpt_mini.inference.chat", "chat"),
    "serve": ("lit_gpt_mini.inference.serve", "serve"),
    "export": ("lit_gpt_mini.inference.export", "export"),
    "prepare": ("lit_gpt_mini.cli.prepare", "prepare"),
}
assert set(PLAIN_COMMANDS) | set(TRAINER_COMMANDS) | {"eval"} == set(COMMANDS)


class GPTCLI(LightningCLI):
    """LightningCLI over any :class:`GPTModule` and any data module with ``connect``, chosen by ``class_path``."""

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
        # about being given both does not apply. Lightning then loads --ckpt_path (to re-parse the model's
        # hyperparameters), and again to restore: a missing or wrong file is refused first, in one line.
        try:
            self.config = parser.parse_args(args)
        except SystemExit as e:
            # --help shows a model and a data module chosen by class_path only as that key: with --config, the
            # recipe's classes are known, and their arguments follow (each help printed by jsonargparse exits)
            if e.code in (0, None) and ("-h" in args or "--help" in args) and args[0] in TRAINER_COMMANDS:
                for key, class_path in recipe_classes(args):
                    print(f"\nThe recipe's {key} ({class_path}):")
                    with contextlib.suppress(SystemExit):
                        parser.parse_args([args[0], f"--{key}.help", class_path])
            raise
        subcommand = self.config.get("subcommand")
        if subcommand:
            check_ckpt_path(self.config[subcommand].get("ckpt_path"), training=subcommand == "fit")

    def add_arguments_to_parser(self, parser) -> None:
        parser.add_argument(
            "--float32_matmul_precision",
            type=MatmulPrecision,
            default="high",
            help="torch.set_float32_matmul_precision on CUDA: 'high' lets fp32 matmuls use TF32 tensor cores "
            "(what 32-true runs and fp32 parts of mixed precision run on); 'highest' keeps full fp32.",
        )
        parser.add_class_arguments(FinalModelCheckpoint, "checkpoint", help="Checkpoints (out/<run name>/checkpoints "
                                   "unless dirpath says otherwise); none with trainer.enable_checkpointing false.")
        for name, callback in SECTIONS.items():
            if name != "checkpoint":
                parser.add_lightning_class_args(callback, name)
        parser.set_defaults(RECIPE_DEFAULTS)

    def instantiate_trainer(self, **kwargs: Any) -> L.Trainer:
        # The checkpoint section and the progress bar join the callbacks unless the trainer is told to do without
        # them (Lightning refuses a ModelCheckpoint or a progress bar with enable_checkpointing/enable_progress_bar
        # false); Ctrl-C is explained in every run.
        config = self.config_init[self.subcommand] if self.subcommand else self.config_init
        trainer = config["trainer"]
        callbacks = list(trainer.get("callbacks") or []) + [ExplainInterrupt()]
        if any(isinstance(c, GradientAccumulation) for c in callbacks):
            # the accumulation: section always makes one; a second would multiply its micro-batches and validation
            # interval by the first one's, silently
            raise ConfigError("trainer.callbacks holds a GradientAccumulation, and the accumulation: section makes "
                              "one already: set accumulation.total_batch_tokens instead")
        if trainer.get("logger") is False:
            # the learning-rate curves have nowhere to go, and Lightning refuses the monitor without a logger
            callbacks = [c for c in callbacks if not isinstance(c, LearningRateMonitor)]
        if trainer.get("enable_checkpointing") is not False:
            callbacks.append(config["checkpoint"])
        if trainer.get("enable_progress_bar") is not False and not any(isinstance(c, ProgressBar) for c in callbacks):
            # a bar redrawn in a file or a pipe is thousands of carriage-return lines: a log line per N steps there
            callbacks.append(LossProgressBar() if sys.stdout.isatty() else LogLineProgress())
        return super().instantiate_trainer(callbacks=callbacks, **kwargs)

    def instantiate_classes(self) -> None:
        super().instantiate_classes()
        # test on a recipe with a benchmark section: its held-out text and the benchmark in one test loop
        if getattr(self.datamodule, "benchmark", None) and isinstance(self.model, GPTModule):
            # a model over another vocabulary is refused before the benchmark is downloaded
            self.model.check_benchmark(self.datamodule, self.datamodule.connect(self.model.hparams.block_size))
        if self.subcommand == "test":
            benchmark = self.config_init["test"].get("hellaswag")
            if benchmark is not None and benchmark.data is not None and self.datamodule is not None:
                self.datamodule = WithBenchmark(self.datamodule, benchmark.data)

    def before_instantiate_classes(self) -> None:
        config = self.config[self.subcommand] if self.subcommand else self.config
        set_matmul_precision(config.get("float32_matmul_precision", "high"))
        if self.subcommand is not None:
            check_trainer_args(config.get("trainer"))
            config_files = [str(path) for path in config.get("config") or []]
            apply_default_root_dir(config.get("trainer"), config_files)
            check_accelerator(config.get("trainer"), config_files)


def recipe_classes(args: list[str]) -> list[tuple[str, str]]:
    """The ``model`` and ``data`` class paths the ``--config`` files among ``args`` name (the last file naming
    one wins)."""
    files = [arg.split("=", 1)[1] for arg in args if arg.startswith("--config=")]
    files += [args[i + 1] for i, arg in enumerate(args[:-1]) if arg == "--config"]
    found: dict[str, str] = {}
    for file in files:
        try:
            config = yaml.safe_load(Path(file).read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, yaml.YAMLError):
            continue  # the parse itself reports a bad file
        for key in ("model", "data"):
            section = config.get(key) if isinstance(config, dict) else None
            if isinstance(section, dict) and isinstance(section.get("class_path"), str):
                found[key] = section["class_path"]
    return list(found.items())


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


def check_accelerator(trainer: Any, config_files: list[str]) -> None:
    """A GPU recipe on a machine without one is refused with what to run instead (Lightning says only "No
    supported gpu backend found!")."""
    accelerator = trainer.get("accelerator") if trainer is not None else None
    if accelerator not in ("gpu", "cuda") or torch.cuda.is_available():
        return
    if accelerator == "gpu" and torch.backends.mps.is_available():  # Lightning's "gpu" is Apple's GPU there
        return
    recipes = [str(Path(f).with_name(Path(f).stem + "_cpu.yaml")) for f in config_files]
    recipe = next((r for r in recipes if Path(r).is_file()), "a CPU-sized recipe (configs/*_cpu.yaml)")
    raise ConfigError(
        f"trainer.accelerator is {accelerator} and torch finds no GPU on this machine: train {recipe} (sized for a "
        f"CPU), or run this recipe on the CPU with --trainer.accelerator cpu (slow at its size)")


def apply_default_root_dir(trainer: Any, config_files: list[str]) -> None:
    """``trainer.default_root_dir`` moves a run's outputs (logs, config, checkpoints) from ``out/`` to it: the
    recipes' logger writes under its own ``save_dir``, which Lightning would otherwise keep. Without a logger
    (``--trainer.logger false``) and without a root, the outputs go where the logger would have put them,
    ``out/<recipe>/`` (each recipe names its run after its file), not into the current directory, Lightning's
    default."""
    if trainer is None:
        return
    root = trainer.get("default_root_dir")
    default = RECIPE_DEFAULTS["trainer.logger"]["init_args"]["save_dir"]
    if not root and trainer.get("logger") is False:
        run = Path(config_files[-1]).stem if config_files else RECIPE_DEFAULTS["trainer.logger"]["init_args"]["name"]
        trainer["default_root_dir"] = str(Path(default) / run)
        return
    if not root:
        return
    logger = trainer.get("logger")
    for entry in logger if isinstance(logger, list) else [logger]:
        init_args = entry.get("init_args") if hasattr(entry, "get") else None
        if init_args is None or init_args.get("save_dir") in (None, str(root)):
            continue
        if init_args.get("save_dir") != default:
            raise ConfigError(
                f"trainer.default_root_dir ({root}) and the logger's save_dir ({init_args.get('save_dir')}) both "
                f"say where the run's outputs go: give only one of them")
        init_args["save_dir"] = str(root)


MatmulPrecision = Literal["highest", "high", "medium"]


def set_matmul_precision(precision: MatmulPrecision) -> None:
    """Apply ``torch.set_float32_matmul_precision`` where it matters (CUDA); CPUs keep full fp32."""
    if torch.cuda.is_available():
        torch.set_float32_matmul_precision(precision)


# SequentialWindows shards itself across DataLoader workers, so Lightning's warning about a sized
# IterableDataset under several workers does not apply; the pytree one is Lightning's own, with newer torch.
warnings.filterwarnings("ignore", message=r".*`IterableDataset` has `__len__` defined.*")
warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\)` is deprecated.*")


def expand(argv: list[str]) -> list[str]:
    """The command line as LightningCLI takes it: ``eval`` is ``test --data HellaSwagDataModule``; a data module's
    short name becomes its class path; ``test``/``validate`` of a checkpoint without a config or ``--model`` take
    the model class the checkpoint records (its hyperparameters follow, read by LightningCLI)."""
    if argv and argv[0] == "eval":
        argv = [*EVAL_ALIAS, *argv[1:]]
    argv = [DATA_MODULES.get(arg, arg) if i and argv[i - 1] == "--data" else arg for i, arg in enumerate(argv)]
    argv = [f"--data={DATA_MODULES.get(arg[7:], arg[7:])}" if arg.startswith("--data=") else arg for arg in argv]
    if argv and argv[0] in ("test", "validate") and not any(
        a in ("--config", "-c", "--model") or a.startswith(("--config=", "--model=", "--model.")) for a in argv
    ):
        ckpt = next((argv[i + 1] for i, a in enumerate(argv[:-1]) if a == "--ckpt_path"), None)
        ckpt = ckpt or next((a.split("=", 1)[1] for a in argv if a.startswith("--ckpt_path=")), None)
        if ckpt:
            check_ckpt_path(ckpt, training=False)  # a missing or wrong file is said as such, not as a missing model
        class_path = model_class_path(ckpt) if ckpt else None
        if class_path:
            argv = [*argv, "--model", class_path]
    return argv

class _NoAdvertisement(logging.Filter):
    """Drops Lightning's "💡 Tip: ... install litlogger/litmodels" notices (printed at every Trainer's start, they
    read like problems to a new user); every other message of Lightning's rank-zero logger passes."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("💡 Tip:")


# rank_zero_info logs through the logger of whichever of these modules was imported last
for _name in ("lightning.fabric.utilities.rank_zero", "lightning.pytorch.utilities.rank_zero"):
    logging.getLogger(_name).addFilter(_NoAdvertisement())


def main(args: Optional[list[str]] = None) -> Optional[GPTCLI]:
    """Entry point of ``main.py``; ``args`` default to the command line. Returns the CLI (None for the commands
    that are plain functions)."""
    argv = sys.argv[1:] if args is None else args
    try:
        check_config_files(argv)
        argv = expand(argv)
        if argv and argv[0] in PLAIN_COMMANDS:
            importlib.import_module(PLAIN_COMMANDS[argv[0]][0]).main(argv[1:])
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
            # any data module, named by class path in the config (data_modules' own, or the user's): the model
            # asks it for its tokenizer through connect(block_size) in setup
            L.LightningDataModule,
            subclass_mode_model=True,
            subclass_mode_data=True,
            save_config_kwargs={"overwrite": True},
            seed_everything_default=SEED,
            auto_configure_optimizers=False,  # each module makes its own optimizers: --optimizer would be ignored
            parser_kwargs={"prog": "main.py", **{name: {"description": COMMANDS[name]} for name in TRAINER_COMMANDS}},
            args=argv,
        )
    except SystemExit as e:  # Lightning's answer to Ctrl-C in a run: teardown, then exit status 1
        if not isinstance(e.__context__, KeyboardInterrupt):
            raise
        _interrupted(argv, str(e.__context__))
    except KeyboardInterrupt as e:
        _interrupted(argv, str(e))
    except ArgumentError as e:  # jsonargparse's, raised with exit_on_error=False
        function = ".".join(PLAIN_COMMANDS.get(argv[0] if argv else "", ()))  # whose options a plain command takes
        print(f"error: {error_line(e, argv, function)}", file=sys.stderr)
        sys.exit(2)
    except MisconfigurationException as e:  # Lightning's own refusal of a setting: a config error too
        sys.exit(f"error: the Trainer refused the configuration: {' '.join(str(e).split())}")
    except Exception as e:
        user_error = find_user_error(e)
        if user_error is None:
            raise
        if isinstance(user_error, ParseError):
            print(f"error: {user_error}", file=sys.stderr)
            sys.exit(2)
        sys.exit(f"error: {one_line(user_error)}")


def _interrupted(argv: list[str], where: str) -> None:
    # Ctrl-C: finished files are whole (written atomically), so a re-run resumes.
    if global_rank() == 0:
        how = where or {
            "prepare": ": run the same command again to resume the preparation (finished shards are kept)",
        }.get(argv[0] if argv else "", ": nothing was saved; run the same command again")
        print(f"error: interrupted (Ctrl-C){how}", file=sys.stderr)
    sys.exit(130)
