"""HellaSwag on CUDA takes the CPU's decisions: in fp32, and in bf16 autocast wherever bf16's error cannot flip
one. The bf16 rule is checked on the CPU too (bf16 autocast there), so a margin below bf16's error shows here
before a GPU runs it."""

from __future__ import annotations

import pytest
import torch

from data_modules import hellaswag
from lit_gpt_mini import scoring
from lit_gpt_mini.model import GPT, GPTConfig

from .test_hellaswag import write_examples

# Every candidate's bf16 loss is within this fraction of its fp32 loss (asserted; measured 0.2% on a CPU with
# these weights). Two candidates whose fp32 losses differ by more than this fraction of their sum cannot swap
# places in bf16, so the decision is compared there; closer ones are bf16's to call.
BF16_RELATIVE_ERROR = 0.01
WEIGHT_SCALE = 3  # candidates' losses differ clearly, while logits stay small enough for bf16 (x10: 9% error)


def scores(model, batches, device, autocast=False):
    totals, means = [], []
    with torch.no_grad(), torch.autocast(device, dtype=torch.bfloat16, enabled=autocast):
        for batch in batches:
            batch = {k: v.to(device, non_blocking=True) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}
            total, mean = scoring.candidate_losses(model, batch)
            totals.append(total.float().cpu())
            means.append(mean.float().cpu())
    return torch.cat(totals), torch.cat(means)


def decisions(losses: torch.Tensor) -> list[int]:
    return losses.argmin(1).tolist()


@pytest.fixture
def setup(tmp_path, gpt2_tokenizer):
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=50257, block_size=64, n_layer=2, n_head=2, n_embd=64)).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(WEIGHT_SCALE)
    examples = hellaswag.read_examples(write_examples(tmp_path / "h.jsonl", 64, seed=5, empty_every=9, long_every=6))
    rows = [hellaswag.pack(hellaswag.tokenize(e, gpt2_tokenizer), 64) for e in examples]
    return model, hellaswag.batches(rows, 8)


def check_bf16_against_fp32(model, batches, device: str) -> None:
    """bf16 autocast on ``device`` against fp32 on the CPU: each candidate loss within BF16_RELATIVE_ERROR, the
    same decision wherever the fp32 gap exceeds what that error allows, and enough such examples to mean something."""
    reference = scores(model, batches, "cpu")
    bf16 = scores(model.to(device), batches, device, autocast=True)
    for exact, approximate in zip(reference, bf16):  # total, then mean per token
        assert ((approximate - exact).abs() <= BF16_RELATIVE_ERROR * exact.abs()).all()
        best_two = exact.sort(dim=1).values[:, :2]
        clear = (best_two[:, 1] - best_two[:, 0]) > BF16_RELATIVE_ERROR * best_two.abs().sum(1)
        assert clear.sum() >= 16  # the comparison is not empty
        for i in clear.nonzero().flatten().tolist():
            assert decisions(approximate)[i] == decisions(exact)[i], i


def test_the_bf16_rule_holds_for_cpu_bf16(setup):
    check_bf16_against_fp32(*setup, "cpu")


@pytest.mark.gpu
def test_cuda_fp32_takes_the_cpu_decisions(setup):
    model, batches = setup
    torch.set_float32_matmul_precision("highest")  # fp32, not TF32 (conftest restores the setting)
    cpu = scores(model, batches, "cpu")
    cuda = scores(model.to("cuda"), [{k: v.pin_memory() for k, v in b.items()} for b in batches], "cuda")
    for exact, got in zip(cpu, cuda):
        assert torch.allclose(got, exact, rtol=1e-4)
        assert decisions(got) == decisions(exact)


@pytest.mark.gpu
def test_cuda_bf16_takes_the_cpu_decisions_where_bf16_cannot_flip_them(setup):
    check_bf16_against_fp32(*setup, "cuda")
