"""Muon: which parameters it trains, its update against torch.optim.Muon, training with it, FSDP refusal."""

from __future__ import annotations

import pytest
import torch
from lightning.pytorch.strategies import DDPStrategy, FSDPStrategy
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from lit_gpt_mini.cli.main import main
from lit_gpt_mini.errors import ConfigError
from lit_gpt_mini.lit_module import GPT2, CharGPT, check_muon_strategy
from lit_gpt_mini.model import GPT, GPTConfig
from lit_gpt_mini.muon import MuonAdamW, newton_schulz
from lit_gpt_mini.optim import is_muon_parameter, muon_param_groups

from .conftest import CONFIGS


def test_muon_trains_the_block_matrices_and_adamw_everything_else():
    model = GPT(GPTConfig(n_layer=2, n_head=2, n_embd=32, vocab_size=65, block_size=32, bias=True))
    muon, decay, no_decay = muon_param_groups(model, muon_lr=0.02, muon_weight_decay=0.01, adamw_lr=1e-3,
                                              weight_decay=0.1)
    assert [g["name"] for g in (muon, decay, no_decay)] == ["muon", "adamw_decay", "adamw_no_decay"]
    assert (muon["muon"], decay["muon"], no_decay["muon"]) == (True, False, False)
    assert (muon["lr"], muon["weight_decay"]) == (0.02, 0.01)
    assert (decay["lr"], decay["weight_decay"], no_decay["lr"], no_decay["weight_decay"]) == (1e-3, 0.1, 1e-3, 0.0)
    names = {id(p): n for n, p in model.named_parameters()}
    group_names = [{names[id(p)] for p in g["params"]} for g in (muon, decay, no_decay)]
    assert group_names[0] == {f"transformer.h.{i}.{layer}.weight" for i in range(2)
                              for layer in ("attn.c_attn", "attn.c_proj", "mlp.c_fc", "mlp.c_proj")}
    # the tied head is the token embedding: AdamW, once
    assert group_names[1] == {"transformer.wte.weight", "transformer.wpe.weight"}
    assert model.lm_head.weight is model.transformer.wte.weight
    assert "transformer.h.0.attn.c_attn.bias" in group_names[2] and "transformer.ln_f.weight" in group_names[2]
    assert sum(map(len, group_names)) == len(list(model.parameters()))  # every parameter exactly once


def test_muon_parameters_are_chosen_by_name_whatever_their_shape():
    # FSDP flattens parameters to 1-D, and wrappers add segments to the names: the decision must not change
    assert is_muon_parameter("transformer.h.11.mlp.c_fc.weight")
    assert is_muon_parameter("_forward_module.model.transformer.h.0._fsdp_wrapped_module.attn.c_proj.weight")
    assert is_muon_parameter("model._orig_mod.transformer.h.3.attn.c_attn.weight")
    for name in ("transformer.h.0.attn.c_attn.bias", "transformer.h.0.ln_1.weight", "transformer.wte.weight",
                 "lm_head.weight", "transformer.wpe.weight", "transformer.ln_f.weight"):
        assert not is_muon_parameter(name), name


def test_newton_schulz_orthogonalizes_a_batch():
    g = torch.randn(3, 16, 48, dtype=torch.float64)
    x = newton_schulz(g, steps=5, dtype=torch.float64)
    singular = torch.linalg.svdvals(x)
    # the quintic iteration lands the singular values in roughly (0.5, 1.5), not exactly on 1 (by design)
    assert singular.min() > 0.3 and singular.max() < 1.3
    # batched and one at a time agree
    torch.testing.assert_close(x[1], newton_schulz(g[1], steps=5, dtype=torch.float64))


@pytest.mark.parametrize("ns_dtype", ["bfloat16", "float32"])
def test_muon_update_is_torch_optim_muon(ns_dtype):
    torch.manual_seed(0)
    shapes = [(48, 16), (16, 48), (16, 16), (48, 16)]  # tall, wide, square; two of a shape share a batch
    mine = [torch.randn(s, requires_grad=True) for s in shapes]
    theirs = [p.detach().clone().requires_grad_() for p in mine]
    ours = MuonAdamW([{"params": mine, "muon": True, "lr": 0.02, "weight_decay": 0.1}], momentum=0.9,
                     ns_dtype=ns_dtype)
    reference = torch.optim.Muon(theirs, lr=0.02, weight_decay=0.1, momentum=0.9)  # bfloat16 Newton-Schulz
    for _ in range(4):
        for p, q in zip(mine, theirs):
            p.grad = torch.randn_like(p)
            q.grad = p.grad.clone()
        ours.step()
        reference.step()
    for p, q in zip(mine, theirs):
        if ns_dtype == "bfloat16":  # the same arithmetic
            torch.testing.assert_close(p, q, rtol=0, atol=1e-6)
        else:  # float32 differs from torch's bfloat16 by bfloat16's rounding (~0.4%) of a 0.02-sized step
            assert (p - q).abs().max() < 0.02 * 0.05
            assert not torch.equal(p, q)


def test_adamw_groups_of_muon_adamw_step_like_torch_adamw():
    torch.manual_seed(0)
    mine = [torch.randn(8, 4, requires_grad=True), torch.randn(4, requires_grad=True)]
    theirs = [p.detach().clone().requires_grad_() for p in mine]
    ours = MuonAdamW([{"params": mine[:1], "muon": False, "weight_decay": 0.1},
                      {"params": mine[1:], "muon": False, "weight_decay": 0.0}], lr=1e-2, betas=(0.9, 0.99),
                     fused=True)
    reference = torch.optim.AdamW([{"params": theirs[:1], "weight_decay": 0.1},
                                   {"params": theirs[1:], "weight_decay": 0.0}], lr=1e-2, betas=(0.9, 0.99))
    for _ in range(3):
        for p, q in zip(mine, theirs):
            p.grad = torch.randn_like(p)
            q.grad = p.grad.clone()
        ours.step()
        reference.step()
    for p, q in zip(mine, theirs):
        torch.testing.assert_close(p, q)


def test_every_group_follows_the_schedule_from_its_own_peak():
    module = CharGPT(vocab_size=65, block_size=32, n_layer=2, n_head=2, n_embd=32, lr_decay_steps=50,
                     learning_rate=2e-3, min_lr=2e-4, warmup_steps=10, optimizer="muon", muon_lr=0.04,
                     muon_weight_decay=0.01)
    module.configure_model()
    config = module.configure_optimizers()
    optimizer, scheduler = config["optimizer"], config["lr_scheduler"]["scheduler"]
    assert isinstance(optimizer, MuonAdamW)
    assert [g["weight_decay"] for g in optimizer.param_groups] == [0.01, 0.1, 0.0]
    lrs = []
    for _ in range(51):
        lrs.append([g["lr"] for g in optimizer.param_groups])
        optimizer.step()
        scheduler.step()
    assert lrs[10] == pytest.approx([0.04, 2e-3, 2e-3])  # peaks after warmup
    assert lrs[50] == pytest.approx([0.004, 2e-4, 2e-4])  # Muon's floor keeps the min_lr / learning_rate ratio


def test_muon_is_refused_under_fsdp_with_one_line(tmp_path):
    with pytest.raises(ConfigError) as error:
        check_muon_strategy(FSDPStrategy())
    assert "\n" not in str(error.value) and "model.optimizer muon" in str(error.value)
    check_muon_strategy(DDPStrategy())  # DDP all-reduces whole gradients: fine
    check_muon_strategy(None)

    # configure_optimizers asks the check with the Trainer's strategy
    class FSDPTrainer:
        strategy = FSDPStrategy()
        max_steps = 10

    module = GPT2(vocab_size=256, block_size=16, n_layer=1, n_head=1, n_embd=16, optimizer="muon")
    module.configure_model()
    module._trainer = FSDPTrainer()
    with pytest.raises(ConfigError, match="FSDPStrategy"):
        module.configure_optimizers()
    module.hparams.optimizer = "adamw"
    assert isinstance(module.configure_optimizers()["optimizer"], torch.optim.AdamW)


def test_fit_with_muon_logs_one_lr_curve_per_group_and_learns(tmp_path, monkeypatch, shakespeare_path):
    monkeypatch.chdir(tmp_path)
    cli = main(["fit", "--config", str(CONFIGS / "debug_char.yaml"), "--data.path", str(shakespeare_path),
                "--model.optimizer", "muon", "--model.muon_lr", "0.02"])
    assert isinstance(cli.trainer.optimizers[0], MuonAdamW)
    (events,) = (tmp_path / "out/debug_char/version_0").glob("events.*")
    acc = EventAccumulator(str(events))
    acc.Reload()
    tags = set(acc.Tags()["scalars"])
    assert {"lr-MuonAdamW/muon", "lr-MuonAdamW/adamw_decay", "lr-MuonAdamW/adamw_no_decay"} <= tags
    muon_lr = [e.value for e in acc.Scalars("lr-MuonAdamW/muon")]
    adamw_lr = [e.value for e in acc.Scalars("lr-MuonAdamW/adamw_decay")]
    assert len(muon_lr) == len(adamw_lr) >= 3 and muon_lr != sorted(muon_lr)  # warmup, then the decay
    assert all(m == pytest.approx(20 * a) for m, a in zip(muon_lr, adamw_lr))  # 0.02 vs 1e-3, one schedule
    val = [e.value for e in acc.Scalars("val/loss")]
    assert val[-1] < val[0] < 4.2  # ln(65) = 4.17 at the start
    ckpt = torch.load(tmp_path / "out/debug_char/checkpoints/last.ckpt", weights_only=True)
    assert ckpt["hyper_parameters"]["optimizer"] == "muon"


def test_an_unknown_optimizer_is_a_config_error():
    with pytest.raises(ConfigError, match="model.optimizer"):
        CharGPT(optimizer="sgd")
