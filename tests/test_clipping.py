"""Gradient clipping under every precision the configs use (32-true, bf16-mixed, 16-mixed with its scaler), with
fused AdamW and with Muon: the optimizer steps with the unclipped gradients clipped as torch clips them, and
``train/grad_norm`` is the norm before clipping. (DDP: tests/test_gpt2_training.py; FSDP: tests/test_gpu_path.py.)"""

from __future__ import annotations

import lightning as L
import pytest
import torch
from lightning.pytorch.plugins import MixedPrecision

from data_modules.shakespeare import ShakespeareDataModule
from lit_gpt_mini.lit_module import GPTModule

CLIP = 0.05  # well below these gradients' norms: every step is clipped


class Recorded(GPTModule):
    """GPTModule that keeps, for every optimizer step, the gradients handed to clipping and the ones the optimizer
    stepped with (read by a step post-hook: Lightning runs the micro-batches inside ``optimizer.step``, as its
    closure, so only after the step are the gradients those of this step, after everything Lightning and the
    scaler do between clipping and the update; neither optimizer changes them)."""

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.before: list[list[torch.Tensor]] = []
        self.stepped: list[list[torch.Tensor]] = []

    def on_train_start(self) -> None:
        def record(optimizer, args, kwargs):
            self.stepped.append([p.grad.detach().clone() for p in self.model.parameters()])

        self.trainer.optimizers[0].register_step_post_hook(record)

    def configure_gradient_clipping(self, optimizer, gradient_clip_val=None, gradient_clip_algorithm=None) -> None:
        self.before.append([p.grad.detach().clone() for p in self.model.parameters()])
        super().configure_gradient_clipping(optimizer, gradient_clip_val, gradient_clip_algorithm)


def train(tmp_path, small_text, precision: str, optimizer: str, algorithm: str = "norm") -> tuple[Recorded, L.Trainer]:
    L.seed_everything(0)
    data = ShakespeareDataModule(data_dir=str(tmp_path / "data"), path=str(small_text), batch_size=4,
                                 num_proc=1)
    module = Recorded(block_size=16, n_layer=2, n_head=2, n_embd=32, optimizer=optimizer, learning_rate=1e-3,
                      warmup_steps=0, lr_decay_steps=10)
    if precision == "16-mixed":  # Lightning turns 16-mixed into bf16-mixed on CPUs; the plugin keeps fp16 + scaler
        precision_args = dict(plugins=[MixedPrecision("16-mixed", "cpu", torch.amp.GradScaler("cpu"))])
    else:
        precision_args = dict(precision=precision)
    trainer = L.Trainer(
        accelerator="cpu", devices=1, max_steps=3, accumulate_grad_batches=2, gradient_clip_val=CLIP,
        gradient_clip_algorithm=algorithm, log_every_n_steps=1, limit_val_batches=0, logger=False,
        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False, **precision_args,
    )
    trainer.fit(module, data)
    return module, trainer


def clipped(grads: list[torch.Tensor], algorithm: str) -> list[torch.Tensor]:
    """The reference: the gradients clipped by torch.nn.utils on parameters of their own."""
    params = [torch.nn.Parameter(torch.zeros_like(g)) for g in grads]
    for p, g in zip(params, grads):
        p.grad = g.clone()
    if algorithm == "norm":
        torch.nn.utils.clip_grad_norm_(params, CLIP)
    else:
        torch.nn.utils.clip_grad_value_(params, CLIP)
    return [p.grad for p in params]


def norm(grads: list[torch.Tensor]) -> float:
    return torch.nn.utils.get_total_norm(grads).item()


@pytest.fixture(scope="module")
def fp32_first_norm(tmp_path_factory):
    """The first step's unclipped gradient norm in fp32, per optimizer (the other precisions must come close)."""
    cache = {}

    def get(optimizer: str, small_text) -> float:
        if optimizer not in cache:
            module, _ = train(tmp_path_factory.mktemp("fp32"), small_text, "32-true", optimizer)
            cache[optimizer] = norm(module.before[0])
        return cache[optimizer]

    return get


@pytest.mark.parametrize("optimizer", ["adamw", "muon"])
@pytest.mark.parametrize("precision", ["32-true", "bf16-mixed", "16-mixed"])
def test_the_optimizer_steps_with_the_unclipped_gradients_clipped_by_torch(
    tmp_path, small_text, precision, optimizer, fp32_first_norm
):
    module, trainer = train(tmp_path, small_text, precision, optimizer)
    assert trainer.global_step == 3 and len(module.before) == len(module.stepped) == 3
    for step, (before, stepped) in enumerate(zip(module.before, module.stepped)):
        assert norm(before) > 2 * CLIP, step  # clipping did something
        for got, expected in zip(stepped, clipped(before, "norm")):
            torch.testing.assert_close(got, expected, rtol=1e-6, atol=0, msg=f"step {step}")
    # train/grad_norm is the norm before clipping (logged at every step here; the last one remains)
    assert trainer.callback_metrics["train/grad_norm"].item() == pytest.approx(norm(module.before[-1]), rel=1e-6)
    # ...and at the gradients' true size: a scaled gradient (16-mixed) would be 65,536 times the fp32 norm
    assert norm(module.before[0]) == pytest.approx(fp32_first_norm(optimizer, small_text), rel=0.05)


def test_clipping_by_value_under_bf16_with_fused_adamw(tmp_path, small_text):
    module, trainer = train(tmp_path, small_text, "bf16-mixed", "adamw", algorithm="value")
    assert isinstance(trainer.optimizers[0], torch.optim.AdamW) and trainer.optimizers[0].defaults["fused"]
    for before, stepped in zip(module.before, module.stepped):
        assert max(g.abs().max().item() for g in before) > CLIP
        for got, expected in zip(stepped, clipped(before, "value")):
            torch.testing.assert_close(got, expected, rtol=0, atol=0)
