"""Bad input to every source, table-driven, through ``main.py prepare`` run in-process: for each kind of damaged,
half-written or unusual input, the exit status, the one ``error:`` line (naming the file/line or key), no
traceback, and for skipped rows the counts in the manifest. Plus the Discord API's security cases against
fake servers on 127.0.0.1: no token to another host, bounded waiting, the token in no output or file."""

from __future__ import annotations

import gzip
import http.server
import json
import threading
import time
from pathlib import Path
from typing import Any, Callable, Optional

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import zstandard

from data_modules.discord_api import DiscordClient, RetryPolicy
from data_modules.shards import read_manifest
from lit_gpt_mini.cli.main import main
from lit_gpt_mini.errors import DataError

from .helpers import write_checkpoint

TOKEN = "MTIzNDU2Nzg5MDEyMzQ1Njc4.GaBcDe.secret-token-value-that-must-not-leak"
TOKEN_SHAPED = "MTIzNDU2Nzg5MDEyMzQ1Njc4GaBcDe_secretTokenValue"  # letters, digits and _ only: looks like a name


def prepare(tmp_path: Path, data: dict[str, Any], capfd) -> tuple[int, str, str]:
    """``main.py prepare`` on a config holding ``data``: (exit status, the error line or "", all of stderr)."""
    config = tmp_path / "config.yaml"
    config.write_text(json.dumps({"data": data}))  # JSON is YAML
    return run_main(["prepare", "--config", str(config)], capfd)


def run_main(args: list[str], capfd) -> tuple[int, str, str]:
    """``main.py`` with ``args``: (exit status, the error line or "", all of stderr), and no traceback."""
    status, error = 0, ""
    try:
        main(args)
    except SystemExit as e:
        status, error = (1, str(e.code)) if isinstance(e.code, str) else (e.code or 0, "")
    captured = capfd.readouterr()
    err = captured.err + error
    assert "Traceback" not in err + captured.out
    if status:
        assert error.startswith("error: ") and "\n" not in error, error
    return status, error, err


def discord_data(tmp_path: Path, **init_args) -> dict[str, Any]:
    return {"class_path": "data_modules.discord.DiscordDataModule",
            "init_args": {"data_dir": str(tmp_path / "data"), "batch_size": 2, **init_args}}


def msg(i: int, content: Any = None, **fields) -> dict[str, Any]:
    return {"id": str(1000 + i), "type": "Default", "timestamp": f"2024-03-01T10:{i:02d}:00+00:00",
            "content": f"message {i} with enough words to make some tokens" if content is None else content,
            "author": {"id": "7", "name": "alice", "nickname": "Alice", "isBot": False},
            "attachments": [], "embeds": [], "mentions": [], **fields}


GOOD = [msg(i) for i in range(1, 6)]

# (case, the bad message, the reason counted in the manifest)
BAD_EXPORT_MESSAGES = [
    ("content a number", msg(10, content=123), "'content' is a number, not a string"),
    ("numeric timestamp", msg(11, timestamp=1709287200), "'timestamp' is a number, not an ISO 8601 date string"),
    ("garbage timestamp", msg(12, timestamp="yesterday"), "'timestamp' is not an ISO 8601 date: 'yesterday'"),
    ("author a string", msg(13, author="bob"), "'author' is a string, not an object"),
    ("mentions as strings", msg(14, mentions=["alice"]), "'mentions' holds something that is not an object"),
    ("not an object", "just a string", "a message is an object, not a string"),
    ("no id", {k: v for k, v in msg(15).items() if k != "id"}, "no 'id'"),
    ("attachments an object", msg(16, attachments={"url": "x"}), "'attachments' is an object, not a list"),
    ("isBot a string", msg(17, author={"name": "x", "isBot": "yes"}), "'isBot' is a string, not true/false"),
    ("a mention without id", msg(18, mentions=[{"name": "x"}]), "'mentions' holds an entry without an 'id'"),
    ("year 1 with an offset", msg(19, timestamp="0001-01-01T00:00:00+01:00"),
     "'timestamp' is not an ISO 8601 date: '0001-01-01T00:00:00+01:00'"),
]


@pytest.mark.parametrize("case, bad, reason", BAD_EXPORT_MESSAGES, ids=[c[0] for c in BAD_EXPORT_MESSAGES])
def test_a_bad_export_message_is_skipped_counted_and_reported(tmp_path, capfd, case, bad, reason):
    path = tmp_path / "export.json"
    path.write_text(json.dumps({"channel": {"id": "2"}, "messages": GOOD[:2] + [bad] + GOOD[2:]}))
    status, _, err = prepare(tmp_path, discord_data(tmp_path, path=str(path)), capfd)
    assert status == 0
    assert f"{path}: messages[2]: message skipped ({reason})" in err
    manifest = read_manifest(tmp_path / "data" / "shards")
    assert manifest["messages_skipped"] == {reason.split(": ")[0]: 1} and manifest["messages"]["kept"] == 5


def test_timestamps_without_offset_among_aware_ones_are_read_as_utc_and_said(tmp_path, capfd):
    naive = msg(6, timestamp="2024-03-01T10:03:30")  # between messages 3 and 4
    path = tmp_path / "export.json"
    path.write_text(json.dumps({"messages": GOOD + [naive]}))
    status, _, err = prepare(tmp_path, discord_data(tmp_path, path=str(path)), capfd)
    assert status == 0 and "1 message(s) had a timestamp without a UTC offset; they were read as UTC" in err
    from data_modules.discord import DiscordDataModule

    lines = DiscordDataModule(path=str(path)).conversations()[0].splitlines()
    assert lines[3].startswith("Alice: message 6") and len(lines) == 6


def csv_export(tmp_path: Path, rows: list[str], header: str = '"AuthorID","Author","Date","Content","Attachments","Reactions"',
               newline: str = "\n", bom: bool = False) -> Path:
    path = tmp_path / "export.csv"
    good = [f'"1","alice","2024-03-01T10:{i:02d}:00+00:00","csv message {i} with several words","",""' for i in range(5)]
    text = newline.join([header] + good[:2] + rows + good[2:]) + newline
    path.write_bytes((b"\xef\xbb\xbf" if bom else b"") + text.encode())
    return path


def test_csv_rows_short_or_bad_are_skipped_by_line(tmp_path, capfd):
    path = csv_export(tmp_path, ['"1","alice"', '"1","alice","not a date","hi","",""'])
    status, _, err = prepare(tmp_path, discord_data(tmp_path, path=str(path)), capfd)
    assert status == 0
    assert f"{path}:4: message skipped (wrong number of fields: 2 where the header has 6)" in err
    assert f"{path}:5: message skipped ('Date' is not an ISO 8601 date: 'not a date')" in err
    manifest = read_manifest(tmp_path / "data" / "shards")
    assert manifest["messages_skipped"] == {"wrong number of fields": 1, "'Date' is not an ISO 8601 date": 1}
    assert manifest["messages"]["kept"] == 5


def test_csv_with_bom_and_crlf_reads_like_any_other(tmp_path, capfd):
    path = csv_export(tmp_path, [], newline="\r\n", bom=True)
    assert prepare(tmp_path, discord_data(tmp_path, path=str(path)), capfd)[0] == 0
    manifest = read_manifest(tmp_path / "data" / "shards")
    assert manifest["messages"] == {"kept": 5} and manifest["messages_skipped"] == {}


def test_the_same_messages_in_two_exports_count_once(tmp_path, capfd):
    (tmp_path / "exports").mkdir()
    for name in ("a.json", "b.json"):
        (tmp_path / "exports" / name).write_text(json.dumps({"messages": GOOD}))
    assert prepare(tmp_path, discord_data(tmp_path, path=str(tmp_path / "exports")), capfd)[0] == 0
    assert read_manifest(tmp_path / "data" / "shards")["messages"] == {"kept": 5, "duplicate (same id)": 5}


# (case, file name, bytes, what the error line says besides the file name)
UNREADABLE_EXPORTS = [
    ("half-written JSON", "e.json", json.dumps({"messages": GOOD})[:-40].encode(), "invalid JSON at line 1"),
    ("empty JSON", "e.json", b"", "the file is empty"),
    ("JSON list at the top", "e.json", b"[1, 2]", "no 'messages' list at the top"),
    ("messages not a list", "e.json", b'{"messages": {"a": 1}}', "no 'messages' list at the top"),
    ("not UTF-8", "e.json", b'{"messages": ["\xff"]}', "UnicodeDecodeError"),
    ("deeply nested", "e.json", b"[" * 100_000, "JSON nested too deeply"),
    ("CSV without a Date column", "e.csv", b'"Author","Content"\n"a","b"\n', "line 1 has no column Date"),
    ("empty CSV", "e.csv", b"", "the file is empty"),
    ("CSV field over csv's limit", "e.csv", b'"Author","Date"\n"' + b"a" * 200_000 + b'","2024-01-01"\n',
     "line 2: field larger than field limit"),
]


@pytest.mark.parametrize("case, name, data, says", UNREADABLE_EXPORTS, ids=[c[0] for c in UNREADABLE_EXPORTS])
def test_an_unreadable_export_stops_with_its_name(tmp_path, capfd, case, name, data, says):
    (tmp_path / name).write_bytes(data)
    status, error, _ = prepare(tmp_path, discord_data(tmp_path, path=str(tmp_path / name)), capfd)
    assert status == 1 and f"{tmp_path / name} is not a readable DiscordChatExporter export" in error
    assert says in error


# --- the Discord API -------------------------------------------------------------------------------------------


class Server:
    """A fake HTTP server on 127.0.0.1 answering every GET with ``respond(path, headers)``: (status, headers,
    body bytes); records (path, Authorization header) of each request."""

    def __init__(self, respond: Callable[[str, dict], tuple[int, dict, bytes]]) -> None:
        self.requests: list[tuple[str, Optional[str]]] = []
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                outer.requests.append((self.path, self.headers.get("Authorization")))
                status, headers, body = respond(self.path, dict(self.headers))
                self.send_response(status)
                for k, v in headers.items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def url(self, host: str = "127.0.0.1") -> str:
        return f"http://{host}:{self.port}/api/v10"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def servers():
    made: list[Server] = []

    def make(respond):
        made.append(Server(respond))
        return made[-1]

    yield make
    for s in made:
        s.close()


def api_msg(i: int, **fields) -> dict[str, Any]:
    return {"id": str(5000 + i), "type": 0, "timestamp": f"2024-03-01T10:{i:02d}:00+00:00",
            "content": f"api message {i} with enough words to make tokens", "author": {"id": "3", "username": "u"},
            **fields}


def answer(status: int, body: Any, **headers) -> tuple[int, dict, bytes]:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    return status, {"Content-Type": "application/json", **headers}, data


def api_prepare(tmp_path, capfd, monkeypatch, url, **init_args):
    monkeypatch.setenv("DISCORD_TOKEN", TOKEN)
    args = {"channel_ids": [77], "api_url": url, "api_max_wait": 0.2, "api_max_total_wait": 0.5, **init_args}
    result = prepare(tmp_path, discord_data(tmp_path, **args), capfd)
    assert TOKEN not in result[2], "the token was printed"
    assert not [p for p in tmp_path.rglob("*") if p.is_file() and TOKEN.encode() in p.read_bytes()]
    return result


def test_a_redirect_to_another_host_gets_no_token(tmp_path, capfd, monkeypatch, servers):
    other = servers(lambda path, headers: answer(200, [api_msg(1)]))
    api = servers(lambda path, headers: answer(302, b"", Location=other.url("localhost") + "/channels/77/messages"))
    status, error, _ = api_prepare(tmp_path, capfd, monkeypatch, api.url())
    assert status == 1 and "redirected to http://localhost:" in error and "another host" in error
    assert "the token is only sent to 127.0.0.1" in error
    assert api.requests and other.requests == []  # nothing at all was sent to the other host
    # 127.0.0.1 on another port is another host too
    api2 = servers(lambda path, headers: answer(307, b"", Location=other.url() + "/x"))
    assert api_prepare(tmp_path, capfd, monkeypatch, api2.url())[0] == 1 and other.requests == []


def test_a_redirect_on_the_same_host_is_followed(tmp_path, capfd, monkeypatch, servers):
    def respond(path, headers):
        if path.startswith("/old/"):
            return answer(301, b"", Location=path.replace("/old/", "/api/v10/", 1))
        return answer(200, [api_msg(i) for i in range(1, 6)])

    api = servers(respond)
    status, _, _ = api_prepare(tmp_path, capfd, monkeypatch, f"http://127.0.0.1:{api.port}/old")
    assert status == 0 and [a for _, a in api.requests] == [f"Bot {TOKEN}"] * 2


@pytest.mark.parametrize("retry_after", [0.05, -3, "soon", None], ids=["0.05 s", "negative", "not a number", "absent"])
def test_a_permanent_429_ends_within_the_bound(tmp_path, capfd, monkeypatch, servers, retry_after):
    api = servers(lambda path, headers: answer(429, {"message": "rate limited", "retry_after": retry_after}))
    start = time.monotonic()
    status, error, err = api_prepare(tmp_path, capfd, monkeypatch, api.url())
    assert time.monotonic() - start < 3  # 0.5 s of waiting in all, plus the requests
    assert status == 1 and f"gave up on {api.url()}/channels/77/messages?limit=100 after" in error
    assert "data.api_max_total_wait is 0.5 s); the last answer: HTTP 429" in error
    assert len(api.requests) >= 2 and "try 2 of at most 20 in" in err


def test_a_day_long_retry_after_is_not_obeyed(tmp_path, capfd, monkeypatch, servers):
    api = servers(lambda path, headers: answer(429, {"retry_after": 86400}))
    start = time.monotonic()
    status, error, _ = api_prepare(tmp_path, capfd, monkeypatch, api.url())
    assert time.monotonic() - start < 3 and len(api.requests) == 1
    assert status == 1 and "Discord asks to wait 86400 s" in error and "longer than data.api_max_wait (0.2 s)" in error


def refused(servers) -> str:
    dead = servers(lambda path, headers: answer(200, []))
    dead.close()
    return dead.url()


# (case, the API's URL (a server that always fails), the reason each wait gives)
ALWAYS_FAILING = [
    ("HTTP 503", lambda servers: servers(lambda path, headers: answer(503, b"busy")).url(), "HTTP 503: busy"),
    ("HTTP 429 without retry_after", lambda servers: servers(lambda path, headers: answer(429, {})).url(), "HTTP 429"),
    ("refused connections", refused, "could not reach it (ConnectError"),
]


@pytest.mark.parametrize("case, start, reason", ALWAYS_FAILING, ids=[c[0] for c in ALWAYS_FAILING])
def test_each_wait_for_a_failing_api_is_said_as_it_happens(tmp_path, capfd, monkeypatch, servers, case, start, reason):
    url = start(servers)
    status, error, err = api_prepare(tmp_path, capfd, monkeypatch, url, api_max_wait=0.05, api_max_total_wait=0.12)
    waits = [line for line in err.splitlines() if line.startswith("warning: Discord:")]
    assert status == 1 and "gave up" in error and len(waits) == 2, err  # 0.05 + 0.05, then 0.15 > 0.12
    for number, line in enumerate(waits, start=2):
        assert reason in line and f"; try {number} of at most 20 in 0.1 s (at " in line, line
    assert "0.1 of data.api_max_total_wait=0.12 s of waiting)" in waits[1]


def test_the_default_total_wait_gives_up_on_a_dead_api_within_two_minutes():
    import inspect

    import yaml

    from data_modules.discord import DiscordDataModule

    default = inspect.signature(DiscordDataModule.__init__).parameters["api_max_total_wait"].default
    config = yaml.safe_load((Path(__file__).parents[1] / "configs" / "gpt2_discord.yaml").read_text())
    assert "api_max_total_wait" not in config["data"]["init_args"] and default == 120  # one default, as shipped
    waits: list[float] = []
    said: list[str] = []
    policy = RetryPolicy(max_total_wait=default, sleep=waits.append)
    with DiscordClient("http://127.0.0.1:9/api", TOKEN, True, "$T", policy, say=said.append) as client:
        client._send = lambda url: (503, {}, b"")  # noqa: SLF001 (the network boundary of one try)
        with pytest.raises(DataError, match=r"after 7 tries and 63.0 s of waiting"):
            client.get_json("http://127.0.0.1:9/api/x")
    assert waits == [1, 2, 4, 8, 16, 32] and len(said) == len(waits)


def test_an_emptied_rate_limit_bucket_is_waited_out_and_said():
    waits: list[float] = []
    said: list[str] = []
    policy = RetryPolicy(max_wait=60, sleep=waits.append)
    buckets = iter([{"x-ratelimit-remaining": "0", "x-ratelimit-reset-after": "2.5"},
                    {"x-ratelimit-remaining": "0", "x-ratelimit-reset-after": "0.2"},
                    {"x-ratelimit-remaining": "4"}])
    with DiscordClient("http://127.0.0.1:9/api", TOKEN, True, "$T", policy, say=said.append) as client:
        client._send = lambda url: (200, next(buckets), b"[]")  # noqa: SLF001 (the network boundary of one try)
        for _ in range(3):
            assert client.get_json("http://127.0.0.1:9/api/x") == []
    assert waits == [2.5, 0.2]  # the bucket's own times; a short one is waited without a line
    assert said == ["Discord: rate limit reached after http://127.0.0.1:9/api/x; the next request in 2.5 s (as "
                    "Discord asks)"]


def test_5xx_then_success_is_retried(tmp_path, capfd, monkeypatch, servers):
    answers = iter([answer(503, b"busy"), answer(500, {"message": "oops"})])
    api = servers(lambda path, headers: next(answers, answer(200, [api_msg(i) for i in range(1, 6)])))
    assert api_prepare(tmp_path, capfd, monkeypatch, api.url(), api_max_wait=0.01)[0] == 0
    assert len(api.requests) == 3


# (case, the 200 answer, what the error line says)
BAD_API_BODIES = [
    ("not JSON", b"<html>hello</html>", "with HTTP 200 but the body is not JSON"),
    ("an object, not a list", {"messages": []}, "with dict JSON, not a list of messages"),
    ("no item has an id", [{"content": "x"}, 5, {"id": "\u00b2"}], "with 3 items and none has a numeric 'id'"),
    ("empty body", b"", "with HTTP 200 but the body is not JSON"),
]


@pytest.mark.parametrize("case, body, says", BAD_API_BODIES, ids=[c[0] for c in BAD_API_BODIES])
def test_a_bad_api_body_is_one_line(tmp_path, capfd, monkeypatch, servers, case, body, says):
    api = servers(lambda path, headers: answer(200, body))
    status, error, _ = api_prepare(tmp_path, capfd, monkeypatch, api.url())
    assert status == 1 and f"{api.url()}/channels/77/messages?limit=100" in error and says in error


def test_api_messages_without_id_or_with_a_bad_shape_are_skipped_and_counted(tmp_path, capfd, monkeypatch, servers):
    page = [api_msg(i) for i in range(1, 5)] + [api_msg(5, content="a lone surrogate \ud800 in a message")]
    page += [{"content": "no id"}, api_msg(9, content=["x"]), api_msg(8, timestamp=3)]
    api = servers(lambda path, headers: answer(200, page))
    status, _, err = api_prepare(tmp_path, capfd, monkeypatch, api.url())
    assert status == 0 and f"{api.url()}/channels/77/messages?limit=100: item 5: message skipped" in err
    cache = tmp_path / "data" / "channels" / "77.jsonl"
    assert f"{cache}:7: message skipped ('content' is a list, not a string)" in err  # cached oldest first
    assert read_manifest(tmp_path / "data" / "shards")["messages_skipped"] == {
        "an API message without a numeric 'id'": 1, "'content' is a list, not a string": 1,
        "'timestamp' is a number, not an ISO 8601 date string": 1}


def test_refused_connection_and_error_statuses_are_one_line(tmp_path, capfd, monkeypatch, servers):
    dead = servers(lambda path, headers: answer(200, []))
    url = dead.url()
    dead.close()
    status, error, _ = api_prepare(tmp_path, capfd, monkeypatch, url)
    assert status == 1 and f"gave up on {url}/channels/77/messages" in error and "could not reach it (ConnectError" in error
    api = servers(lambda path, headers: answer(404, {"message": "Unknown Channel"}))
    status, error, _ = api_prepare(tmp_path, capfd, monkeypatch, api.url())
    assert status == 1 and error.endswith('HTTP 404: {"message": "Unknown Channel"}')


def test_a_server_echoing_the_token_does_not_get_it_printed(tmp_path, capfd, monkeypatch, servers):
    api = servers(lambda path, headers: answer(400, {"message": f"bad header {headers.get('Authorization')}"}))
    status, error, _ = api_prepare(tmp_path, capfd, monkeypatch, api.url())  # asserts the token appears nowhere
    assert status == 1 and "bad header Bot <token>" in error


def test_a_token_shaped_token_env_is_refused_and_never_echoed(tmp_path, capfd, monkeypatch, servers):
    api = servers(lambda path, headers: answer(200, []))
    monkeypatch.setenv(TOKEN_SHAPED, "x")  # even when a variable of that name exists
    monkeypatch.chdir(tmp_path)
    status, error, err = prepare(tmp_path, discord_data(tmp_path, channel_ids=[77], api_url=api.url(),
                                                        token_env=TOKEN_SHAPED), capfd)
    assert status == 1 and "data.token_env must be the NAME of an environment variable" in error
    assert TOKEN_SHAPED not in err and api.requests == []
    assert not [p for p in tmp_path.rglob("*") if p.is_file() and p.name != "config.yaml"
                and TOKEN_SHAPED.encode() in p.read_bytes()]
    # a fit refuses it before any file (config.yaml, logs, checkpoints) is written
    status = 0
    try:
        main(["fit", "--config", str(Path(__file__).parents[1] / "configs" / "gpt2_discord.yaml"),
              "--data.channel_ids", "[77]", "--data.token_env", TOKEN_SHAPED, "--trainer.accelerator", "cpu"])
    except SystemExit as e:
        status, error = 1, str(e.code)
    assert status == 1 and TOKEN_SHAPED not in error + capfd.readouterr().err and not (tmp_path / "out").exists()


@pytest.mark.parametrize("token", ["abc def", "ghi\njkl", "caf\u00e9xyz"], ids=["space", "newline", "non-ASCII"])
def test_a_token_with_impossible_characters_is_refused_without_echo(tmp_path, capfd, monkeypatch, servers, token):
    api = servers(lambda path, headers: answer(200, []))
    monkeypatch.setenv("DISCORD_TOKEN", token)
    status, error, err = prepare(tmp_path, discord_data(tmp_path, channel_ids=[77], api_url=api.url()), capfd)
    assert status == 1 and "the token in $DISCORD_TOKEN has characters a Discord token cannot have" in error
    assert not any(part in error for part in token.split()) and api.requests == []


@pytest.mark.parametrize("url, says", [
    ("http://discord.example.com/api", "plain http"), ("ftp://127.0.0.1/x", "must be an https:// URL"),
    ("not a url", "must be an https:// URL")])
def test_api_url_must_be_https_except_on_this_machine(tmp_path, capfd, url, says):
    status, error, _ = prepare(tmp_path, discord_data(tmp_path, channel_ids=[77], api_url=url), capfd)
    assert status == 1 and says in error


def test_a_server_that_does_not_move_forward_is_stopped(tmp_path, capfd, monkeypatch, servers):
    full_page = [api_msg(i) for i in range(100)]
    api = servers(lambda path, headers: answer(200, full_page))  # the same 100 messages whatever "before" says
    status, error, _ = api_prepare(tmp_path, capfd, monkeypatch, api.url())
    assert status == 1 and "with no older message: stopping" in error and len(api.requests) == 2


def test_the_retry_policy_waits_are_capped_with_a_fake_clock():
    waits: list[float] = []
    policy = RetryPolicy(max_wait=5, max_total_wait=12, max_tries=50, backoff=1, sleep=waits.append)
    client = DiscordClient("http://127.0.0.1:9/api", TOKEN, True, "$T", policy, say=lambda m: None)
    client._send = lambda url: (503, {}, b"")  # noqa: SLF001 (the network boundary of one try)
    with pytest.raises(DataError, match=r"after 5 tries and 12.0 s of waiting"):
        client.get_json("http://127.0.0.1:9/api/x")
    assert waits == [1, 2, 4, 5]  # doubling, capped at max_wait, never past max_total_wait in all


# --- Reddit .zst dumps -----------------------------------------------------------------------------------------


def reddit_data(tmp_path: Path, path: Path, **init_args) -> dict[str, Any]:
    return {"class_path": "data_modules.reddit.RedditDataModule",
            "init_args": {"path": str(path), "data_dir": str(tmp_path / "data"), "min_score": 1, "min_length": 5,
                          "shard_size": 5000, "val_tokens": 100, "test_tokens": 20, "batch_size": 2, **init_args}}


def reddit_row(i: int, **fields) -> bytes:
    row = {"body": f"comment {i} with a handful of words in it", "author": f"user{i}", "subreddit": "Python",
           "score": 3, "created_utc": 1672531200 + i, **fields}
    return json.dumps(row).encode()


def zst(lines: list[bytes]) -> bytes:
    return zstandard.ZstdCompressor().compress(b"\n".join(lines) + b"\n")


GOOD_ROWS = [reddit_row(i) for i in range(20)]

# (case, the bad line, the reason counted, what its report says)
BAD_REDDIT_LINES = [
    ("not JSON", b"{not json", "malformed", "not JSON: JSONDecodeError"),
    ("a JSON list", b'["a", "list"]', "malformed", "a list, not an object"),
    ("body a number", reddit_row(90, body=123), "malformed", "'body' is int, not str"),
    ("score NaN", reddit_row(91).replace(b'"score": 3', b'"score": NaN'), "malformed", "'score' is nan"),
    ("score true", reddit_row(92, score=True), "malformed", "'score' is bool, not int or float"),
    ("created_utc garbage", reddit_row(93, created_utc="soon"), "malformed", "'created_utc' 'soon' is not a number"),
    ("author an object", reddit_row(94, author={"name": "x"}), "malformed", "'author' is dict, not str"),
    ("neither body nor title", b'{"author": "x"}', "malformed", "no 'body' (comment) nor 'title'/'selftext'"),
    ("deeply nested", b"[" * 1_500, "malformed", "not JSON: RecursionError"),
    ("not UTF-8", b'{"body": "\xff\xfe"}', "malformed", "not JSON: UnicodeDecodeError"),
    ("longer than max_line_bytes", reddit_row(95, body="x" * 5000), "too long", "over data.max_line_bytes=2000"),
]


@pytest.mark.parametrize("case, bad, reason, says", BAD_REDDIT_LINES, ids=[c[0] for c in BAD_REDDIT_LINES])
def test_a_bad_reddit_line_is_skipped_counted_and_reported(tmp_path, capfd, case, bad, reason, says):
    path = tmp_path / "RC.zst"
    path.write_bytes(zst(GOOD_ROWS[:3] + [bad] + GOOD_ROWS[3:]))
    status, _, err = prepare(tmp_path, reddit_data(tmp_path, path, max_line_bytes=2000), capfd)
    assert status == 0
    assert f"{path}:4: {reason} line skipped ({says}" in err
    assert read_manifest(tmp_path / "data" / "shards")["rows"] == {"kept": 20, reason: 1}


def test_a_reddit_dump_with_crlf_lines_reads_like_any_other(tmp_path, capfd):
    path = tmp_path / "RC.zst"
    path.write_bytes(zstandard.ZstdCompressor().compress(b"\r\n".join(GOOD_ROWS) + b"\r\n"))
    assert prepare(tmp_path, reddit_data(tmp_path, path), capfd)[0] == 0
    assert read_manifest(tmp_path / "data" / "shards")["rows"] == {"kept": 20}


def _frames_then(data: bytes) -> bytes:
    return zst(GOOD_ROWS) + data


# (case, the second file's bytes, what is reported about it)
BAD_REDDIT_FILES = [
    ("truncated", zst(GOOD_ROWS)[:-9], "the file ends in the middle of a compressed frame"),
    ("not zstd at all", gzip.compress(b"\n".join(GOOD_ROWS)), "corrupt compressed data"),
    ("empty", b"", "the file is empty"),
    ("garbage after a frame", _frames_then(b"\x00garbage" * 10), "corrupt compressed data"),
]


@pytest.mark.parametrize("case, data, says", BAD_REDDIT_FILES, ids=[c[0] for c in BAD_REDDIT_FILES])
def test_a_damaged_dump_is_reported_and_counted_and_alone_it_stops_the_run(tmp_path, capfd, case, data, says):
    (tmp_path / "dumps").mkdir()
    (tmp_path / "dumps" / "RC_a.zst").write_bytes(zst(GOOD_ROWS))
    (tmp_path / "dumps" / "RC_b.zst").write_bytes(data)
    status, _, err = prepare(tmp_path, reddit_data(tmp_path, tmp_path / "dumps"), capfd)
    assert status == 0 and f"RC_b.zst: {says}" in err and "complete lines before are kept" in err
    rows = read_manifest(tmp_path / "data" / "shards")["rows"]
    assert rows["truncated or corrupt files"] == 1 and rows["kept"] >= 20
    if case != "garbage after a frame":  # alone, the file gives nothing to train on: one error line
        (tmp_path / "dumps" / "RC_a.zst").unlink()
        status, error, _ = prepare(tmp_path, reddit_data(tmp_path, tmp_path / "dumps", data_dir=str(tmp_path / "d2")),
                                   capfd)
        assert status == 1 and f"{tmp_path / 'dumps'} gave no row that passed the filters" in error


def test_a_zst_holding_one_huge_line_is_read_in_bounded_memory(tmp_path, capfd):
    import tracemalloc

    path = tmp_path / "RC_bomb.zst"
    with open(path, "wb") as f, zstandard.ZstdCompressor(level=1).stream_writer(f) as w:
        w.write(GOOD_ROWS[0] + b"\n")
        for _ in range(256):  # one 256 MiB line: a few kB compressed
            w.write(b"a" * (1 << 20))
        w.write(b"\n" + GOOD_ROWS[1] + b"\n")
    assert path.stat().st_size < 100_000
    from data_modules.reddit import RedditDataModule

    dm = RedditDataModule(path=str(path), min_score=1, min_length=5, max_line_bytes=1 << 20)
    tracemalloc.start()
    try:
        texts = list(dm.documents())
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert len(texts) == 2 and dm.counts["too long"] == 1
    assert peak < 48 << 20, f"{peak / 2**20:.0f} MiB held for a 256 MiB line"


# --- FineWeb local files ---------------------------------------------------------------------------------------


def fineweb_data(tmp_path: Path, path: Path, **init_args) -> dict[str, Any]:
    return {"class_path": "data_modules.fineweb.FineWebDataModule",
            "init_args": {"path": str(path), "data_dir": str(tmp_path / "data"), "shard_size": 5000, "val_tokens": 100,
                          "test_tokens": 20, "num_proc": 1, "batch_size": 2, **init_args}}


GOOD_DOCS = [json.dumps({"text": f"document {i} has a few words"}).encode() for i in range(20)]

# (case, the bad line, the reason counted)
BAD_JSONL_LINES = [
    ("not JSON", b"{not json", "malformed JSON"),
    ("not an object", b'"just a string"', "not an object"),
    ("text a number", b'{"text": 42}', "'text' is not a string"),
    ("no text", b'{"id": 1}', "no 'text' field"),
    ("empty text", b'{"text": ""}', "empty 'text'"),
    ("deeply nested", b"[" * 1_500, "malformed JSON"),
    ("not UTF-8", b'{"text": "\xff"}', "malformed JSON"),
    ("longer than max_line_bytes", json.dumps({"text": "x" * 5000}).encode(), "line too long"),
]


@pytest.mark.parametrize("case, bad, reason", BAD_JSONL_LINES, ids=[c[0] for c in BAD_JSONL_LINES])
def test_a_bad_jsonl_line_is_skipped_counted_and_reported(tmp_path, capfd, case, bad, reason):
    path = tmp_path / "c.jsonl"
    path.write_bytes(b"\n".join(GOOD_DOCS[:3] + [bad] + GOOD_DOCS[3:]) + b"\n")
    status, _, err = prepare(tmp_path, fineweb_data(tmp_path, path, max_line_bytes=2000), capfd)
    assert status == 0 and f"{path}:4: skipped a row ({reason}" in err
    manifest = read_manifest(tmp_path / "data" / "shards")
    assert manifest["rows_skipped"] == {reason: 1} and manifest["documents"] == 20


@pytest.mark.parametrize("bom, newline", [(True, b"\n"), (False, b"\r\n"), (True, b"\r\n")], ids=["BOM", "CRLF", "BOM+CRLF"])
def test_jsonl_with_a_bom_or_crlf_reads_like_any_other(tmp_path, capfd, bom, newline):
    path = tmp_path / "c.jsonl"
    path.write_bytes((b"\xef\xbb\xbf" if bom else b"") + newline.join(GOOD_DOCS) + newline)
    assert prepare(tmp_path, fineweb_data(tmp_path, path), capfd)[0] == 0
    manifest = read_manifest(tmp_path / "data" / "shards")
    assert manifest["rows_skipped"] == {} and manifest["documents"] == 20


def corrupt_parquet(path: Path) -> Path:
    pq.write_table(pa.table({"text": [f"document {i} " * 5 for i in range(3000)]}), path, row_group_size=1000)
    column = pq.ParquetFile(path).metadata.row_group(2).column(0)
    start = column.dictionary_page_offset or column.data_page_offset
    data = bytearray(path.read_bytes())
    data[start : start + 40] = b"\xff" * 40  # the last row group's first page header: the footer stays sound
    path.write_bytes(bytes(data))
    return path


def test_parquet_with_corrupt_pages_keeps_the_rows_before_and_says_so(tmp_path, capfd):
    path = corrupt_parquet(tmp_path / "c.parquet")
    status, _, err = prepare(tmp_path, fineweb_data(tmp_path, path), capfd)
    assert status == 0 and f"{path}: stopped reading after an error (OSError: " in err
    kept = int(err.split(" past row ")[1].split(";")[0])
    manifest = read_manifest(tmp_path / "data" / "shards")
    assert manifest["rows_skipped"] == {"unreadable file tail": 1} and 1000 <= manifest["documents"] == kept < 3000


# (case, file name, bytes or a function writing the file, what the error line says)
BAD_FINEWEB_FILES = [
    ("empty jsonl", "c.jsonl", b"", "gave no documents with a non-empty 'text' (0 rows read)"),
    ("gz that is not gzip", "c.jsonl.gz", b'{"text": "plain"}\n', "skipped: {'unreadable file tail': 1}"),
    ("truncated gz, nothing complete", "c.jsonl.gz", gzip.compress(b"\n".join(GOOD_DOCS))[:30],
     "skipped: {'unreadable file tail': 1}"),
    ("parquet text column of numbers", "c.parquet", lambda p: pq.write_table(pa.table({"text": [1, 2]}), p),
     "column 'text' holds int64, not text"),
    ("not parquet", "c.parquet", b"PAR1 not really", "is not a readable parquet file"),
    ("parquet without the column", "c.parquet", lambda p: pq.write_table(pa.table({"body": ["x"]}), p),
     "has no column 'text' (columns: body); set data.text_field"),
]


@pytest.mark.parametrize("case, name, data, says", BAD_FINEWEB_FILES, ids=[c[0] for c in BAD_FINEWEB_FILES])
def test_an_unusable_fineweb_file_is_one_error_line(tmp_path, capfd, case, name, data, says):
    path = tmp_path / name
    data(path) if callable(data) else path.write_bytes(data)
    status, error, _ = prepare(tmp_path, fineweb_data(tmp_path, path), capfd)
    assert status == 1 and str(path) in error and says in error


def test_an_error_in_the_middle_of_a_datasets_stream_is_one_line(tmp_path, monkeypatch, capfd):
    import data_modules.fineweb as fineweb

    def rows(dataset, name, split):
        yield {"text": "first document of the stream"}
        raise ConnectionError("the hub went away")

    monkeypatch.setattr(fineweb, "stream_dataset", rows)
    data = fineweb_data(tmp_path, tmp_path)
    del data["init_args"]["path"]
    status, error, _ = prepare(tmp_path, data, capfd)
    assert status == 1 and "streaming HuggingFaceFW/fineweb-edu/sample-10BT [train] stopped after row 1" in error
    assert "ConnectionError: the hub went away" in error and "Run prepare again to resume" in error


# --- Wikipedia titles and the Shakespeare path -----------------------------------------------------------------


def test_an_empty_titles_file_is_named(tmp_path, capfd):
    (tmp_path / "titles.txt").write_text("\n  \n")
    status, error, _ = prepare(tmp_path, {"class_path": "data_modules.wikipedia.WikipediaDataModule", "init_args": {
        "data_dir": str(tmp_path / "data"), "titles_file": str(tmp_path / "titles.txt")}}, capfd)
    assert status == 1 and f"data.titles_file {tmp_path / 'titles.txt'} is empty" in error


def test_a_titles_file_with_a_bom_and_crlf_gives_clean_titles(tmp_path):
    from data_modules.wikipedia import WikipediaDataModule

    (tmp_path / "titles.txt").write_bytes(b"\xef\xbb\xbfAlan Turing\r\nAda Lovelace\r\n")
    dm = WikipediaDataModule(titles_file=str(tmp_path / "titles.txt"))
    assert dm.requested_titles() == ["Alan Turing", "Ada Lovelace"]


def test_a_damaged_wikipedia_cache_file_is_fetched_again(tmp_path, capfd):
    from data_modules.wikipedia import _read_cache

    (tmp_path / "a.json").write_text('{"requested": "X", "title": "X"')  # cut off
    (tmp_path / "b.json").write_text('{"requested": "X", "title": 5, "text": "t"}')
    (tmp_path / "c.json").write_text('{"requested": "X", "title": "X", "text": "t"}')
    assert _read_cache(tmp_path / "a.json", "requested") is None and _read_cache(tmp_path / "b.json", "requested") is None
    assert _read_cache(tmp_path / "c.json", "requested")["text"] == "t"
    assert "a.json: damaged cache file, fetched again" in capfd.readouterr().err


# (case, what data.path is, what the error line says)
BAD_SHAKESPEARE = [
    ("a directory", lambda d: d, "is a directory: set it to the text file itself"),
    ("missing", lambda d: d / "nope.txt", "does not exist"),
    ("empty", lambda d: (d / "e.txt").write_bytes(b"") and d / "e.txt" or d / "e.txt", "is empty"),
    ("not UTF-8", lambda d: (d / "b.txt").write_bytes(b"abc\xff" * 100) and d / "b.txt", "is not UTF-8 text (byte 3)"),
]


@pytest.mark.parametrize("case, make, says", BAD_SHAKESPEARE, ids=[c[0] for c in BAD_SHAKESPEARE])
def test_a_bad_shakespeare_path_is_one_error_line(tmp_path, capfd, case, make, says):
    (tmp_path / "in").mkdir()
    path = make(tmp_path / "in")
    status, error, _ = prepare(tmp_path, {"class_path": "data_modules.shakespeare.ShakespeareDataModule", "init_args": {
        "data_dir": str(tmp_path / "data"), "path": str(path)}}, capfd)
    assert status == 1 and str(path) in error and says in error


# (source, its data section with data.path at a pipe)
PIPES = [
    ("Shakespeare", lambda tmp_path, path: {"class_path": "data_modules.shakespeare.ShakespeareDataModule",
                                            "init_args": {"data_dir": str(tmp_path / "data"), "path": str(path)}}),
    ("FineWeb", lambda tmp_path, path: fineweb_data(tmp_path, path)),
    ("Reddit", lambda tmp_path, path: reddit_data(tmp_path, path)),
    ("Discord", lambda tmp_path, path: discord_data(tmp_path, path=str(path))),
]


@pytest.mark.parametrize("source, data", PIPES, ids=[c[0] for c in PIPES])
def test_a_pipe_as_data_path_is_named_as_one(tmp_path, capfd, source, data):
    # what `--data.path <(cat file)` gives: /dev/fd/63, a pipe, which can be read only once
    import os

    pipe = tmp_path / "fd63"
    os.mkfifo(pipe)
    try:
        status, error, _ = prepare(tmp_path, data(tmp_path, pipe), capfd)
    finally:  # had anything opened the pipe to read, it would wait for a writer: release it
        os.close(os.open(pipe, os.O_RDONLY | os.O_NONBLOCK))
    assert status == 1 and f"data.path {pipe} is a pipe, not a file" in error and "save it to a file first" in error


# (case, the four endings of the second example)
UNDECIDABLE_HELLASWAG = [
    ("four empty endings", ["", "", "", ""]),
    ("four identical endings", ["walks away."] * 4),
]


@pytest.mark.parametrize("case, endings", UNDECIDABLE_HELLASWAG, ids=[c[0] for c in UNDECIDABLE_HELLASWAG])
def test_a_hellaswag_row_that_cannot_be_decided_is_refused_by_line(tmp_path, capfd, case, endings):
    rows = [{"ctx": "A man", "endings": ["sits.", "runs.", "eats.", "sleeps."], "label": 1},
            {"ctx": "A woman", "endings": endings, "label": 2}]
    (tmp_path / "h.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    ckpt = write_checkpoint(tmp_path / "gpt2.ckpt", "gpt2")
    status, error, _ = run_main(["eval", "--ckpt_path", ckpt, "--data.path", str(tmp_path / "h.jsonl"),
                                 "--data.data_dir", str(tmp_path / "hellaswag"), "--trainer.logger", "false"], capfd)
    assert status == 1 and f"{tmp_path / 'h.jsonl'}:2: its 4 endings are identical" in error


def test_a_download_url_that_is_not_a_url_is_one_error_line(tmp_path, capfd):
    status, error, _ = prepare(tmp_path, {"class_path": "data_modules.shakespeare.ShakespeareDataModule", "init_args": {
        "data_dir": str(tmp_path / "data"), "url": "not a url"}}, capfd)
    assert status == 1 and "could not download Tiny Shakespeare from not a url" in error


def test_the_real_command_line_prints_one_error_line_and_exits_1(tmp_path):
    """The same contract end to end, in a fresh process: ``python main.py prepare`` with a half-written export."""
    import subprocess
    import sys

    path = tmp_path / "e.json"
    path.write_text(json.dumps({"messages": GOOD})[:-40])
    (tmp_path / "config.yaml").write_text(json.dumps({"data": discord_data(tmp_path, path=str(path))}))
    root = Path(__file__).parents[1]
    done = subprocess.run([sys.executable, str(root / "main.py"), "prepare", "--config", str(tmp_path / "config.yaml")],
                          capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert done.returncode == 1 and "Traceback" not in done.stderr
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and errors[0].startswith(f"error: {path} is not a readable DiscordChatExporter export "
                                                     f"(invalid JSON at line 1 column ")
    assert errors[0].endswith("export the channel again as JSON or CSV, or remove the file")


# --- any JSON at all: each shape check either accepts a row or says why not --------------------------------------

from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=8,
)


def near(template: dict[str, Any]) -> st.SearchStrategy:
    """Rows shaped like ``template`` with any field replaced by any JSON value, or dropped."""
    return st.fixed_dictionaries({}, optional={k: st.just(v) | json_values for k, v in template.items()}) | json_values


@settings(max_examples=300, deadline=None)
@given(near(msg(1, mentions=[{"id": "1", "name": "a"}], attachments=[{}])), near(api_msg(1, mentions=[{"id": "2"}])))
def test_any_discord_message_is_read_or_skipped_with_a_reason(export_row, api_row):
    from data_modules.discord_messages import BadMessage, from_api, from_export_json
    from lit_gpt_mini.chat_format import readable as render

    for parse, row in ((from_export_json, export_row), (from_api, api_row)):
        try:
            m = parse(row)
        except BadMessage as e:
            assert str(e)
            continue
        assert isinstance(m.content, str) and isinstance(m.author, str) and m.time.tzinfo is not None
        render(m.content, m.mentions)
        sorted([m, parse(msg(2))], key=lambda x: (x.time, x.id))  # comparable with any other message


@settings(max_examples=300, deadline=None)
@given(near({"body": "text of a comment", "title": "t", "selftext": "s", "author": "a", "subreddit": "r",
             "score": 3, "created_utc": 1672531200}))
def test_any_reddit_row_is_read_or_skipped_with_a_reason(row):
    from data_modules.reddit import RedditDataModule

    dm = RedditDataModule(path=".", start_date="2023-01-01", end_date="2023-02-01", subreddits=["r"], min_length=1)
    text = dm.text_of(row, "here")
    assert text is None or isinstance(text, str) and text
    assert sum(dm.counts.values()) == 1  # counted once: kept, or skipped for one reason


def test_a_server_trickling_its_answer_is_cut_off_and_the_retries_end():
    class Trickle(http.server.BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def do_GET(self):
            self.send_response(200)
            self.send_header("Content-Length", "100000")
            self.end_headers()
            try:
                for _ in range(200):
                    self.wfile.write(b" ")
                    self.wfile.flush()
                    time.sleep(0.02)
            except OSError:  # the client hung up
                pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Trickle)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/api"
    policy = RetryPolicy(max_wait=0.1, max_total_wait=0.25, timeout=0.3)
    start = time.monotonic()
    try:
        with DiscordClient(url, TOKEN, True, "$T", policy, say=lambda m: None) as client:
            with pytest.raises(DataError, match=r"gave up on .* the last answer: could not reach it \(ReadTimeout: the "
                                                r"answer took longer than 0.3 s\)"):
                client.get_json(url + "/channels/1/messages")
    finally:
        server.shutdown()
        server.server_close()
    assert time.monotonic() - start < 3
