"""HellaSwag on CUDA takes the CPU's decisions (fp32, and bf16 autocast where the margin allows); skipped without CUDA."""

from __future__ import annotations

import pytest
import torch

from lit_gpt_mini import hellaswag
from lit_gpt_mini.model import GPT, GPTConfig

from .test_hellaswag import write_examples

pytestmark = pytest.mark.gpu


def scores(model, batches, device, autocast=False):
    totals, means, decisions = [], [], []
    with torch.no_grad(), torch.autocast("cuda", dtype=torch.bfloat16, enabled=autocast):
        for batch in batches:
            batch = {k: v.to(device, non_blocking=True) for k, v in batch.items()}
            total, mean = hellaswag.candidate_losses(model, batch)
            labels = batch["labels"]
            totals.append(total.float().cpu())
            means.append(mean.float().cpu())
            decisions += zip((total.argmin(1) == labels).tolist(), (mean.argmin(1) == labels).tolist())
    return torch.cat(totals), torch.cat(means), decisions


@pytest.fixture
def setup(tmp_path, gpt2_tokenizer):
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=50257, block_size=64, n_layer=2, n_head=2, n_embd=64)).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(10)  # candidates' losses differ clearly (see test_hellaswag.random_model)
    examples = hellaswag.read_examples(write_examples(tmp_path / "h.jsonl", 64, seed=5, empty_every=9, long_every=6))
    rows = [hellaswag.pack(hellaswag.tokenize(e, gpt2_tokenizer), 64) for e in examples]
    return model, hellaswag.batches(rows, 8)


def test_cuda_fp32_takes_the_cpu_decisions(setup):
    model, batches = setup
    cpu = scores(model, batches, "cpu")
    cuda = scores(model.to("cuda"), [{k: v.pin_memory() for k, v in b.items()} for b in batches], "cuda")
    assert torch.allclose(cuda[0], cpu[0], rtol=1e-4) and torch.allclose(cuda[1], cpu[1], rtol=1e-4)
    assert cuda[2] == cpu[2]


def test_cuda_bf16_takes_the_cpu_decisions_where_they_are_clear(setup):
    model, batches = setup
    total, mean, decisions = scores(model, batches, "cpu")
    _, _, bf16 = scores(model.to("cuda"), batches, "cuda", autocast=True)
    # bf16 keeps ~3 significant digits: compare the examples whose two best candidates differ by more than 2%
    checked = 0
    for i, (t, m) in enumerate(zip(total, mean)):
        clear = all((x.sort().values[1] - x.sort().values[0]) > 0.02 * x.abs().min() for x in (t, m))
        if clear:
            assert bf16[i] == decisions[i], i
            checked += 1
    assert checked >= 16  # the comparison is not empty
