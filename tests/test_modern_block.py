"""The modern block (``GPTConfig.block = "modern"``): shapes, causality, rotary positions through the KV cache,
zero-init, Muon's parameter groups, checkpoints and the Hugging Face refusal; GPT-2's block stays the default."""

from __future__ import annotations

import math

import pytest
import torch

from lit_gpt_mini.checkpoint import load_pth, save_pth
from lit_gpt_mini.errors import ConfigError
from lit_gpt_mini.inference.export import to_hf
from lit_gpt_mini.lit_module import CharGPT
from lit_gpt_mini.model import GPT, GPTConfig, KVCache
from lit_gpt_mini.muon import MuonAdamW
from lit_gpt_mini.optim import muon_param_groups

CHARS = "".join(chr(32 + i) for i in range(65))


def modern(trained: bool = True, **overrides) -> GPT:
    """A tiny modern-block model; ``trained`` perturbs the zero-initialised weights so outputs depend on input."""
    torch.manual_seed(0)
    shape = dict(vocab_size=65, block_size=32, n_layer=2, n_head=2, n_embd=32, bias=False, block="modern")
    model = GPT(GPTConfig(**{**shape, **overrides}))
    if trained:
        with torch.no_grad():
            for p in model.parameters():
                p.add_(0.05 * torch.randn_like(p))
    return model.eval()


def test_gpt2_block_is_the_default():
    assert GPTConfig().block == "gpt2"
    assert "transformer.wpe.weight" in GPT(GPTConfig(vocab_size=65, block_size=8, n_layer=1, n_head=2, n_embd=8)).state_dict()


def test_modern_block_has_no_positions_table_biases_or_norm_gains_and_an_untied_head():
    model = modern(trained=False)
    names = set(model.state_dict())
    assert "transformer.wpe.weight" not in names
    assert not any("ln_" in n or n.endswith(".bias") for n in names), names
    assert model.lm_head.weight is not model.transformer.wte.weight
    assert model.num_params() == sum(p.numel() for p in model.parameters()) - model.transformer.wte.weight.numel()


def test_output_shapes_and_loss():
    model = modern()
    idx = torch.randint(0, 65, (3, 20))
    assert model(idx).shape == (3, 20, 65)
    loss = model(idx, idx)
    assert loss.dim() == 0 and torch.isfinite(loss)


def test_zero_init_gives_uniform_predictions_and_trains_only_the_head_first():
    model = modern(trained=False).train()
    for name, p in model.named_parameters():
        if name.endswith("c_proj.weight") or name == "lm_head.weight":
            assert not p.any(), name
    idx = torch.randint(0, 65, (2, 16))
    loss = model(idx, idx)
    assert loss.item() == pytest.approx(math.log(65), abs=1e-5)  # every logit is 0
    loss.backward()
    # Nothing upstream of a zero head (or a zero projection) gets a gradient at step 0: only the head does.
    for name, p in model.named_parameters():
        if name == "lm_head.weight":
            assert p.grad.abs().sum() > 0
        else:
            assert p.grad is None or not p.grad.any(), name


def test_changing_a_token_changes_only_later_logits():
    model = modern()
    idx = torch.randint(0, 65, (1, 24))
    changed = idx.clone()
    changed[0, 10] = (changed[0, 10] + 1) % 65
    a, b = model(idx), model(changed)
    torch.testing.assert_close(a[:, :10], b[:, :10], rtol=0, atol=1e-6)
    assert not torch.allclose(a[:, 10:], b[:, 10:])


def test_positions_are_relative():
    # RoPE with QK-norm: attention depends on distances only, so the last token's logits of a window do not move
    # when the window is read at positions shifted by a constant (hidden_states takes explicit positions).
    model = modern()
    idx = torch.randint(0, 65, (1, 12))
    at_zero = model.hidden_states(idx)
    shifted = model.hidden_states(idx, pos=torch.arange(7, 19).unsqueeze(0))
    torch.testing.assert_close(at_zero, shifted, rtol=1e-4, atol=1e-5)


def test_cached_forward_equals_uncached_over_rotary_positions():
    model = modern()
    idx = torch.randint(0, 65, (2, 30))
    full = model(idx)
    cache = KVCache(model.config, 2)
    steps = [model(idx[:, :7], cache=cache)] + [model(idx[:, t : t + 1], cache=cache) for t in range(7, 30)]
    assert cache.length == 30
    torch.testing.assert_close(torch.cat(steps, dim=1), full, rtol=1e-5, atol=1e-5)


def test_cached_sampling_equals_uncached_beyond_the_context():
    model = modern(block_size=16)
    prompt = torch.randint(0, 65, (2, 5))
    # 40 new tokens: the window moves (and the cache is refilled at positions from 0) several times
    cached = model.generate(prompt, 40, temperature=0, use_cache=True)
    uncached = model.generate(prompt, 40, temperature=0, use_cache=False)
    assert torch.equal(cached, uncached)


def test_muon_trains_the_blocks_matrices_and_adamw_the_embedding_and_head():
    model = modern(trained=False)
    groups = {g["name"]: g for g in muon_param_groups(model, 0.03, 0.0, 3e-3, 0.1)}
    names = {id(p): n for n, p in model.named_parameters()}
    muon = {names[id(p)] for p in groups["muon"]["params"]}
    assert muon == {n for n, _ in model.named_parameters() if n.startswith("transformer.h.")}
    assert {names[id(p)] for p in groups["adamw_decay"]["params"]} == {"transformer.wte.weight", "lm_head.weight"}
    assert groups["adamw_no_decay"]["params"] == []
    optimizer = MuonAdamW(list(groups.values()))
    idx = torch.randint(0, 65, (2, 16))
    for _ in range(3):  # the zero-initialised projections leave zero only through the head's first step
        model.train()
        model(idx, idx).backward()
        optimizer.step()
        optimizer.zero_grad()
    assert all(p.any() for p in model.parameters())


def test_bad_modern_configs_are_refused():
    with pytest.raises(ConfigError, match="block must be one of"):
        GPTConfig(block="llama")
    with pytest.raises(ConfigError, match="even head size"):
        GPTConfig(n_embd=30, n_head=2, block="modern")


def test_pth_round_trip_and_old_configs_load_as_gpt2(tmp_path):
    model = modern()
    save_pth(model, {"kind": "char", "chars": CHARS}, tmp_path / "m.pth")
    loaded, _ = load_pth(tmp_path / "m.pth")
    assert loaded.config.block == "modern"
    idx = torch.randint(0, 65, (1, 16))
    torch.testing.assert_close(loaded(idx), model(idx))
    # a file written before the block option: its config has no "block" and it is GPT-2's
    gpt2 = GPT(GPTConfig(vocab_size=65, block_size=16, n_layer=1, n_head=2, n_embd=16))
    save_pth(gpt2, {"kind": "char", "chars": CHARS}, tmp_path / "old.pth")
    data = torch.load(tmp_path / "old.pth", weights_only=True)
    del data["config"]["block"]
    torch.save(data, tmp_path / "old.pth")
    assert load_pth(tmp_path / "old.pth")[0].config.block == "gpt2"


def test_init_from_a_pth_of_the_same_block(tmp_path):
    save_pth(modern(), {"kind": "char", "chars": CHARS}, tmp_path / "m.pth")
    shape = dict(vocab_size=65, block_size=32, n_layer=2, n_head=2, n_embd=32, bias=False)
    module = CharGPT(**shape, block="modern", init_from=str(tmp_path / "m.pth"))
    module.configure_model()
    for name, tensor in load_pth(tmp_path / "m.pth")[0].state_dict().items():
        assert torch.equal(module.model.state_dict()[name], tensor), name
    with pytest.raises(ConfigError, match="do not fit this model"):
        CharGPT(**shape, block="gpt2", init_from=str(tmp_path / "m.pth")).configure_model()


def test_hugging_face_export_is_refused():
    with pytest.raises(ConfigError, match="no modern block"):
        to_hf(modern())


def test_compiled_loss_and_gradients_equal_the_eager_ones():
    model = modern().train()
    idx = torch.randint(0, 65, (2, 32))
    reference = model(idx, idx)
    reference.backward()
    expected = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad(set_to_none=True)
    loss = torch.compile(model)(idx, idx)
    loss.backward()
    torch.testing.assert_close(loss, reference, rtol=0, atol=1e-5)
    for name, p in model.named_parameters():
        torch.testing.assert_close(p.grad, expected[name], rtol=1e-4, atol=1e-5, msg=name)


def test_bf16_autocast_and_bf16_weights_train_and_sample():
    model = modern().train()
    idx = torch.randint(0, 65, (2, 16))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = model(idx, idx)
    loss.backward()
    assert torch.isfinite(loss)
    half = model.eval().to(torch.bfloat16)
    cached = half.generate(idx[:, :4], 8, temperature=0, use_cache=True)
    assert cached.shape == (2, 12)
