"""Sampling: the KV cache gives the same logits and tokens as recomputation; filters; stopping; bad input."""

from __future__ import annotations

import pytest
import torch

import subprocess
import sys

from lit_gpt_mini.errors import UserError
from lit_gpt_mini.inference.generate import generate
from lit_gpt_mini.model import GPT, GPTConfig, KVCache, sample

from .conftest import ROOT


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return GPT(GPTConfig(vocab_size=100, block_size=16, n_layer=2, n_head=2, n_embd=32)).eval()


def test_cached_logits_equal_a_full_forward(model):
    x = torch.randint(0, 100, (2, 12))
    cache = KVCache(model.config, 2)
    pieces = [model(x[:, :7], cache=cache)] + [model(x[:, t : t + 1], cache=cache) for t in range(7, 12)]
    torch.testing.assert_close(torch.cat(pieces, dim=1), model(x), rtol=0, atol=1e-5)
    with pytest.raises(ValueError, match="several tokens only at position 0"):
        model(x[:, :2], cache=cache)


@pytest.mark.parametrize("temperature, top_k, top_p", [(1.0, None, None), (0.8, 10, None), (1.0, None, 0.9), (0.0, None, None)])
def test_cached_and_uncached_sampling_give_the_same_tokens_past_the_context(model, temperature, top_k, top_p):
    prompt = torch.randint(0, 100, (2, 5))
    runs = [
        model.generate(prompt, 40, temperature, top_k, top_p, torch.Generator().manual_seed(7), use_cache=use_cache)
        for use_cache in (True, False)
    ]
    assert runs[0].shape == (2, 45)  # 45 tokens through a 16-token window: the window moved several times
    assert torch.equal(runs[0], runs[1])


def test_top_k_and_top_p_never_sample_excluded_tokens():
    logits = torch.tensor([[4.0, 3.0, 2.0, 1.0, 0.0, -1.0]]).repeat(2000, 1)
    generator = torch.Generator().manual_seed(0)
    assert set(sample(logits, 1.0, top_k=2, generator=generator).flatten().tolist()) == {0, 1}
    # softmax: 0.636, 0.234, 0.086, ...: the first two reach 0.87 < 0.9, so three tokens are kept
    assert set(sample(logits, 1.0, top_p=0.9, generator=generator).flatten().tolist()) == {0, 1, 2}
    assert set(sample(logits, 1.0, top_p=0.5, generator=generator).flatten().tolist()) == {0}
    assert set(sample(logits, 0.0).flatten().tolist()) == {0}


def test_generation_stops_at_the_stop_token(model):
    prompt = torch.randint(0, 100, (1, 3))
    free = model.generate(prompt, 10, temperature=0)[0, 3:].tolist()
    stop = free[4]
    stopped = model.generate(prompt, 10, temperature=0, stop_token=stop)[0, 3:].tolist()
    assert stopped == free[: free.index(stop) + 1]


def test_bad_sampling_settings_are_refused(tmp_path):
    for kwargs, message in [
        ({"max_new_tokens": 0}, "max_new_tokens must be at least 1"),
        ({"temperature": -1}, "temperature must be >= 0"),
        ({"top_p": 1.5}, "top_p must be in"),
        ({"top_k": 0}, "top_k must be at least 1"),
        ({"temperature": float("inf")}, r"temperature must be >= 0 \(0 is greedy\) and finite, got inf"),
        ({"seed": -1}, "seed must be between 0 and 2\\*\\*63 - 1"),
        ({"num_samples": 0}, "num_samples must be at least 1"),
        ({"prompt_file": str(tmp_path / "none.txt")}, "cannot read prompt_file"),
    ]:
        with pytest.raises(UserError, match=message):
            generate("unused.ckpt", **kwargs)


def test_a_tiny_positive_temperature_samples_as_greedy_through_main_py(chat_checkpoint):
    # logits of order 1 divided by 1e-40 overflow float32 (max 3.4e38): the sampler must still give tokens
    (greedy,) = generate(str(chat_checkpoint), prompt="ROMEO:", max_new_tokens=30, temperature=0, stream=False)
    for temperature in ("1e-40", "5e-324"):
        result = subprocess.run(
            [sys.executable, "main.py", "generate", "--ckpt_path", str(chat_checkpoint), "--prompt", "ROMEO:",
             "--max_new_tokens", "30", "--temperature", temperature, "--stream", "false"],
            cwd=ROOT, capture_output=True, text=True, timeout=300)
        assert result.returncode == 0, result.stderr[-2000:]
        assert "Traceback" not in result.stderr
        assert result.stdout.splitlines()[: greedy.count("\n") + 1] == greedy.splitlines()
