"""The one place that reads and writes the files holding a model: a run's ``.ckpt``, an exported ``.pth``, and
GPT-2 weights in Hugging Face's layout (:func:`import_hf`).

Everything that reads one (``generate``, ``export``, ``model.init_from``, ``fit/validate/test --ckpt_path``)
goes through here, so any file that is not what it should be, whatever is wrong inside, ends as one
:class:`~lit_gpt_mini.errors.CheckpointError` naming the file, not a traceback from deep inside torch.
Files are always loaded with ``weights_only=True``: a checkpoint may come from anywhere, and unpickling
arbitrary objects runs arbitrary code. This module imports only the model, the tokenizers and the errors, so
that any other module (the LightningModule included) can import it without an import circle.
"""

from __future__ import annotations

import json
import pickle
import pickletools
import warnings
import zipfile
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Optional

import torch

from lit_gpt_mini.chat_format import TEXT_FORMATS
from lit_gpt_mini.errors import CheckpointError, ConfigError, UserError
from lit_gpt_mini.model import GPT, GPTConfig
from lit_gpt_mini.tokenizers import Tokenizer, tokenizer_from_dict

TOKENIZER_KEY = "tokenizer"  # where the tokenizer lives in a checkpoint, beside the weights
# What the model's text looks like, beside the weights: "chat" for conversations rendered a line `name: text` per
# message (the Discord data module), "text" for anything else. `main.py chat` and `serve` read it.
TEXT_FORMAT_KEY = "text_format"  # one of lit_gpt_mini.chat_format.TEXT_FORMATS
PTH_FORMAT = "lit-gpt-mini model"  # the "format" field of a .pth written by main.py export
# ckpt_path values that Lightning resolves itself (to a checkpoint callback's file) rather than a path
LIGHTNING_ALIASES = ("last", "best", "hpc", "registry")
# GPT-2 (and HF) store these as Conv1D weights, (in, out): the transpose of our nn.Linear's (out, in).
HF_TRANSPOSED = ("attn.c_attn.weight", "attn.c_proj.weight", "mlp.c_fc.weight", "mlp.c_proj.weight")
# Why a pickle of other objects is refused. torch's own message advises weights_only=False, i.e. running whatever
# code the file holds: never the right advice for a file of unknown origin, so it is never passed on.
_UNSAFE = ("it holds Python objects other than tensors and plain types, which are never loaded (they could run "
           "code)")
_NOT_A_CHECKPOINT = "the file is damaged or is not a PyTorch checkpoint"


def _pickles_objects(path: Path, limit: int = 64 << 20) -> bool:
    """Whether ``path`` (a plain pickle, or torch's zip with its ``data.pkl``) is a whole pickle that names Python
    objects. Read with :mod:`pickletools`, which parses opcodes and never runs them. torch's weights-only reader
    stops at the first opcode it does not take (a newer protocol's framing) before it sees any global, so its
    error alone cannot tell a pickle of objects from bytes that are no pickle at all."""
    try:
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as archive:
                name = next(n for n in archive.namelist() if n.endswith("data.pkl"))
                data = archive.read(name)
        else:
            with open(path, "rb") as f:
                data = f.read(limit + 1)
            if len(data) > limit:
                return False
        return any(op.name in ("GLOBAL", "STACK_GLOBAL", "INST") for op, _, _ in pickletools.genops(data))
    except Exception:  # not a pickle, a truncated one, no data.pkl in the zip: damaged, not objects
        return False


def load_file(path: str | Path, device: str = "cpu", mmap: bool = False) -> Any:
    """``torch.load(path, weights_only=True)``, with every failure turned into one line naming the file."""
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"checkpoint {path} does not exist")
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} is a directory, not a checkpoint file")
    # torch maps only its zip format into memory; any other file (an old format, or no checkpoint at all) is read
    # plainly, so that what is said is about the file, not torch's advice to save it again with other options.
    mmap = mmap and zipfile.is_zipfile(path)
    try:
        with warnings.catch_warnings():  # torch's note on a pickle protocol it may not read: the error says more
            warnings.filterwarnings("ignore", message="Detected pickle protocol")
            return torch.load(path, map_location=device, weights_only=True, mmap=mmap)
    except pickle.UnpicklingError as e:
        # torch's one error type for both: a class the file names (objects), or bytes no pickle is made of
        if "Unsupported global" in str(e) or _pickles_objects(path):
            raise CheckpointError(f"{path} could not be loaded as a checkpoint: {_UNSAFE}; lit-gpt-mini writes none") from None
        raise CheckpointError(f"{path} could not be loaded as a checkpoint: {_NOT_A_CHECKPOINT}") from None
    except Exception as e:  # not a zip/pickle at all, truncated, unreadable...
        reason = str(e).strip().splitlines()[0][:200] if str(e).strip() else ""
        if "weights_only" in reason:
            reason = ""
        raise CheckpointError(
            f"{path} could not be loaded as a checkpoint ({type(e).__name__}{': ' + reason if reason else ''}): "
            f"{_NOT_A_CHECKPOINT}"
        ) from None


def check_device(device: str) -> torch.device:
    """The torch device named by ``device``, refused in one line when this machine does not have it."""
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as e:
        raise UserError(f"--device {device!r} is not a device name ({e}): use cpu, cuda or cuda:N") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise UserError(f"--device {device}: this machine has no usable CUDA device; use --device cpu")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise UserError(f"--device {device}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    return dev


def _config_from(path: Path, hparams: Any) -> GPTConfig:
    if not isinstance(hparams, dict):
        raise CheckpointError(f"{path}: its model configuration is a {type(hparams).__name__}, not a mapping")
    values = {}
    for f in fields(GPTConfig):
        if f.name not in hparams:
            continue
        value = hparams[f.name]
        # (a checkpoint without "block" predates the modern block: GPTConfig's default, GPT-2's, is its block)
        expected = {"dropout": (int, float), "bias": (bool,), "block": (str,)}.get(f.name, (int,))
        if not isinstance(value, expected) or (isinstance(value, bool) and f.name != "bias"):
            raise CheckpointError(f"{path}: its model configuration has {f.name} = {value!r}, which is not a {f.type}")
        values[f.name] = value
    try:
        return GPTConfig(**values)
    except (TypeError, ValueError) as e:
        raise CheckpointError(f"{path}: its model configuration does not describe a model ({e})") from None


def _tokenizer_from(path: Path, data: Any) -> Tokenizer:
    if not isinstance(data, dict):
        raise CheckpointError(f"{path}: its tokenizer entry is a {type(data).__name__}, not a mapping")
    try:
        return tokenizer_from_dict(data)
    except Exception as e:  # unknown kind, missing or mistyped fields: the tokenizer cannot be rebuilt
        raise CheckpointError(f"{path}: its tokenizer cannot be rebuilt ({type(e).__name__}: {e})") from None


def _check_vocabulary(path: Path, config: GPTConfig, tokenizer: Tokenizer) -> None:
    # The model predicts ids below its vocab_size and the tokenizer decodes ids below its own: a model trained
    # on data always has the data's vocabulary, so any other pair was put together or edited by hand.
    if tokenizer.vocab_size != config.vocab_size:
        raise CheckpointError(
            f"{path}: its tokenizer has {tokenizer.vocab_size} tokens but its model predicts {config.vocab_size}: the "
            f"tokenizer is not the one the model was trained with (the file was edited or put together); use the "
            f"checkpoint as training wrote it"
        )


def _model_from(path: Path, config: GPTConfig, state: dict[str, Any], device: str) -> GPT:
    if not all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items()):
        raise CheckpointError(f"{path}: its weights are not a mapping of names to tensors")
    # Shapes are compared on a model without storage first: a damaged configuration must not allocate the
    # model it describes. The layer count is compared before even that (a billion meta layers take forever).
    layers = {k.split(".")[2] for k in state if k.startswith("transformer.h.") and k.count(".") >= 3}
    if config.n_layer != len(layers):
        raise CheckpointError(
            f"{path}: its weights do not fit the model its configuration describes (n_layer {config.n_layer}, "
            f"weights of {len(layers)} layers): the file is damaged or was edited"
        )
    with torch.device("meta"):
        expected = {k: tuple(v.shape) for k, v in GPT(config).state_dict().items()}
    got = {k: tuple(v.shape) for k, v in state.items()}
    if got != expected:
        differ = sorted(set(got) ^ set(expected)) or sorted(k for k in got if got[k] != expected[k])
        raise CheckpointError(
            f"{path}: its weights do not fit the model its configuration describes ({len(differ)} differ, e.g. "
            f"{', '.join(differ[:3])}): the file is damaged or was edited"
        )
    model = GPT(config)
    model.load_state_dict(state)
    if not all(torch.isfinite(p).all() for p in model.parameters()):
        raise CheckpointError(
            f"{path}: its weights hold NaN or infinite values (the training diverged): use a checkpoint from before "
            f"the divergence, and a lower learning rate"
        )
    return model.to(device).eval()


def read_training_checkpoint(path: str | Path, device: str = "cpu", mmap: bool = False) -> dict[str, Any]:
    """A run's ``.ckpt`` with the parts this project needs checked: hyperparameters, weights, tokenizer."""
    path = Path(path)
    ckpt = load_file(path, device, mmap=mmap)
    if isinstance(ckpt, dict) and ckpt.get("format") == PTH_FORMAT:
        raise CheckpointError(
            f"{path} is a model exported by main.py export, not a training checkpoint: use it as model.init_from"
        )
    return _checked_training(path, ckpt)


def _checked_training(path: Path, ckpt: Any) -> dict[str, Any]:
    if not isinstance(ckpt, dict):
        raise CheckpointError(f"{path} is not a lit-gpt-mini checkpoint: it holds a {type(ckpt).__name__}, not a dict")
    missing = [k for k in ("hyper_parameters", "state_dict", TOKENIZER_KEY) if k not in ckpt]
    if missing:
        raise CheckpointError(f"{path} is not a lit-gpt-mini checkpoint: it has no {', '.join(missing)}")
    if not isinstance(ckpt["state_dict"], dict):
        raise CheckpointError(f"{path}: its state_dict is a {type(ckpt['state_dict']).__name__}, not a mapping")
    _check_vocabulary(path, _config_from(path, ckpt["hyper_parameters"]), _tokenizer_from(path, ckpt[TOKENIZER_KEY]))
    return ckpt


def check_ckpt_path(ckpt_path: Optional[str], training: bool) -> None:
    """Refuse a ``--ckpt_path`` that is missing or not a usable checkpoint before Lightning reads it.

    ``training`` (``fit``): the file must also hold the training state (step, optimizer, schedule) to resume.
    The file is memory-mapped, so checking a large checkpoint reads little of it.
    """
    if ckpt_path is None or (ckpt_path in LIGHTNING_ALIASES and not Path(ckpt_path).exists()):
        return
    ckpt = read_training_checkpoint(ckpt_path, mmap=True)
    if training:
        missing = [k for k in ("global_step", "optimizer_states", "lr_schedulers", "loops") if k not in ckpt]
        if missing:
            raise CheckpointError(
                f"{ckpt_path} holds a model but not the training state needed to resume (no {', '.join(missing)}): "
                f"to start a new run from its weights, use --model.init_from {ckpt_path} instead of --ckpt_path"
            )


def model_class_path(ckpt_path: str) -> Optional[str]:
    """The LightningModule class a run's ``.ckpt`` was trained with (LightningCLI records it in the
    hyperparameters), or ``None`` when the file is not one (check_ckpt_path says why). Memory-mapped: cheap."""
    try:
        hparams = load_file(Path(ckpt_path), "cpu", mmap=True).get("hyper_parameters") or {}
    except Exception:  # any unreadable file: check_ckpt_path names the problem in one line
        return None
    class_path = hparams.get("_class_path") if isinstance(hparams, dict) else None
    return class_path if isinstance(class_path, str) else None


def load_checkpoint(path: str | Path, device: str = "cpu") -> tuple[GPT, Tokenizer]:
    """The model (eval mode, on ``device``) and tokenizer of a run's ``.ckpt``."""
    check_device(device)
    path = Path(path)
    return _from_training(path, read_training_checkpoint(path, device), device)[:2]


def _from_training(path: Path, ckpt: dict[str, Any], device: str) -> tuple[GPT, Tokenizer, str]:
    config = _config_from(path, ckpt["hyper_parameters"])
    state = {k.removeprefix("model."): v for k, v in ckpt["state_dict"].items() if isinstance(k, str) and k.startswith("model.")}
    model = _model_from(path, config, state, device)
    return model, _tokenizer_from(path, ckpt[TOKENIZER_KEY]), _text_format(path, ckpt)


def _from_export(path: Path, data: Any, device: str) -> tuple[GPT, Tokenizer, str]:
    if not isinstance(data, dict) or data.get("format") != PTH_FORMAT:
        raise CheckpointError(f"{path} is not a model exported by lit-gpt-mini (main.py export)")
    missing = [k for k in ("config", "state_dict", "tokenizer") if k not in data]
    if missing:
        raise CheckpointError(f"{path} is an incomplete lit-gpt-mini export: it has no {', '.join(missing)}")
    if not isinstance(data["state_dict"], dict):
        raise CheckpointError(f"{path}: its state_dict is a {type(data['state_dict']).__name__}, not a mapping")
    config = _config_from(path, data["config"])
    tokenizer = _tokenizer_from(path, data["tokenizer"])
    _check_vocabulary(path, config, tokenizer)
    return _model_from(path, config, data["state_dict"], device), tokenizer, _text_format(path, data)


def _text_format(path: Path, data: dict[str, Any]) -> str:
    value = data.get(TEXT_FORMAT_KEY, "text")  # files written before the key existed hold plain text models
    if value not in TEXT_FORMATS:
        raise CheckpointError(f"{path}: its {TEXT_FORMAT_KEY} is {value!r}, not one of {', '.join(TEXT_FORMATS)}")
    return value


@dataclass
class LoadedModel:
    """A model ready to sample from: the network (eval mode), its tokenizer, and what its text looks like."""

    model: GPT
    tokenizer: Tokenizer
    text_format: str  # one of TEXT_FORMATS


def load_model(path: str | Path, device: str = "cpu") -> LoadedModel:
    """Any file holding a model: a run's ``.ckpt`` or a ``.pth`` from ``main.py export`` (what ``generate``,
    ``chat`` and ``serve`` read), checked as :func:`load_checkpoint` and :func:`load_pth` check them."""
    check_device(device)
    path = Path(path)
    data = load_file(path, device)
    if isinstance(data, dict) and data.get("format") == PTH_FORMAT:
        return LoadedModel(*_from_export(path, data, device))
    return LoadedModel(*_from_training(path, _checked_training(path, data), device))


def load_pth(path: str | Path) -> tuple[GPT, dict]:
    """The model (eval mode) and tokenizer dict of a ``.pth`` written by ``main.py export``."""
    path = Path(path)
    model, tokenizer, _ = _from_export(path, load_file(path), "cpu")
    return model, tokenizer.to_dict()


def save_pth(model: GPT, tokenizer_dict: dict, out: Path, text_format: str = "text") -> None:
    """The model, its config, its tokenizer and text format as one ``weights_only``-loadable file (read by
    :func:`load_pth` and :func:`load_model`)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    torch.save({"format": PTH_FORMAT, "version": 1, "config": model.config.to_dict(), "state_dict": state,
                "tokenizer": tokenizer_dict, TEXT_FORMAT_KEY: text_format}, out)


def transformers_module():
    """``transformers``, an optional dependency: only the Hugging Face formats need it."""
    try:
        import transformers
    except ImportError:
        raise ConfigError("the Hugging Face formats need transformers: pip install -e '.[hf]'") from None
    return transformers


def import_hf(source: str) -> GPT:
    """GPT-2 weights from a local Hugging Face directory or a model id on the hub (``gpt2``, ``gpt2-medium``...).

    A directory is read here: ``config.json``, then ``model.safetensors`` (or its shards) when present, else
    ``pytorch_model.bin`` with ``weights_only=True`` (a pickle holding anything but tensors is refused in one
    line, never with torch's advice to load it unsafely). A hub id goes through ``transformers``, which does
    the same (and whose refusal is said the same way)."""
    transformers = transformers_module()
    if Path(source).is_dir():
        config, weights = _read_hf_dir(Path(source), transformers)
    else:
        try:
            hf = transformers.GPT2LMHeadModel.from_pretrained(source)
        except pickle.UnpicklingError:
            raise CheckpointError(f"could not load GPT-2 weights from {source!r}: {_UNSAFE}") from None
        except (OSError, ValueError) as e:
            raise CheckpointError(f"could not load GPT-2 weights from {source!r}: {e}") from None
        config, weights = hf.config, hf.state_dict()
    c = config
    if c.activation_function not in ("gelu_new", "gelu_pytorch_tanh"):
        raise CheckpointError(f"{source}: activation {c.activation_function!r} is not GPT-2's tanh GELU")
    model = GPT(GPTConfig(vocab_size=c.vocab_size, block_size=c.n_positions, n_layer=c.n_layer, n_head=c.n_head,
                          n_embd=c.n_embd, dropout=0.0, bias=True))
    state = model.state_dict()
    missing = set(state) - {"lm_head.weight"}  # the head is tied to wte
    for name, tensor in weights.items():
        if not name.startswith(("transformer.", "lm_head.")):  # saved from GPT2Model rather than the LM head model
            name = "transformer." + name
        if name.endswith((".attn.bias", ".attn.masked_bias")) or name == "lm_head.weight":
            continue
        if name.endswith(HF_TRANSPOSED):
            tensor = tensor.t()
        if name == "transformer.wte.weight":  # our table is padded to a multiple of 64 rows; padding stays 0
            padded = torch.zeros_like(state[name])
            padded[: tensor.size(0)] = tensor
            tensor = padded
        if name not in state or state[name].shape != tensor.shape:
            raise CheckpointError(f"{source}: unexpected weight {name} {tuple(tensor.shape)}")
        state[name] = tensor
        missing.discard(name)
    if missing:
        raise CheckpointError(f"{source}: no weights for {', '.join(sorted(missing)[:3])}: the model is incomplete")
    model.load_state_dict(state)
    return model.eval()


def _read_hf_dir(directory: Path, transformers) -> tuple[Any, dict[str, torch.Tensor]]:
    """The configuration and weights of a Hugging Face model directory, safetensors first."""
    try:
        config = transformers.GPT2Config.from_pretrained(directory)
    except (OSError, ValueError) as e:
        raise CheckpointError(f"could not load GPT-2 weights from {directory}: {' '.join(str(e).split())[:300]}") from None
    index = directory / "model.safetensors.index.json"
    if index.is_file():
        try:
            names = sorted(set(json.loads(index.read_text(encoding="utf-8"))["weight_map"].values()))
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
            raise CheckpointError(f"{index} is not a safetensors index ({type(e).__name__}: {e})") from None
        files = [directory / Path(name).name for name in names]
    elif (directory / "model.safetensors").is_file():
        files = [directory / "model.safetensors"]
    elif (directory / "pytorch_model.bin").is_file():
        weights = load_file(directory / "pytorch_model.bin")  # weights_only: tensors and plain types
        if not isinstance(weights, dict) or not all(isinstance(v, torch.Tensor) for v in weights.values()):
            raise CheckpointError(f"{directory / 'pytorch_model.bin'} is not a mapping of names to tensors")
        return config, weights
    else:
        raise CheckpointError(f"{directory} holds no weights (model.safetensors or pytorch_model.bin)")
    from safetensors.torch import load_file as load_safetensors

    weights = {}
    for file in files:
        try:
            weights.update(load_safetensors(str(file)))
        except Exception as e:  # missing, truncated, not safetensors: whatever it is, one line naming the file
            raise CheckpointError(f"{file} could not be loaded ({type(e).__name__}: {e}): the file is damaged") from None
    return config, weights


__all__ = [
    "HF_TRANSPOSED",
    "LoadedModel",
    "PTH_FORMAT",
    "TEXT_FORMATS",
    "TEXT_FORMAT_KEY",
    "TOKENIZER_KEY",
    "check_ckpt_path",
    "check_device",
    "import_hf",
    "load_checkpoint",
    "load_file",
    "load_model",
    "load_pth",
    "read_training_checkpoint",
    "save_pth",
    "transformers_module",
]
