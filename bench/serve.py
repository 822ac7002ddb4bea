"""Serving speed: time to first token and tokens/s through ``main.py serve`` with 1 and 8 concurrent streaming
clients, against sampling in this process (the same model, code path and settings), in the same run.

Shapes: the char CPU shape (4 layers x 128, context 64, Tiny Shakespeare's 65 characters) and GPT-2 124M over
GPT-2's vocabulary, both with random weights (speed does not depend on them), fp32 on the CPU. Every request
samples ``--new`` tokens (temperature 0.8, top_k 200, the end-of-text token ignored so that every run has the
same length) after the same prompt. In-process: ``stream_text`` (what the server's worker runs) timed from the
call to the last token. Served: a real ``main.py serve`` process on 127.0.0.1; each client keeps one HTTP
connection (as a real client does), and its time runs from sending the request to the last byte of the stream,
its first token at the first text event. Two rates: tokens/s over the whole request (first token included),
and streaming tokens/s after the first token (what a reader sees the text grow at). Rounds alternate
in-process and served; each figure is the best round (the machine is shared: see the load average printed).

    python bench/serve.py                       # both shapes, ~3 minutes on 2 CPU cores
    python bench/serve.py --shapes char --rounds 5
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("TIKTOKEN_CACHE_DIR", str(ROOT.parent / "shared" / "data" / "tiktoken_cache"))

from bench.report import emit  # noqa: E402
from lit_gpt_mini.checkpoint import load_model, save_pth  # noqa: E402
from lit_gpt_mini.inference.generate import stream_text  # noqa: E402
from lit_gpt_mini.model import GPT, GPTConfig  # noqa: E402
from lit_gpt_mini.inference.textstream import TextStream  # noqa: E402

CHARS = "\n !$&',-.3:;?ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"  # Tiny Shakespeare's 65
VERSE = "ROMEO:\nBut soft, what light through yonder window breaks? It is the east, and Juliet is the sun. "
SHAPES = {  # name: (model, tokenizer, prompt, new tokens)
    "char_cpu": (GPTConfig(vocab_size=65, block_size=64, n_layer=4, n_head=4, n_embd=128, bias=False),
                 {"kind": "char", "chars": CHARS}, VERSE[:48], 1024),  # 48 of the 64 positions
    "gpt2_124m": (GPTConfig.from_name("gpt2"), {"kind": "gpt2"}, VERSE * 3, 48),  # 79 tokens
}
SETTINGS = {"temperature": 0.8, "top_k": 200}


def in_process(path: Path, prompt: str, new: int) -> tuple[float, float]:
    """(seconds to the first token, seconds to the last) sampling ``new`` tokens in this process."""
    loaded = load_model(path)
    ids = loaded.tokenizer.encode(prompt)
    generator = torch.Generator().manual_seed(0)
    text = TextStream(loaded.tokenizer, stop_at_eot=False)
    start, first = time.perf_counter(), None
    for _ in stream_text(loaded.model, ids, text, new, SETTINGS["temperature"], SETTINGS["top_k"], None, generator):
        first = first or time.perf_counter()
    return first - start, time.perf_counter() - start


def stream(client: httpx.Client, url: str, prompt: str, new: int, seed: int) -> tuple[float, float, int]:
    """(seconds to the first text, seconds to the end, tokens sampled) of one streamed completion."""
    body = {"prompt": prompt, "max_tokens": new, "seed": seed, "stream": True, "ignore_eos": True,
            "stream_options": {"include_usage": True}, **SETTINGS}
    start, first, tokens = time.perf_counter(), None, 0
    with client.stream("POST", f"{url}/v1/completions", json=body) as answer:
        answer.raise_for_status()
        for line in answer.iter_lines():
            if not line.startswith("data: {"):
                continue
            event = json.loads(line[6:])
            if event["choices"] and event["choices"][0]["text"] and first is None:
                first = time.perf_counter()
            if event.get("usage"):
                tokens = event["usage"]["completion_tokens"]
    return first - start, time.perf_counter() - start, tokens


class Server:
    """``main.py serve`` on a free 127.0.0.1 port, stopped (the whole process group) on exit."""

    def __init__(self, path: Path, log: Path) -> None:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        self.url = f"http://127.0.0.1:{port}"
        self.log = open(log, "w")
        self.process = subprocess.Popen(
            [sys.executable, str(ROOT / "main.py"), "serve", "--ckpt_path", str(path), "--port", str(port),
             "--max_tokens", "4096", "--log_level", "warning"],
            stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline and self.process.poll() is None:
            try:
                if httpx.get(f"{self.url}/health", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.25)
        self.stop()
        raise RuntimeError(f"the server did not start: see {log}")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                pass
        try:
            os.killpg(self.process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.process.wait(timeout=10)
        self.log.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shapes", default="char_cpu,gpt2_124m")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--clients", type=int, default=8)
    args = parser.parse_args()
    load = os.getloadavg()[0]
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, load average {load:.2f} at the start")
    figures = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.shapes.split(","):
            config, tokenizer, prompt, new = SHAPES[name]
            torch.manual_seed(0)
            path = Path(tmp) / f"{name}.pth"
            save_pth(GPT(config).eval(), tokenizer, path)
            server = Server(path, Path(tmp) / f"{name}.log")
            clients = [httpx.Client(timeout=600) for _ in range(args.clients)]
            try:
                for client in clients:  # warm up: connections, the HTTP process's tokenizer, the worker's buffers
                    stream(client, server.url, prompt, 4, 0)
                in_process(path, prompt, 4)
                local, one, many = [], [], []
                for _ in range(args.rounds):
                    local.append(in_process(path, prompt, new))
                    one.append(stream(clients[0], server.url, prompt, new, 1))
                    with ThreadPoolExecutor(args.clients) as pool:
                        start = time.perf_counter()
                        runs = list(pool.map(lambda i: stream(clients[i], server.url, prompt, new, i),
                                             range(args.clients)))
                        many.append((runs, time.perf_counter() - start))
            finally:
                for client in clients:
                    client.close()
                server.stop()
            assert all(tokens == new for _, _, tokens in one) and all(t == new for r, _ in many for *_, t in r)
            local_first, local_total = min(local, key=lambda r: r[1])
            one_first, one_total, _ = min(one, key=lambda r: r[1])
            runs, wall = min(many, key=lambda r: r[1])
            rates = {"in_process": new / local_total, "served_1": new / one_total, "served_8": len(runs) * new / wall,
                     "in_process_streaming": (new - 1) / (local_total - local_first),
                     "served_1_streaming": (new - 1) / (one_total - one_first)}
            firsts = [first for first, _, _ in runs]
            print(f"\n{name}: {new} new tokens, best of {args.rounds} rounds")
            print(f"  in-process        first token {local_first * 1000:8.1f} ms  {rates['in_process']:8.1f} tokens/s, "
                  f"{rates['in_process_streaming']:8.1f} after the first")
            print(f"  served, 1 client  first token {one_first * 1000:8.1f} ms  {rates['served_1']:8.1f} tokens/s, "
                  f"{rates['served_1_streaming']:8.1f} after the first "
                  f"({rates['served_1'] / rates['in_process']:.3f}x / "
                  f"{rates['served_1_streaming'] / rates['in_process_streaming']:.3f}x in-process)")
            print(f"  served, {len(runs)} clients first token {statistics.mean(firsts) * 1000:8.1f} ms mean, "
                  f"{max(firsts) * 1000:.1f} max  {rates['served_8']:8.1f} tokens/s in all "
                  f"({rates['served_8'] / len(runs):.1f} per client)")
            figures.append((name, local_first, one_first, firsts, rates))
    load_end = os.getloadavg()[0]
    print(f"\nload average {load_end:.2f} at the end")
    print()
    for name, local_first, one_first, firsts, rates in figures:
        context = {"load_start": round(load, 2), "load_end": round(load_end, 2)}
        emit("serve", f"{name}/in_process", "tokens_per_s", round(rates["in_process"], 2), **context)
        emit("serve", f"{name}/in_process", "first_token_ms", round(local_first * 1000, 1), **context)
        emit("serve", f"{name}/served_1", "tokens_per_s", round(rates["served_1"], 2), **context)
        emit("serve", f"{name}/served_1", "first_token_ms", round(one_first * 1000, 1), **context)
        emit("serve", f"{name}/served_8", "tokens_per_s_all_clients", round(rates["served_8"], 2), **context)
        emit("serve", f"{name}/served_8", "first_token_ms_mean", round(statistics.mean(firsts) * 1000, 1), **context)
        emit("serve", f"{name}/served_8", "first_token_ms_max", round(max(firsts) * 1000, 1), **context)
        emit("serve", f"{name}/in_process", "streaming_tokens_per_s", round(rates["in_process_streaming"], 2),
             **context)
        emit("serve", f"{name}/served_1", "streaming_tokens_per_s", round(rates["served_1_streaming"], 2), **context)
        emit("serve", name, "ratio_served_1_over_in_process", round(rates["served_1"] / rates["in_process"], 3),
             **context)
        emit("serve", name, "ratio_streaming_served_1_over_in_process",
             round(rates["served_1_streaming"] / rates["in_process_streaming"], 3), **context)


if __name__ == "__main__":
    main()
