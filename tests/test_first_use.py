"""What a new user meets on the command line: re-runs of a recipe, flags Lightning adds, errors that say what to do
next, quiet offline failures; each through the real ``python main.py`` in a fresh process."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from .conftest import CONFIGS, ROOT, sigint_as_in_a_terminal

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
    assert "--optimizer" in line and "model.optimizer" in line


def test_default_root_dir_is_where_the_run_goes(tmp_path, shakespeare_path):
    fit_debug(tmp_path, shakespeare_path, 2, "--trainer.default_root_dir", "elsewhere")
    assert (tmp_path / "elsewhere/debug_char/checkpoints/last.ckpt").is_file()
    assert list((tmp_path / "elsewhere/debug_char").glob("version_0/config.yaml"))
    assert not (tmp_path / "out").exists()
    # and a logger told to write elsewhere too is a contradiction, said before anything runs
    line = one_error_line(run_main("fit", "--config", DEBUG, "--trainer.default_root_dir", "a",
                                   "--trainer.logger.init_args.save_dir", "b", cwd=tmp_path))
    assert "trainer.default_root_dir (a)" in line and "save_dir (b)" in line


def test_a_run_without_a_logger_writes_where_the_logger_would_have(tmp_path, shakespeare_path):
    # Lightning's own default root is the current directory: config.yaml and checkpoints/ would land there
    fit_debug(tmp_path, shakespeare_path, 2, "--trainer.logger", "false")
    assert (tmp_path / "out/debug_char/checkpoints/last.ckpt").is_file()
    assert (tmp_path / "out/debug_char/config.yaml").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data", "out"]


def test_progress_into_a_pipe_is_a_line_per_logged_step(tmp_path, shakespeare_path):
    result = fit_debug(tmp_path, shakespeare_path, 4, "--trainer.enable_progress_bar", "true",
                       "--trainer.log_every_n_steps", "2")
    output = result.stdout + result.stderr
    assert "\r" not in output  # no bar redrawn in place
    lines = [line for line in result.stderr.splitlines() if line.startswith("step ")]
    assert [line.split("  ")[0] for line in lines] == ["step 2/4", "step 2", "step 4/4", "step 4"]
    assert "train/loss" in lines[0] and "val/loss" in lines[1]


def test_recipe_help_lists_its_model_and_data_arguments(tmp_path):
    result = run_main("fit", "--config", DEBUG, "--help", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "--data.path" in result.stdout and "--data.batch_size" in result.stdout
    assert "--model.n_layer" in result.stdout
    assert "data_modules.shakespeare.ShakespeareDataModule" in result.stdout


@pytest.mark.skipif(torch.cuda.is_available(), reason="a machine without a GPU")
def test_a_gpu_recipe_without_a_gpu_names_the_cpu_recipe(tmp_path):
    line = one_error_line(run_main("fit", "--config", str(CONFIGS / "shakespeare_char.yaml"), cwd=tmp_path))
    assert "shakespeare_char_cpu.yaml" in line and "--trainer.accelerator cpu" in line


# --- offline: one line, at once ------------------------------------------------------------------------------------


def closed_port() -> int:
    """A port of 127.0.0.1 nothing listens on: connections to it are refused."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_wikipedia_unreachable_ends_the_run_at_the_first_article(tmp_path):
    api = f"http://127.0.0.1:{closed_port()}/w/api.php"
    start = time.monotonic()
    result = run_main("fit", "--config", str(CONFIGS / "bpe_wikipedia.yaml"), "--data.api_url", api, cwd=tmp_path,
                      timeout=300)
    elapsed = time.monotonic() - start
    line = one_error_line(result)
    assert "cannot connect to 127.0.0.1" in line and "data.api_url" in line
    assert "could not fetch" not in result.stderr  # not one warning per article with retries in between
    assert elapsed < 120  # 20 articles, each retried with backoff, took minutes


def test_fineweb_without_the_hub_fails_at_once(tmp_path):
    env = {"HF_ENDPOINT": f"http://127.0.0.1:{closed_port()}", "HF_HUB_OFFLINE": "0", "HF_DATASETS_OFFLINE": "0"}
    result = run_main("fit", "--config", str(CONFIGS / "gpt2_fineweb.yaml"), "--trainer.accelerator", "cpu",
                      cwd=tmp_path, env=env, timeout=300)
    line = one_error_line(result)
    assert "cannot be reached" in line and "data.path" in line
    assert "thrown while requesting" not in result.stderr  # no retry lines from huggingface_hub


def test_debug_gpt2_without_a_local_path_is_refused(tmp_path):
    env = {"HF_HUB_OFFLINE": "0", "HF_DATASETS_OFFLINE": "0", "HF_ENDPOINT": f"http://127.0.0.1:{closed_port()}"}
    line = one_error_line(run_main("fit", "--config", str(CONFIGS / "debug_gpt2.yaml"), cwd=tmp_path, env=env))
    assert "data.path is not set" in line and "streams no dataset" in line


def test_ctrl_c_while_starting_is_one_line(tmp_path):
    # -X importtime reports each import as it finishes: once torch's is reported, Lightning's is still running
    process = subprocess.Popen([sys.executable, "-X", "importtime", str(ROOT / "main.py"), "fit", "--help"],
                               cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               preexec_fn=sigint_as_in_a_terminal)
    lines = []
    deadline = time.monotonic() + 300
    for line in process.stderr:
        lines.append(line)
        if line.split("|")[-1].strip() == "torch" or time.monotonic() > deadline:
            break
    process.send_signal(signal.SIGINT)
    _, rest = process.communicate(timeout=120)
    err = "".join(line for line in lines + rest.splitlines(keepends=True) if not line.startswith("import time:"))
    assert process.returncode == 130, err
    assert err.strip() == "error: interrupted (Ctrl-C) while starting: nothing was done"


def test_a_file_of_random_bytes_is_not_called_a_pickle_of_objects(tmp_path):
    import fractions
    import random

    (tmp_path / "noise.ckpt").write_bytes(b"\x80\x02" + random.Random(0).randbytes(4096))
    line = one_error_line(run_main("generate", "--ckpt_path", "noise.ckpt", cwd=tmp_path))
    assert "damaged or is not a PyTorch checkpoint" in line and "Python objects" not in line
    torch.save({"state_dict": {}, "x": fractions.Fraction(1, 3)}, tmp_path / "objects.ckpt")
    line = one_error_line(run_main("generate", "--ckpt_path", "objects.ckpt", cwd=tmp_path))
    assert "Python objects" in line


def test_discord_recipe_without_its_export_names_the_command_that_makes_it(tmp_path):
    line = one_error_line(run_main("fit", "--config", str(CONFIGS / "discord_cpu.yaml"), cwd=tmp_path))
    assert "does not exist" in line and "python -m data_modules.shakespeare_discord --out" in line
    assert "README.md" in line


def run_module(module: str, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", module, *args], capture_output=True, text=True, cwd=cwd, timeout=300,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})


def test_shakespeare_discord_speaks_of_its_own_options(tmp_path, shakespeare_path):
    line = one_error_line(run_module("data_modules.shakespeare_discord", "--path", "nope", cwd=tmp_path))
    assert line.startswith("error: --path nope does not exist") and "data.path" not in line
    (tmp_path / "file").write_text("x")
    line = one_error_line(run_module("data_modules.shakespeare_discord", "--path", str(shakespeare_path), "--out",
                                     "file/sub/export.json", cwd=tmp_path))
    assert "--out file/sub/export.json: file is a file, not a directory" in line and "File exists" not in line
