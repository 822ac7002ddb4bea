"""Tiny Shakespeare (Karpathy's char-rnn corpus, 1.1 MB): the character-level default."""

from __future__ import annotations

from pathlib import Path
from typing import Literal, Optional

from data_modules.base import TokenDataModule
from data_modules.download import download
from lit_gpt_mini.files import sha256_of
from lit_gpt_mini.errors import DataError
from lit_gpt_mini.tokenizers import CharTokenizer, Tokenizer
from lit_gpt_mini.tokenizers.bpe import load_or_train

URL = "https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/input.txt"
SHA256 = "86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed"
FILENAME = "tinyshakespeare.txt"


class ShakespeareDataModule(TokenDataModule):
    """Tiny Shakespeare (or any text file) as characters or as our own BPE tokens: the last ``val_fraction`` of
    the text is validation, the rest training.

    Args:
        path: A local copy of the text to use instead of downloading; it is used as is (no checksum).
        url: Where to download the text from when ``path`` is not given and ``data_dir`` has no copy yet.
        sha256: Expected checksum of the download; ``None`` skips the check (for a ``url`` of your own).
        val_fraction: The tail fraction of the text held out for validation and test.
        tokenizer_type: ``"char"`` (one token per distinct character) or ``"bpe"`` (a byte-level BPE trained on
            the text, cached in ``data_dir/tokenizers``).
        bpe_vocab_size: Vocabulary size of the BPE tokenizer (256 bytes + merges + the end-of-text token).
        bpe_pattern: The BPE's pre-split regex: ``"gpt2"`` or ``"gpt4"``.

    The other arguments are :class:`~data_modules.base.TokenDataModule`'s.
    """

    def __init__(
        self,
        data_dir: str = "data/shakespeare",
        path: Optional[str] = None,
        url: str = URL,
        sha256: Optional[str] = SHA256,
        val_fraction: float = 0.1,
        tokenizer_type: Literal["char", "bpe"] = "char",
        bpe_vocab_size: int = 4096,
        bpe_pattern: Literal["gpt2", "gpt4"] = "gpt4",
        block_size: int = 256,
        batch_size: int = 64,
        seed: int = 1337,
        num_workers: int = 0,
    ) -> None:
        super().__init__(
            data_dir=data_dir,
            block_size=block_size,
            batch_size=batch_size,
            seed=seed,
            num_workers=num_workers,
        )
        if not 0.0 < val_fraction < 1.0:
            raise DataError(f"val_fraction must be between 0 and 1, got {val_fraction}")
        self.path = Path(path) if path is not None else None
        self.url = url
        self.sha256 = sha256
        self.val_fraction = val_fraction
        self.tokenizer_type = tokenizer_type
        self.bpe_vocab_size = bpe_vocab_size
        self.bpe_pattern = bpe_pattern

    @property
    def text_path(self) -> Path:
        return self.path if self.path is not None else self.data_dir / FILENAME

    def fetch(self) -> None:
        """Make sure the text is on disk: download it (once) unless ``path`` names a local copy."""
        if self.path is not None:
            if self.path.is_dir():
                raise DataError(f"data.path {self.path} is a directory: set it to the text file itself")
            if not self.path.is_file():
                raise DataError(f"data.path {self.path} does not exist; fix the path, or remove it to download")
            return
        dest = self.text_path
        if dest.is_file():
            self._verify(dest, "is corrupt or a different file; delete it to download it again")
            return
        try:
            download(self.url, dest)
        except (OSError, ValueError) as e:  # ValueError: a data.url that is not a URL
            raise DataError(
                f"could not download Tiny Shakespeare from {self.url}: {e}. Without internet, put the text at "
                f"{dest} or set data.path to a local copy"
            ) from None
        self._verify(dest, "was downloaded but does not match; it was removed", remove=True)

    def _verify(self, path: Path, problem: str, remove: bool = False) -> None:
        if self.sha256 is None:
            return
        actual = sha256_of(path)
        if actual != self.sha256:
            if remove:
                path.unlink()
            raise DataError(f"{path}: sha256 {actual} != expected {self.sha256}: the file {problem}")

    def read_text(self) -> str:
        self.fetch()
        path = self.text_path
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError as e:
            raise DataError(f"{path} is not UTF-8 text (byte {e.start}): is it the right file?") from None
        except OSError as e:  # e.g. no permission to read it
            raise DataError(f"cannot read {path}: {e.strerror or e}") from None
        if not text:
            raise DataError(f"{path} is empty")
        return text

    def load_tokenizer(self) -> Tokenizer:
        # The vocabulary is learned from the text, so it needs the text (downloaded at most once).
        text = self.read_text()
        if self.tokenizer_type == "char":
            return CharTokenizer.from_text(text)
        return load_or_train(
            self.data_dir / "tokenizers", [text], sha256_of(self.text_path), self.bpe_vocab_size, self.bpe_pattern
        )

    def prepare_data(self) -> None:
        text = self.read_text()
        n_val = int(len(text) * self.val_fraction)
        if n_val == 0 or n_val == len(text):
            raise DataError(
                f"{self.text_path}: {len(text)} characters are too few to hold out val_fraction={self.val_fraction}"
            )
        tokenizer = self.tokenizer
        self.write_splits(
            val=tokenizer.encode_to_array(text[len(text) - n_val :]),
            train=tokenizer.encode_to_array(text[: len(text) - n_val]),
            settings={"text_sha256": sha256_of(self.text_path), "val_fraction": self.val_fraction},
            extra={"documents": 1},
        )
