"""Checks that need CUDA (marked ``gpu``: skipped elsewhere, run by bench/gpu_check.sh on a GPU machine)."""

from __future__ import annotations

import pytest
import torch

from lit_gpt_mini.cli.main import main
from lit_gpt_mini.model import GPT, GPTConfig

from .conftest import CONFIGS, write_jsonl

pytestmark = pytest.mark.gpu


def _tiny(**overrides) -> GPT:
    torch.manual_seed(0)
    return GPT(GPTConfig(vocab_size=1000, block_size=64, n_layer=2, n_head=2, n_embd=64, **overrides))


def test_a_compiled_bf16_training_step_matches_eager_fp32():
    model = _tiny().cuda()
    idx = torch.randint(0, 1000, (8, 64), device="cuda")
    targets = torch.randint(0, 1000, (8, 64), device="cuda")
    reference = model(idx, targets)  # eager fp32
    compiled = torch.compile(model)
    with torch.autocast("cuda", dtype=torch.bfloat16):
        loss = compiled(idx, targets)
    loss.backward()
    assert loss.dtype == torch.float32  # the loss is computed in fp32 from bf16 logits
    torch.testing.assert_close(loss, reference, rtol=0, atol=2e-2)
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())


def test_sampling_with_the_kv_cache_on_cuda_gives_the_cpu_tokens():
    torch.set_float32_matmul_precision("highest")  # compare fp32 with fp32 (conftest restores the setting)
    model = _tiny().eval()
    prompt = torch.randint(0, 1000, (2, 10))
    cpu = model.generate(prompt, 80, temperature=0)  # past the 64-token context: the window moves too
    gpu = model.cuda().generate(prompt.cuda(), 80, temperature=0)
    assert torch.equal(gpu.cpu(), cpu)


def test_fsdp_on_one_gpu_clips_groups_samples_and_scores_hellaswag(tmp_path, monkeypatch, shakespeare_docs):
    # Lightning's FSDPStrategy refuses CPUs, so this is where it runs: bf16-mixed, norm clipping through the
    # strategy, weight decay by parameter name, SampleText and HellaSwag (the hellaswag section) through the sharded module.
    from .test_hellaswag import write_examples

    monkeypatch.chdir(tmp_path)
    corpus = write_jsonl(tmp_path / "corpus.jsonl", shakespeare_docs[:2000])
    examples = write_examples(tmp_path / "hs.jsonl", 12)
    cli = main([
        "fit", "--config", str(CONFIGS / "debug_gpt2.yaml"), "--data.path", str(corpus),
        "--hellaswag.every_n_steps", "2", "--hellaswag.data.init_args.path", str(examples),
        "--trainer.accelerator", "cuda", "--trainer.precision", "bf16-mixed",
        "--trainer.strategy", "lightning.pytorch.strategies.FSDPStrategy",
        "--trainer.strategy.auto_wrap_policy", "[lit_gpt_mini.model.Block]",
        "--trainer.max_steps", "4", "--trainer.callbacks+=lit_gpt_mini.callbacks.SampleText",
        "--trainer.callbacks.init_args.max_new_tokens", "8",
    ])
    trainer = cli.trainer
    assert trainer.global_step == 4
    assert torch.isfinite(trainer.callback_metrics["train/grad_norm"])
    decay, no_decay = trainer.optimizers[0].param_groups
    matrices = cli.model._matrices
    assert len(decay["params"]) == len(matrices) and decay["weight_decay"] == 0.1
    assert len(no_decay["params"]) > 0 and no_decay["weight_decay"] == 0.0
    from lit_gpt_mini.benchmark import BenchmarkEval

    (callback,) = [c for c in trainer.callbacks if isinstance(c, BenchmarkEval)]
    figures = callback.evaluate(trainer, cli.model)  # all ranks (one here) through the wrapper
    assert figures["examples"] == 12 and 0 <= figures["acc"] <= 1 and 0 <= figures["acc_norm"] <= 1
