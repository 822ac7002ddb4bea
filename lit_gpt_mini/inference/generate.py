"""Sample text from a checkpoint: ``python main.py generate --ckpt_path <file.ckpt> --prompt "ROMEO:"``.

A checkpoint (or an exported ``.pth``) holds the model's hyperparameters, its weights and its tokenizer, so it
is all this needs. :func:`stream_text` is the sampling loop every command that shows text as it comes shares.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Iterator, Literal, Optional

import torch

from lit_gpt_mini.checkpoint import check_device, load_model
from lit_gpt_mini.inference.conversation import encode
from lit_gpt_mini.errors import UserError
from lit_gpt_mini.model import GPT
from lit_gpt_mini.inference.textstream import TextStream


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
        ckpt_path: A checkpoint written by ``main.py fit`` (e.g. ``last.ckpt``) or a ``.pth`` written by
            ``main.py export``: either holds the tokenizer too.
        prompt: Text to continue.
        prompt_file: A UTF-8 file whose text is the prompt (instead of ``prompt``).
        max_new_tokens: Tokens to sample for each continuation (at least 1).
        temperature: Softmax temperature; 0 picks the most likely token every time (greedy, no randomness).
        top_k: Sample only among the ``top_k`` most likely tokens; ``None`` for all.
        top_p: Sample only among the most likely tokens whose probabilities add up to ``top_p``; ``None``: all.
        num_samples: Number of continuations.
        seed: Seed of the sampler: the same seed gives the same text.
        stop_at_eot: Stop a continuation at the tokenizer's end-of-text token (if it has one); otherwise the
            token is left out of the text and sampling goes on.
        use_cache: Keep the attention keys/values of past tokens (a KV cache) instead of recomputing them.
        device: ``cpu``, ``cuda``, ``cuda:1``, ...
        stream: Print text as it is produced (otherwise each sample once complete).
        float32_matmul_precision: On CUDA, ``high`` runs fp32 matmuls on TF32 tensor cores; ``highest`` does not.
    """
    check_sampling(max_new_tokens, temperature, top_k, top_p, seed=seed)
    if num_samples < 1:
        raise UserError(f"num_samples must be at least 1, got {num_samples}")
    check_device(device)
    if prompt_file is not None:
        try:
            prompt = Path(prompt_file).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as e:
            raise UserError(f"cannot read prompt_file {prompt_file}: {e}") from None
    if torch.device(device).type == "cuda":
        torch.set_float32_matmul_precision(float32_matmul_precision)
    loaded = load_model(ckpt_path, device)
    ids = encode(loaded.tokenizer, prompt, "the prompt")
    if not ids:
        raise UserError("the prompt is empty: give at least one character")
    generator = torch.Generator(device=device).manual_seed(seed)
    samples = []
    for _ in range(num_samples):
        text = TextStream(loaded.tokenizer, stop_at_eot=stop_at_eot)
        if stream:
            print(prompt, end="", flush=True)
        for piece in stream_text(loaded.model, ids, text, max_new_tokens, temperature, top_k, top_p, generator,
                                 use_cache):
            if stream and piece:
                print(piece, end="", flush=True)
        print("\n" if stream else prompt + text.result, end="" if stream else "\n", flush=True)
        print("-" * 40, flush=True)
        samples.append(prompt + text.result)
    return samples


class SamplingError(UserError):
    """A sampling setting out of range; ``name`` is the setting."""

    def __init__(self, name: str, message: str) -> None:
        super().__init__(message)
        self.name = name


SEED_RANGE = (0, 2**63 - 1)  # what every torch.Generator takes and what fits a JSON client's integers


def check_sampling(
    max_new_tokens: int, temperature: float, top_k: Optional[int], top_p: Optional[float],
    names: Optional[dict[str, str]] = None, seed: Optional[int] = None,
) -> None:
    """Refuse sampling settings that cannot work, naming the setting (``names`` renames them, e.g. for an API
    whose field is ``max_tokens``). The one check of ``generate``, ``chat`` and ``serve``.

    Any finite temperature > 0 is sampled without overflow (:func:`stream_text` says how; a tiny one is greedy
    sampling, never NaN); infinity and NaN have no meaning and are refused."""
    names = names or {}

    def bad(name: str, rule: str, value: object) -> SamplingError:
        shown = names.get(name, name)
        return SamplingError(shown, f"{shown} must be {rule}, got {value}")

    if max_new_tokens < 1:
        raise bad("max_new_tokens", "at least 1", max_new_tokens)
    if not (temperature >= 0 and math.isfinite(temperature)):
        raise bad("temperature", ">= 0 (0 is greedy) and finite", temperature)
    if top_p is not None and not 0.0 < top_p <= 1.0:
        raise bad("top_p", "in (0, 1]", top_p)
    if top_k is not None and top_k < 1:
        raise bad("top_k", "at least 1", top_k)
    if seed is not None and not SEED_RANGE[0] <= seed <= SEED_RANGE[1]:
        raise bad("seed", "between 0 and 2**63 - 1", seed)


def stream_text(
    model: GPT,
    ids: list[int],
    text: TextStream,
    max_new_tokens: int,
    temperature: float,
    top_k: Optional[int],
    top_p: Optional[float],
    generator: torch.Generator,
    use_cache: bool = True,
) -> Iterator[str]:
    """Sample after ``ids`` through ``text`` (:class:`~lit_gpt_mini.inference.textstream.TextStream`): yields, for every
    token sampled, the text that became final with it ('' when none did), then the rest at the end. Sampling
    stops where ``text`` ends (a stop string, a speaker's line, the end-of-text token) or after
    ``max_new_tokens``; a caller that stops iterating stops the sampling. The settings must have passed
    :func:`check_sampling`."""
    device = next(model.parameters()).device
    idx = torch.tensor([ids], dtype=torch.long, device=device)

    # The sampler divides the logits by the temperature. Subtracting each row's maximum first keeps the largest
    # at 0 and the rest at -inf at worst, so no positive temperature overflows them (inf - inf is NaN, which
    # torch.multinomial refuses). A temperature below float32's smallest normal number (bfloat16's too) would
    # round to 0 in that division (0 / 0 is NaN): it is raised to it, which changes only logits closer than
    # ~1e-36 to the maximum, none of which float32 logits of order 1 have (both are greedy sampling there).
    floor = torch.finfo(torch.float32).tiny

    def forward(*args: object, **kwargs: object) -> torch.Tensor:
        logits = model.forward(*args, **kwargs)
        if torch.finfo(logits.dtype).tiny > floor:  # float16: its own smallest normal is 6e-5
            logits = logits.float()
        return logits - logits.amax(dim=-1, keepdim=True)

    positive = temperature > 0
    for token in model.stream(idx, max_new_tokens, max(temperature, floor) if positive else 0.0, top_k, top_p,
                              generator, use_cache, forward=forward if positive else None):
        yield text.add(int(token[0, 0]))
        if text.stopped:
            break
    yield text.finish()


def main(args: Optional[list[str]] = None) -> None:
    from jsonargparse import auto_cli

    # exit_on_error=False: a parse error reaches cli.main(), which prints it as one line; allow_abbrev=False:
    # a misspelt option is an error, never silently taken for the one it begins
    auto_cli(generate, args=args, as_positional=False, exit_on_error=False, allow_abbrev=False,
             prog="main.py generate")
