"""Messages for people from the commands and callbacks go through the project's logger: on stderr, once per job."""

from __future__ import annotations

import types

from lightning.fabric.utilities.rank_zero import rank_zero_only

from lit_gpt_mini.callbacks import GradientAccumulation, RandomState
from lit_gpt_mini.checkpoint import LoadedModel, load_pth
from lit_gpt_mini.model import GPT, GPTConfig


def test_a_resume_on_another_device_count_is_a_warning_from_rank_zero_only(capsys, monkeypatch):
    trainer = types.SimpleNamespace(world_size=1, global_rank=0)
    for rank, expected in ((0, True), (1, False)):
        monkeypatch.setattr(rank_zero_only, "rank", rank)
        callback = RandomState()
        callback.load_state_dict({"states": [None, None]})
        callback.on_train_batch_start(trainer, None)
        err = capsys.readouterr().err
        message = ("warning: the checkpoint holds the random states of 2 device(s), this run has 1: dropout masks "
                   "will differ from an uninterrupted run\n")
        assert (err == message) is expected, err


def test_gradient_accumulation_says_how_it_splits_a_step(capsys):
    data = types.SimpleNamespace(batch_size=4)
    model = types.SimpleNamespace(hparams=types.SimpleNamespace(block_size=32))
    trainer = types.SimpleNamespace(datamodule=data, world_size=1, accumulate_grad_batches=1, val_check_interval=1.0)
    GradientAccumulation(total_batch_tokens=256).setup(trainer, model, "fit")
    assert capsys.readouterr().err.splitlines() == [
        "Gradient accumulation: 256 tokens per step = 4 x 32 tokens x 1 devices x 2 micro-batches",
    ]
    assert (data.batch_size, trainer.accumulate_grad_batches) == (4, 2)  # the data's batch size is the data's


def test_export_says_where_it_wrote(tmp_path, capsys, monkeypatch):
    from lit_gpt_mini.inference import export

    model = GPT(GPTConfig(vocab_size=3, block_size=8, n_layer=1, n_head=1, n_embd=8))
    # (a real checkpoint is exported in test_export.py; here only the message is in question)
    monkeypatch.setattr(export, "load_model", lambda path, device: LoadedModel(model, _Chars(), "text"))
    export.export("run.ckpt", str(tmp_path / "m.pth"))
    assert capsys.readouterr().err == f"exported run.ckpt to {tmp_path / 'm.pth'} (pth)\n"
    assert load_pth(tmp_path / "m.pth")[1] == {"kind": "char", "chars": "abc"}


class _Chars:
    def to_dict(self) -> dict:
        return {"kind": "char", "chars": "abc"}


def test_prepare_says_where_the_data_is(tmp_path, monkeypatch, capsys, shakespeare_path):
    from lit_gpt_mini.cli.main import main

    from .conftest import CONFIGS

    monkeypatch.chdir(tmp_path)
    main(["prepare", "--config", str(CONFIGS / "debug_char.yaml"), "--data.path", str(shakespeare_path)])
    err = capsys.readouterr().err
    assert "DataModule: data ready in data/shakespeare" in err
