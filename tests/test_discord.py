"""Discord: exports (JSON, CSV) with edge cases, the API path against a local fake server, the token kept secret."""

from __future__ import annotations

import http.server
import json
import threading
from urllib.parse import parse_qs, urlparse

import pytest
import torch

from data_modules.discord import DiscordDataModule
from data_modules.shards import read_manifest
from lit_gpt_mini.cli.main import main
from lit_gpt_mini.errors import ConfigError, DataError

from .conftest import CONFIGS

TOKEN = "MTIzNDU2Nzg5MDEyMzQ1Njc4.GaBcDe.secret-token-value-that-must-not-leak"


def message(i, content, minute, author="alice", bot=False, kind="Default", **extra):
    return {"id": str(1000 + i), "type": kind, "timestamp": f"2024-03-01T{10 + minute // 60:02d}:{minute % 60:02d}:00+00:00",
            "timestampEdited": None, "content": content, "author": {"id": str(100 + sum(map(ord, author))), "name": author, "nickname": author.title(), "isBot": bot},
            "attachments": [], "embeds": [], "mentions": [], **extra}


def export(tmp_path):
    messages = [
        message(1, "Hi everyone 👋 — ça va?", 0),
        message(2, "hey <@610>, look <:party:123456> <#42>", 1, author="bob", mentions=[{"id": "610", "name": "alice", "nickname": "Alice"}]),
        message(3, "edited to say: fixed it", 2, timestampEdited="2024-03-01T10:05:00+00:00"),
        message(4, "replying to you", 3, author="bob", kind="Reply", reference={"messageId": "1002"}),
        message(5, "I am a bot", 4, author="helper", bot=True),
        message(6, "", 5, kind="ChannelPinnedMessage"),
        message(7, "", 6, attachments=[{"url": "https://cdn/x.png"}]),
        message(8, "a new conversation after two hours", 130, author="carol"),
    ]
    path = tmp_path / "export.json"
    path.write_text(json.dumps({"guild": {"id": "1", "name": "G"}, "channel": {"id": "2", "name": "general"}, "messages": messages}))
    return path


def test_json_export_becomes_readable_conversations(tmp_path):
    dm = DiscordDataModule(data_dir=str(tmp_path / "d"), path=str(export(tmp_path)), conversation_gap_minutes=60)
    assert dm.conversations() == [
        "Alice: Hi everyone 👋 — ça va?\nBob: hey @Alice, look :party: #channel\nAlice: edited to say: fixed it\n"
        "Bob: replying to you",
        "Carol: a new conversation after two hours",
    ]
    anonymous = DiscordDataModule(data_dir=str(tmp_path / "d"), path=str(export(tmp_path)), anonymize_authors=True,
                                  keep_attachment_only=True)
    assert anonymous.conversations()[0].splitlines()[:2] == ["User1: Hi everyone 👋 — ça va?", "User2: hey @User1, look :party: #channel"]
    assert "User1: [attachment]" in anonymous.conversations()[0]


def test_csv_export(tmp_path):
    (tmp_path / "c.csv").write_text(
        '"AuthorID","Author","Date","Content","Attachments","Reactions"\n'
        '"1","alice#0001","2024-03-01T10:00:00+00:00","hello there","",""\n'
        '"2","bob#0002","2024-03-01T10:01:00+00:00","","https://cdn/x.png",""\n'
        '"2","bob#0002","2024-03-01T10:02:00+00:00","multi\nline","",""\n'
    )
    assert DiscordDataModule(path=str(tmp_path / "c.csv")).conversations() == ["alice#0001: hello there\nbob#0002: multi\nline"]
    (tmp_path / "bad.json").write_text('{"messages": [{"id": 1}]}')  # a message without a timestamp is skipped
    with pytest.raises(DataError, match=r"no Discord message with text .*skipped as malformed: \{\"no 'timestamp'\": 1\}"):
        DiscordDataModule(path=str(tmp_path / "bad.json")).conversations()
    (tmp_path / "bad.json").write_text('{"messages": 5}')
    with pytest.raises(DataError, match="bad.json is not a readable DiscordChatExporter export"):
        DiscordDataModule(path=str(tmp_path / "bad.json")).conversations()


class FakeDiscord(http.server.BaseHTTPRequestHandler):
    """Channel 77's history, 100 per page, newest first; one 429 and one exhausted-bucket header on the way."""

    messages: list = []
    requests: list = []
    throttled = False

    def log_message(self, *args):
        pass

    def do_GET(self):
        url = urlparse(self.path)
        query = {k: v[0] for k, v in parse_qs(url.query).items()}
        type(self).requests.append((url.path, query, self.headers.get("Authorization")))
        if self.headers.get("Authorization") != f"Bot {TOKEN}":
            return self._json(401, {"message": "401: Unauthorized", "code": 0})
        if not type(self).throttled and "before" in query:
            type(self).throttled = True
            return self._json(429, {"message": "You are being rate limited.", "retry_after": 0.05, "global": False})
        items = sorted(type(self).messages, key=lambda m: -int(m["id"]))
        if "before" in query:
            items = [m for m in items if int(m["id"]) < int(query["before"])]
        if "after" in query:
            items = [m for m in items if int(m["id"]) > int(query["after"])]
        page = items[: int(query.get("limit", 50))]
        self._json(200, page, {"X-RateLimit-Remaining": "0" if len(type(self).requests) == 1 else "4",
                               "X-RateLimit-Reset-After": "0.05"})

    def _json(self, status, body, headers=None):
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


def api_message(i, minute):
    return {"id": str(5000 + i), "type": 0, "timestamp": f"2024-03-01T{minute // 60:02d}:{minute % 60:02d}:00+00:00",
            "content": f"message number {i} in the channel", "author": {"id": str(i % 3), "username": f"user{i % 3}"},
            "attachments": [], "embeds": [], "mentions": []}


@pytest.fixture
def fake_api():
    FakeDiscord.messages = [api_message(i, i) for i in range(250)]
    FakeDiscord.requests, FakeDiscord.throttled = [], False
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), FakeDiscord)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/api/v10"
    server.shutdown()


def test_api_fetch_paginates_waits_out_rate_limits_caches_and_never_shows_the_token(tmp_path, fake_api, monkeypatch, capfd):
    monkeypatch.setenv("MY_DISCORD_TOKEN", TOKEN)
    dm = DiscordDataModule(data_dir=str(tmp_path / "d"), channel_ids=["77"], token_env="MY_DISCORD_TOKEN", api_url=fake_api)
    fetched = dm.fetch_channel("77")
    assert [m["id"] for m in fetched] == [str(5000 + i) for i in range(250)]  # oldest first, none twice
    pages = [q for path, q, _ in FakeDiscord.requests if path == "/api/v10/channels/77/messages"]
    assert len(pages) == 4 and pages[1] == pages[2]  # 100 + the refused request, retried + 100 + 50
    FakeDiscord.messages.append(api_message(250, 250))
    FakeDiscord.requests.clear()
    again = DiscordDataModule(data_dir=str(tmp_path / "d"), channel_ids=["77"], token_env="MY_DISCORD_TOKEN", api_url=fake_api)
    assert len(again.fetch_channel("77")) == 251
    assert [q for _, q, _ in FakeDiscord.requests] == [{"limit": "100", "after": "5249"}]  # only newer messages
    again.prepare_data()
    out = capfd.readouterr()
    assert "rate limit" in out.err and TOKEN not in out.out + out.err
    assert not any(TOKEN.encode() in p.read_bytes() for p in (tmp_path / "d").rglob("*") if p.is_file())


def test_a_refused_token_stops_with_a_message_and_no_token(tmp_path, fake_api, monkeypatch):
    monkeypatch.setenv("DISCORD_TOKEN", "wrong-token-value")
    dm = DiscordDataModule(data_dir=str(tmp_path / "d"), channel_ids=["77"], api_url=fake_api)
    with pytest.raises(DataError, match=r"Discord refused .* \(HTTP 401\): the token in \$DISCORD_TOKEN") as e:
        dm.fetch_channel("77")
    assert "wrong-token-value" not in str(e.value)
    monkeypatch.delenv("DISCORD_TOKEN")
    with pytest.raises(DataError, match="needs a token in the environment variable DISCORD_TOKEN"):
        dm.fetch_channel("77")
    with pytest.raises(ConfigError, match="must be the NAME of an environment variable") as e:
        DiscordDataModule(channel_ids=["77"], token_env=TOKEN)
    assert TOKEN not in str(e.value)


def test_tiny_fit_from_the_api_keeps_the_token_out_of_configs_and_checkpoints(tmp_path, fake_api, monkeypatch):
    monkeypatch.setenv("DISCORD_TOKEN", TOKEN)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "small.yaml").write_text("""
accumulation:
  total_batch_tokens: 128
trainer:
  callbacks:
    - class_path: lightning.pytorch.callbacks.ModelCheckpoint
      init_args: {dirpath: out/gpt2_discord/checkpoints, save_last: true}
""")
    cli = main(["fit", "--config", str(CONFIGS / "gpt2_discord.yaml"), "--config", "small.yaml",
                "--data.channel_ids", "[77]", "--data.api_url", fake_api,
                "--data.batch_size", "4", "--data.num_workers", "0", "--model.block_size", "32", "--model.n_layer", "1",
                "--model.n_head", "2", "--model.n_embd", "32", "--model.compile", "false", "--trainer.accelerator", "cpu",
                "--trainer.devices", "1", "--trainer.precision", "32-true", "--trainer.max_steps", "2",
                "--trainer.val_check_interval", "2", "--trainer.limit_val_batches", "2", "--trainer.enable_progress_bar", "false"])
    assert cli.trainer.global_step == 2
    assert read_manifest(tmp_path / "data/discord/shards")["documents"] >= 1
    written = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert any(p.name == "config.yaml" for p in written) and any(p.suffix == ".ckpt" for p in written)
    assert not [p for p in written if TOKEN.encode() in p.read_bytes()]
    assert torch.load(tmp_path / "out/gpt2_discord/checkpoints/last.ckpt", weights_only=True)["tokenizer"] == {"kind": "gpt2"}
