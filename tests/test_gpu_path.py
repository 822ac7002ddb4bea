"""The parts of the GPU path a CPU can check: world-size arithmetic, TF32, FSDP-safe parameter groups and
clipping. (The tests that need CUDA are marked ``gpu`` and run in bench/gpu_check.sh.)"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from lit_gpt_mini.cli import main as cli
from lit_gpt_mini.callbacks import plan_accumulation
from lit_gpt_mini.errors import ConfigError

from .conftest import CONFIGS, ROOT

# configs/gpt2_fineweb.yaml: 2**19 tokens per step, T=1024, batch_size 64
RECIPE = dict(total_batch_tokens=524_288, batch_size=64, block_size=1024)


@pytest.mark.parametrize("world_size, accumulation", [(1, 8), (2, 4), (4, 2), (8, 1)])
def test_the_gpt2_recipe_plans_every_world_size_up_to_eight(world_size, accumulation):
    assert plan_accumulation(world_size=world_size, **RECIPE) == accumulation
    assert RECIPE["batch_size"] * RECIPE["block_size"] * world_size * accumulation == RECIPE["total_batch_tokens"]


@pytest.mark.parametrize("world_size, advice", [(16, "set data.batch_size to 32 or 16 or 8"),
                                                 (64, "set data.batch_size to 8 or 4 or 2")])
def test_a_batch_size_that_does_not_divide_the_step_is_refused_with_sizes_that_do(world_size, advice):
    # 16 GPUs take 32 windows each per 524,288-token step: a micro-batch of 64 cannot be; the error says what can
    with pytest.raises(ConfigError, match=rf"data.batch_size \(64\) does not divide .*: {advice}$"):
        plan_accumulation(world_size=world_size, **RECIPE)


@pytest.mark.parametrize("world_size", [3, 128 * 1024])
def test_a_step_that_cannot_be_cut_into_windows_is_refused_with_the_numbers(world_size):
    with pytest.raises(ConfigError, match=r"make total_batch_tokens a multiple of"):
        plan_accumulation(world_size=world_size, **RECIPE)


def test_matmul_precision_is_set_on_cuda_only(monkeypatch):
    calls = []
    monkeypatch.setattr(torch, "set_float32_matmul_precision", calls.append)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    cli.set_matmul_precision("high")
    assert calls == []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    cli.set_matmul_precision("highest")
    assert calls == ["highest"]


@pytest.mark.parametrize("extra, expected", [([], "high"), (["--float32_matmul_precision", "highest"], "highest")])
def test_matmul_precision_comes_from_the_config(tmp_path, monkeypatch, shakespeare_path, extra, expected):
    monkeypatch.chdir(tmp_path)
    seen = []
    monkeypatch.setattr(cli, "set_matmul_precision", seen.append)
    cli.GPTCLI(
        cli.GPTModule, cli.L.LightningDataModule, subclass_mode_model=True, subclass_mode_data=True, run=False,
        args=["--config", str(CONFIGS / "debug_char.yaml"), "--data.path", str(shakespeare_path), *extra],
    )
    assert seen == [expected]


# --- FSDP: torch's own FSDP over gloo (Lightning's FSDPStrategy refuses CPUs) -----------------------------------


def _fsdp_worker(rank: int, world_size: int, init_file: str) -> None:
    import types

    import torch.distributed as dist
    from lightning.pytorch.strategies import FSDPStrategy
    from torch.distributed.fsdp import FullyShardedDataParallel as FSDP
    from torch.distributed.fsdp.wrap import ModuleWrapPolicy

    from lit_gpt_mini.lit_module import GPTModule
    from lit_gpt_mini.model import Block
    from lit_gpt_mini.optim import param_groups

    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world_size)
    try:
        def build() -> GPTModule:
            torch.manual_seed(0)
            module = GPTModule(vocab_size=65, block_size=16, n_layer=2, n_head=2, n_embd=32, bias=True)
            module.configure_model()
            return module

        idx = torch.randint(0, 65, (2, 16), generator=torch.Generator().manual_seed(1))  # the same on both ranks
        # the reference: one unwrapped model, its norm-clipped gradients and its groups
        single = build()
        single.model(idx, idx).backward()
        torch.nn.utils.clip_grad_norm_(single.model.parameters(), 0.05)
        expected_groups = [{n for n, p in single.model.named_parameters() if any(p is q for q in g["params"])}
                           for g in param_groups(single.model, 0.1)]
        # wrapped as Lightning's FSDPStrategy wraps it: the LightningModule at the root, one unit per block
        module = build()
        wrapped = FSDP(module, auto_wrap_policy=ModuleWrapPolicy({Block}), use_orig_params=True,
                       device_id=torch.device("cpu"))
        assert all(p.dim() == 1 for p in wrapped.parameters())  # what broke the p.dim() rule
        groups = param_groups(module.model, 0.1, module._matrices)
        names = {id(p): n for n, p in module.model.named_parameters()}
        from lit_gpt_mini.optim import clean_name

        got = [{clean_name(names[id(p)]) for p in g["params"]} for g in groups]
        assert got == expected_groups, (got, expected_groups)
        # clipping through the module's hook, as Lightning calls it
        strategy = FSDPStrategy()
        strategy.model = wrapped
        module._trainer = types.SimpleNamespace(strategy=strategy)
        wrapped(idx, idx).backward()  # GPTModule.forward under the FSDP root
        module.configure_gradient_clipping(None, gradient_clip_val=0.05, gradient_clip_algorithm="norm")
        with FSDP.summon_full_params(wrapped, with_grads=True):
            for (name, p), q in zip(module.model.named_parameters(), single.model.parameters()):
                torch.testing.assert_close(p.grad, q.grad, rtol=1e-4, atol=1e-6, msg=name)
    finally:
        dist.destroy_process_group()


def test_fsdp_groups_parameters_by_name_and_clips_over_all_shards(tmp_path):
    import torch.multiprocessing as mp

    mp.spawn(_fsdp_worker, args=(2, str(tmp_path / "init")), nprocs=2, join=True)


def test_the_gpu_training_check_passes_its_cpu_smoke_run(tmp_path):
    # bench/gpu_train_check.py on a tiny model: the real recipe through the CLI, compiled; the loss falls and
    # no frame is compiled after warm-up (what bench/gpu_check.sh asserts for GPT-2 124M on a GPU).
    from bench import gpu_train_check

    assert gpu_train_check.main(["--smoke", "--work", str(tmp_path)]) == 0
    guard = __import__("json").loads((tmp_path / "recompiles.json").read_text())
    assert guard["frames_after_warmup"] == 0 and guard["frames_total"] > 0


# --- bench/gpu_check.sh and what it relies on, checked where there is no GPU --------------------------------------


def test_the_gpu_check_stops_at_once_without_a_gpu(tmp_path):
    started = time.monotonic()
    result = subprocess.run(["bash", str(ROOT / "bench/gpu_check.sh")], capture_output=True, text=True, timeout=60,
                            env={**os.environ, "PATH": f"{tmp_path}:{os.environ['PATH']}"})
    assert result.returncode == 1 and time.monotonic() - started < 5
    assert result.stderr.strip().splitlines() == [
        "error: no CUDA device is visible here (nvidia-smi lists none, or CUDA_VISIBLE_DEVICES hides them): "
        "bench/gpu_check.sh needs an NVIDIA GPU"
    ]


def test_the_gpu_check_runs_its_setup_then_stops_at_the_compile_preflight(tmp_path):
    # An nvidia-smi that lists a GPU gets the script past its first line; torch still sees none, so the preflight
    # fails and the script stops there, saying so, before any long stage. The shell syntax of the rest: bash -n.
    assert subprocess.run(["bash", "-n", str(ROOT / "bench/gpu_check.sh")]).returncode == 0
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "nvidia-smi").write_text("#!/bin/sh\necho 'GPU 0: NVIDIA H200 (UUID: GPU-0)'\n")
    (fake / "nvidia-smi").chmod(0o755)
    env = {**os.environ, "PATH": f"{fake}:{Path(sys.executable).parent}:{os.environ['PATH']}",
           "PYTHON": sys.executable, "WHEELS": str(tmp_path / "no-wheels"), "OUT": str(tmp_path / "logs")}
    (tmp_path / "logs").mkdir()
    result = subprocess.run(["bash", str(ROOT / "bench/gpu_check.sh")], capture_output=True, text=True, timeout=120,
                            env=env)
    assert result.returncode == 1
    assert "=== compile_preflight (limit 45s) ===" in result.stdout
    assert result.stderr.strip().splitlines()[-1].startswith("error: torch.compile preflight: FAIL(1)")
    assert "device: no CUDA device" in (tmp_path / "logs/versions.txt").read_text()


def test_required_gpu_tests_fail_rather_than_skip_without_cuda(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-m", "gpu", "-q", "-p", "no:cacheprovider", "tests/test_gpu.py"],
        cwd=ROOT, capture_output=True, text=True, timeout=300, env={**os.environ, "LIT_GPT_MINI_REQUIRE_GPU": "1"},
    )
    assert result.returncode != 0 and "torch sees no CUDA device" in result.stdout + result.stderr


def test_the_gpu_path_imports_none_of_the_data_sources_optional_packages():
    # What bench/gpu_check.sh runs imports only what a CUDA image has plus jsonargparse (bench/gpu_wheels.sh):
    # datasets, zstandard and wikipedia-api must not be needed (wikipedia-api's pins would replace the image's httpx).
    code = (
        "import sys\n"
        "for name in ('datasets', 'zstandard', 'wikipediaapi'): sys.modules[name] = None\n"
        "import lit_gpt_mini.cli.main, data_modules.fineweb, data_modules.hellaswag, lit_gpt_mini.inference.generate\n"
        "import bench.train_throughput, bench.gpu_train_check, bench.hellaswag_eval, bench.compile_preflight\n"
        "import tests.test_gpu, tests.test_hellaswag_gpu, tests.test_host_syncs\n"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]


def test_the_compile_preflight_builds_a_kernel_on_the_cpu():
    from bench import compile_preflight

    assert compile_preflight.missing_build_tools() == []
    assert compile_preflight.main(["--device", "cpu"]) == 0


@pytest.mark.parametrize("name, flops", [
    ("NVIDIA H200", 989e12), ("NVIDIA H200 NVL", 835e12), ("NVIDIA GH200 480GB", 989e12),
    ("NVIDIA H100 80GB HBM3", 989e12), ("NVIDIA H100 PCIe", 756e12), ("NVIDIA H100 NVL", 835e12),
    ("NVIDIA A100-SXM4-80GB", 312e12), ("NVIDIA A100 80GB PCIe", 312e12), ("NVIDIA GeForce RTX 4090", None),
])
def test_the_dense_bf16_peak_of_the_usual_gpus(name, flops):
    from lit_gpt_mini.flops import dense_bf16_peak

    assert dense_bf16_peak(name) == flops


def test_mfu_uses_the_table_for_a_gpu_lightning_does_not_know(monkeypatch):
    from lit_gpt_mini import flops

    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "NVIDIA H200")
    assert flops.peak_flops(torch.device("cuda"), torch.bfloat16) == 989e12
    assert flops.compute_dtype("bf16-mixed") is torch.bfloat16 and flops.compute_dtype("32-true") is torch.float32


def test_a_module_is_freed_once_nothing_refers_to_it():
    # A cache on the class (functools.lru_cache on a method) would keep every GPTModule alive, with its trainer and
    # optimizer: gigabytes of GPU memory per run, inflating later runs' peak-memory figures.
    import gc
    import weakref

    from lit_gpt_mini.lit_module import GPTModule

    module = GPTModule(vocab_size=65, block_size=16, n_layer=1, n_head=1, n_embd=8)
    module.configure_model()
    assert module._flops_per_token(16) == module.model.flops_per_token(16)
    ref = weakref.ref(module)
    del module
    gc.collect()
    assert ref() is None
