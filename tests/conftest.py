"""Shared fixtures: the real Tiny Shakespeare from ../shared/data, small texts written by the tests."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "configs"
SHARED_DATA = Path(os.environ.get("LIT_GPT_MINI_SHARED_DATA", ROOT.parent / "shared" / "data"))


@pytest.fixture(scope="session")
def shakespeare_path() -> Path:
    """The real Tiny Shakespeare (1,115,394 bytes); never committed, read from ../shared/data."""
    path = SHARED_DATA / "tinyshakespeare.txt"
    if not path.is_file():
        pytest.fail(f"{path} is missing: the tests need ../shared/data (set LIT_GPT_MINI_SHARED_DATA to move it)")
    return path


@pytest.fixture
def small_text(tmp_path: Path) -> Path:
    """A 20 kB text with a 30-character alphabet, written fresh for each test."""
    lines = [f"Line {i}: the quick brown fox jumps over the lazy dog." for i in range(400)]
    path = tmp_path / "small.txt"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path
