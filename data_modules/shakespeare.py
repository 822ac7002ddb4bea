"""Tiny Shakespeare (Karpathy's char-rnn corpus, 1.1 MB): the character-level default."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterator, Optional

from data_modules.base import InMemoryTokenDataModule
from lit_gpt_mini.download import download
from lit_gpt_mini.files import missing_path, sha256_of
from lit_gpt_mini.errors import DataError, StorageError
from lit_gpt_mini.tokenizers import TokenizerRecipe

URL = "https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/input.txt"
SHA256 = "86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed"
FILENAME = "tinyshakespeare.txt"


class ShakespeareDataModule(InMemoryTokenDataModule):
    """Tiny Shakespeare (or any text file) as one document, by default as characters: the last ``val_fraction``
    of the text is validation, the rest training.

    Args:
        path: A local copy of the text to use instead of downloading; it is used as is (no checksum).
        url: Where to download the text from when ``path`` is not given and ``data_dir`` has no copy yet.
        sha256: Expected checksum of the download; ``None`` skips the check (for a ``url`` of your own).

    The other arguments are :class:`~data_modules.base.InMemoryTokenDataModule`'s; the tokenizer's default kind
    here is ``char`` (one character a token: the split falls on the same character as a split of the text).
    """

    def __init__(
        self,
        data_dir: str = "data/shakespeare",
        path: Optional[str] = None,
        url: str = URL,
        sha256: Optional[str] = SHA256,
        tokenizer: TokenizerRecipe = TokenizerRecipe("char"),
        batch_size: int = 64,
        **kwargs: Any,
    ) -> None:
        super().__init__(data_dir=data_dir, tokenizer=tokenizer, batch_size=batch_size, **kwargs)
        self.path = Path(path) if path is not None else None
        self.url = url
        self.sha256 = sha256

    @property
    def text_path(self) -> Path:
        return self.path if self.path is not None else self.data_dir / FILENAME

    def fetch(self) -> None:
        """Make sure the text is on disk: download it (once) unless ``path`` names a local copy."""
        if self.path is not None:
            if self.path.is_dir():
                raise DataError(f"data.path {self.path} is a directory: set it to the text file itself")
            if not self.path.is_file():
                raise missing_path(self.path, fix="fix the path, or remove it to download")
            return
        dest = self.text_path
        if dest.is_file():
            self._verify(dest, "is corrupt or a different file; delete it to download it again")
            return
        try:
            download(self.url, dest)
        except StorageError:  # the download was fine, the data directory could not take it: said as it is
            raise
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

    def documents(self) -> Iterator[str]:
        yield self.read_text()

    def corpus(self) -> dict[str, Any]:
        return {"text_sha256": sha256_of(self.text_path)}

    @property
    def source(self) -> str:
        return str(self.text_path)

    def summary(self) -> dict[str, Any]:
        return {"documents": 1}
