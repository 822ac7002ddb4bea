"""``main.py serve`` as a real process on 127.0.0.1 with real clients: the official ``openai`` client, 8 concurrent
streams that must give in-process ``generate``'s text, bad requests, clients that go away, and the playground
page in a real headless Chromium (Debian's ``chromium``; the test fails when it cannot run)."""

from __future__ import annotations

import base64
import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import httpx
import pytest
from openai import OpenAI
from websockets.sync.client import connect

from lit_gpt_mini.checkpoint import load_model
from lit_gpt_mini.inference.generate import generate

from .conftest import ROOT
from .test_chat import free_run


pytestmark = pytest.mark.usefixtures("single_thread")

NAME = "tiny-chat"
LIMIT = 4000  # the server's --max_tokens


@dataclass
class Server:
    url: str
    log: Path

    def log_lines(self) -> list[str]:
        return self.log.read_text(encoding="utf-8", errors="replace").splitlines()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def stop(process: subprocess.Popen) -> bool:
    """SIGTERM (a clean shutdown), then SIGKILL to whatever of its process group is left after 30 s; whether
    the whole group had ended by itself."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            os.killpg(process.pid, 0)
        except ProcessLookupError:
            break
        process.poll()  # (reaps the leader once it exits)
        time.sleep(0.1)
    else:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=10)
        return False
    process.wait(timeout=10)
    return True


HEADER_TIMEOUT = 3  # the server's --header_timeout, seconds
MAX_CONNECTIONS = 24  # its --max_connections


@contextlib.contextmanager
def running_server(checkpoint: Path, tmp: Path, *options: str) -> Iterator[Server]:
    """``main.py serve`` on a free 127.0.0.1 port, healthy; stopped (and checked to stop cleanly) at the end."""
    port, log = free_port(), tmp / "serve.log"
    # one thread for the tiny model's worker (as for the session's training): two gain nothing at this size
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    with open(log, "w") as out:
        process = subprocess.Popen(
            [sys.executable, str(ROOT / "main.py"), "serve", "--ckpt_path", str(checkpoint), "--port", str(port),
             *options], cwd=tmp, stdout=out, stderr=subprocess.STDOUT, start_new_session=True, env=env)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            if process.poll() is not None:
                pytest.fail(f"the server exited with {process.returncode}:\n{log.read_text()[-3000:]}")
            try:
                if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"the server was not healthy within 120 s:\n{log.read_text()[-3000:]}")
            time.sleep(0.25)
        yield Server(url, log)
    finally:
        ended = stop(process)
    # SIGTERM is a clean shutdown: every process of the server (worker, HTTP server, helpers) ends
    assert ended and process.returncode == 0, log.read_text()[-3000:]


@pytest.fixture(scope="module")
def server(chat_checkpoint, tmp_path_factory):
    with running_server(chat_checkpoint, tmp_path_factory.mktemp("serve"), "--user", "ROMEO", "--bot", "JULIET",
                        "--max_tokens", str(LIMIT), "--model_name", NAME, "--header_timeout", str(HEADER_TIMEOUT),
                        "--max_connections", str(MAX_CONNECTIONS)) as running:
        yield running


def in_process(checkpoint: Path, prompt: str, seed: int, max_tokens: int, ignore_eos: bool = False) -> str:
    """What ``generate`` writes after ``prompt`` with the sampling settings the tests send."""
    (text,) = generate(str(checkpoint), prompt=prompt, max_new_tokens=max_tokens, temperature=0.8, top_k=200,
                       seed=seed, stop_at_eot=not ignore_eos, stream=False)
    return text[len(prompt):]


def test_models_health_and_the_loopback_address(server):
    assert httpx.get(f"{server.url}/health", timeout=10).text == "ok"
    models = httpx.get(f"{server.url}/v1/models", timeout=10).json()
    assert [m["id"] for m in models["data"]] == [NAME]
    assert {k: models["data"][0][k] for k in ("text_format", "context_length", "max_tokens", "user", "bot")} == {
        "text_format": "chat", "context_length": 64, "max_tokens": LIMIT, "user": "ROMEO", "bot": "JULIET"}
    assert any(f"Uvicorn running on {server.url}" in line for line in server.log_lines())


def test_the_openai_client_gets_a_completion_and_a_streamed_chat_completion(server, chat_checkpoint, capsys):
    client = OpenAI(base_url=f"{server.url}/v1", api_key="unused", timeout=60, max_retries=0)
    assert [m.id for m in client.models.list()] == [NAME]
    completion = client.completions.create(model=NAME, prompt="ROMEO:", max_tokens=25, temperature=0.8, seed=7,
                                           extra_body={"top_k": 200})
    expected = in_process(chat_checkpoint, "ROMEO:", seed=7, max_tokens=25)
    assert completion.choices[0].text == expected and expected
    prompt_tokens = len(load_model(chat_checkpoint).tokenizer.encode("ROMEO:"))
    assert completion.usage.prompt_tokens == prompt_tokens and completion.usage.completion_tokens == 25
    stream = client.chat.completions.create(
        model=NAME, messages=[{"role": "system", "content": "ignored"},
                              {"role": "user", "content": "Good morrow, sweet lady."}],
        max_tokens=60, temperature=0.8, seed=3, extra_body={"top_k": 200}, stream=True)
    deltas, finish = [], None
    for chunk in stream:
        deltas.append(chunk.choices[0].delta.content or "")
        finish = chunk.choices[0].finish_reason or finish
    # the user's turn is "ROMEO: ..." (the server's --user), the answer JULIET's, cut at the next speaker
    free = free_run(chat_checkpoint, "ROMEO: Good morrow, sweet lady.\nJULIET:", seed=3, max_new_tokens=60)
    cut = re.search(r"\n[^\n:]{1,40}: ", free)
    assert "".join(deltas) == (free[: cut.start()] if cut else free).lstrip()
    assert len([d for d in deltas if d]) > 1 and finish == ("stop" if cut else "length")
    capsys.readouterr()


def test_eight_concurrent_streams_each_give_generates_text(server, chat_checkpoint, capsys):
    clients = [httpx.Client(timeout=120) for _ in range(8)]
    for client in clients:
        client.get(f"{server.url}/health")  # connected before the clock starts
    ready = threading.Barrier(8, timeout=30)  # and sending at the same moment

    def stream(seed: int) -> tuple[str, float, float]:
        body = {"model": NAME, "prompt": "ROMEO:", "max_tokens": 200, "temperature": 0.8, "top_k": 200, "seed": seed,
                "stream": True, "ignore_eos": True}  # each stream is 200 tokens long
        ready.wait()
        text, first = "", None
        with clients[seed].stream("POST", f"{server.url}/v1/completions", json=body) as answer:
            assert answer.status_code == 200
            for line in answer.iter_lines():
                if line.startswith("data: {"):
                    piece = json.loads(line[6:])["choices"][0]["text"]
                    if piece and first is None:
                        first = time.monotonic()
                    text += piece
        return text, first or time.monotonic(), time.monotonic()

    try:
        with ThreadPoolExecutor(8) as pool:
            results = list(pool.map(stream, range(8)))
    finally:
        for client in clients:
            client.close()
    for seed, (text, _, _) in enumerate(results):
        assert text == in_process(chat_checkpoint, "ROMEO:", seed, 200, ignore_eos=True), f"seed {seed}"
    assert len({text for text, _, _ in results}) == 8
    # they were served together, not one after another: every stream had begun before the first one ended
    assert max(first for _, first, _ in results) < min(end for _, _, end in results)


BAD = [
    ("completions", {"prompt": "ROMEO:", "max_tokens": -3}, 400, "max_tokens"),
    ("completions", {"prompt": "ROMEO:", "max_tokens": LIMIT + 1}, 400, "max_tokens"),
    ("completions", {"prompt": "ROMEO:", "max_tokens": "ten"}, 400, "max_tokens"),
    ("completions", {"prompt": "ROMEO: " * 200}, 400, "prompt"),  # over the 64-token context
    ("completions", {"prompt": ["a", "b"]}, 400, "prompt"),
    ("completions", {}, 400, "prompt"),
    ("completions", {"prompt": "x", "model": "gpt-4"}, 404, "model"),
    ("completions", {"prompt": "x", "temperature": "hot"}, 400, "temperature"),
    ("completions", {"prompt": "x", "temperature": -1}, 400, "temperature"),
    ("completions", {"prompt": "x", "top_p": 1.5}, 400, "top_p"),
    ("completions", {"prompt": "x", "top_k": 0}, 400, "top_k"),
    ("completions", {"prompt": "x", "seed": -1}, 400, "seed"),
    ("completions", {"prompt": "x", "stop": ["a", "b", "c", "d", "e"]}, 400, "stop"),
    ("completions", {"prompt": "x", "stream": "yes"}, 400, "stream"),
    ("completions", {"prompt": "x", "ignore_eos": 1}, 400, "ignore_eos"),
    ("completions", {"prompt": "x", "n": 2}, 400, "n"),
    ("completions", {"prompt": "x", "frequency_penalty": 0.5}, 400, "frequency_penalty"),
    ("completions", {"prompt": "x", "presence_penalty": -1}, 400, "presence_penalty"),
    ("completions", {"prompt": "x", "logit_bias": {"5": 100}}, 400, "logit_bias"),
    ("chat/completions", {"messages": [{"role": "user", "content": "x"}], "response_format": {"type": "json_object"}},
     400, "response_format"),
    ("chat/completions", {"messages": [{"role": "user", "content": "x"}], "temprature": 0.5}, 400, "temprature"),
    ("chat/completions", {"messages": []}, 400, "messages"),
    ("chat/completions", {"messages": [{"role": "wizard", "content": "x"}]}, 400, "messages[0]"),
    ("chat/completions", {"messages": [{"role": "user", "content": 5}]}, 400, "messages[0].content"),
    ("chat/completions", {"messages": [{"role": "user", "content": "x", "name": "a:b"}]}, 400, "messages[0].name"),
    ("chat/completions", {"messages": [{"role": "user", "content": "word " * 300}]}, 400, "messages"),
    ("chat/completions", {"messages": [{"role": "user", "content": "x"}], "max_completion_tokens": 0}, 400,
     "max_completion_tokens"),
]


@pytest.mark.parametrize("route, body, status, param", BAD, ids=[f"{r}:{p}:{json.dumps(b)[:30]}" for r, b, _, p in BAD])
def test_a_bad_request_gets_a_4xx_json_error_naming_the_field(server, route, body, status, param):
    answer = httpx.post(f"{server.url}/v1/{route}", json=body, timeout=30)
    assert answer.status_code == status
    error = answer.json()["error"]
    assert error["param"] == param and error["message"] and error["type"] == "invalid_request_error"


def test_a_body_that_is_not_json_or_too_large_is_refused(server):
    answer = httpx.post(f"{server.url}/v1/completions", content=b"{not json", timeout=30,
                        headers={"Content-Type": "application/json"})
    assert answer.status_code == 400 and answer.json()["error"]["code"] == "invalid_json"
    answer = httpx.post(f"{server.url}/v1/completions", json={"prompt": "x" * 2_000_000}, timeout=30)
    assert answer.status_code == 413 and "too large" in answer.json()["error"]["message"]


def test_sampling_edges_and_fields_left_at_their_defaults(server):
    def complete(**fields) -> httpx.Response:
        return httpx.post(f"{server.url}/v1/completions", timeout=60,
                          json={"prompt": "ROMEO:", "max_tokens": 20, "seed": 1, **fields})

    greedy = complete(temperature=0)
    assert greedy.status_code == 200
    # a positive temperature far below the logits' scale: greedy sampling, not a 500 from NaN probabilities
    tiny = complete(temperature=1e-40)
    assert tiny.status_code == 200, tiny.text
    assert tiny.json()["choices"][0]["text"] == greedy.json()["choices"][0]["text"]
    # OpenAI's fields this server does not implement are accepted when they ask for nothing
    defaults = complete(temperature=0, n=1, frequency_penalty=0, presence_penalty=0.0, logit_bias={}, logprobs=None,
                        echo=False, response_format={"type": "text"}, user="someone-42")  # user: a label only
    assert defaults.status_code == 200 and defaults.json()["choices"] == greedy.json()["choices"]
    # JSON's Infinity (Python's parser reads it) is no temperature
    answer = httpx.post(f"{server.url}/v1/completions", content=b'{"prompt": "x", "temperature": Infinity}',
                        headers={"Content-Type": "application/json"}, timeout=30)
    assert answer.status_code == 400 and answer.json()["error"]["param"] == "temperature"


def test_a_deeply_nested_body_is_a_400_and_the_server_goes_on(server):
    for body in (b"[" * 100_000 + b"]" * 100_000, b'{"prompt": "x", "stop": ' + b"[" * 40 + b"]" * 40 + b"}"):
        answer = httpx.post(f"{server.url}/v1/completions", content=body, timeout=30,
                            headers={"Content-Type": "application/json"})
        assert answer.status_code == 400, answer.text
        assert answer.json()["error"]["code"] == "invalid_json" and "nests more than" in answer.text
    assert httpx.get(f"{server.url}/health", timeout=10).status_code == 200
    assert not any("RecursionError" in line for line in server.log_lines())


def test_a_foreign_host_or_a_cross_origin_page_is_refused(server):
    port = server.url.rsplit(":", 1)[1]
    body = json.dumps({"prompt": "ROMEO:", "max_tokens": 5})
    # a DNS-rebinding page: its name points at 127.0.0.1, the browser sends that name as Host
    answer = httpx.get(f"{server.url}/v1/models", headers={"Host": f"attacker.example:{port}"}, timeout=10)
    assert answer.status_code == 400 and answer.json()["error"]["param"] == "Host"
    assert "--allowed_hosts attacker.example" in answer.json()["error"]["message"]
    for name in ("localhost", "127.0.0.1", "[::1]"):
        assert httpx.get(f"{server.url}/health", headers={"Host": f"{name}:{port}"}, timeout=10).status_code == 200
    # a page of another origin posting text/plain (a "simple" request: the browser sends it without asking)
    answer = httpx.post(f"{server.url}/v1/completions", content=body, timeout=10,
                        headers={"Origin": "http://attacker.example", "Content-Type": "text/plain"})
    assert answer.status_code == 403 and answer.json()["error"]["param"] == "Origin"
    answer = httpx.post(f"{server.url}/v1/completions", content=body, timeout=10,
                        headers={"Content-Type": "text/plain"})
    assert answer.status_code == 415 and answer.json()["error"]["param"] == "Content-Type"
    # the server's own page (same origin, JSON) is served
    answer = httpx.post(f"{server.url}/v1/completions", content=body, timeout=60,
                        headers={"Origin": server.url, "Content-Type": "application/json"})
    assert answer.status_code == 200, answer.text


def test_only_the_documented_routes_answer(server):
    for path in ("/docs", "/redoc", "/openapi.json", "/info", "/shutdown"):
        assert httpx.get(f"{server.url}{path}", timeout=10).status_code == 404, path
    for path in ("/", "/health", "/v1/models"):
        assert httpx.get(f"{server.url}{path}", timeout=10).status_code == 200, path


def closed_within(sock: socket.socket, seconds: float) -> bool:
    """Whether the server closes ``sock`` within ``seconds`` (it never answers a request it has not got)."""
    sock.settimeout(seconds)
    try:
        return sock.recv(1024) == b""
    except (socket.timeout, TimeoutError):
        return False
    except ConnectionResetError:
        return True


def slow_client(server: Server) -> socket.socket:
    """A connection that has sent part of a request line and headers, and sends no more."""
    host, port = server.url.removeprefix("http://").split(":")
    sock = socket.create_connection((host, int(port)), timeout=10)
    sock.sendall(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")
    return sock


def test_slow_headers_are_cut_off_and_connections_are_bounded(server):
    start = time.monotonic()
    with slow_client(server) as slow:
        assert httpx.get(f"{server.url}/health", timeout=10).status_code == 200  # served beside it
        assert closed_within(slow, HEADER_TIMEOUT + 10), "a connection sending its headers slowly was kept open"
        assert time.monotonic() - start >= HEADER_TIMEOUT - 0.5
    # more slow connections than --max_connections: the extra ones are closed at once, and once the slow ones
    # run out of time the server answers again
    sockets = [slow_client(server) for _ in range(MAX_CONNECTIONS + 6)]
    try:
        start = time.monotonic()
        closed_at_once = sum(closed_within(sock, 0.05) for sock in sockets)
        assert closed_at_once >= 6 and time.monotonic() - start < HEADER_TIMEOUT
        assert all(closed_within(sock, HEADER_TIMEOUT + 10) for sock in sockets)
    finally:
        for sock in sockets:
            sock.close()
    assert httpx.get(f"{server.url}/health", timeout=10).status_code == 200


@pytest.fixture(scope="module")
def unnamed_server(chat_checkpoint, tmp_path_factory):
    """A server without --model_name, of a checkpoint where fit writes them, answering to one more name."""
    tmp = tmp_path_factory.mktemp("serve_unnamed")
    (tmp / "run7" / "checkpoints").mkdir(parents=True)
    shutil.copy(chat_checkpoint, tmp / "run7" / "checkpoints" / "last.ckpt")
    with running_server(tmp / "run7" / "checkpoints" / "last.ckpt", tmp, "--allowed_hosts",
                        "gpt.example,10.1.2.3") as running:
        yield running


def test_the_model_id_is_a_name_and_allowed_hosts_are_served(unnamed_server):
    models = httpx.get(f"{unnamed_server.url}/v1/models", timeout=10).json()
    assert [m["id"] for m in models["data"]] == ["run7/last"]  # never the checkpoint's path on this machine
    port = unnamed_server.url.rsplit(":", 1)[1]
    for name, status in (("gpt.example", 200), ("10.1.2.3", 200), ("other.example", 400)):
        answer = httpx.get(f"{unnamed_server.url}/health", headers={"Host": f"{name}:{port}"}, timeout=10)
        assert answer.status_code == status, name


def test_a_port_in_use_is_one_error_line_before_serving(unnamed_server, chat_checkpoint, tmp_path):
    port = unnamed_server.url.rsplit(":", 1)[1]
    result = subprocess.run(
        [sys.executable, str(ROOT / "main.py"), "serve", "--ckpt_path", str(chat_checkpoint), "--port", port],
        cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert result.returncode == 1
    output = (result.stdout + result.stderr).strip().splitlines()
    assert len(output) == 1 and output[0].startswith(f"error: --port {port}: "), output
    assert "Serving" not in result.stdout + result.stderr
    assert httpx.get(f"{unnamed_server.url}/health", timeout=10).status_code == 200  # the other is untouched


def stopped_generations(server: Server) -> list[tuple[str, int]]:
    found = [re.search(r"request (\w+): the client went away after (\d+) tokens; stopped", line)
             for line in server.log_lines()]
    return [(m.group(1), int(m.group(2))) for m in found if m]


def wait_for_stops(server: Server, count: int) -> list[tuple[str, int]]:
    deadline = time.monotonic() + 20
    while len(stopped := stopped_generations(server)) < count and time.monotonic() < deadline:
        time.sleep(0.1)
    return stopped


def test_a_client_that_goes_away_stops_its_generation(server):
    before = len(stopped_generations(server))
    # (ignore_eos: the generation cannot end by itself before the client goes)
    body = {"model": NAME, "prompt": "ROMEO:", "max_tokens": LIMIT, "stream": True, "ignore_eos": True}
    with httpx.stream("POST", f"{server.url}/v1/completions", json=body, timeout=60) as answer:
        events = []
        for line in answer.iter_lines():
            if line.startswith("data: {"):
                events.append(json.loads(line[6:]))
            if len(events) == 3:
                break  # and the connection closes
    stopped = wait_for_stops(server, before + 1)
    assert len(stopped) == before + 1, "the generation was not stopped"
    uid, tokens = stopped[-1]
    assert events[0]["id"] == "cmpl-" + uid[:24] and tokens < LIMIT
    # a request that is not streamed: the client gives up waiting for the answer
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(f"{server.url}/v1/completions", timeout=httpx.Timeout(30, read=0.2),
                   json={"prompt": "ROMEO:", "max_tokens": LIMIT, "ignore_eos": True})
    stopped = wait_for_stops(server, before + 2)
    assert len(stopped) == before + 2 and stopped[-1][1] < LIMIT


# --- the playground in a real browser --------------------------------------------------------------------------


class DevTools:
    """Chromium's DevTools protocol over its websocket: one call at a time, each bounded in time."""

    def __init__(self, socket) -> None:
        self.socket = socket
        self.next_id = 0

    def call(self, method: str, **params) -> dict:
        self.next_id += 1
        self.socket.send(json.dumps({"id": self.next_id, "method": method, "params": params}))
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            message = json.loads(self.socket.recv(timeout=30))
            if message.get("id") == self.next_id:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                return message["result"]
        raise TimeoutError(method)

    def js(self, expression: str):
        result = self.call("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in result:
            raise RuntimeError(f"{expression}: {result['exceptionDetails']}")
        return result["result"].get("value")


@pytest.fixture
def chromium(tmp_path):
    """A headless Chromium with its DevTools protocol on a free 127.0.0.1 port; killed at the end."""
    binary = shutil.which("chromium")
    if binary is None:
        pytest.fail("Debian's chromium is not installed: apt-get install -y chromium (.ci/run does it)")
    log = tmp_path / "chromium.log"
    with open(log, "w") as err:
        process = subprocess.Popen(
            [binary, "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
             "--no-default-browser-check", "--remote-debugging-address=127.0.0.1", "--remote-debugging-port=0",
             f"--user-data-dir={tmp_path / 'profile'}", "--window-size=1100,760", "about:blank"],
            stdout=subprocess.DEVNULL, stderr=err, start_new_session=True)
    try:
        active = tmp_path / "profile" / "DevToolsActivePort"
        deadline = time.monotonic() + 60
        while not (active.is_file() and active.read_text().strip()):
            if process.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"chromium did not start:\n{log.read_text()[-3000:]}")
            time.sleep(0.1)
        port = int(active.read_text().split()[0])
        pages = [t for t in httpx.get(f"http://127.0.0.1:{port}/json/list", timeout=10).json() if t["type"] == "page"]
        with connect(pages[0]["webSocketDebuggerUrl"], max_size=None, open_timeout=30) as socket:
            yield DevTools(socket)
    finally:
        stop(process)


def test_the_playground_streams_text_into_the_page(server, chromium, tmp_path):
    chromium.call("Page.enable")
    chromium.call("Page.navigate", url=f"{server.url}/")
    deadline = time.monotonic() + 30
    while not (chromium.js("document.readyState") == "complete" and NAME in (chromium.js(
            "document.getElementById('model') && document.getElementById('model').textContent") or "")):
        assert time.monotonic() < deadline, "the playground did not load the model list"
        time.sleep(0.1)
    assert chromium.js("document.getElementById('mode').value") == "chat"  # a conversation model opens in chat
    chromium.js("""(() => {
        const set = (id, value) => { document.getElementById(id).value = value; };
        set("mode", "completion"); document.getElementById("mode").dispatchEvent(new Event("change"));
        set("prompt", "ROMEO:"); set("max_tokens", "2000"); set("seed", "5"); set("temperature", "0.8");
        set("top_k", "200"); set("top_p", ""); document.getElementById("ignore_eos").checked = true;
        document.getElementById("send").click();
    })()""")
    lengths, deadline = [], time.monotonic() + 60
    while time.monotonic() < deadline:
        lengths.append(chromium.js("document.getElementById('output').textContent.length"))
        if (chromium.js("document.getElementById('status').textContent") or "").startswith("done"):
            break
        time.sleep(0.01)
    status = chromium.js("document.getElementById('status').textContent")
    assert status.startswith("done"), status
    final = chromium.js("document.getElementById('output').textContent")
    growth = sorted(set(n for n in lengths if len("ROMEO:") < n < len(final)))
    assert len(growth) >= 5, f"the text did not grow on the page while it was streamed: {lengths}"
    assert lengths == sorted(lengths)  # it only ever grew
    expected = httpx.post(f"{server.url}/v1/completions", timeout=60, json={
        "prompt": "ROMEO:", "max_tokens": 2000, "seed": 5, "temperature": 0.8, "top_k": 200, "ignore_eos": True}).json()
    assert final == "ROMEO:" + expected["choices"][0]["text"]
    shot = chromium.call("Page.captureScreenshot", format="png")
    (tmp_path / "playground.png").write_bytes(base64.b64decode(shot["data"]))
    assert (tmp_path / "playground.png").stat().st_size > 10_000
