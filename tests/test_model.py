import math
from dataclasses import replace

import pytest
import torch
from torch.nn import functional as F

from lit_gpt_mini.errors import ConfigError
from lit_gpt_mini.model import GPT, PRESETS, GPTConfig

TINY = GPTConfig(n_layer=2, n_head=2, n_embd=32, vocab_size=65, block_size=32)


def tiny(**overrides) -> GPT:
    torch.manual_seed(0)
    return GPT(replace(TINY, **overrides))


def test_output_shape_is_batch_time_vocab():
    model = tiny(vocab_size=65)
    idx = torch.randint(0, 65, (3, 17))
    assert model(idx).shape == (3, 17, 65)


def test_initial_loss_is_about_ln_vocab():
    # With std-0.02 init the logits are near zero, so the first loss is that of a uniform guess.
    for vocab_size in (65, 500):
        model = tiny(vocab_size=vocab_size)
        idx = torch.randint(0, vocab_size, (8, 32))
        # Targets independent of the inputs: with tied embeddings the input token itself scores a little higher.
        targets = torch.randint(0, vocab_size, (8, 32))
        logits = model(idx)
        loss = F.cross_entropy(logits.reshape(-1, vocab_size), targets.reshape(-1))
        assert loss.item() == pytest.approx(math.log(vocab_size), abs=0.05)


def test_vocab_is_padded_to_a_multiple_of_64_but_logits_cover_the_real_vocab():
    model = tiny(vocab_size=65)
    assert model.config.padded_vocab_size == 128
    assert model.transformer.wte.weight.shape == (128, 32)
    assert model(torch.zeros(1, 4, dtype=torch.long)).shape[-1] == 65


def test_sampling_never_produces_padded_ids():
    model = tiny(vocab_size=65)
    with torch.no_grad():  # make the padded rows the most likely ones if they were scored
        model.transformer.wte.weight[65:] = 10.0
    out = model.generate(torch.zeros(2, 1, dtype=torch.long), max_new_tokens=40, temperature=1.0)
    assert out.max().item() < 65


def test_causality_change_at_t_leaves_earlier_logits_unchanged():
    model = tiny(vocab_size=65).eval()
    idx = torch.randint(0, 65, (1, 20))
    t = 11
    changed = idx.clone()
    changed[0, t] = (idx[0, t] + 1) % 65
    a, b = model(idx), model(changed)
    torch.testing.assert_close(a[:, :t], b[:, :t])
    assert not torch.allclose(a[:, t], b[:, t])


def test_lm_head_is_tied_to_token_embedding():
    model = tiny()
    assert model.lm_head.weight is model.transformer.wte.weight
    with torch.no_grad():
        model.transformer.wte.weight[0, 0] = 3.0
    assert model.lm_head.weight[0, 0].item() == 3.0
    assert len(list(model.parameters())) == len({id(p) for p in model.parameters()})


def test_gpt2_init_scales_residual_projections():
    model = GPT(GPTConfig(n_layer=8, n_head=4, n_embd=256, vocab_size=1000, block_size=64))
    expected = 0.02 / math.sqrt(2 * 8)
    assert model.transformer.h[0].attn.c_proj.weight.std().item() == pytest.approx(expected, rel=0.1)
    assert model.transformer.h[0].attn.c_attn.weight.std().item() == pytest.approx(0.02, rel=0.1)


def test_gpt2_124m_parameter_count():
    # 124M with the position table and the real 50257 vocab (the padded rows are extra, not counted by OpenAI).
    config = GPTConfig.from_name("gpt2", pad_vocab_multiple=1)
    with torch.device("meta"):
        model = GPT(config)
    assert model.num_params(non_embedding=False) == 124_439_808


def test_presets_cover_the_gpt2_family():
    assert {"gpt2", "gpt2-medium", "gpt2-large", "gpt2-xl"} <= PRESETS.keys()
    assert GPTConfig.from_name("gpt2-xl").n_embd == 1600
    with pytest.raises(ConfigError, match="unknown model preset"):
        GPTConfig.from_name("gpt5")


def test_flops_per_token_matches_6n_plus_attention():
    model = tiny()
    c = model.config
    assert model.flops_per_token(16) == 6 * model.num_params() + 12 * c.n_layer * c.n_embd * 16


@pytest.mark.parametrize(
    "field, value, message",
    [("n_head", 3, "divisible"), ("vocab_size", 0, "positive"), ("dropout", 1.0, "dropout")],
)
def test_bad_config_is_refused(field, value, message):
    with pytest.raises(ConfigError, match=message):
        replace(TINY, **{field: value})


def test_sequence_longer_than_block_size_is_refused():
    model = tiny()
    with pytest.raises(ValueError, match="block_size"):
        model(torch.zeros(1, 33, dtype=torch.long))


def test_generate_top_k_1_is_greedy_and_seeded_sampling_repeats():
    model = tiny().eval()
    start = torch.zeros(1, 1, dtype=torch.long)
    greedy = model.generate(start, 10, temperature=0)
    assert torch.equal(model.generate(start, 10, temperature=1.0, top_k=1), greedy)
    a = model.generate(start, 10, generator=torch.Generator().manual_seed(1))
    b = model.generate(start, 10, generator=torch.Generator().manual_seed(1))
    assert torch.equal(a, b)


def _eager_reference_loss(model: GPT, idx: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    # How the loss was computed before it moved into the model: logits first, then cross-entropy outside.
    logits = model(idx)
    return F.cross_entropy(logits.reshape(-1, logits.size(-1)), targets.reshape(-1))


@pytest.mark.parametrize("vocab_size", [65, 128, 500])  # padded (65, 500) and unpadded (128)
def test_forward_with_targets_returns_the_loss_of_the_logits(vocab_size):
    model = tiny(vocab_size=vocab_size)
    idx = torch.randint(0, vocab_size, (4, 32))
    targets = torch.randint(0, vocab_size, (4, 32))
    loss = model(idx, targets)
    assert loss.dim() == 0
    torch.testing.assert_close(loss, _eager_reference_loss(model, idx, targets), rtol=0, atol=1e-5)


def test_padded_vocab_columns_never_change_the_loss():
    model = tiny(vocab_size=65)
    idx, targets = torch.randint(0, 65, (2, 16)), torch.randint(0, 65, (2, 16))
    before = model(idx, targets)
    with torch.no_grad():  # huge logits in the padded columns (rows 65..127 of the tied head)
        model.lm_head.weight[65:] = 100.0
    torch.testing.assert_close(model(idx, targets), before, rtol=0, atol=1e-6)


def test_compiled_loss_and_gradients_equal_the_eager_ones():
    model = tiny(vocab_size=65)
    idx, targets = torch.randint(0, 65, (4, 32)), torch.randint(0, 65, (4, 32))
    reference = _eager_reference_loss(model, idx, targets)
    reference.backward()
    expected = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad(set_to_none=True)
    compiled = torch.compile(model)
    loss = compiled(idx, targets)
    loss.backward()
    torch.testing.assert_close(loss, reference, rtol=0, atol=1e-5)
    for name, p in model.named_parameters():
        torch.testing.assert_close(p.grad, expected[name], rtol=1e-4, atol=1e-5, msg=name)
