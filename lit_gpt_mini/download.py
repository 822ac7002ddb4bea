"""Downloading a file over HTTP(S): the network boundary of the sources that fetch whole files."""

from __future__ import annotations

import sys
import urllib.request
from pathlib import Path

from tqdm import tqdm

from lit_gpt_mini.files import atomic_write


def download(url: str, dest: Path) -> None:
    """Fetch ``url`` into ``dest`` atomically (a temporary file renamed into place), with a progress bar.

    The network boundary of the sources that download files.
    """
    with atomic_write(dest, "wb") as out, urllib.request.urlopen(url, timeout=60) as response:
        total = int(response.headers.get("Content-Length") or 0) or None
        with tqdm(total=total, unit="B", unit_scale=True, desc=f"Downloading {dest.name}", file=sys.stderr) as bar:
            while chunk := response.read(1 << 16):
                out.write(chunk)
                bar.update(len(chunk))
