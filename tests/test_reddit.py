"""Reddit dumps: streamed .zst NDJSON, filters, malformed and truncated files, shards (training: tests/test_recipes.py)."""

from __future__ import annotations

import json

import pytest
import torch
import zstandard

from data_modules.reddit import RedditDataModule
from data_modules.shards import read_manifest
from lit_gpt_mini.cli.main import main
from lit_gpt_mini.errors import ConfigError, DataError
from lit_gpt_mini.tokenizers import TokenizerRecipe

from .conftest import CONFIGS


DAY = 86400
JAN1 = 1672531200  # 2023-01-01 UTC


def rows(docs):
    out = [
        {"title": "Submission title", "selftext": "and its body, long enough", "author": "bob", "subreddit": "python", "score": 5, "created_utc": JAN1},
        {"title": "Link post with no body text", "selftext": "", "author": "carol", "subreddit": "Python", "score": 2, "created_utc": JAN1},
        {"body": "[deleted]", "author": "[deleted]", "subreddit": "Python", "score": 9, "created_utc": JAN1},
        {"body": "I am a bot, this action was performed automatically", "author": "AutoModerator", "subreddit": "Python", "score": 1, "created_utc": JAN1},
        {"body": "beep boop, a helpful bot comment here", "author": "helper_bot", "subreddit": "Python", "score": 3, "created_utc": JAN1},
        {"body": "a comment in another subreddit entirely", "author": "dan", "subreddit": "cats", "score": 3, "created_utc": JAN1},
        {"body": "downvoted but long enough comment", "author": "erin", "subreddit": "Python", "score": -2, "created_utc": JAN1},
        {"body": "short", "author": "frank", "subreddit": "Python", "score": 4, "created_utc": JAN1},
        {"body": "posted in February, after the date range", "author": "gina", "subreddit": "Python", "score": 4, "created_utc": JAN1 + 40 * DAY},
    ]
    out += [{"body": d, "author": f"user{i}", "subreddit": "Python", "score": 1, "created_utc": JAN1 + DAY} for i, d in enumerate(docs)]
    return out


def write_zst(path, items, extra_lines=(), level=3):
    lines = [json.dumps(r) for r in items] + list(extra_lines)
    path.write_bytes(zstandard.ZstdCompressor(level=level).compress(("\n".join(lines) + "\n").encode()))
    return path


def module(tmp_path, path, **kwargs):
    defaults = dict(data_dir=str(tmp_path / "data"), subreddits=["python"], min_score=1, min_length=20,
                    start_date="2023-01-01", end_date="2023-02-01", shard_size=20_000, val_tokens=2_000,
                    batch_size=4)
    return RedditDataModule(path=str(path), **{**defaults, **kwargs})


def test_filters_keep_the_right_rows_and_count_the_others(tmp_path, shakespeare_docs, capfd):
    dump = write_zst(tmp_path / "RC_2023-01.zst", rows(shakespeare_docs[:50]), ["{not json", '["a list"]'])
    dm = module(tmp_path, dump)
    texts = list(dm.documents())
    assert texts[:2] == ["Submission title\n\nand its body, long enough", "Link post with no body text"]
    assert len(texts) == 2 + sum(len(d) >= 20 for d in shakespeare_docs[:50])
    assert dm.counts["deleted or removed"] == 1 and dm.counts["bot author"] == 2
    assert dm.counts["other subreddit"] == 1 and dm.counts["low score"] == 1 and dm.counts["outside the dates"] == 1
    assert dm.counts["malformed"] == 2
    assert f"{dump}:{len(rows(shakespeare_docs[:50])) + 1}: malformed line skipped" in capfd.readouterr().err


def test_truncated_dump_keeps_what_was_read_and_says_where_it_stopped(tmp_path, shakespeare_docs, capfd):
    data = write_zst(tmp_path / "full.zst", rows(shakespeare_docs[:3000])).read_bytes()
    (tmp_path / "dumps").mkdir()
    (tmp_path / "dumps" / "RC_cut.zst").write_bytes(data[: len(data) // 2])
    dm = module(tmp_path, tmp_path / "dumps", subreddits=[], start_date=None, end_date=None)
    kept = list(dm.documents())
    err = capfd.readouterr().err
    assert "RC_cut.zst: the file ends in the middle of a compressed frame" in err and "complete lines before are kept" in err
    assert 100 < len(kept) < 3000 and dm.counts["truncated or corrupt files"] == 1
    assert all(text in shakespeare_docs or text.startswith(("Submission", "Link", "beep", "a comment", "downvoted", "posted")) for text in kept)


def test_prepare_writes_shards_with_gpt2_or_our_bpe(tmp_path, shakespeare_docs):
    dump = write_zst(tmp_path / "RC.zst", rows(shakespeare_docs[:2000]))
    dm = module(tmp_path, dump)
    dm.prepare_data()
    manifest = read_manifest(dm.shard_dir)
    assert manifest["tokenizer"] == {"kind": "gpt2"} and manifest["rows"]["kept"] == manifest["documents"]
    bpe = module(tmp_path, dump, data_dir=str(tmp_path / "bpe"), tokenizer=TokenizerRecipe("bpe", vocab_size=400))
    bpe.prepare_data()
    bpe.setup("fit")
    bpe.connect(32)
    assert bpe.tokenizer.vocab_size == 400 and read_manifest(bpe.shard_dir)["tokenizer"]["kind"] == "bpe"
    windows = next(iter(bpe.train_dataloader()))
    assert windows.shape == (4, 33) and int(windows.long().max()) < 400


def test_bad_input_is_clear(tmp_path):
    with pytest.raises(ConfigError, match="start_date must be a date like 2023-01-31"):
        module(tmp_path, tmp_path, start_date="January")
    with pytest.raises(DataError, match="does not exist"):
        module(tmp_path, tmp_path / "nope.zst").files()
    dump = write_zst(tmp_path / "RC.zst", rows([]))
    with pytest.raises(DataError, match="gave no row that passed the filters"):
        module(tmp_path, dump, subreddits=["nothing_here"]).prepare_data()


def test_the_laptop_chat_recipe_trains_on_reddit_with_its_data_section_swapped(tmp_path, monkeypatch, shakespeare_docs):
    dump = write_zst(tmp_path / "RC.zst", rows(shakespeare_docs[:2000]))
    monkeypatch.chdir(tmp_path)
    # configs/discord_cpu.yaml's trainer and model sections as shipped; the data section is Reddit's
    (tmp_path / "reddit_data.yaml").write_text(f"""
data:
  class_path: data_modules.reddit.RedditDataModule
  init_args:
    path: {dump}
    data_dir: data/reddit_bpe
    subreddits: [Python]
    tokenizer: {{kind: bpe, vocab_size: 512, pattern: gpt4}}
    val_tokens: 2000
    shard_size: 50000
    batch_size: 4
""")
    cli = main(["fit", "--config", str(CONFIGS / "discord_cpu.yaml"), "--config", "reddit_data.yaml",
                "--model.block_size", "32", "--model.n_layer", "1", "--model.n_head", "2", "--model.n_embd", "32",
                "--trainer.max_steps", "2", "--trainer.val_check_interval", "2", "--trainer.limit_val_batches", "2"])
    assert type(cli.datamodule).__name__ == "RedditDataModule" and cli.trainer.global_step == 2
    ckpt = torch.load(tmp_path / "out/discord_cpu/checkpoints/last.ckpt", weights_only=True)
    assert ckpt["tokenizer"]["kind"] == "bpe" and ckpt["text_format"] == "text"  # Reddit posts: plain text
