"""Sample text from a checkpoint: ``python main.py generate --ckpt_path <file.ckpt> --prompt "ROMEO:"``.

A checkpoint holds the model's hyperparameters, its weights and its tokenizer, so it is all this needs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal, Optional

import torch

from lit_gpt_mini.checkpoint import check_device, load_checkpoint
from lit_gpt_mini.errors import UserError
from lit_gpt_mini.tokenizers import Tokenizer


def generate(
    ckpt_path: str,
    prompt: str = "\n",
    prompt_file: Optional[str] = None,
    max_new_tokens: int = 500,
    temperature: float = 0.8,
    top_k: Optional[int] = 200,
    top_p: Optional[float] = None,
    num_samples: int = 1,
    seed: int = 1337,
    stop_at_eot: bool = False,
    use_cache: bool = True,
    device: str = "cpu",
    stream: bool = True,
    float32_matmul_precision: Literal["highest", "high", "medium"] = "high",
) -> list[str]:
    """Sample ``num_samples`` continuations of a prompt, print them as they are produced, and return them.

    Args:
        ckpt_path: A checkpoint written by ``main.py fit`` (e.g. ``last.ckpt``): it holds the tokenizer too.
        prompt: Text to continue.
        prompt_file: A UTF-8 file whose text is the prompt (instead of ``prompt``).
        max_new_tokens: Tokens to sample for each continuation (at least 1).
        temperature: Softmax temperature; 0 picks the most likely token every time (greedy, no randomness).
        top_k: Sample only among the ``top_k`` most likely tokens; ``None`` for all.
        top_p: Sample only among the most likely tokens whose probabilities add up to ``top_p``; ``None``: all.
        num_samples: Number of continuations.
        seed: Seed of the sampler: the same seed gives the same text.
        stop_at_eot: Stop a continuation at the tokenizer's end-of-text token (if it has one).
        use_cache: Keep the attention keys/values of past tokens (a KV cache) instead of recomputing them.
        device: ``cpu``, ``cuda``, ``cuda:1``, ...
        stream: Print text as it is produced (otherwise each sample once complete).
        float32_matmul_precision: On CUDA, ``high`` runs fp32 matmuls on TF32 tensor cores; ``highest`` does not.
    """
    if max_new_tokens < 1:
        raise UserError(f"max_new_tokens must be at least 1, got {max_new_tokens}")
    if temperature < 0:
        raise UserError(f"temperature must be >= 0 (0 is greedy), got {temperature}")
    if top_p is not None and not 0.0 < top_p <= 1.0:
        raise UserError(f"top_p must be in (0, 1], got {top_p}")
    if top_k is not None and top_k < 1:
        raise UserError(f"top_k must be at least 1, got {top_k}")
    check_device(device)
    if prompt_file is not None:
        try:
            prompt = Path(prompt_file).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as e:
            raise UserError(f"cannot read prompt_file {prompt_file}: {e}") from None
    if torch.device(device).type == "cuda":
        torch.set_float32_matmul_precision(float32_matmul_precision)
    model, tokenizer = load_checkpoint(ckpt_path, device)
    try:
        ids = tokenizer.encode(prompt)
    except ValueError as e:
        raise UserError(f"the prompt cannot be encoded by the checkpoint's tokenizer: {e}") from None
    if not ids:
        raise UserError("the prompt is empty: give at least one character")
    stop = tokenizer.eot_id if stop_at_eot else None
    generator = torch.Generator(device=device).manual_seed(seed)
    samples = []
    for _ in range(num_samples):
        printer = _StreamPrinter(tokenizer, ids) if stream else None
        if printer:
            printer.start(prompt)
        idx = torch.tensor([ids], dtype=torch.long, device=device)
        out = model.generate(idx, max_new_tokens, temperature=temperature, top_k=top_k, top_p=top_p,
                             generator=generator, use_cache=use_cache, stop_token=stop,
                             on_token=printer.add if printer else None)
        new = out[0, len(ids):].tolist()
        if stop is not None and stop in new:
            new = new[: new.index(stop)]
        text = prompt + tokenizer.decode(new)
        if printer:
            printer.finish()
        else:
            print(text, flush=True)
        print("-" * 40, flush=True)
        samples.append(text)
    return samples


class _StreamPrinter:
    """Prints the text of new tokens as they come; waits while a multi-byte character is incomplete."""

    def __init__(self, tokenizer: Tokenizer, prompt_ids: list[int]) -> None:
        self.tokenizer = tokenizer
        self.new: list[int] = []
        self.printed = 0
        self.eot = tokenizer.eot_id

    def start(self, prompt: str) -> None:
        print(prompt, end="", flush=True)

    def add(self, token: int) -> None:
        if token == self.eot:
            return
        self.new.append(token)
        text = self.tokenizer.decode(self.new)
        if not text.endswith("\ufffd"):
            print(text[self.printed :], end="", flush=True)
            self.printed = len(text)

    def finish(self) -> None:
        text = self.tokenizer.decode(self.new)
        print(text[self.printed :], flush=True)


def main(args: Optional[list[str]] = None) -> None:
    from jsonargparse import auto_cli

    # exit_on_error=False: a parse error reaches cli.main(), which prints it as one line; allow_abbrev=False:
    # a misspelt option is an error, never silently taken for the one it begins
    auto_cli(generate, args=args, as_positional=False, exit_on_error=False, allow_abbrev=False,
             prog="main.py generate")
