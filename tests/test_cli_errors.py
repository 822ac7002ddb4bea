"""lit_gpt_mini/cli/errors.py against the jsonargparse it is pinned to: real errors of a small jsonargparse parser
(no Lightning, fast), read by ``read_message``. A jsonargparse release that words its errors differently fails here,
not in a user's terminal."""

from __future__ import annotations

import dataclasses
from typing import Literal, Optional

import jsonargparse
import pytest
from jsonargparse import ActionConfigFile, ArgumentError, ArgumentParser

from lit_gpt_mini.cli.errors import error_line, read_message


@dataclasses.dataclass
class Tokenizer:
    """A group of settings, as the data modules' tokenizer is."""

    kind: Literal["char", "bpe"] = "char"
    vocab_size: Optional[int] = None


class Base:
    """A base class chosen by class_path, as ``--data`` is."""

    def __init__(self, seed: int = 0) -> None:
        self.seed = seed


class Data(Base):
    """A subclass whose ``**kwargs`` reach its base's arguments (did-you-mean looks there too)."""

    def __init__(self, path: str = "", tokenizer: Tokenizer = Tokenizer(), **kwargs) -> None:
        super().__init__(**kwargs)


class Trainer:
    """A section of plain arguments, as ``trainer`` is."""

    def __init__(self, max_steps: int = 1) -> None:
        self.max_steps = max_steps


DATA = f"{__name__}.Data"


def parse_error(*args: str) -> ArgumentError:
    parser = ArgumentParser(exit_on_error=False, allow_abbrev=False, prog="x")
    parser.add_argument("--config", action=ActionConfigFile)
    parser.add_subclass_arguments(Base, "data", required=True)
    parser.add_class_arguments(Trainer, "trainer")
    with pytest.raises(ArgumentError) as e:
        parser.parse_args(list(args))
    return e.value


def test_the_pinned_jsonargparse_is_the_one_these_patterns_were_read_from():
    # setup.cfg pins the minor release; a bump must come with this file's cases re-checked.
    assert jsonargparse.__version__.startswith("4.53.")


def test_an_unknown_key_in_init_args_names_the_key_the_class_and_the_name():
    message = read_message(parse_error("--data", DATA, "--data.init_args.sed", "3"))
    assert (message.keys, message.class_path, message.unknown) == (["data"], DATA, "sed")


def test_an_unknown_key_of_a_section_in_a_config():
    message = read_message(parse_error("--config", f"trainer:\n  max_stepz: 3\ndata: {DATA}\n"))
    assert (message.keys, message.unknown) == ([], "max_stepz")


def test_a_value_of_the_wrong_type_for_an_optional_names_the_value():
    message = read_message(parse_error("--data", DATA, "--data.tokenizer.vocab_size", "big"))
    assert message.keys == ["data", "tokenizer.vocab_size"] and message.class_path == DATA
    assert message.detail == "Expected a <class 'int'>" and message.given == "big"


def test_a_value_not_allowed_is_said_with_the_value():
    message = read_message(parse_error("--data", DATA, "--data.tokenizer.kind", "sp"))
    assert message.keys == ["data", "tokenizer.kind"]
    assert message.detail.endswith("Got value: sp") and message.given is None


def test_a_plain_value_where_a_group_of_settings_belongs():
    message = read_message(parse_error("--data", DATA, "--data.tokenizer", "bpe"))
    assert (message.keys, message.class_path, message.not_a_mapping) == (["data", "tokenizer"], DATA, "bpe")


def test_an_unrecognized_option_and_a_missing_one():
    assert read_message(parse_error("--data", DATA, "--trainer.max_step", "3")).unrecognized == "trainer.max_step"
    assert read_message(parse_error()).required == ["data"]


def test_text_of_another_wording_is_passed_on_whole_not_misread():
    # what read_message does not recognise stays the detail, unclassified: the user still sees jsonargparse's words
    message = read_message("something new happened\n  more")
    assert message.detail == "something new happened"
    assert message.keys == [] and message.unknown is message.unrecognized is message.not_a_mapping is None


@pytest.mark.parametrize("args, line", [
    (["--data", DATA, "--data.init_args.sed", "3"],
     "unknown key data.sed (on the command line): did you mean data.seed?"),
    (["--data", DATA, "--data.tokenizer.vocab_size", "big"],
     "data.tokenizer.vocab_size: Expected a <class 'int'>. Got value: big (on the command line)"),
    (["--data", DATA, "--data.tokenizer", "bpe"],
     "data.tokenizer takes a mapping of its settings (kind, vocab_size) or a YAML file of them, not 'bpe' "
     "(on the command line): e.g. --data.tokenizer.kind bpe"),
])
def test_the_one_line_made_of_a_real_error(args, line):
    assert error_line(parse_error(*args), args) == line  # (no command in argv: no --help hint)
