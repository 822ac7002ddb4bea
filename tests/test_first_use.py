"""What a new user meets on the command line: re-runs of a recipe, flags Lightning adds, errors that say what to do
next, quiet offline failures; each through the real ``python main.py`` in a fresh process."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from .conftest import CONFIGS, ROOT

DEBUG = str(CONFIGS / "debug_char.yaml")


def run_main(*args: str, cwd: Path, timeout: float = 600, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / "main.py"), *args], capture_output=True, text=True, cwd=cwd,
                          timeout=timeout, env={**os.environ, **(env or {})})


def one_error_line(result: subprocess.CompletedProcess) -> str:
    """The single ``error:`` line of a failed command (no traceback), or a failed assertion showing stderr."""
    assert result.returncode != 0, result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, result.stderr
    return errors[0]


def fit_debug(tmp_path: Path, shakespeare_path: Path, steps: int, *extra: str) -> subprocess.CompletedProcess:
    result = run_main("fit", "--config", DEBUG, "--data.path", str(shakespeare_path), "--trainer.max_steps",
                      str(steps), "--trainer.val_check_interval", "2", "--trainer.limit_val_batches", "1", *extra,
                      cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    return result


# --- a recipe run twice --------------------------------------------------------------------------------------------


def test_a_second_run_of_a_recipe_is_what_last_ckpt_holds(tmp_path, shakespeare_path):
    checkpoints = tmp_path / "out/debug_char/checkpoints"
    first = fit_debug(tmp_path, shakespeare_path, 2)
    assert sorted(p.name for p in checkpoints.iterdir()) == ["best-step-2.ckpt", "last.ckpt"]
    second = fit_debug(tmp_path, shakespeare_path, 4)
    # the documented path holds the second run's model; the first run's files are kept, apart
    assert torch.load(checkpoints / "last.ckpt", weights_only=True)["global_step"] == 4
    assert sorted(p.name for p in checkpoints.glob("*.ckpt")) == ["best-step-4.ckpt", "last.ckpt"]
    previous = checkpoints / "previous-1"
    assert sorted(p.name for p in previous.iterdir()) == ["best-step-2.ckpt", "last.ckpt"]
    assert torch.load(previous / "last.ckpt", weights_only=True)["global_step"] == 2
    assert "moved to" in second.stderr and str(Path("out/debug_char/checkpoints/previous-1")) in second.stderr
    # Lightning's notices that every run printed are gone
    for output in (first.stderr + first.stdout, second.stderr + second.stdout):
        assert "exists and is not empty" not in output and "litlogger" not in output
    # a third run numbers on; a resumed run keeps its own files where they are
    fit_debug(tmp_path, shakespeare_path, 2)
    assert (checkpoints / "previous-2/last.ckpt").is_file()
    fit_debug(tmp_path, shakespeare_path, 4, "--ckpt_path", str(checkpoints / "last.ckpt"))
    assert not (checkpoints / "previous-3").exists()
    assert torch.load(checkpoints / "last.ckpt", weights_only=True)["global_step"] == 4
    assert (checkpoints / "best-step-2.ckpt").is_file() or (checkpoints / "best-step-4.ckpt").is_file()


# --- flags and errors ------------------------------------------------------------------------------------------------


def test_optimizer_flag_is_not_offered_and_is_refused_in_one_line(tmp_path):
    help_text = run_main("fit", "--help", cwd=tmp_path).stdout
    assert "--optimizer" not in help_text and "--lr_scheduler" not in help_text
    line = one_error_line(run_main("fit", "--config", DEBUG, "--optimizer", "Adam", cwd=tmp_path))
    assert "--optimizer" in line
