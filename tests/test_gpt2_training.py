"""The GPT-2 recipe end to end on a CPU: jsonl -> shards -> fit with gradient accumulation, exact resume, DDP."""

from __future__ import annotations

import math
import os
import subprocess
import sys

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from lit_gpt_mini.cli.main import main
from lit_gpt_mini.inference.generate import generate

from .conftest import CONFIGS, ROOT, write_jsonl

DEBUG = str(CONFIGS / "debug_gpt2.yaml")
RECORD = "--trainer.callbacks+=tests.helpers.RecordBatches"


@pytest.fixture
def corpus(tmp_path, shakespeare_docs):
    return write_jsonl(tmp_path / "corpus.jsonl", shakespeare_docs[:3000])


def scalars(run_dir):
    (events,) = run_dir.glob("events.*")
    acc = EventAccumulator(str(events))
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def test_fit_accumulates_to_the_total_batch_and_logs_the_recipe_metrics(tmp_path, monkeypatch, corpus):
    monkeypatch.chdir(tmp_path)
    cli = main(["fit", "--config", DEBUG, "--data.path", str(corpus)])
    trainer = cli.trainer
    # 256 tokens a step = batch 4 x block 32 x 1 device x 2 micro-batches
    assert trainer.accumulate_grad_batches == 2 and trainer.global_step == 8
    assert trainer.val_check_batch == 8  # val_check_interval 4 counts optimizer steps, not micro-batches
    assert cli.datamodule.train_windows_seen == 8 * 2 * 4
    logged = scalars(tmp_path / "out/debug_gpt2/version_0")
    assert {"train/loss", "train/grad_norm", "train/tokens", "val/loss", "lr-AdamW/decay"} <= set(logged)
    assert logged["train/tokens"][-1] == (7, 8 * 256)
    assert [step for step, _ in logged["val/loss"]] == [3, 7]  # after optimizer steps 4 and 8
    assert logged["val/loss"][-1][1] < math.log(50257)
    checkpoints = tmp_path / "out/debug_gpt2/checkpoints"
    assert {p.name for p in checkpoints.iterdir()} == {"step-4.ckpt", "step-8.ckpt", "last.ckpt"}
    ckpt = torch.load(checkpoints / "last.ckpt", weights_only=True)
    assert ckpt["tokenizer"] == {"kind": "gpt2"} and ckpt["hyper_parameters"]["vocab_size"] == 50257
    (text,) = generate(str(checkpoints / "last.ckpt"), prompt="ROMEO:", max_new_tokens=5, seed=0)
    assert text.startswith("ROMEO:")


@pytest.mark.parametrize("optimizer, block", [("adamw", "gpt2"), ("muon", "gpt2"), ("adamw", "modern")])
def test_resumed_run_sees_the_same_batches_and_ends_with_the_same_model(tmp_path, monkeypatch, corpus, optimizer,
                                                                        block):
    common = ["--config", DEBUG, "--data.path", str(corpus), "--model.lr_decay_steps", "8",
              "--model.optimizer", optimizer, "--model.block", block]
    (tmp_path / "full").mkdir()
    monkeypatch.chdir(tmp_path / "full")
    full = main(["fit", *common, RECORD])
    (tmp_path / "split").mkdir()
    monkeypatch.chdir(tmp_path / "split")
    main(["fit", *common, "--trainer.max_steps", "4", RECORD, "--trainer.callbacks.path", "out/first"])
    # resumed with DataLoader workers, which fetch ahead: the stream must still continue exactly
    resumed = main(["fit", *common, "--ckpt_path", "out/debug_gpt2/checkpoints/last.ckpt", RECORD,
                    "--trainer.callbacks.path", "out/second", "--data.num_workers", "2"])
    assert resumed.trainer.global_step == 8
    # the optimizer's state (Muon's momentum too) travels in the checkpoint
    saved = torch.load(tmp_path / "split/out/debug_gpt2/checkpoints/step-4.ckpt", weights_only=True)
    state_keys = {key for state in saved["optimizer_states"][0]["state"].values() for key in state}
    assert state_keys == ({"step", "exp_avg", "exp_avg_sq", "momentum_buffer"} if optimizer == "muon"
                          else {"step", "exp_avg", "exp_avg_sq"})
    seen = torch.load(tmp_path / "full/out/batches_rank0.pt")
    first, second = (torch.load(tmp_path / f"split/out/{part}_rank0.pt") for part in ("first", "second"))
    assert seen.shape == (16, 4, 32)  # 8 steps x 2 micro-batches
    assert torch.equal(torch.cat([first, second]), seen)
    for (name, a), (_, b) in zip(full.model.state_dict().items(), resumed.model.state_dict().items()):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-6, msg=name)
    loss = [m.trainer.callback_metrics["val/loss"].item() for m in (full, resumed)]
    assert loss[0] == pytest.approx(loss[1], abs=1e-6)


@pytest.mark.parametrize("optimizer, block", [("adamw", "gpt2"), ("muon", "gpt2"), ("muon", "modern")])
def test_ddp_on_two_cpu_processes_splits_the_batch_between_ranks(tmp_path, corpus, optimizer, block):
    # Same 256-token step on 2 processes: no accumulation, each rank takes half of every global batch. In
    # bf16-mixed, clipped at every step (the norm is above 0.05 throughout): one device and DDP clip alike.
    common = ["fit", "--config", DEBUG, "--data.path", str(corpus), "--trainer.limit_val_batches", "1.0", RECORD,
              "--model.optimizer", optimizer, "--model.block", block, "--trainer.precision", "bf16-mixed",
              "--trainer.gradient_clip_val", "0.05"]
    single = subprocess.run([sys.executable, str(ROOT / "main.py"), *common], cwd=tmp_path, capture_output=True,
                            text=True, timeout=600)
    assert single.returncode == 0, single.stderr[-3000:]
    (tmp_path / "ddp").mkdir()
    ddp = subprocess.run(
        [sys.executable, str(ROOT / "main.py"), *common, "--data.data_dir", str(tmp_path / "data/debug_gpt2"),
         "--trainer.devices", "2", "--trainer.strategy", "ddp"],
        cwd=tmp_path / "ddp", capture_output=True, text=True, timeout=600,
    )
    assert ddp.returncode == 0, ddp.stderr[-3000:]
    assert "Gradient accumulation: 256 tokens per step = 4 x 32 tokens x 2 devices x 1 micro-batches" in ddp.stderr
    rank0, rank1 = (torch.load(tmp_path / f"ddp/out/batches_rank{r}.pt") for r in (0, 1))
    assert rank0.shape == rank1.shape == (8, 4, 32)
    rows0 = {tuple(w.tolist()) for w in rank0.reshape(-1, 32)}
    rows1 = {tuple(w.tolist()) for w in rank1.reshape(-1, 32)}
    assert len(rows0) == len(rows1) == 32 and not rows0 & rows1  # the ranks' windows are disjoint
    # ...and together they are the single process's micro-batches: rank r takes micro-batch 2 * step + r
    single_batches = torch.load(tmp_path / "out/batches_rank0.pt")
    assert torch.equal(rank0, single_batches[0::2]) and torch.equal(rank1, single_batches[1::2])
    # the same data and the same averaged gradients give the same model and the same (exact) val loss
    a = torch.load(tmp_path / "out/debug_gpt2/checkpoints/last.ckpt", weights_only=True)["state_dict"]
    b = torch.load(tmp_path / "ddp/out/debug_gpt2/checkpoints/last.ckpt", weights_only=True)["state_dict"]
    for name in a:
        torch.testing.assert_close(a[name], b[name], rtol=1e-4, atol=1e-5, msg=name)
    runs = [scalars(d / "out/debug_gpt2/version_0") for d in (tmp_path, tmp_path / "ddp")]
    assert runs[0]["val/loss"][-1][1] == pytest.approx(runs[1]["val/loss"][-1][1], abs=1e-4)
    assert min(value for run in runs for _, value in run["train/grad_norm"]) > 0.05  # every logged step clipped
    # each rank's random generators are in the checkpoint, for an exact resume with dropout
    states = torch.load(tmp_path / "ddp/out/debug_gpt2/checkpoints/last.ckpt", weights_only=True)["callbacks"]["RandomState"]
    assert len(states["states"]) == 2


def test_prepare_command_writes_the_shards_that_fit_then_uses(tmp_path, monkeypatch, corpus):
    monkeypatch.chdir(tmp_path)
    main(["prepare", "--config", DEBUG, "--data.path", str(corpus)])
    shards = tmp_path / "data/debug_gpt2/shards"
    before = {p.name: p.stat().st_mtime_ns for p in shards.iterdir()}
    assert "manifest.json" in before and len(before) > 3
    cli = main(["fit", "--config", DEBUG, "--data.path", str(corpus), "--trainer.max_steps", "1"])
    assert cli.trainer.global_step == 1
    assert before == {p.name: p.stat().st_mtime_ns for p in shards.iterdir()}  # reused, not rewritten


def test_a_total_batch_that_does_not_divide_is_one_clear_error(tmp_path, corpus):
    # 256 tokens per step cannot be cut into whole 24-token windows
    result = subprocess.run(
        [sys.executable, str(ROOT / "main.py"), "fit", "--config", DEBUG, "--data.path", str(corpus),
         "--model.block_size", "24"],
        cwd=tmp_path, capture_output=True, text=True,
    )
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1] == (
        "error: total_batch_tokens (256) cannot be split evenly over model.block_size (24) x devices*nodes (1) = 24 "
        "tokens per window row: make total_batch_tokens a multiple of 24 (powers of two divide evenly)"
    )


def test_a_second_gradient_accumulation_is_refused_in_one_line(tmp_path, corpus):
    # two would compound: the second multiplies the micro-batches (and validation interval) the first one set
    result = subprocess.run(
        [sys.executable, str(ROOT / "main.py"), "fit", "--config", DEBUG, "--data.path", str(corpus),
         "--trainer.callbacks+=lit_gpt_mini.callbacks.GradientAccumulation",
         "--trainer.callbacks.total_batch_tokens", "128"],
        cwd=tmp_path, capture_output=True, text=True,
    )
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1] == (
        "error: trainer.callbacks holds a GradientAccumulation, and the accumulation: section makes one already: "
        "set accumulation.total_batch_tokens instead"
    )
    assert not (tmp_path / "out").exists()


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("shared_filesystem", [False, True])
def test_two_nodes_prepare_the_data_per_node_or_once_on_a_shared_filesystem(tmp_path, corpus, shared_filesystem):
    # Two "nodes" of one process each, launched the way torchrun or SLURM launch them (Lightning reads
    # NODE_RANK/LOCAL_RANK/WORLD_SIZE). The config's data_dir is relative: separate working directories are
    # nodes without a shared filesystem, one directory is a shared one.
    dirs = [tmp_path / "shared"] * 2 if shared_filesystem else [tmp_path / "node0", tmp_path / "node1"]
    for d in dirs:
        d.mkdir(exist_ok=True)
    port = str(_free_port())
    procs = [
        subprocess.Popen(
            [sys.executable, str(ROOT / "main.py"), "fit", "--config", DEBUG, "--data.path", str(corpus),
             "--trainer.num_nodes", "2", "--trainer.devices", "1", "--trainer.strategy", "ddp",
             "--trainer.max_steps", "2", "--trainer.limit_val_batches", "1"],
            cwd=dirs[node], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
            env={**os.environ, "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": port, "NODE_RANK": str(node),
                 "LOCAL_RANK": "0", "WORLD_SIZE": "2", "PYTHONPATH": str(ROOT)},
        )
        for node in (0, 1)
    ]
    stderr = [p.communicate(timeout=600)[1] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], "\n".join(e[-2000:] for e in stderr)
    prepared = sum(e.count("Prepared ") for e in stderr)
    assert prepared == (1 if shared_filesystem else 2), stderr
    for d in set(dirs):
        assert (d / "data/debug_gpt2/shards/manifest.json").is_file()
    assert (dirs[0] / "out/debug_gpt2/checkpoints/last.ckpt").is_file()  # rank 0 trained to the end
