"""Shared fixtures: the real Tiny Shakespeare from ../shared/data, small texts written by the tests."""

from __future__ import annotations

import functools
import http.server
import os
import signal
import threading
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "configs"
SHARED_DATA = Path(os.environ.get("LIT_GPT_MINI_SHARED_DATA", ROOT.parent / "shared" / "data"))
# GPT-2's vocabulary (tiktoken's r50k_base) comes from the shared cache; the hub is never contacted.
os.environ.setdefault("TIKTOKEN_CACHE_DIR", str(SHARED_DATA / "tiktoken_cache"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")


@pytest.fixture(autouse=True)
def _float32_matmul_precision():
    """Each test leaves torch's fp32 matmul precision as it found it: the CLI sets it (CUDA), and a TF32 setting
    left behind would loosen a later test's fp32 comparison. Only ``torch.set_float32_matmul_precision`` is used:
    the legacy ``torch.backends.cuda.matmul.allow_tf32`` flag mixed with it makes the getter raise."""
    import torch

    before = torch.get_float32_matmul_precision()
    yield
    torch.set_float32_matmul_precision(before)


@pytest.fixture(autouse=True)
def _denormals():
    """Each test starts with denormal floats as the CPU computes them by default: building a GPT flushes them for
    the whole process (lit_gpt_mini.model.flush_denormals), and hypothesis refuses to draw floats where subnormals
    read as zero."""
    import torch

    torch.set_flush_denormal(False)
    yield
    torch.set_flush_denormal(False)


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


@pytest.fixture(scope="session")
def gpt2_tokenizer():
    """GPT-2's tokenizer, from ../shared/data/tiktoken_cache (tests fail clearly when it is missing)."""
    from lit_gpt_mini.tokenizers import GPT2Tokenizer

    return GPT2Tokenizer()


def write_jsonl(path: Path, texts: list[str]) -> Path:
    """Documents as FineWeb-style jsonl rows (``{"text": ..., "id": ...}``)."""
    import json

    with open(path, "w", encoding="utf-8") as f:
        for i, text in enumerate(texts):
            f.write(json.dumps({"text": text, "id": f"doc-{i}"}) + "\n")
    return path


@pytest.fixture(scope="session")
def shakespeare_docs(shakespeare_path) -> list[str]:
    """Tiny Shakespeare cut into its ~7,200 speeches: a real corpus of many documents."""
    return [p for p in shakespeare_path.read_text(encoding="utf-8").split("\n\n") if p.strip()]


@pytest.fixture
def http_server(tmp_path):
    """Serves tmp_path/www on 127.0.0.1; yields the base URL."""
    root = tmp_path / "www"
    root.mkdir()
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(root))
    handler.log_message = lambda *a, **k: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield root, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


class HttpxServer:
    """A real HTTP server on 127.0.0.1 (a free port) answering each request with an httpx handler's response
    (``request -> httpx.Response``, as ``httpx.MockTransport`` takes), for clients that must go over a socket."""

    def __init__(self, handler) -> None:
        import httpx

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                request = httpx.Request("GET", f"http://{self.headers['Host']}{self.path}", headers=dict(self.headers))
                response = handler(request)
                body = response.read()
                self.send_response(response.status_code)
                for key, value in response.headers.items():
                    if key.lower() not in ("content-length", "transfer-encoding", "connection"):
                        self.send_header(key, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def serve_httpx(handler) -> HttpxServer:
    """Start an :class:`HttpxServer`; the caller closes it."""
    return HttpxServer(handler)


def pytest_collection_modifyitems(config, items):
    """Tests marked ``gpu`` need CUDA: skipped (with the reason shown) on machines without it, like CI's. With
    ``LIT_GPT_MINI_REQUIRE_GPU=1`` (bench/gpu_check.sh) a machine without CUDA is an error instead: a GPU check
    whose every test was skipped must not pass."""
    import torch

    if torch.cuda.is_available():
        return
    if os.environ.get("LIT_GPT_MINI_REQUIRE_GPU") == "1" and any("gpu" in item.keywords for item in items):
        raise pytest.UsageError("LIT_GPT_MINI_REQUIRE_GPU=1 but torch sees no CUDA device: the gpu tests cannot run")
    skip = pytest.mark.skip(reason="needs a CUDA device (run by bench/gpu_check.sh)")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture
def single_thread():
    """torch on one thread for the test (then as before): the tiny models of the chat and serve tests gain
    nothing from two, and lose several times over when another job holds a core."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def chat_checkpoint(tmp_path_factory, shakespeare_path) -> Path:
    """A tiny conversation model, trained once per session: configs/discord_cpu.yaml as shipped with its shapes
    and steps shrunk, on the Discord export of Tiny Shakespeare's first 2,000 speeches (its own BPE)."""
    import torch

    from data_modules.shakespeare_discord import convert
    from lit_gpt_mini.cli.main import main

    root = tmp_path_factory.mktemp("chat_model")
    speeches = shakespeare_path.read_text(encoding="utf-8").split("\n\n")[:2000]
    (root / "plays.txt").write_text("\n\n".join(speeches) + "\n", encoding="utf-8")
    convert(str(root / "export.json"), path=str(root / "plays.txt"))
    cwd, threads = os.getcwd(), torch.get_num_threads()
    os.chdir(root)
    torch.set_num_threads(1)  # (see single_thread)
    try:
        main(["fit", "--config", str(CONFIGS / "discord_cpu.yaml"), "--data.path", "export.json",
              "--data.tokenizer.vocab_size", "512", "--data.batch_size", "8", "--model.block_size", "64",
              "--model.n_layer", "2", "--model.n_head", "2", "--model.n_embd", "64", "--trainer.max_steps", "200",
              "--trainer.val_check_interval", "200", "--trainer.limit_val_batches", "2"])
    finally:
        os.chdir(cwd)
        torch.set_num_threads(threads)
    return root / "out/discord_cpu/checkpoints/last.ckpt"


def sigint_as_in_a_terminal() -> None:
    """A child process's ``preexec_fn`` for tests that press Ctrl-C: SIGINT back to its default action. A suite run
    as a background job (``cmd &`` in a script) passes SIGINT ignored to its children, and Python then installs no
    KeyboardInterrupt handler, so the interrupt would do nothing; in a terminal it is never ignored."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)
