"""The commands of main.py: the help that lists them, unknown commands and options, and ``test --ckpt_path``
without a config (HellaSwag for a GPT-2-vocabulary checkpoint, one clear error for another vocabulary)."""

from __future__ import annotations

import re

import pytest

from lit_gpt_mini.cli.main import GPTCLI, main
from lit_gpt_mini.cli.commands import COMMANDS

from .conftest import CONFIGS, ROOT

ALL = ["fit", "validate", "test", "eval", "generate", "chat", "serve", "export", "prepare"]


def exit_of(args):
    with pytest.raises(SystemExit) as e:
        main(args)
    return e.value.code


@pytest.mark.parametrize("args", [["--help"], ["-h"], []])
def test_the_help_lists_every_command_with_one_line(args, capsys):
    if args:
        assert main(args) is None
    else:
        assert exit_of(args) == 2  # a command is required
    out = capsys.readouterr().out
    listed = re.findall(r"^  (\w+) +(\S.*)$", out, flags=re.MULTILINE)
    assert [name for name, _ in listed] == ALL == list(COMMANDS)
    assert all(len(line) > 10 for _, line in listed)
    assert "predict" not in out
    assert "python main.py <command> --help shows a command's options" in out


def test_main_py_docstring_names_the_commands():
    doc = (ROOT / "main.py").read_text().split('"""')[1]
    assert all(name in doc for name in ALL) and "predict" not in doc


@pytest.mark.parametrize("command, usage", [
    ("fit", "main.py [options] fit"), ("validate", "main.py [options] validate"), ("test", "main.py [options] test"),
    ("eval", "main.py [options] test"),  # an alias of test --data HellaSwagDataModule
    ("generate", "main.py generate"), ("chat", "main.py chat"), ("serve", "main.py serve"),
    ("export", "main.py export"), ("prepare", "main.py prepare"),
])
def test_each_command_has_its_own_help(command, usage, capsys):
    assert exit_of([command, "--help"]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"usage: {usage}")
    assert "--ckpt_path" in out or "--config" in out


def test_the_trainer_commands_describe_themselves_and_predict_is_gone(capsys):
    assert list(GPTCLI.subcommands()) == ["fit", "validate", "test"]
    assert exit_of(["fit", "--help"]) == 0
    assert "Train a model from a config" in " ".join(capsys.readouterr().out.split())


@pytest.mark.parametrize("command, hint", [("predict", ""), ("fitt", "did you mean fit? ")])
def test_an_unknown_command_is_one_error_line(command, hint, capsys):
    assert exit_of([command, "--config", "x.yaml"]) == 2
    err = capsys.readouterr().err
    assert err == (f"error: main.py has no command '{command}': {hint}the commands are fit, validate, test, eval, "
                   f"generate, chat, serve, export, prepare (python main.py --help describes them)\n")


@pytest.mark.parametrize("args, message", [
    (["fit", "--config", str(CONFIGS / "debug_char.yaml"), "--trainer.max_step", "5"],
     "unknown option --trainer.max_step: did you mean --trainer.max_steps? (main.py fit --help lists every option)"),
    (["fit", "--config", str(CONFIGS / "debug_char.yaml"), "--seed_every", "5"],
     "unknown option --seed_every: did you mean --seed_everything? (main.py fit --help lists every option)"),
    (["generate", "--ckpt_path", "x.ckpt", "--max_new", "5"],
     "unknown option --max_new: did you mean --max_new_tokens? (main.py generate --help lists every option)"),
    (["export", "--ckpt_path", "x.ckpt", "--out", "m.pth", "--form", "hf"],
     "unknown option --form: did you mean --format? (main.py export --help lists every option)"),
    (["eval", "--ckpt_pat", "x.ckpt"],
     "unknown option --ckpt_pat: did you mean --ckpt_path? (main.py test --help lists every option)"),
    (["prepare", "--dat.path", "x.txt"],
     "unknown option --dat.path: did you mean --data.path? (main.py prepare --help lists every option)"),
    (["fit", "--config", str(CONFIGS / "debug_char.yaml"), "--checkpont.save_last", "false"],
     "unknown option --checkpont.save_last: did you mean --checkpoint.save_last? (main.py fit --help lists every option)"),
])
def test_an_abbreviated_option_is_an_error_not_the_option_it_begins(args, message, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert exit_of(args) == 2
    assert capsys.readouterr().err == f"error: {message}\n"


# --- test --ckpt_path X without a config -----------------------------------------------------------------------


def test_eval_names_a_missing_checkpoint(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as e:
        main(["eval", "--ckpt_path", "missing.ckpt"])
    assert str(e.value) == "error: checkpoint missing.ckpt does not exist"


@pytest.mark.parametrize("args, message", [
    (["validate"], "validate needs data and model: give --config <yaml> (main.py validate --help lists every option)"),
    (["test"], "test needs data and model: give --config <yaml> (HellaSwag: main.py test --ckpt_path X --data "
               "HellaSwagDataModule) (main.py test --help lists every option)"),
])
def test_a_trainer_command_without_a_config_says_what_it_needs(args, message, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert exit_of(args) == 2
    assert capsys.readouterr().err == f"error: {message}\n"


# --- values that moved or belong to one kind of data -------------------------------------------------------------


def test_an_old_config_with_data_block_size_is_told_where_it_moved(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    # the data section of an old config carried the window length too
    (tmp_path / "old.yaml").write_text("data:\n  init_args:\n    block_size: 64\n")
    assert exit_of(["fit", "--config", str(CONFIGS / "debug_char.yaml"), "--config", "old.yaml"]) == 2
    assert capsys.readouterr().err == (
        "error: unknown key data.block_size (in old.yaml): the window length is the model's context, "
        "model.block_size (declared once, for both) (main.py fit --help lists every option)\n")


def test_hellaswag_during_training_is_refused_for_data_without_gpt2_tokens(tmp_path, monkeypatch, shakespeare_path):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as e:
        main(["fit", "--config", str(CONFIGS / "debug_char.yaml"), "--data.path", str(shakespeare_path),
              "--hellaswag.every_n_steps", "2", "--hellaswag.data", "data_modules.hellaswag.HellaSwagDataModule",
              "--trainer.max_steps", "2"])
    assert str(e.value) == (
        "error: hellaswag.every_n_steps is set, but HellaSwag is scored with gpt2 tokens and this data uses a "
        "char tokenizer: set hellaswag.every_n_steps to null, or data.tokenizer.kind to gpt2")
    assert not (tmp_path / "data/hellaswag").exists()
