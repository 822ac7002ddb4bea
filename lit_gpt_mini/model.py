"""The GPT model in plain PyTorch, with GPT-2's block or a modern one chosen by ``GPTConfig.block``.

No Lightning and no I/O in this file: it is the model alone, small enough to read in one sitting.
Names follow the GPT-2 paper and OpenAI's checkpoint (``wte``, ``wpe``, ``c_attn``, ``c_proj``, ``ln_f``)
so that weights can be moved between this model and others without a renaming table; the modern block keeps
the same names for the layers it shares with GPT-2's (so Muon's parameter groups find them).

``block: gpt2``: learned positions, LayerNorm with gains, GELU, a head tied to the token embedding.
``block: modern``: rotary positions (RoPE), parameter-free RMSNorm (also on queries and keys: QK-norm), ReLU²,
an untied zero-initialised head and zero-initialised output projections (as in modded-nanogpt and nanochat).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace
from typing import Any, Callable, Iterator, Literal, Optional

import torch
import torch.nn as nn
from torch.nn import functional as F

from lit_gpt_mini.errors import ConfigError

BLOCKS = ("gpt2", "modern")
ROPE_BASE = 10000.0


def flush_denormals() -> None:
    """Make this CPU treat denormal floats as zero (a process-wide setting; a no-op where unsupported).

    Zero-initialised weights (the modern block's output projections and head) give near-zero gradients, Adam
    moments and activations in the first steps: numbers below ~1e-38 are denormals, which x86 CPUs compute in
    microcode, about 20x slower. Flushing them to zero changes no result that matters (they are below float32's
    normal range) and keeps every step at full speed. GPUs flush denormals in their fast paths anyway.
    """
    torch.set_flush_denormal(True)

# OpenAI's four GPT-2 shapes, by their Hugging Face names (the recipes declare every other shape in YAML).
PRESETS: dict[str, dict[str, Any]] = {
    "gpt2": dict(n_layer=12, n_head=12, n_embd=768, vocab_size=50257, block_size=1024, bias=True),  # 124M
    "gpt2-medium": dict(n_layer=24, n_head=16, n_embd=1024, vocab_size=50257, block_size=1024, bias=True),  # 350M
    "gpt2-large": dict(n_layer=36, n_head=20, n_embd=1280, vocab_size=50257, block_size=1024, bias=True),  # 774M
    "gpt2-xl": dict(n_layer=48, n_head=25, n_embd=1600, vocab_size=50257, block_size=1024, bias=True),  # 1558M
}


@dataclass
class GPTConfig:
    """Hyperparameters that fix the model's shape."""

    vocab_size: int = 50257
    block_size: int = 1024  # the longest context the model sees (size of the position table)
    n_layer: int = 12
    n_head: int = 12
    n_embd: int = 768
    dropout: float = 0.0
    bias: bool = True  # biases in Linear and LayerNorm layers, as in GPT-2
    pad_vocab_multiple: int = 64  # matmuls over a vocab padded to a multiple of 64 run faster on GPUs
    # "gpt2" (GPT-2's block: Hugging Face import/export) or "modern" (RoPE, RMSNorm, QK-norm, ReLU², untied head)
    block: Literal["gpt2", "modern"] = "gpt2"

    def __post_init__(self) -> None:
        for name in ("vocab_size", "block_size", "n_layer", "n_head", "n_embd", "pad_vocab_multiple"):
            if getattr(self, name) < 1:
                raise ConfigError(f"GPTConfig.{name} must be a positive integer, got {getattr(self, name)}")
        if self.n_embd % self.n_head != 0:
            raise ConfigError(f"n_embd ({self.n_embd}) must be divisible by n_head ({self.n_head})")
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"dropout must be in [0, 1), got {self.dropout}")
        if self.block not in BLOCKS:
            raise ConfigError(f"GPTConfig.block must be one of {', '.join(BLOCKS)}, got {self.block!r}")
        if self.block == "modern" and (self.n_embd // self.n_head) % 2:
            raise ConfigError(f"the modern block's rotary positions need an even head size, got "
                              f"n_embd / n_head = {self.n_embd // self.n_head}")

    @property
    def padded_vocab_size(self) -> int:
        m = self.pad_vocab_multiple
        return (self.vocab_size + m - 1) // m * m

    @classmethod
    def from_name(cls, name: str, **overrides: Any) -> "GPTConfig":
        """A named preset from :data:`PRESETS`, with any field overridden."""
        if name not in PRESETS:
            raise ConfigError(f"unknown model preset {name!r}; choose one of {sorted(PRESETS)}")
        return replace(cls(**PRESETS[name]), **overrides)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class _RMSNormFunction(torch.autograd.Function):
    # On a CPU F.rms_norm is a chain of elementwise kernels (square, mean, add, rsqrt, mul) whose autograd backward
    # is longer still: for a small model those passes cost as much as its matmuls. The closed-form backward,
    # dx = (g - y * mean(g * y)) / rms, takes half the passes and keeps only y and 1/rms.
    @staticmethod
    def forward(ctx, x: torch.Tensor, eps: float) -> torch.Tensor:
        rstd = x.square().mean(-1, keepdim=True).add_(eps).rsqrt_()
        y = x * rstd
        ctx.save_for_backward(y, rstd)
        return y

    @staticmethod
    def backward(ctx, g: torch.Tensor) -> tuple[torch.Tensor, None]:
        y, rstd = ctx.saved_tensors
        return (g - y * (g * y).mean(-1, keepdim=True)).mul_(rstd), None


def rms_norm(x: torch.Tensor) -> torch.Tensor:
    """Parameter-free RMSNorm over the last dimension (the modern block's only normalisation).

    No gain: a gain in front of a Linear layer is redundant with that layer's weights, and Muon (which trains the
    matrices) then sets the scale alone. ``eps`` is ``F.rms_norm``'s default (the dtype's machine epsilon).
    float32 takes the two-pass function above; lower precisions (autocast) take ``F.rms_norm``, which computes the
    mean of squares in float32.
    """
    if x.dtype == torch.float32:
        return _RMSNormFunction.apply(x, torch.finfo(torch.float32).eps)
    return F.rms_norm(x, (x.size(-1),))


def rotary_tables(head_size: int, length: int, base: float = ROPE_BASE) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin (length, head_size / 2) of RoPE's rotation angles ``position * base^(-2i / head_size)``."""
    inv_freq = base ** (-torch.arange(0, head_size, 2, dtype=torch.float32) / head_size)
    angles = torch.outer(torch.arange(length, dtype=torch.float32), inv_freq)
    return angles.cos(), angles.sin()


def _rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((x1 * cos + x2 * sin, x2 * cos - x1 * sin), dim=-1)


class _RotaryFunction(torch.autograd.Function):
    # A rotation's gradient is the gradient rotated back (by -angle): one pass of the same arithmetic, where
    # autograd through the slices, products and concatenation takes about twice as many.
    @staticmethod
    def forward(ctx, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(cos, sin)
        return _rotate(x, cos, sin)

    @staticmethod
    def backward(ctx, g: torch.Tensor) -> tuple[torch.Tensor, None, None]:
        cos, sin = ctx.saved_tensors
        return _rotate(g, cos, -sin), None, None


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate each pair (x[i], x[i + D/2]) of ``x`` (..., D) by its position's angle; ``cos``/``sin`` (..., D/2)
    broadcast against ``x``'s leading dimensions. The dot product of a rotated query and key then depends only on
    their distance."""
    cos, sin = cos.to(x.dtype), sin.to(x.dtype)
    if cos.requires_grad or sin.requires_grad:  # never in this model; keep autograd exact if someone trains angles
        return _rotate(x, cos, sin)
    return _RotaryFunction.apply(x, cos, sin)


class CausalSelfAttention(nn.Module):
    """Multi-head causal self-attention; in the modern block with QK-norm and rotary positions."""

    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.modern = config.block == "modern"
        self.n_head = config.n_head
        self.n_embd = config.n_embd
        self.dropout = config.dropout
        # query, key and value for all heads in one matmul
        self.c_attn = nn.Linear(config.n_embd, 3 * config.n_embd, bias=config.bias)
        self.c_proj = nn.Linear(config.n_embd, config.n_embd, bias=config.bias)
        self.resid_dropout = nn.Dropout(config.dropout)

    def forward(
        self,
        x: torch.Tensor,
        cache: Optional["KVCache"] = None,
        layer: int = 0,
        mask: Optional[torch.Tensor] = None,
        rotary: Optional[tuple[torch.Tensor, torch.Tensor]] = None,
    ) -> torch.Tensor:
        B, T, C = x.shape
        qkv = self.c_attn(x).view(B, T, 3, self.n_head, C // self.n_head)
        if self.modern:
            # QK-norm: queries and keys of unit RMS per head bound the attention logits (|q.k| / sqrt(hs) <= sqrt(hs)),
            # so no large learning rate can saturate the softmax. Normalised before the rotation, which keeps norms.
            # Queries and keys go through together (half the kernel launches); back to v's dtype after, since under
            # autocast RMSNorm runs in float32 while the projections are bf16.
            cos, sin = rotary
            qk = apply_rotary(rms_norm(qkv[:, :, :2]), cos.unsqueeze(-3), sin.unsqueeze(-3))
            (q, k), v = qk.to(qkv.dtype).unbind(2), qkv[:, :, 2]
        else:
            q, k, v = qkv.unbind(2)  # each (B, T, nh, hs)
        # (B, T, nh, hs) -> (B, nh, T, hs)
        q, k, v = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)
        if cache is not None:
            # New tokens attend to every cached one: store their keys/values, attend over all so far.
            k, v = cache.update(layer, k, v)
        # A single new token may see everything before it; several (the prompt) need the causal mask.
        # dispatches to flash / memory-efficient kernels where the device has them
        # An explicit mask (B, T, T) replaces the causal one (see GPT.hidden_states).
        y = F.scaled_dot_product_attention(
            q, k, v, attn_mask=None if mask is None else mask.unsqueeze(1),
            dropout_p=self.dropout if self.training else 0.0, is_causal=T > 1 and mask is None,
        )
        y = y.transpose(1, 2).contiguous().view(B, T, C)  # re-assemble all head outputs side by side
        return self.resid_dropout(self.c_proj(y))


class ReLU2(nn.Module):
    """relu(x)²: as cheap as ReLU, smooth at 0 in its gradient, and it learned faster than GELU in
    modded-nanogpt's and nanochat's small-model runs (Primer, So et al. 2021)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _ReLUSquaredFunction.apply(x)


class _ReLUSquaredFunction(torch.autograd.Function):
    # Autograd through relu then square makes three passes backward (2r, times g, relu's mask); the derivative is
    # 2·relu(x), which is already zero where the mask would be: one product with the saved relu(x).
    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        r = F.relu(x)
        ctx.save_for_backward(r)
        return r * r

    @staticmethod
    def backward(ctx, g: torch.Tensor) -> torch.Tensor:
        (r,) = ctx.saved_tensors
        return (g * r).mul_(2.0)


class MLP(nn.Module):
    """The feed-forward layer: 4x wider, GELU (GPT-2) or ReLU² (modern)."""

    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.c_fc = nn.Linear(config.n_embd, 4 * config.n_embd, bias=config.bias)
        # tanh GELU: the approximation GPT-2 was trained with
        self.gelu = ReLU2() if config.block == "modern" else nn.GELU(approximate="tanh")
        self.c_proj = nn.Linear(4 * config.n_embd, config.n_embd, bias=config.bias)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.c_proj(self.gelu(self.c_fc(x))))


class Block(nn.Module):
    """A pre-norm transformer block: x + attn(norm(x)), then x + mlp(norm(x)).

    GPT-2's norm is LayerNorm with gains (and biases with ``bias``); the modern block's is the parameter-free
    :func:`rms_norm`, so it has no ``ln_1``/``ln_2`` parameters at all.
    """

    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        modern = config.block == "modern"
        # in GPT-2's order (ln_1, attn, ln_2, mlp): the state dict's and the seeded init's
        self.ln_1 = _RMSNorm() if modern else nn.LayerNorm(config.n_embd, bias=config.bias)
        self.attn = CausalSelfAttention(config)
        self.ln_2 = _RMSNorm() if modern else nn.LayerNorm(config.n_embd, bias=config.bias)
        self.mlp = MLP(config)

    def forward(
        self,
        x: torch.Tensor,
        cache: Optional["KVCache"] = None,
        layer: int = 0,
        mask: Optional[torch.Tensor] = None,
        rotary: Optional[tuple[torch.Tensor, torch.Tensor]] = None,
    ) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x), cache, layer, mask, rotary)
        return x + self.mlp(self.ln_2(x))


class _RMSNorm(nn.Module):
    # a module (without parameters) so that both blocks read the same and hooks/printing see the norm
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return rms_norm(x)


class KVCache:
    """The keys and values of the tokens a model has seen, per layer, so that each new token costs one position
    instead of a pass over the whole context. Holds up to ``block_size`` positions, from position 0.

    Each layer's buffers are made by its first update, in the device and dtype of its keys: under autocast or a
    sharded model's mixed precision that is the compute dtype, which the weights' dtype does not tell.
    """

    def __init__(self, config: GPTConfig, batch_size: int) -> None:
        self.shape = (batch_size, config.n_head, config.block_size, config.n_embd // config.n_head)
        self.keys: list[Optional[torch.Tensor]] = [None] * config.n_layer
        self.values: list[Optional[torch.Tensor]] = [None] * config.n_layer
        self.length = 0  # positions filled (the same in every layer once a forward pass is done)

    def update(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        start, end = self.length, self.length + k.size(2)
        if k.size(2) > 1 and start > 0:
            raise ValueError("the KV cache takes several tokens only at position 0 (the prompt), then one at a time")
        if self.keys[layer] is None:
            self.keys[layer] = k.new_zeros(self.shape)
            self.values[layer] = v.new_zeros(self.shape)
        self.keys[layer][:, :, start:end] = k
        self.values[layer][:, :, start:end] = v
        return self.keys[layer][:, :, :end], self.values[layer][:, :, :end]


class GPT(nn.Module):
    """A decoder-only transformer: token embeddings, ``n_layer`` blocks, a final norm and a language-model head.

    With ``config.block == "gpt2"`` it is GPT-2 (learned positions, LayerNorm, GELU, head tied to the token
    embedding), weight for weight what Hugging Face's ``GPT2LMHeadModel`` computes. With ``"modern"``: rotary
    positions (no ``wpe`` table), parameter-free RMSNorm after the embedding, in the blocks and before the head,
    QK-norm, ReLU², and an untied head. Building either flushes this CPU's denormals (:func:`flush_denormals`).
    """

    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        flush_denormals()  # every training, sampling and serving path builds a GPT first: the one place for it
        self.config = config
        modern = config.block == "modern"
        # Built in GPT-2's order (wte, wpe, drop, h, ln_f, lm_head): each layer's construction draws from the RNG,
        # so a seeded GPT-2 model is the same weights as before the modern block existed.
        layers: dict[str, nn.Module] = dict(wte=nn.Embedding(config.padded_vocab_size, config.n_embd))
        if not modern:
            layers["wpe"] = nn.Embedding(config.block_size, config.n_embd)
        layers.update(
            drop=nn.Dropout(config.dropout),
            h=nn.ModuleList([Block(config) for _ in range(config.n_layer)]),
            ln_f=_RMSNorm() if modern else nn.LayerNorm(config.n_embd, bias=config.bias),
        )
        self.transformer = nn.ModuleDict(layers)
        self.lm_head = nn.Linear(config.n_embd, config.padded_vocab_size, bias=False)
        if not modern:
            # Weight tying (GPT-2, Press & Wolf 2017): the output projection is the token embedding.
            self.transformer.wte.weight = self.lm_head.weight
        self.apply(self._init_weights)
        if modern:
            # Not in the state dict (persistent=False): computed from the config, in float32 (positions up to
            # block_size need float32's precision for the angles), cast to the queries' dtype when used.
            cos, sin = rotary_tables(config.n_embd // config.n_head, config.block_size)
            self.register_buffer("rope_cos", cos, persistent=False)
            self.register_buffer("rope_sin", sin, persistent=False)
            # Zero-init output projections make every block the identity at step 0, so the residual stream starts
            # as the (normalised) embedding and each block learns what to add (modded-nanogpt, nanochat). The head
            # is untied and zero: the first loss is exactly ln(vocab_size) with uniform predictions, and the
            # embedding, which feeds an RMSNorm, can take large AdamW steps without moving the logits' scale.
            for name, p in self.named_parameters():
                if name.endswith("c_proj.weight") or name == "lm_head.weight":
                    nn.init.zeros_(p)
        else:
            # GPT-2 scales the init of the projections that write into the residual stream by 1/sqrt(2 * n_layer),
            # since each block adds two of them to the same stream.
            for name, p in self.named_parameters():
                if name.endswith("c_proj.weight"):
                    nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * config.n_layer))

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)

    def num_params(self, non_embedding: bool = True) -> int:
        """Parameter count; by default without the embedding tables that do no matmul (GPT-2's position table;
        the modern block's untied token table). GPT-2's token table counts: it is also the head."""
        n = sum(p.numel() for p in self.parameters())
        if non_embedding:
            n -= self.transformer.wte.weight.numel() if self.config.block == "modern" else self.transformer.wpe.weight.numel()
        return n

    def flops_per_token(self, seq_len: Optional[int] = None) -> int:
        """Training FLOPs (forward + backward) for one token, after the PaLM paper's appendix B: 6N + 12·L·C·T."""
        T = seq_len or self.config.block_size
        return 6 * self.num_params() + 12 * self.config.n_layer * self.config.n_embd * T

    def _embed(self, idx: torch.Tensor, pos: torch.Tensor) -> tuple[torch.Tensor, Optional[tuple]]:
        # The input of the first block, and the rotary (cos, sin) of the positions ``pos`` ((T,) or (B, T)).
        x = self.transformer.wte(idx)
        if self.config.block == "modern":
            # (T, 1, hs/2) or (B, T, 1, hs/2): broadcast over the heads
            cos, sin = self.rope_cos[pos].unsqueeze(-2), self.rope_sin[pos].unsqueeze(-2)
            return self.transformer.drop(rms_norm(x)), (cos, sin)
        return self.transformer.drop(x + self.transformer.wpe(pos)), None

    def forward(
        self, idx: torch.Tensor, targets: Optional[torch.Tensor] = None, cache: Optional[KVCache] = None
    ) -> torch.Tensor:
        """Logits (B, T, vocab_size) for token ids ``idx`` (B, T); with ``targets`` (B, T), the mean cross-entropy
        loss instead (a scalar tensor), computed here so that a compiled model fuses it with the head.

        With a ``cache``, ``idx`` continues the tokens already in it (their positions follow, learned or rotary)
        and their keys/values are added to it.
        """
        B, T = idx.shape
        start = 0 if cache is None else cache.length
        if start + T > self.config.block_size:
            raise ValueError(
                f"sequence of length {start + T} is longer than the model's block_size {self.config.block_size}"
            )
        pos = torch.arange(start, start + T, dtype=torch.long, device=idx.device)
        x, rotary = self._embed(idx, pos)  # (B, T, C)
        for layer, block in enumerate(self.transformer.h):
            x = block(x, cache, layer, None, rotary)
        if cache is not None:
            cache.length += T
        logits = self.lm_head(self.transformer.ln_f(x))  # (B, T, padded_vocab)
        # The padding only makes the matmul faster: padded ids are never scored, so they are never sampled
        # and the loss is over the real vocabulary.
        if self.config.padded_vocab_size != self.config.vocab_size:
            logits = logits[..., : self.config.vocab_size]
        if targets is None:
            return logits
        # In fp32 whatever the autocast dtype of the logits: under bf16 the log-softmax over 50k classes would
        # lose the small probabilities. Inside a compiled graph the upcast fuses into the loss kernel instead of
        # materialising an fp32 copy of the (B, T, V) logits.
        return F.cross_entropy(logits.float().reshape(-1, logits.size(-1)), targets.reshape(-1))

    def hidden_states(
        self, idx: torch.Tensor, pos: Optional[torch.Tensor] = None, mask: Optional[torch.Tensor] = None
    ) -> torch.Tensor:
        """The final norm's output (B, T, n_embd) for ``idx`` (B, T), without the language-model head (a
        scorer applies it only where it needs logits). ``pos`` (B, T) gives each token's position (default 0 to
        T - 1) and ``mask`` (B, T, T, bool) which tokens each one attends to (default: all before it), so that
        one row can hold several sequences sharing a prefix, like HellaSwag's four endings after one context."""
        if pos is None:
            pos = torch.arange(idx.size(1), dtype=torch.long, device=idx.device)
        x, rotary = self._embed(idx, pos)
        for layer, block in enumerate(self.transformer.h):
            x = block(x, None, layer, mask, rotary)
        return self.transformer.ln_f(x)

    @torch.no_grad()
    def generate(
        self,
        idx: torch.Tensor,
        max_new_tokens: int,
        *sampling: Any,
        stop_token: Optional[int] = None,
        on_token: Optional[Callable[[int], None]] = None,
        **settings: Any,
    ) -> torch.Tensor:
        """Append up to ``max_new_tokens`` sampled tokens to ``idx`` (B, T) and return the whole sequence.

        The tokens are :meth:`stream`'s, which takes the sampling settings (``temperature``, ``top_k``,
        ``top_p``, ``generator``, ``use_cache``, ``forward``, in that order). Sampling stops early when every row
        has produced ``stop_token``; ``on_token`` is called with each new token of row 0 (for streaming).
        """
        new = []
        finished = torch.zeros(idx.size(0), dtype=torch.bool, device=idx.device)
        for next_id in self.stream(idx, max_new_tokens, *sampling, **settings):
            new.append(next_id)
            if on_token is not None:
                on_token(int(next_id[0, 0]))
            if stop_token is not None:
                finished |= next_id[:, 0] == stop_token
                if finished.all():
                    break
        return torch.cat([idx, *new], dim=1)

    @torch.no_grad()
    def stream(
        self,
        idx: torch.Tensor,
        max_new_tokens: int,
        temperature: float = 1.0,
        top_k: Optional[int] = None,
        top_p: Optional[float] = None,
        generator: Optional[torch.Generator] = None,
        use_cache: bool = True,
        forward: Optional[Callable[..., torch.Tensor]] = None,
    ) -> Iterator[torch.Tensor]:
        """Sample up to ``max_new_tokens`` tokens after ``idx`` (B, T), yielding each one (B, 1) as it is made:
        the one sampling loop, which a caller stops by no longer asking for tokens.

        ``temperature`` 0 is greedy decoding; ``top_k`` keeps the k most likely tokens, ``top_p`` the smallest
        set whose probability reaches p (nucleus sampling). Every random draw comes from ``generator``, so a
        seeded generator gives the same tokens whatever else runs beside it.

        The model sees a window of at most ``block_size`` tokens with positions from 0. When the text
        outgrows it, the window moves to the last ``block_size // 2`` tokens and (with ``use_cache``) the cache
        is refilled from them: positions are absolute, so cached keys cannot just shift. Cached and uncached
        generation use the same windows and give the same tokens.

        ``forward`` runs the model, by default this module's ``forward`` (not ``__call__``: a compiled model would
        recompile for every new length). A sharded model passes its wrapper's, called by every rank in step.
        """
        forward = forward or self.forward
        block_size = self.config.block_size
        keep = max(1, block_size // 2)
        start = max(0, idx.size(1) - block_size)  # where the model's window begins
        cache = None
        for _ in range(max_new_tokens):
            if idx.size(1) - start > block_size:  # the window is full: move it, refill the cache
                start, cache = idx.size(1) - keep, None
            if use_cache:
                if cache is None:
                    cache = KVCache(self.config, idx.size(0))
                logits = forward(idx[:, start + cache.length :], cache=cache)[:, -1, :]
            else:
                logits = forward(idx[:, start:])[:, -1, :]
            next_id = sample(logits, temperature, top_k, top_p, generator)
            idx = torch.cat((idx, next_id), dim=1)
            yield next_id


def sample(
    logits: torch.Tensor,
    temperature: float = 1.0,
    top_k: Optional[int] = None,
    top_p: Optional[float] = None,
    generator: Optional[torch.Generator] = None,
) -> torch.Tensor:
    """One token id per row of ``logits`` (B, V), as a (B, 1) tensor."""
    if temperature == 0:
        return logits.argmax(dim=-1, keepdim=True)
    logits = logits / temperature
    if top_k is not None:
        kth = torch.topk(logits, min(top_k, logits.size(-1))).values[:, [-1]]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p is not None and top_p < 1.0:
        sorted_logits, order = torch.sort(logits, descending=True)
        cumulative = F.softmax(sorted_logits, dim=-1).cumsum(dim=-1)
        # drop a token when the ones before it already reach top_p (the most likely one always stays)
        drop = cumulative - F.softmax(sorted_logits, dim=-1) >= top_p
        logits = logits.masked_fill(drop.scatter(1, order, drop), float("-inf"))
    probs = F.softmax(logits, dim=-1)
    return torch.multinomial(probs, num_samples=1, generator=generator)
