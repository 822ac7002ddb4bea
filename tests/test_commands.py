"""The commands of main.py: the help that lists them, unknown commands and options, and ``test --ckpt_path``
without a config (HellaSwag for a GPT-2-vocabulary checkpoint, one clear error for another vocabulary)."""

from __future__ import annotations

import re

import pytest
import torch

from lit_gpt_mini.cli import COMMANDS, GPTCLI, main
from lit_gpt_mini.model import GPT, GPTConfig

from .conftest import CONFIGS, ROOT, write_jsonl
from .test_hellaswag import write_examples

ALL = ["fit", "validate", "test", "generate", "chat", "serve", "export", "prepare"]


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
    assert err == (f"error: main.py has no command '{command}': {hint}the commands are fit, validate, test, generate, "
                   f"chat, serve, export, prepare (python main.py --help describes them)\n")


@pytest.mark.parametrize("args, message", [
    (["fit", "--config", str(CONFIGS / "debug_char.yaml"), "--trainer.max_step", "5"],
     "unknown option --trainer.max_step: did you mean --trainer.max_steps? (main.py fit --help lists every option)"),
    (["fit", "--config", str(CONFIGS / "debug_char.yaml"), "--seed_every", "5"],
     "unknown option --seed_every: did you mean --seed_everything? (main.py fit --help lists every option)"),
    (["generate", "--ckpt_path", "x.ckpt", "--max_new", "5"],
     "unknown option --max_new: did you mean --max_new_tokens? (main.py generate --help lists every option)"),
    (["export", "--ckpt_path", "x.ckpt", "--out", "m.pth", "--form", "hf"],
     "unknown option --form: did you mean --format? (main.py export --help lists every option)"),
])
def test_an_abbreviated_option_is_an_error_not_the_option_it_begins(args, message, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert exit_of(args) == 2
    assert capsys.readouterr().err == f"error: {message}\n"


# --- test --ckpt_path X without a config -----------------------------------------------------------------------


@pytest.fixture
def gpt2_checkpoint(tmp_path, monkeypatch, shakespeare_docs):
    """A 2-step run of the tiny GPT-2 config (GPT-2's vocabulary) and 23 HellaSwag-format examples on disk."""
    monkeypatch.chdir(tmp_path)
    corpus = write_jsonl(tmp_path / "corpus.jsonl", shakespeare_docs[:1000])
    main(["fit", "--config", str(CONFIGS / "debug_gpt2.yaml"), "--data.path", str(corpus), "--trainer.max_steps", "2",
          "--trainer.val_check_interval", "2"])
    return "out/debug_gpt2/checkpoints/last.ckpt", write_examples(tmp_path / "hs.jsonl", 23)


def test_test_without_a_config_scores_hellaswag_with_the_checkpoints_model(gpt2_checkpoint, capsys):
    from data_modules.hellaswag import HellaSwagDataModule

    ckpt, examples = gpt2_checkpoint
    cli = main(["test", "--ckpt_path", ckpt, "--data.path", str(examples)])
    assert type(cli.datamodule) is HellaSwagDataModule and cli.datamodule.file == examples
    assert type(cli.model).__name__ == "GPT2"  # the checkpoint's class and shape, with no config given
    assert (cli.model.config.n_layer, cli.model.config.n_embd, cli.model.config.vocab_size) == (2, 32, 50257)
    metrics = cli.trainer.callback_metrics
    assert metrics["test/hellaswag_examples"].item() == 23
    acc = metrics["test/hellaswag_acc"].item()
    assert 0 <= acc <= 1 and 0 <= metrics["test/hellaswag_acc_norm"].item() <= 1
    assert "test/hellaswag_acc" in capsys.readouterr().out  # Lightning's results table
    # The same as the config's way of scoring HellaSwag (the data module inside the training data's).
    with_config = main(["test", "--config", str(CONFIGS / "debug_gpt2.yaml"), "--ckpt_path", ckpt,
                        "--data.hellaswag", "data_modules.hellaswag.HellaSwagDataModule",
                        "--data.hellaswag.path", str(examples)])
    assert with_config.trainer.callback_metrics["test/hellaswag_acc"].item() == pytest.approx(acc)


def write_char_checkpoint(path):
    """A checkpoint laid out as Lightning writes one (hyperparameters, ``model.``-prefixed weights) with this
    project's tokenizer entry, for a char model."""
    chars = "\n !',-.:;?ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
    config = dict(vocab_size=len(chars), block_size=16, n_layer=1, n_head=2, n_embd=16)
    model = GPT(GPTConfig(**config))
    torch.save({"hyper_parameters": {"_class_path": "lit_gpt_mini.lit_module.CharGPT", **config},
                "state_dict": {f"model.{k}": v for k, v in model.state_dict().items()},
                "tokenizer": {"kind": "char", "chars": chars}}, path)
    return str(path)


def test_test_without_a_config_refuses_another_vocabulary_in_one_line(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    ckpt = write_char_checkpoint(tmp_path / "char.ckpt")
    with pytest.raises(SystemExit) as e:
        main(["test", "--ckpt_path", ckpt])
    assert str(e.value) == (
        f"error: {ckpt} has a char tokenizer: HellaSwag, what test scores without a config, needs GPT-2's "
        f"vocabulary; to get its test loss, pass --config with the data the model was trained on"
    )
    assert not (tmp_path / "data").exists()  # refused before anything was downloaded or written


def test_test_without_a_config_names_a_missing_checkpoint(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as e:
        main(["test", "--ckpt_path", "missing.ckpt"])
    assert str(e.value) == "error: checkpoint missing.ckpt does not exist"


@pytest.mark.parametrize("args, message", [
    (["validate"], "validate needs data and model: give --config <yaml> (main.py validate --help lists every option)"),
    (["test"], "test needs data and model: give --config <yaml> (or only --ckpt_path: HellaSwag) (main.py test "
               "--help lists every option)"),
])
def test_a_trainer_command_without_a_config_says_what_it_needs(args, message, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert exit_of(args) == 2
    assert capsys.readouterr().err == f"error: {message}\n"
