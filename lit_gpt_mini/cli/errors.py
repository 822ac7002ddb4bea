"""The user's mistakes as one ``error:`` line: config files read before jsonargparse (so an error names the file and
line), jsonargparse's errors condensed to the key, the problem and the closest valid name, and the project's own
errors found in an exception chain.

jsonargparse (4.53) has no public structured form of a parse error: its ``ArgumentError`` always has
``argument_name`` None, and ``error_handler`` (deprecated since 4.20) is given the same text. What is structural is
used: the exception chain (a ``KeyError`` in it is a key no parser declares), the option names from the
signatures of the classes and functions the options are made from, and the values read from the config files and
the command line. What only the text says (the nested key, the class_path, the problem) is read in one place,
:func:`read_message`, whose patterns tests/test_cli_errors.py pins against jsonargparse's own errors.
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


@dataclasses.dataclass
class Message:
    """What a jsonargparse error says, read from its text (:func:`read_message`)."""

    keys: list[str]  # the nested key the problem is in ("data", "tokenizer.vocab_size")
    detail: str  # the first line that says what is wrong
    class_path: Optional[str] = None  # the class whose arguments the problem is in
    given: Optional[str] = None  # the value refused, where the detail does not say it
    unknown: Optional[str] = None  # a key no parser declares: the dotted key below ``keys``
    unrecognized: Optional[str] = None  # a command-line option no parser declares, without its dashes
    required: list[str] = dataclasses.field(default_factory=list)  # the required keys not given
    not_a_mapping: Optional[str] = None  # the value given where a group of settings belongs


# jsonargparse 4.53's wording, in the order read_message looks for it (tests/test_cli_errors.py pins each one).
_NESTED_KEY = re.compile(r'Parser key "([^"]+)":?\s*(.*)')
_CLASS_PATH = re.compile(r"Problem with given class_path '([^']+)'")
_RESTATED = ("Does not validate", "Subtypes:", "Errors:", "Given value", "Expected a <class 'NoneType'>")
_GIVEN = re.compile(r"^\s*Given value: (?!NestedArg)(.*)$", re.MULTILINE)
_UNKNOWN_KEY = re.compile(r"Option '([^']+)' is not accepted|does not accept option '([^']+)'")
_NOT_A_MAPPING = re.compile(r"Unable to load config '(.*)'")
# argparse's own wording (the standard library's, which jsonargparse keeps)
_UNRECOGNIZED = re.compile(r"[Uu]nrecognized arguments: --([\w.]+)")
_REQUIRED = re.compile(r"the following arguments are required: (.+)")


def read_message(error: BaseException | str) -> Message:
    """The parts of a jsonargparse error that only its text holds (jsonargparse 4.53's wording)."""
    text = str(error)
    keys: list[str] = []
    detail = class_path = None
    for line in (raw.strip().lstrip("- ").strip() for raw in text.splitlines()):
        if not line or line.startswith(_RESTATED):
            continue
        if detail is not None:
            break  # what follows restates the first problem (jsonargparse nests it once more)
        nested = _NESTED_KEY.match(line)
        if nested:
            keys.append(nested.group(1))
            line = nested.group(2)
            if not line:
                continue
        given_class = _CLASS_PATH.match(line)
        if given_class:
            class_path = given_class.group(1)
            continue
        detail = line
    message = Message(keys, detail or (text.strip().splitlines() or [""])[0], class_path)
    given = _GIVEN.search(text)
    if given and message.detail.startswith("Expected a") and "Got value" not in message.detail:
        message.given = given.group(1)  # an Optional's message names the type, not the value
    # A key no parser declares is a KeyError (jsonargparse's NSKeyError) in the chain; its message names the key.
    key_error = next((e for e in _chain(error) if isinstance(e, KeyError)), None)
    unknown = _UNKNOWN_KEY.search(str(key_error) if key_error is not None else message.detail)
    if unknown:
        message.unknown = unknown.group(1) or unknown.group(2)
    unrecognized, not_a_mapping, required = (found.match(message.detail)
                                             for found in (_UNRECOGNIZED, _NOT_A_MAPPING, _REQUIRED))
    message.unrecognized = unrecognized and unrecognized.group(1)
    message.not_a_mapping = not_a_mapping and not_a_mapping.group(1)
    message.required = required.group(1).split(", ") if required else []
    return message


def _chain(error: BaseException | str) -> list[BaseException]:
    # The exceptions an error was raised from (jsonargparse re-raises with ``from``), itself first.
    chain: list[BaseException] = []
    while isinstance(error, BaseException) and error not in chain:
        chain.append(error)
        error = error.__cause__ or error.__context__
    return chain


def error_line(error: BaseException | str, argv: list[str], function: str = "") -> str:
    """jsonargparse's error (nested, many lines) as one line: the full key, what is wrong, the closest name.
    ``function``: the dotted name of the function whose arguments a plain command's options are."""
    message = read_message(error)
    key = ".".join(message.keys)
    help_hint = f" (main.py {argv[0]} --help lists every option)" if argv and not argv[0].startswith("-") else ""
    if message.not_a_mapping is not None and key:  # a value where a group of settings belongs (tokenizer: bpe)
        return _group_expected(key, message.class_path, message.not_a_mapping, _source_of(key, argv)) + help_hint
    if message.required and argv and argv[0] in TRAINER_COMMANDS:  # a command run without a config
        missing = [name.split(".", 1)[-1] for name in message.required]
        alone = " (HellaSwag: main.py test --ckpt_path X --data HellaSwagDataModule)" if argv[0] == "test" else ""
        return f"{argv[0]} needs {' and '.join(missing)}: give --config <yaml>{alone}{help_hint}"
    if message.unrecognized:  # a plain command's option, or a flag on the command line (abbreviations are not taken)
        return _unknown_option(message.unrecognized, function) + help_hint
    if message.unknown:
        if message.keys:  # a key inside a class_path's init_args
            keys, name, valid = message.keys, message.unknown, _init_args(message.class_path)
        else:  # a key at the top level or in the trainer section
            *keys, name = message.unknown.split(".")
            trainer = _init_args("lightning.pytorch.Trainer") if keys == ["trainer"] else None
            valid = trainer if trainer is not None else [] if keys else list(CONFIG_KEYS)
        close = difflib.get_close_matches(name, valid, n=1)
        full = ".".join(keys + [name])
        suggestion = f": did you mean {'.'.join(keys + close)}?" if close else ""
        suggestion = f": {MOVED[full]}" if full in MOVED else suggestion
        return f"unknown key {full}{_source_of(full, argv)}{suggestion}{help_hint}"
    detail = f"{message.detail}. Got value: {message.given}" if message.given is not None else message.detail
    return f"{key + ': ' if key else ''}{detail}{_source_of(key, argv)}{help_hint}"


def _unknown_option(option: str, function: str) -> str:
    # "did you mean" for --a.b.c: among a plain command's function arguments, or a trainer command's config keys.
    *prefix, name = option.split(".")
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
    if option in MOVED:
        suggestion = f": {MOVED[option]}"
    return f"unknown option --{option}{suggestion}"


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
