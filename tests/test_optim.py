import pytest

from lit_gpt_mini.lit_module import CharGPT
from lit_gpt_mini.model import GPT, GPTConfig
from lit_gpt_mini.optim import param_groups, warmup_cosine_lr


def test_weight_decay_applies_to_matrices_only():
    model = GPT(GPTConfig(n_layer=2, n_head=2, n_embd=32, vocab_size=65, block_size=32))
    decay, no_decay = param_groups(model, weight_decay=0.1)
    assert decay["weight_decay"] == 0.1 and no_decay["weight_decay"] == 0.0
    names = {id(p): n for n, p in model.named_parameters()}
    decayed = {names[id(p)] for p in decay["params"]}
    not_decayed = {names[id(p)] for p in no_decay["params"]}
    assert "transformer.wte.weight" in decayed and "transformer.h.0.attn.c_attn.weight" in decayed
    assert "transformer.ln_f.weight" in not_decayed and "transformer.h.0.mlp.c_fc.bias" in not_decayed
    assert all(p.dim() >= 2 for p in decay["params"]) and all(p.dim() < 2 for p in no_decay["params"])
    # every parameter exactly once (the tied head is the embedding)
    assert len(decayed) + len(not_decayed) == len(list(model.parameters()))
    assert not decayed & not_decayed


def test_lr_schedule_endpoints():
    kw = dict(max_lr=1e-3, min_lr=1e-4, warmup_steps=100, decay_steps=2000)
    assert warmup_cosine_lr(0, **kw) == pytest.approx(1e-3 / 101)
    assert warmup_cosine_lr(99, **kw) == pytest.approx(1e-3 * 100 / 101)
    assert warmup_cosine_lr(100, **kw) == pytest.approx(1e-3)  # peak right after warmup
    assert warmup_cosine_lr(1050, **kw) == pytest.approx(5.5e-4)  # halfway down the cosine
    assert warmup_cosine_lr(2000, **kw) == pytest.approx(1e-4)
    assert warmup_cosine_lr(5000, **kw) == pytest.approx(1e-4)  # stays at the floor
    lrs = [warmup_cosine_lr(s, **kw) for s in range(100, 2001)]
    assert all(a >= b for a, b in zip(lrs, lrs[1:]))  # monotone decay


def test_no_warmup_starts_at_max_lr():
    assert warmup_cosine_lr(0, max_lr=6e-4, min_lr=6e-5, warmup_steps=0, decay_steps=10) == pytest.approx(6e-4)


def test_module_optimizer_uses_hparams_and_per_step_schedule():
    module = CharGPT(vocab_size=65, block_size=32, n_layer=2, n_head=2, n_embd=32, lr_decay_steps=50,
                     learning_rate=2e-3, min_lr=2e-4, warmup_steps=10, beta2=0.95, weight_decay=0.05)
    module.configure_model()
    config = module.configure_optimizers()
    optimizer, scheduler = config["optimizer"], config["lr_scheduler"]["scheduler"]
    assert config["lr_scheduler"]["interval"] == "step"
    assert optimizer.defaults["betas"] == (0.9, 0.95)
    assert [g["weight_decay"] for g in optimizer.param_groups] == [0.05, 0.0]
    lrs = []
    for _ in range(60):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    assert lrs[0] == pytest.approx(2e-3 / 11)
    assert lrs[10] == pytest.approx(2e-3)
    assert lrs[50] == pytest.approx(2e-4) and lrs[59] == pytest.approx(2e-4)
