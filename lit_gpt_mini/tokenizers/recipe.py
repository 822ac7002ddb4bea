"""How a data source's tokenizer is made (a recipe every source accepts in the same shape), built once, saved
beside the shards, and loaded by every process.

A recipe names a kind (``char``: the alphabet of the text; ``bpe``: our byte-level BPE trained on the text;
``gpt2``: GPT-2's fixed vocabulary through tiktoken) and its settings. :func:`load_or_build` runs in
``prepare_data`` (once per node, under the data directory's lock): it reuses ``tokenizer.json`` when that file
was made from the same recipe and the same corpus, and otherwise builds the tokenizer from the source's
document stream and saves it atomically. Every process then reads the file with :func:`load_tokenizer_file`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Literal, Optional

from lit_gpt_mini.errors import ConfigError, DataError
from lit_gpt_mini.files import atomic_write, check_writable
from lit_gpt_mini.tokenizers.base import Tokenizer
from lit_gpt_mini.tokenizers.bpe import first_chars, train_bpe
from lit_gpt_mini.tokenizers.char import CharTokenizer
from lit_gpt_mini.tokenizers.gpt2 import GPT2Tokenizer
from lit_gpt_mini.tokenizers.registry import tokenizer_from_dict

FILENAME = "tokenizer.json"
FORMAT = "lit-gpt-mini tokenizer"
VERSION = 1


BPE_VOCAB_SIZE = 4096  # a BPE recipe's vocab_size when it gives none
BPE_PATTERN = "gpt4"


@dataclass(frozen=True)
class TokenizerRecipe:
    """How to make a data source's tokenizer.

    Args:
        kind: ``char`` (one token per distinct character of the text), ``bpe`` (a byte-level BPE trained on the
            text) or ``gpt2`` (GPT-2's 50,257-token vocabulary, nothing learned).
        vocab_size: ``bpe`` only: the size of the BPE to train, 256 bytes + merges + the end-of-text token
            (``None``: 4096). The other kinds' sizes are not set: a ``char`` vocabulary is the text's alphabet and
            GPT-2's is fixed, so a recipe of theirs that gives one is refused. (The model's vocabulary is always
            the tokenizer's.)
        pattern: ``bpe`` only: the pre-split regex, GPT-2's or GPT-4's (``None``: ``gpt4``).
        max_chars: ``char`` and ``bpe``: learn the vocabulary from at most this many characters of the document
            stream, its first documents in order (the document that crosses the limit is cut there), so the
            same data always gives the same tokenizer; ``None`` reads the whole stream. Set it for large
            sources: a ``char`` alphabet learned from a prefix refuses characters it never saw.
    """

    kind: Literal["char", "bpe", "gpt2"] = "gpt2"
    vocab_size: Optional[int] = None
    pattern: Optional[Literal["gpt2", "gpt4"]] = None
    max_chars: Optional[int] = None

    def __post_init__(self) -> None:
        if self.kind not in ("char", "bpe", "gpt2"):
            raise ConfigError(f"data.tokenizer.kind must be char, bpe or gpt2, got {self.kind!r}")
        if self.kind != "bpe":
            given = [name for name in ("vocab_size", "pattern") if getattr(self, name) is not None]
            if given:
                what = "its alphabet is the text's" if self.kind == "char" else "its vocabulary is fixed (50,257)"
                raise ConfigError(
                    f"data.tokenizer.{given[0]} sets up a BPE, but data.tokenizer.kind is {self.kind} ({what}): "
                    f"remove it, or set kind: bpe"
                )
        if self.kind == "gpt2" and self.max_chars is not None:
            raise ConfigError("data.tokenizer.max_chars limits what a char or bpe tokenizer learns from; gpt2 learns "
                              "nothing: remove it")
        if self.pattern not in (None, "gpt2", "gpt4"):
            raise ConfigError(f"data.tokenizer.pattern must be gpt2 or gpt4, got {self.pattern!r}")
        if self.kind == "bpe" and self.bpe_vocab_size < 257:
            raise ConfigError(
                f"data.tokenizer.vocab_size is {self.vocab_size}; a BPE needs at least 257 (256 bytes + end-of-text)"
            )
        if self.max_chars is not None and self.max_chars < 1:
            raise ConfigError(f"data.tokenizer.max_chars must be positive or null, got {self.max_chars}")

    @property
    def bpe_vocab_size(self) -> int:
        return BPE_VOCAB_SIZE if self.vocab_size is None else self.vocab_size

    @property
    def bpe_pattern(self) -> str:
        return BPE_PATTERN if self.pattern is None else self.pattern

    def identity(self) -> dict[str, Any]:
        """The settings that decide the tokenizer this recipe makes (defaults resolved)."""
        if self.kind == "gpt2":
            return {"kind": "gpt2"}
        if self.kind == "char":
            return {"kind": "char", "max_chars": self.max_chars}
        return {"kind": "bpe", "vocab_size": self.bpe_vocab_size, "pattern": self.bpe_pattern, "max_chars": self.max_chars}

    def build(self, documents: Iterable[str], num_proc: int = 1, progress: bool = True) -> Tokenizer:
        """Make the tokenizer from a stream of documents (read once, never held whole)."""
        if self.kind == "gpt2":
            return GPT2Tokenizer()
        if self.kind == "char":
            alphabet: set[str] = set()
            for text in first_chars(documents, self.max_chars):
                alphabet.update(text)
            if not alphabet:
                raise DataError("the text is empty: there is no character to make a tokenizer of")
            return CharTokenizer(sorted(alphabet))
        return train_bpe(documents, self.bpe_vocab_size, self.bpe_pattern, num_proc=num_proc, progress=progress,
                         max_chars=self.max_chars)


def load_tokenizer_file(path: Path) -> tuple[Tokenizer, dict[str, Any]]:
    """The tokenizer saved by :func:`load_or_build`, and its record (recipe, corpus); a damaged or foreign
    file is one :class:`DataError` naming it."""
    path = Path(path)
    fix = "delete it and run the preparation again (main.py prepare, or fit)"
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DataError(f"tokenizer file {path} does not exist: run the preparation first (main.py prepare)") from None
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise DataError(f"tokenizer file {path} is unreadable ({type(e).__name__}: {e}); {fix}") from None
    if not isinstance(record, dict) or record.get("format") != FORMAT:
        raise DataError(f"{path} is not a {FORMAT} file; {fix}")
    if record.get("version") != VERSION:
        raise DataError(f"{path} has tokenizer file version {record.get('version')!r}, this code reads {VERSION}; {fix}")
    try:
        tokenizer = tokenizer_from_dict(record["tokenizer"])
    except DataError:
        raise
    except Exception as e:  # missing or mistyped fields, merges that do not make a vocabulary
        raise DataError(f"tokenizer file {path} is corrupt ({type(e).__name__}: {e}); {fix}") from None
    return tokenizer, record


def load_or_build(
    path: Path,
    recipe: TokenizerRecipe,
    corpus: dict[str, Any],
    documents: Callable[[], Iterable[str]],
    num_proc: int = 1,
    on_build: Callable[[str], None] = lambda message: None,
) -> tuple[Tokenizer, bool]:
    """The tokenizer of ``recipe`` for the corpus that ``corpus`` identifies (a JSON-able dict of the
    source's settings or a hash of its text): read from ``path`` when that file was made from both, otherwise
    built from ``documents()`` (called only then) and saved atomically. Returns it and whether it was built."""
    path = Path(path)
    wanted = {"recipe": recipe.identity(), "corpus": corpus}
    if path.is_file():
        tokenizer, record = load_tokenizer_file(path)
        if {"recipe": record.get("recipe"), "corpus": record.get("corpus")} == json.loads(json.dumps(wanted)):
            return tokenizer, False
        on_build(f"{path} was made from another recipe or corpus: building the tokenizer again")
    else:
        on_build(f"building the {recipe.kind} tokenizer into {path}")
    check_writable(path.parent)  # before the work (a BPE may train for minutes), not when saving it
    tokenizer = recipe.build(documents(), num_proc=num_proc)
    with atomic_write(path, "w", encoding="utf-8") as f:
        json.dump({"format": FORMAT, "version": VERSION, **wanted, "tokenizer": tokenizer.to_dict()}, f)
        f.write("\n")
    return tokenizer, True
