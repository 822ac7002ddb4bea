"""Training reads no tensor back to the host between logging steps (on a GPU each read would stall the queue)."""

from __future__ import annotations

import pytest
import torch
from torch.overrides import TorchFunctionMode

from lit_gpt_mini.cli.main import main

from .conftest import CONFIGS

# Every way a tensor's value reaches Python: on a GPU each one waits for the device to finish its queue.
HOST_READS = {
    torch.Tensor.item, torch.Tensor.tolist, torch.Tensor.numpy, torch.Tensor.cpu,
    torch.Tensor.__bool__, torch.Tensor.__float__, torch.Tensor.__int__, torch.Tensor.__index__,
}


class CountHostReads(TorchFunctionMode):
    def __init__(self) -> None:
        super().__init__()
        self.reads: list[str] = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        if func in HOST_READS:
            self.reads.append(func.__name__)
        return func(*args, **(kwargs or {}))


def _fit_and_count(tmp_path, monkeypatch, shakespeare_path, accumulate: int, extra: tuple = ()) -> list[str]:
    run_dir = tmp_path / f"accumulate{accumulate}{'-'.join(extra)}"
    run_dir.mkdir()
    monkeypatch.chdir(run_dir)
    syncs = []
    monkeypatch.setattr(torch.cuda, "synchronize", lambda *a, **k: syncs.append("cuda.synchronize"))
    counter = CountHostReads()
    with counter:
        cli = main([
            "fit", "--config", str(CONFIGS / "debug_char.yaml"), "--data.path", str(shakespeare_path),
            "--data.data_dir", str(tmp_path / "data"), "--trainer.max_steps", "4",
            "--trainer.accumulate_grad_batches", str(accumulate), "--trainer.log_every_n_steps", "2",
            "--trainer.limit_val_batches", "0", "--trainer.enable_progress_bar", "true",
            "--trainer.enable_checkpointing", "false",
            "--trainer.callbacks", "lightning.pytorch.callbacks.LearningRateMonitor",
            "--trainer.callbacks+=lit_gpt_mini.callbacks.TokenThroughput",
            "--trainer.callbacks.init_args.window_size", "2",
            "--trainer.callbacks+=lit_gpt_mini.callbacks.StopOnNonFinite",
            "--trainer.callbacks.init_args.every_n_steps", "2", *extra,
        ])
    # the progress bar still shows the loss (read on the logged steps)
    assert isinstance(cli.trainer.progress_bar_callback.get_metrics(cli.trainer, cli.model)["train/loss"], float)
    return counter.reads + syncs


def test_host_reads_do_not_grow_with_micro_batches(tmp_path, monkeypatch, shakespeare_path):
    # The same 4 optimizer steps (2 of them logged) from 8 and from 16 micro-batches: any read made per
    # micro-batch (a progress-bar metric, a timing sync, a loss check) would make the second count larger.
    eight = _fit_and_count(tmp_path, monkeypatch, shakespeare_path, accumulate=2)
    sixteen = _fit_and_count(tmp_path, monkeypatch, shakespeare_path, accumulate=4)
    assert sorted(sixteen) == sorted(eight)


@pytest.mark.gpu
def test_on_cuda_no_host_read_or_sync_grows_with_micro_batches(tmp_path, monkeypatch, shakespeare_path):
    extra = ["--trainer.accelerator", "cuda", "--trainer.precision", "bf16-mixed"]
    eight = _fit_and_count(tmp_path, monkeypatch, shakespeare_path, accumulate=2, extra=extra)
    sixteen = _fit_and_count(tmp_path, monkeypatch, shakespeare_path, accumulate=4, extra=extra)
    assert sorted(sixteen) == sorted(eight)
