"""Take a trained model out of this project: ``main.py export`` to a plain ``.pth`` or a Hugging Face GPT-2.

* ``python main.py export --ckpt_path last.ckpt --out model.pth``: a plain ``.pth`` with the state dict, the
  model config and the tokenizer, all plain types, loadable with ``torch.load(..., weights_only=True)``::

      import torch
      from lit_gpt_mini.model import GPT, GPTConfig
      from lit_gpt_mini.tokenizers import tokenizer_from_dict

      data = torch.load("model.pth", weights_only=True)
      model = GPT(GPTConfig(**data["config"]))
      model.load_state_dict(data["state_dict"])
      tokenizer = tokenizer_from_dict(data["tokenizer"])

* ``python main.py export --ckpt_path last.ckpt --out gpt2-mine --format hf``: a Hugging Face
  ``GPT2LMHeadModel`` directory (``config.json`` + safetensors) that ``transformers`` loads directly; for
  models over GPT-2's vocabulary with biases (GPT-2's own layout).

Bringing GPT-2 weights in (``model.init_from: gpt2``) is :func:`lit_gpt_mini.checkpoint.import_hf`: reading
and writing model files happens in :mod:`lit_gpt_mini.checkpoint`, this module only converts.

``transformers`` is an optional dependency (``pip install -e '.[hf]'``); only the Hugging Face paths need it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal, Optional

import torch

from lit_gpt_mini.checkpoint import HF_TRANSPOSED, load_model, save_pth, transformers_module
from lit_gpt_mini.errors import ConfigError, UserError
from lit_gpt_mini.log import get_logger
from lit_gpt_mini.model import GPT

log = get_logger(__name__)


def hf_state_dict(model: GPT) -> dict[str, torch.Tensor]:
    """Our weights under GPT2LMHeadModel's names and layouts (real vocabulary only, Conv1D transposes)."""
    vocab = model.config.vocab_size
    out = {}
    for name, tensor in model.state_dict().items():
        if name.startswith("lm_head."):
            continue  # tied to wte
        if name == "transformer.wte.weight":
            tensor = tensor[:vocab]
        if name.endswith(HF_TRANSPOSED):
            tensor = tensor.t()
        out[name] = tensor.detach().cpu().contiguous()
    out["lm_head.weight"] = out["transformer.wte.weight"]
    return out


def to_hf(model: GPT):
    """A ``transformers.GPT2LMHeadModel`` with this model's weights."""
    c = model.config
    if c.block != "gpt2":
        raise ConfigError(f"Hugging Face's GPT-2 format has no {c.block} block (rotary positions, RMSNorm, untied "
                          f"head): export this model with --format pth")
    transformers = transformers_module()
    if not c.bias:
        raise ConfigError("GPT-2's Hugging Face layout has biases: only models trained with bias: true can be exported")
    config = transformers.GPT2Config(
        vocab_size=c.vocab_size, n_positions=c.block_size, n_embd=c.n_embd, n_layer=c.n_layer, n_head=c.n_head,
        activation_function="gelu_new", resid_pdrop=c.dropout, embd_pdrop=c.dropout, attn_pdrop=c.dropout,
        layer_norm_epsilon=1e-5, tie_word_embeddings=True,
    )
    hf = transformers.GPT2LMHeadModel(config)
    missing, unexpected = hf.load_state_dict(hf_state_dict(model), strict=False)
    if unexpected or [k for k in missing if not k.endswith((".attn.bias", ".attn.masked_bias"))]:
        raise ConfigError(f"cannot map the weights onto GPT2LMHeadModel (missing {missing}, unexpected {unexpected})")
    return hf.eval()


def export(
    ckpt_path: str, out: str, format: Literal["pth", "hf"] = "pth", device: str = "cpu"
) -> Path:
    """Export a training checkpoint (``.ckpt``) to a plain ``.pth`` or a Hugging Face GPT-2 directory.

    Args:
        ckpt_path: A checkpoint written by ``main.py fit`` (or a ``.pth`` of this project, for ``--format hf``).
        out: The ``.pth`` file, or the directory for ``--format hf``.
        format: ``pth`` (this project's GPT) or ``hf`` (``transformers.GPT2LMHeadModel``).
        device: Where to load the checkpoint.
    """
    path = Path(out)
    # Checked before the (possibly long) load: where the result goes must be able to take it.
    if format == "pth" and path.is_dir():
        raise UserError(f"--out {out} is a directory: give the file to write, e.g. --out {path / 'model.pth'}")
    if format == "hf" and path.exists() and not path.is_dir():
        raise UserError(f"--out {out} is a file: --format hf writes a directory; give a new directory name")
    loaded = load_model(ckpt_path, device)
    model, tokenizer_dict = loaded.model, loaded.tokenizer.to_dict()
    if format == "hf" and tokenizer_dict.get("kind") != "gpt2":
        raise ConfigError(
            f"only models over GPT-2's vocabulary export to Hugging Face's GPT-2 (this one's tokenizer is "
            f"{tokenizer_dict.get('kind')}); use --format pth"
        )
    try:
        if format == "pth":
            save_pth(model, tokenizer_dict, path, loaded.text_format)
        else:
            to_hf(model).save_pretrained(path, safe_serialization=True)
    except OSError as e:
        raise UserError(f"cannot write --out {out}: {e.strerror or e}") from None
    log.info(f"exported {ckpt_path} to {path} ({format})")
    return path


def main(args: Optional[list[str]] = None) -> None:
    from jsonargparse import auto_cli

    # exit_on_error=False: a parse error reaches cli.main(), which prints it as one line; allow_abbrev=False:
    # a misspelt option is an error, never silently taken for the one it begins
    auto_cli(export, args=args, as_positional=False, exit_on_error=False, allow_abbrev=False,
             prog="main.py export")
