"""What keeps a run honest: exact resume with dropout, the final step always checkpointed, divergence stops."""

import math

import pytest
import torch

from lit_gpt_mini.callbacks import StopOnNonFinite
from lit_gpt_mini.cli.main import main

from .conftest import CONFIGS

DEBUG = str(CONFIGS / "debug_char.yaml")


def fit(cwd, monkeypatch, data_path, *extra):
    cwd.mkdir(exist_ok=True)
    monkeypatch.chdir(cwd)
    return main(["fit", "--config", DEBUG, "--data.path", str(data_path), *extra])


def test_resume_with_dropout_gives_the_same_weights_as_a_straight_run(tmp_path, monkeypatch, shakespeare_path):
    # 2N steps straight against N + N resumed, with dropout 0.2: the dropout masks after the resume come from
    # the restored generator states, so the weights agree to float rounding.
    args = ["--model.dropout", "0.2", "--model.lr_decay_steps", "12", "--trainer.val_check_interval", "3"]
    straight = fit(tmp_path / "straight", monkeypatch, shakespeare_path, "--trainer.max_steps", "12", *args)
    fit(tmp_path / "split", monkeypatch, shakespeare_path, "--trainer.max_steps", "6", *args)
    last = tmp_path / "split/out/debug_char/checkpoints/last.ckpt"
    assert len(torch.load(last, weights_only=True)["callbacks"]["RandomState"]["states"]) == 1  # one per rank
    resumed = main(["fit", "--config", DEBUG, "--data.path", str(shakespeare_path), "--ckpt_path", str(last),
                    "--trainer.max_steps", "12", *args])
    assert resumed.trainer.global_step == 12
    differ = max((a - b).abs().max().item() for a, b in zip(straight.model.parameters(), resumed.model.parameters()))
    assert differ <= 1e-6

    # Without the saved states (the callback removed), the same resume draws other masks: the test can fail.
    fit(tmp_path / "split2", monkeypatch, shakespeare_path, "--trainer.max_steps", "6", *args)
    last = tmp_path / "split2/out/debug_char/checkpoints/last.ckpt"
    no_rng = main(["fit", "--config", DEBUG, "--data.path", str(shakespeare_path), "--ckpt_path", str(last),
                   "--trainer.max_steps", "12", *args, "--trainer.callbacks", _callbacks_without("RandomState")])
    assert no_rng.trainer.global_step == 12
    differ = max((a - b).abs().max().item() for a, b in zip(straight.model.parameters(), no_rng.model.parameters()))
    assert differ > 1e-4


def _callbacks_without(name: str) -> str:
    import yaml

    from lit_gpt_mini.cli.main import RECIPE_DEFAULTS

    return yaml.safe_dump([c for c in RECIPE_DEFAULTS["trainer.callbacks"] if not c["class_path"].endswith(name)])


def test_the_last_step_is_checkpointed_whatever_the_interval(tmp_path, monkeypatch, shakespeare_path):
    # every 4 steps, 10 steps in all, no validation in between: Lightning alone would leave last.ckpt at step 8
    cli = fit(tmp_path, monkeypatch, shakespeare_path, "--trainer.max_steps", "10", "--trainer.val_check_interval",
              "100", "--trainer.limit_val_batches", "0", "--checkpoint.monitor", "null", "--checkpoint.every_n_train_steps",
              "4", "--checkpoint.filename", "step-{step}", "--checkpoint.save_top_k", "-1")
    checkpoints = tmp_path / "out/debug_char/checkpoints"
    assert sorted(p.name for p in checkpoints.iterdir()) == ["last.ckpt", "step-4.ckpt", "step-8.ckpt"]
    last = torch.load(checkpoints / "last.ckpt", weights_only=True)
    assert last["global_step"] == cli.trainer.global_step == 10
    for name, value in cli.model.state_dict().items():
        torch.testing.assert_close(last["state_dict"][name], value, msg=name)


def test_a_diverging_run_stops_with_an_error_and_writes_no_checkpoint(tmp_path, monkeypatch, shakespeare_path):
    with pytest.raises(SystemExit) as e:
        fit(tmp_path, monkeypatch, shakespeare_path, "--model.learning_rate", "1e12", "--model.min_lr", "0")
    message = str(e.value.code)
    assert message.startswith("error: the training loss at step ") and "is nan: training diverged" in message
    assert "model.learning_rate" in message
    assert not (tmp_path / "out/debug_char/checkpoints").exists() or not any(
        (tmp_path / "out/debug_char/checkpoints").iterdir())


class _Trainer:
    """Just what StopOnNonFinite reads from a Trainer (one device)."""

    def __init__(self, metrics=None, step=0):
        self.callback_metrics = metrics or {}
        self.global_step = step

        class Strategy:
            @staticmethod
            def reduce_boolean_decision(decision, all=True):
                return decision

        self.strategy = Strategy()


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
def test_a_non_finite_validation_loss_is_not_hidden(value):
    stop = StopOnNonFinite(every_n_steps=0)
    stop.on_validation_end(_Trainer({"val/loss": torch.tensor(2.0)}, step=5), None)  # finite: nothing happens
    with pytest.raises(Exception, match=r"val/loss at step 5 is (nan|inf|-inf): training diverged"):
        stop.on_validation_end(_Trainer({"val/loss": torch.tensor(value)}, step=5), None)


def test_training_loss_is_checked_every_n_steps_and_at_the_end():
    stop = StopOnNonFinite(every_n_steps=3)
    nan = {"loss": torch.tensor(math.nan)}
    stop.on_train_batch_end(_Trainer(step=2), None, nan)  # not a checking step: no sync, no error yet
    with pytest.raises(Exception, match="training loss at step 3 is nan"):
        stop.on_train_batch_end(_Trainer(step=3), None, nan)
    with pytest.raises(Exception, match=r"training loss at the last step \(4\) is nan"):
        stop.on_train_end(_Trainer(step=4), None)


def test_validation_metric_keeps_nan():
    from lit_gpt_mini.lit_module import CharGPT

    module = CharGPT(vocab_size=10, block_size=8, n_layer=1, n_head=1, n_embd=8)
    module.val_loss.update(torch.tensor(1.0), weight=1)
    module.val_loss.update(torch.tensor(3.0), weight=3)
    assert module.val_loss.compute().item() == pytest.approx(2.5)  # still weighted by tokens
    module.val_loss.update(torch.tensor(1.0), weight=4)
    module.val_loss.update(torch.tensor(math.nan), weight=4)
    assert math.isnan(module.val_loss.compute().item())


@pytest.mark.parametrize("precision", ["32-true", "bf16-mixed"])
def test_a_run_that_will_take_long_says_so_after_its_second_micro_batch(tmp_path, monkeypatch, small_text, capsys,
                                                                         precision):
    # The thresholds lowered so that this tiny run counts as long: the warning names the step, the run and, on a
    # CPU, what to change.
    fit(tmp_path, monkeypatch, small_text, "--trainer.max_steps", "4", "--trainer.accumulate_grad_batches", "2",
        "--trainer.precision", precision, "--trainer.callbacks+=lit_gpt_mini.callbacks.RunTimeEstimate",
        "--trainer.callbacks.init_args.step_seconds", "1e-9")
    (warning,) = [line for line in capsys.readouterr().err.splitlines() if "optimizer step" in line]
    assert warning.startswith("warning: one optimizer step (2 micro-batches) will take about ")
    assert f"on this CPU in {precision}" in warning and "the 3 steps left to trainer.max_steps about" in warning  # after step 1
    assert "configs/*_cpu.yaml" in warning
    assert ("--trainer.precision 32-true" in warning) == (precision != "32-true")


def test_a_short_run_is_not_warned_about(tmp_path, monkeypatch, small_text, capsys):
    fit(tmp_path, monkeypatch, small_text, "--trainer.max_steps", "4")  # the config's own RunTimeEstimate
    assert "optimizer step" not in capsys.readouterr().err
