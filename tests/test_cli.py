"""The app end to end through the command line, in-process (real LightningCLI, Trainer, files)."""

import math
import subprocess
import sys

import pytest
import torch

from lit_gpt_mini.cli.main import main
from lit_gpt_mini.inference.generate import generate

from .conftest import CONFIGS, ROOT

DEBUG = str(CONFIGS / "debug_char.yaml")


def fit(tmp_path, monkeypatch, *extra, data_path):
    monkeypatch.chdir(tmp_path)
    return main(["fit", "--config", DEBUG, "--data.path", str(data_path), *extra])


def test_fit_writes_checkpoints_and_tensorboard_logs(tmp_path, monkeypatch, shakespeare_path):
    cli = fit(tmp_path, monkeypatch, data_path=shakespeare_path)
    assert cli.trainer.global_step == 20
    ckpt_dir = tmp_path / "out/debug_char/checkpoints"
    assert (ckpt_dir / "last.ckpt").is_file() and list(ckpt_dir.glob("best-step-*.ckpt"))
    ckpt = torch.load(ckpt_dir / "last.ckpt", weights_only=True)  # plain types only
    assert ckpt["tokenizer"]["kind"] == "char" and len(ckpt["tokenizer"]["chars"]) == 65
    assert ckpt["hyper_parameters"]["vocab_size"] == 65  # linked from the data
    assert not any("_orig_mod" in k for k in ckpt["state_dict"])
    logged = set()
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    (events,) = (tmp_path / "out/debug_char").glob("version_0/events.*")
    acc = EventAccumulator(str(events))
    acc.Reload()
    logged = set(acc.Tags()["scalars"])
    assert {"train/loss", "val/loss", "lr-AdamW/decay", "train/device/items_per_sec"} <= logged
    # the loss went down from ln(65) in 20 steps
    assert cli.trainer.callback_metrics["val/loss"].item() < math.log(65) - 0.2


def test_validate_from_checkpoint_restores_the_model_and_its_val_loss(tmp_path, monkeypatch, shakespeare_path):
    cli = fit(tmp_path, monkeypatch, "--trainer.limit_val_batches", "1.0", data_path=shakespeare_path)
    fit_val = cli.trainer.callback_metrics["val/loss"].item()  # the last validation ran at the last step
    ckpt = tmp_path / "out/debug_char/checkpoints/last.ckpt"
    # The model's shape comes back from the checkpoint, whatever the config says.
    cli = main(["validate", "--config", DEBUG, "--data.path", str(shakespeare_path), "--ckpt_path", str(ckpt),
                "--model.n_layer", "5", "--trainer.limit_val_batches", "1.0"])
    assert cli.model.config.n_layer == 2
    assert cli.trainer.callback_metrics["val/loss"].item() == pytest.approx(fit_val, abs=1e-6)


def test_checkpoint_with_another_tokenizer_is_refused(tmp_path, monkeypatch, shakespeare_path, small_text):
    fit(tmp_path, monkeypatch, "--trainer.max_steps", "2", "--trainer.val_check_interval", "2",
        data_path=shakespeare_path)
    ckpt = tmp_path / "out/debug_char/checkpoints/last.ckpt"
    # the checkpoint's hyperparameters record the vocabulary it was trained with (65 characters)
    with pytest.raises(SystemExit, match="model.vocab_size is 65 .*checkpoint.* the data's tokenizer has 41 tokens"):
        main(["validate", "--config", DEBUG, "--data.path", str(small_text), "--data.data_dir", "data/small",
              "--ckpt_path", str(ckpt)])


def test_resume_from_last_checkpoint_continues_step_lr_and_data(tmp_path, monkeypatch, shakespeare_path):
    # One run of 12 steps, and one of 6 steps resumed for 6 more, must end with the same weights.
    schedule = ["--model.lr_decay_steps", "12", "--trainer.val_check_interval", "3"]
    (tmp_path / "full").mkdir()
    full = fit(tmp_path / "full", monkeypatch, "--trainer.max_steps", "12", *schedule, data_path=shakespeare_path)
    (tmp_path / "split").mkdir()
    fit(tmp_path / "split", monkeypatch, "--trainer.max_steps", "6", *schedule, data_path=shakespeare_path)
    last = tmp_path / "split/out/debug_char/checkpoints/last.ckpt"
    state = torch.load(last, weights_only=True)
    assert state["global_step"] == 6
    half_lr = state["lr_schedulers"][0]["_last_lr"][0]
    resumed = main(["fit", "--config", DEBUG, "--data.path", str(shakespeare_path), "--ckpt_path", str(last),
                    "--trainer.max_steps", "12", *schedule])
    assert resumed.trainer.global_step == 12
    assert resumed.datamodule.train_windows_seen == 12 * 8
    lr = resumed.trainer.optimizers[0].param_groups[0]["lr"]
    assert lr == pytest.approx(full.trainer.optimizers[0].param_groups[0]["lr"]) and lr < half_lr
    for (name, a), (_, b) in zip(full.model.state_dict().items(), resumed.model.state_dict().items()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6, msg=name)


def test_generate_is_deterministic_for_a_seed(tmp_path, monkeypatch, shakespeare_path, capsys):
    fit(tmp_path, monkeypatch, "--trainer.max_steps", "2", "--trainer.val_check_interval", "2",
        data_path=shakespeare_path)
    ckpt = "out/debug_char/checkpoints/last.ckpt"
    main(["generate", "--ckpt_path", ckpt, "--prompt", "KING:", "--max_new_tokens", "30", "--seed", "3"])
    first = capsys.readouterr().out
    assert first.startswith("KING:")
    a = generate(ckpt, prompt="KING:", max_new_tokens=30, seed=3, num_samples=2)
    assert a[0] in first and a[0] != a[1]


@pytest.mark.parametrize("config", sorted(p.name for p in CONFIGS.glob("*.yaml")))
def test_every_config_parses(config, tmp_path, monkeypatch, shakespeare_path):
    monkeypatch.chdir(tmp_path)
    # --print_config prints the full resolved config and exits before anything is instantiated
    with pytest.raises(SystemExit) as e:
        main(["fit", "--config", str(CONFIGS / config), "--print_config"])
    assert e.value.code == 0


@pytest.mark.parametrize("config", sorted(p.name for p in CONFIGS.glob("*.yaml")))
def test_instantiating_any_config_reads_fetches_and_trains_nothing(config, tmp_path, monkeypatch):
    # Every process of a DDP job instantiates the config: that must stay cheap. Each boundary through which a
    # source downloads, requests, decompresses, streams or trains refuses to be called, and nothing is written.
    import socket

    import zstandard

    from data_modules.base import TokenDataModule
    from lit_gpt_mini.cli.main import GPTCLI
    from lit_gpt_mini.lit_module import GPTModule

    def refuse(*args, **kwargs):
        raise AssertionError("a config's instantiation reached the network, a file's contents or a training")

    for target in ("socket.socket.connect", "urllib.request.urlopen", "data_modules.shakespeare.download",
                   "data_modules.hellaswag.download", "data_modules.fineweb.stream_dataset",
                   "data_modules.wikipedia.make_client", "lit_gpt_mini.tokenizers.recipe.train_bpe",
                   "lit_gpt_mini.tokenizers.gpt2.load_encoding"):
        monkeypatch.setattr(target, refuse)
    monkeypatch.setattr(zstandard, "ZstdDecompressor", refuse)
    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.chdir(tmp_path)
    cli = GPTCLI(GPTModule, TokenDataModule, subclass_mode_model=True, subclass_mode_data=True, run=False,
                 args=["--config", str(CONFIGS / config), "--trainer.logger", "false",  # (GPU configs: on the CPU)
                       "--trainer.accelerator", "cpu", "--trainer.devices", "1", "--trainer.strategy", "auto",
                       # (the Discord config names no export or channel: the user sets one)
                       *(["--data.channel_ids", "[123]"] if config == "gpt2_discord.yaml" else [])])
    assert isinstance(cli.datamodule, TokenDataModule) and cli.model.model is None  # built later, in configure_model
    assert list(tmp_path.iterdir()) == []  # no data directory, no download, no tokenizer file


def run_main(*args, cwd):
    return subprocess.run([sys.executable, str(ROOT / "main.py"), *args], capture_output=True, text=True, cwd=cwd)


def test_unknown_config_key_is_one_clear_error(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text((CONFIGS / "debug_char.yaml").read_text().replace("n_embd: 32", "n_embed: 32"))
    result = run_main("fit", "--config", str(bad), cwd=tmp_path)
    assert result.returncode == 2  # jsonargparse's exit status for a config it cannot parse
    assert "n_embed" in result.stderr and "Traceback" not in result.stderr


@pytest.mark.parametrize(
    "args, message",
    [
        (["--data.path", "missing.txt"], "data.path missing.txt does not exist"),
        (["--data.path", "empty.txt"], "empty.txt is empty"),
        (["--model.block_size", "200000"], "model.block_size (200000) is too large"),
        (["--model.n_head", "3"], "n_embd (32) must be divisible by n_head (3)"),
    ],
)
def test_bad_input_is_one_clear_error(tmp_path, shakespeare_path, args, message):
    (tmp_path / "empty.txt").write_text("")
    result = run_main("fit", "--config", DEBUG, "--data.path", str(shakespeare_path), *args, cwd=tmp_path)
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1] == f"error: {message}" or message in result.stderr.splitlines()[-1]


def test_generate_refuses_a_file_that_is_not_a_checkpoint(tmp_path):
    (tmp_path / "x.ckpt").write_bytes(b"not a checkpoint")
    result = run_main("generate", "--ckpt_path", "x.ckpt", cwd=tmp_path)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "x.ckpt could not be loaded as a checkpoint" in result.stderr


def test_generate_streams_from_a_prompt_file_with_top_p(tmp_path, monkeypatch, shakespeare_path, capsys):
    fit(tmp_path, monkeypatch, "--trainer.max_steps", "2", "--trainer.val_check_interval", "2",
        data_path=shakespeare_path)
    (tmp_path / "prompt.txt").write_text("JULIET:\n")
    main(["generate", "--ckpt_path", "out/debug_char/checkpoints/last.ckpt", "--prompt_file", "prompt.txt",
          "--max_new_tokens", "25", "--top_p", "0.9", "--seed", "5"])
    streamed = capsys.readouterr().out
    (text,) = generate("out/debug_char/checkpoints/last.ckpt", prompt="JULIET:\n", max_new_tokens=25, top_p=0.9,
                       seed=5, use_cache=False, stream=False)
    assert streamed.startswith(text) and len(text) == len("JULIET:\n") + 25  # same text with and without the cache


def test_sample_text_is_logged_to_tensorboard_at_validation(tmp_path, monkeypatch, shakespeare_path):
    fit(tmp_path, monkeypatch, "--trainer.max_steps", "4", "--trainer.val_check_interval", "2",
        "--trainer.callbacks+=lit_gpt_mini.callbacks.SampleText", "--trainer.callbacks.prompt", "ROMEO:",
        "--trainer.callbacks.max_new_tokens", "20", data_path=shakespeare_path)
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    (events,) = (tmp_path / "out/debug_char").glob("version_0/events.*")
    acc = EventAccumulator(str(events), size_guidance={"tensors": 0})
    acc.Reload()
    texts = acc.Tensors("samples/text_summary")
    assert [t.step for t in texts] == [2, 4]
    sample = texts[-1].tensor_proto.string_val[0].decode()
    assert sample.startswith("    ROMEO:") and len(sample) >= len("    ROMEO:") + 20


def test_generate_names_a_prompt_character_outside_the_vocabulary(tmp_path, monkeypatch, shakespeare_path):
    fit(tmp_path, monkeypatch, "--trainer.max_steps", "1", "--trainer.val_check_interval", "1",
        data_path=shakespeare_path)
    result = run_main("generate", "--ckpt_path", "out/debug_char/checkpoints/last.ckpt", "--prompt", "KING 🤴:",
                      cwd=tmp_path)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1] == (
        "error: the prompt cannot be encoded by the checkpoint's tokenizer: character '🤴' is not in this "
        "tokenizer's alphabet of 65 characters"
    )
