"""Export to .pth and to Hugging Face GPT-2, import from it, start training from pretrained weights."""

from __future__ import annotations

import pytest
import torch
from transformers import GPT2Config, GPT2LMHeadModel

from lit_gpt_mini.checkpoint import import_hf, load_pth, save_pth
from lit_gpt_mini.errors import CheckpointError, ConfigError
from lit_gpt_mini.inference.export import export, to_hf
from lit_gpt_mini.lit_module import GPT2
from lit_gpt_mini.model import GPT, GPTConfig

SMALL = dict(vocab_size=50257, block_size=64, n_layer=2, n_head=2, n_embd=32)


@pytest.fixture
def hf_dir(tmp_path):
    """A randomly initialised GPT2LMHeadModel built from a config (no download), saved like a hub model."""
    torch.manual_seed(0)
    hf = GPT2LMHeadModel(GPT2Config(n_positions=64, n_layer=2, n_head=2, n_embd=32, vocab_size=50257)).eval()
    hf.save_pretrained(tmp_path / "hf", safe_serialization=True)
    return tmp_path / "hf", hf


def test_imported_hf_weights_give_the_same_logits(hf_dir):
    path, hf = hf_dir
    ours = import_hf(str(path))
    x = torch.randint(0, 50257, (2, 40))
    with torch.no_grad():
        torch.testing.assert_close(ours(x), hf(x).logits, rtol=0, atol=1e-5)


def test_exported_model_loads_in_transformers_with_the_same_logits(tmp_path):
    torch.manual_seed(1)
    ours = GPT(GPTConfig(**SMALL)).eval()
    to_hf(ours).save_pretrained(tmp_path / "out", safe_serialization=True)
    loaded = GPT2LMHeadModel.from_pretrained(tmp_path / "out").eval()
    x = torch.randint(0, 50257, (2, 40))
    with torch.no_grad():
        torch.testing.assert_close(loaded(x).logits, ours(x), rtol=0, atol=1e-5)
    with pytest.raises(ConfigError, match="only models trained with bias: true"):
        to_hf(GPT(GPTConfig(**SMALL, bias=False)))


def test_pth_round_trip_is_weights_only(tmp_path):
    torch.manual_seed(2)
    ours = GPT(GPTConfig(vocab_size=65, block_size=16, n_layer=1, n_head=2, n_embd=16)).eval()
    chars = "".join(chr(32 + i) for i in range(65))  # the model's 65 tokens
    save_pth(ours, {"kind": "char", "chars": chars}, tmp_path / "m.pth")
    data = torch.load(tmp_path / "m.pth", weights_only=True)  # the documented snippet's first line
    assert data["tokenizer"] == {"kind": "char", "chars": chars}
    loaded, _ = load_pth(tmp_path / "m.pth")
    x = torch.randint(0, 65, (1, 16))
    torch.testing.assert_close(loaded(x), ours(x))
    torch.save({"something": "else"}, tmp_path / "other.pth")
    with pytest.raises(CheckpointError, match="not a model exported by lit-gpt-mini"):
        load_pth(tmp_path / "other.pth")


def test_init_from_starts_training_from_pretrained_weights(hf_dir):
    path, _ = hf_dir
    module = GPT2(**SMALL, init_from=str(path))
    module.configure_model()
    for name, tensor in import_hf(str(path)).state_dict().items():
        assert torch.equal(module.model.state_dict()[name], tensor), name
    wrong = GPT2(**{**SMALL, "n_layer": 3}, init_from=str(path))
    with pytest.raises(ConfigError, match="do not fit this model.*2/2/32/64/50257/True"):
        wrong.configure_model()
    with pytest.raises(CheckpointError, match="could not load GPT-2 weights"):
        import_hf(str(path.parent / "missing"))


def test_export_command_from_a_training_checkpoint(tmp_path, monkeypatch, shakespeare_docs):
    from lit_gpt_mini.cli.main import main

    from .conftest import CONFIGS, write_jsonl

    corpus = write_jsonl(tmp_path / "c.jsonl", shakespeare_docs[:1500])
    monkeypatch.chdir(tmp_path)
    cli = main(["fit", "--config", str(CONFIGS / "debug_gpt2.yaml"), "--data.path", str(corpus),
                "--trainer.max_steps", "2", "--trainer.val_check_interval", "2"])
    main(["export", "--ckpt_path", "out/debug_gpt2/checkpoints/last.ckpt", "--out", "hf", "--format", "hf"])
    main(["export", "--ckpt_path", "out/debug_gpt2/checkpoints/last.ckpt", "--out", "m.pth"])
    x = torch.randint(0, 50257, (1, 32))
    model = cli.model.model.eval()
    with torch.no_grad():
        torch.testing.assert_close(GPT2LMHeadModel.from_pretrained(tmp_path / "hf").eval()(x).logits, model(x),
                                   rtol=0, atol=1e-5)
        torch.testing.assert_close(load_pth(tmp_path / "m.pth")[0](x), model(x))
    with pytest.raises(CheckpointError, match="does not exist"):
        export("nope.ckpt", "x.pth")
