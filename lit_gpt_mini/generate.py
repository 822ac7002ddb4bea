"""Sample text from a checkpoint: ``python main.py generate --ckpt_path <file.ckpt> --prompt "ROMEO:"``.

A checkpoint holds the model's hyperparameters, its weights and its tokenizer, so it is all this needs.
"""

from __future__ import annotations

import sys
from dataclasses import fields
from pathlib import Path
from typing import Optional

import torch

from lit_gpt_mini.errors import CheckpointError, UserError
from lit_gpt_mini.lit_module import TOKENIZER_KEY
from lit_gpt_mini.model import GPT, GPTConfig
from lit_gpt_mini.tokenizers import Tokenizer, tokenizer_from_dict


def load_checkpoint(path: str, device: str = "cpu") -> tuple[GPT, Tokenizer]:
    """The model (in eval mode) and tokenizer stored in a Lightning checkpoint written by this project."""
    if not Path(path).is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    try:
        ckpt = torch.load(path, map_location=device, weights_only=True)
    except Exception as e:  # a pickle error says little; say which file and why
        raise CheckpointError(f"{path} could not be loaded as a checkpoint ({type(e).__name__}: {e})") from None
    missing = [k for k in ("hyper_parameters", "state_dict", TOKENIZER_KEY) if k not in ckpt]
    if missing:
        raise CheckpointError(f"{path} is not a lit-gpt-mini checkpoint: it has no {', '.join(missing)}")
    hparams = ckpt["hyper_parameters"]
    config = GPTConfig(**{f.name: hparams[f.name] for f in fields(GPTConfig) if f.name in hparams})
    model = GPT(config)
    state = {k.removeprefix("model."): v for k, v in ckpt["state_dict"].items() if k.startswith("model.")}
    model.load_state_dict(state)
    return model.to(device).eval(), tokenizer_from_dict(ckpt[TOKENIZER_KEY])


def generate(
    ckpt_path: str,
    prompt: str = "\n",
    max_new_tokens: int = 500,
    temperature: float = 0.8,
    top_k: Optional[int] = 200,
    num_samples: int = 1,
    seed: int = 1337,
    device: str = "cpu",
) -> list[str]:
    """Print ``num_samples`` continuations of ``prompt`` and return them.

    Args:
        ckpt_path: A checkpoint written by ``main.py fit`` (e.g. ``last.ckpt``).
        prompt: Text to continue.
        max_new_tokens: Number of tokens to sample for each continuation.
        temperature: Softmax temperature; 0 picks the most likely token every time (greedy).
        top_k: Sample only among the ``top_k`` most likely tokens; ``None`` for all.
        num_samples: Number of continuations.
        seed: Seed of the sampler: the same seed gives the same text.
        device: ``cpu``, ``cuda``, ``cuda:1``, ...
    """
    if max_new_tokens < 1:
        raise UserError(f"max_new_tokens must be at least 1, got {max_new_tokens}")
    if temperature < 0:
        raise UserError(f"temperature must be >= 0 (0 is greedy), got {temperature}")
    model, tokenizer = load_checkpoint(ckpt_path, device)
    try:
        ids = tokenizer.encode(prompt)
    except ValueError as e:
        raise UserError(f"the prompt cannot be encoded by the checkpoint's tokenizer: {e}") from None
    if not ids:
        raise UserError("the prompt is empty: give at least one character")
    generator = torch.Generator(device=device).manual_seed(seed)
    samples = []
    for _ in range(num_samples):
        idx = torch.tensor([ids], dtype=torch.long, device=device)
        out = model.generate(idx, max_new_tokens, temperature=temperature, top_k=top_k, generator=generator)
        text = tokenizer.decode(out[0].tolist())
        print(text, "\n" + "-" * 40, flush=True)
        samples.append(text)
    return samples


def main(args: Optional[list[str]] = None) -> None:
    from jsonargparse import auto_cli

    auto_cli(generate, args=args if args is not None else sys.argv[1:], as_positional=False)
