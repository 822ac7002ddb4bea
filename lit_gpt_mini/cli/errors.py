"""The user's mistakes as one ``error:`` line: config files read before jsonargparse (so an error names the file and
line), jsonargparse's nested error text condensed to the key, the problem and the closest valid name, and the
project's own errors found in an exception chain.

jsonargparse reports a bad key or value only as text, so this module reads that text: the jsonargparse range in
setup.cfg is pinned to the minor release these patterns are tested against (tests/test_bad_input.py,
tests/test_commands.py).
"""

from __future__ import annotations

import dataclasses
import difflib
import importlib
import inspect
import re
import typing
from pathlib import Path
from typing import Optional

import yaml

from lit_gpt_mini.cli.commands import CONFIG_KEYS, TRAINER_COMMANDS
from lit_gpt_mini.errors import ParseError, UserError

# Keys that older configs hold, and where their value is declared now.
MOVED = {
    "data.block_size": "the window length is the model's context, model.block_size (declared once, for both)",
    "optimizer": "the model makes its own: model.optimizer (adamw or muon), model.learning_rate, model.weight_decay",
    "lr_scheduler": "the model's schedule is warmup + cosine: model.warmup_steps, model.lr_decay_steps, model.min_lr",
}


def _config_files(argv: list[str]) -> list[str]:
    files = []
    for i, arg in enumerate(argv):
        if arg in ("--config", "-c") and i + 1 < len(argv):
            files.append(argv[i + 1])
        elif arg.startswith("--config="):
            files.append(arg.split("=", 1)[1])
    return files


def check_config_files(argv: list[str]) -> None:
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


def error_line(message: str, argv: list[str], function: str = "") -> str:
    """jsonargparse's error (nested, many lines) as one line: the full key, what is wrong, the closest name.
    ``function``: the dotted name of the function whose arguments a plain command's options are."""
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
            valid = _init_args("lightning.pytorch.Trainer") if keys == ["trainer"] else list(CONFIG_KEYS) if not keys else []
        else:  # an option of a plain command, or a flag on the command line (abbreviations are not taken)
            unknown = re.match(r"[Uu]nrecognized arguments: --([\w.]+)", detail)
            if unknown:
                *prefix, name = unknown.group(1).split(".")
                if function:  # a plain command's option (its sections' keys are not looked into)
                    valid = [] if prefix else _init_args(function)
                elif prefix == ["trainer"]:
                    valid = _init_args("lightning.pytorch.Trainer")
                else:
                    valid = [] if prefix else list(CONFIG_KEYS)
                close = difflib.get_close_matches(name, valid, n=1)
                suggestion = f": did you mean --{'.'.join(prefix + close)}?" if close else ""
                sections = _init_args(function) if function else list(CONFIG_KEYS)
                section = difflib.get_close_matches(prefix[0], sections, n=1) if prefix else []
                if section and section[0] != prefix[0]:  # a misspelt section (--checkpont.save_last)
                    suggestion = f": did you mean --{'.'.join(section + prefix[1:] + [name])}?"
                if ".".join(prefix + [name]) in MOVED:
                    suggestion = f": {MOVED['.'.join(prefix + [name])]}"
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




def one_line(error: UserError) -> str:
    # An error raised in a DataLoader worker reaches here re-raised by torch with the worker's traceback as its
    # message; its last line is the original: "lit_gpt_mini.errors.DataError: <message>".
    text = str(error)
    if "\nOriginal Traceback" in text:
        text = text.rstrip().splitlines()[-1].split(": ", 1)[-1]
    return text


def find_user_error(exc: Optional[BaseException]) -> Optional[UserError]:
    # jsonargparse re-raises errors from a class's __init__ as its own ValueError, chained to the original.
    seen = set()
    while exc is not None and id(exc) not in seen:
        if isinstance(exc, UserError):
            return exc
        seen.add(id(exc))
        exc = exc.__cause__ or exc.__context__
    return None
