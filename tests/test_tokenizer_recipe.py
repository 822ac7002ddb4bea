"""The tokenizer recipe and its lifecycle: built once in prepare_data, saved beside the shards, reused, rebuilt
when the recipe changes, loaded by setup; every source with every kind; ids past 16 bits."""

from __future__ import annotations

import itertools
import json

import numpy as np
import pytest

from data_modules.base import StreamedTokenDataModule
from data_modules.discord import DiscordDataModule
from data_modules.fineweb import FineWebDataModule
from data_modules.reddit import RedditDataModule
from data_modules.shakespeare import ShakespeareDataModule
from data_modules.shards import read_header, read_manifest
from lit_gpt_mini.errors import ConfigError, DataError
from lit_gpt_mini.files import sha256_of
from lit_gpt_mini.tokenizers import BPETokenizer, CharTokenizer, TokenizerRecipe
from lit_gpt_mini.tokenizers.bpe import first_chars
from lit_gpt_mini.tokenizers.recipe import load_or_build, load_tokenizer_file

from .conftest import write_jsonl
from .test_discord import export
from .test_reddit import rows, write_zst


def test_recipe_caps_the_stream_deterministically_and_checks_its_values():
    recipe = TokenizerRecipe("bpe", max_chars=6)
    assert list(first_chars(["abc", "defg", "hij"], recipe.max_chars)) == ["abc", "def"]
    assert list(first_chars(iter(["abc", "defg"]), None)) == ["abc", "defg"]
    assert TokenizerRecipe("char", max_chars=2).build(["ab", "cd"]) == CharTokenizer(["a", "b"])
    # what changes the tokenizer, and only that
    assert TokenizerRecipe("gpt2").identity() == {"kind": "gpt2"}
    assert TokenizerRecipe("bpe", vocab_size=300).identity() != TokenizerRecipe("bpe", vocab_size=301).identity()
    assert TokenizerRecipe("bpe").identity() == {"kind": "bpe", "vocab_size": 4096, "pattern": "gpt4", "max_chars": None}
    # a setting of the BPE is refused by the kinds that have no BPE to set up
    for kind, key in [("gpt2", "vocab_size"), ("char", "vocab_size"), ("gpt2", "pattern"), ("char", "pattern")]:
        with pytest.raises(ConfigError, match=rf"data.tokenizer.{key} sets up a BPE, but data.tokenizer.kind is {kind}"):
            TokenizerRecipe(kind, **{key: 1024 if key == "vocab_size" else "gpt2"})
    with pytest.raises(ConfigError, match="gpt2 learns nothing"):
        TokenizerRecipe("gpt2", max_chars=10)
    with pytest.raises(ConfigError, match="vocab_size is 100"):
        TokenizerRecipe("bpe", vocab_size=100)
    with pytest.raises(ConfigError, match="max_chars must be positive"):
        TokenizerRecipe("char", max_chars=0)


def test_bpe_is_trained_from_a_stream_never_a_list(tmp_path, monkeypatch):
    seen = {}

    def fake_train(texts, vocab_size, pattern, num_proc=1, progress=True, max_chars=None):
        seen["type"] = type(texts)
        seen["texts"] = list(first_chars(texts, max_chars))
        return BPETokenizer([(104, 105)], pattern)

    monkeypatch.setattr("lit_gpt_mini.tokenizers.recipe.train_bpe", fake_train)
    stream = (text for text in ["hi there", "hi again"])
    tokenizer, built = load_or_build(tmp_path / "t.json", TokenizerRecipe("bpe", max_chars=10), {"c": 1}, lambda: stream)
    assert built and seen["type"] is not list and seen["texts"] == ["hi there", "hi"]
    assert load_tokenizer_file(tmp_path / "t.json")[0] == tokenizer


def _no_training(*args, **kwargs):
    raise AssertionError("the tokenizer was built again")


def test_saved_tokenizer_is_reused_rebuilt_for_a_new_recipe_and_named_when_damaged(tmp_path, small_text, monkeypatch):
    def module(vocab_size):
        return ShakespeareDataModule(data_dir=str(tmp_path / "d"), path=str(small_text), batch_size=2,
                                     tokenizer=TokenizerRecipe("bpe", vocab_size=vocab_size), num_proc=1)

    first = module(300)
    first.prepare_data()
    path = tmp_path / "d/tokenizer.json"
    manifest = read_manifest(first.shard_dir)
    assert manifest["tokenizer_file"] == {"file": "../tokenizer.json", "sha256": sha256_of(path)}
    saved = path.read_bytes()

    # a second run (another process: a new module) reuses the file without training
    monkeypatch.setattr("lit_gpt_mini.tokenizers.recipe.train_bpe", _no_training)
    again = module(300)
    again.prepare_data()
    again.setup("fit")
    assert again.tokenizer == first.tokenizer and path.read_bytes() == saved

    # another recipe: the shards of the old tokenizer are refused before the tokenizer is replaced...
    with pytest.raises(DataError, match="prepared with other settings.*tokenizer_recipe"):
        module(320).prepare_data()
    assert path.read_bytes() == saved
    # ...and without them, the tokenizer is built again from the new recipe
    monkeypatch.undo()
    for shard in first.shard_dir.iterdir():
        shard.unlink()
    changed = module(320)
    changed.prepare_data()
    changed.setup("fit")
    assert changed.tokenizer.vocab_size == 320 and json.loads(path.read_text())["recipe"]["vocab_size"] == 320

    # a damaged file: one error naming it, from setup (every rank) and from the preparation
    path.write_text('{"format": "lit-gpt-mini tokenizer", "version": 1, "tokenizer": {"kind": "bpe", "merges": [[1')
    with pytest.raises(DataError, match=f"tokenizer file {path} is unreadable"):
        module(320).setup("fit")
    with pytest.raises(DataError, match=f"tokenizer file {path} is unreadable"):
        module(320).prepare_data()
    path.write_text(json.dumps({"format": "lit-gpt-mini tokenizer", "version": 1, "tokenizer": {"kind": "bpe"}}))
    with pytest.raises(DataError, match=f"tokenizer file {path} is corrupt"):
        module(320).setup("fit")


def test_setup_without_preparation_says_so(tmp_path, small_text):
    dm = ShakespeareDataModule(data_dir=str(tmp_path / "d"), path=str(small_text))
    with pytest.raises(DataError, match="tokenizer.json does not exist: run the preparation first"):
        dm.setup("fit")


def test_val_fraction_and_val_tokens_apply_each_to_its_kind_of_source(tmp_path, small_text, monkeypatch, capsys):
    # a source read whole holds out a fraction of its tail, a streamed one the tokens at its head: each is only
    # an argument of its own kind, and the other is refused as an unknown key that names it
    from lit_gpt_mini.cli.main import main

    from .conftest import CONFIGS

    monkeypatch.chdir(tmp_path)
    for config, key, other in [("debug_char.yaml", "val_tokens", "val_fraction"),
                               ("debug_gpt2.yaml", "val_fraction", "val_tokens")]:
        with pytest.raises(SystemExit):
            main(["fit", "--config", str(CONFIGS / config), f"--data.{key}", "0.1"])
        assert capsys.readouterr().err.startswith(
            f"error: unknown key data.{key} (on the command line): did you mean data.{other}?")
    with pytest.raises(ConfigError, match="val_fraction must be between 0 and 1"):
        ShakespeareDataModule(path=str(small_text), val_fraction=1.5)
    assert ShakespeareDataModule(path=str(small_text)).val_fraction == 0.1
    assert RedditDataModule(path=str(small_text)).val_tokens is None  # the first shard
    with pytest.raises(ConfigError, match="num_proc is 0; it must be positive"):
        RedditDataModule(path=str(small_text), num_proc=0)


def _source(name, tmp_path, docs, kind):
    recipe = TokenizerRecipe(kind, vocab_size=300 if kind == "bpe" else None)
    common = dict(data_dir=str(tmp_path / name), tokenizer=recipe, batch_size=2, num_proc=1)
    if name == "shakespeare":
        (tmp_path / "text.txt").write_text("".join(docs[:40]))
        return ShakespeareDataModule(path=str(tmp_path / "text.txt"), **common)
    if name == "fineweb":
        path = write_jsonl(tmp_path / "docs.jsonl", docs[:60])
        return FineWebDataModule(path=str(path), shard_size=2000, val_tokens=500, **common)
    if name == "reddit":
        dump = write_zst(tmp_path / "RC.zst", rows(docs[:200]))
        return RedditDataModule(path=str(dump), shard_size=2000, val_tokens=500, **common)
    return DiscordDataModule(path=str(export(tmp_path)), **common)


@pytest.mark.parametrize("name,kind", itertools.product(["shakespeare", "fineweb", "reddit", "discord"],
                                                         ["char", "bpe", "gpt2"]))
def test_every_source_takes_every_kind(tmp_path, shakespeare_docs, name, kind):
    dm = _source(name, tmp_path, shakespeare_docs, kind)
    dm.prepare_data()
    fresh = _source(name, tmp_path, shakespeare_docs, kind)  # another process: loads the saved file
    fresh.setup("fit")
    assert fresh.tokenizer.kind == kind and fresh.tokenizer == dm.tokenizer
    manifest = read_manifest(fresh.shard_dir)
    assert manifest["tokenizer"]["kind"] == kind
    assert manifest["tokenizer_file"]["sha256"] == sha256_of(fresh.tokenizer_path)
    ids = fresh.train_shards.read(0, np.array([0]), 8)[0]
    assert int(ids.max()) < fresh.tokenizer.vocab_size
    if kind == "bpe":
        assert fresh.tokenizer.vocab_size <= 300
    if kind != "char":  # documents start with the end-of-text token (char alphabets have none)
        assert fresh.tokenizer.eot_id is not None


class _Documents(StreamedTokenDataModule):
    """A list of documents as a streaming source."""

    def __init__(self, docs, **kwargs):
        super().__init__(**kwargs)
        self.docs = docs

    def documents(self):
        return iter(self.docs)

    def corpus(self):
        return {"documents": len(self.docs)}


def test_a_vocabulary_past_16_bits_writes_uint32_shards_that_round_trip(tmp_path, monkeypatch):
    # Every pair of bytes as a merge, the pair "zz" last: 256 + 65,536 + 1 tokens, "zz" is id 65,791.
    pairs = [(a, b) for a in range(256) for b in range(256) if (a, b) != (122, 122)] + [(122, 122)]
    big = BPETokenizer(pairs)
    assert big.vocab_size == 65_793 and big.dtype == np.uint32
    monkeypatch.setattr(TokenizerRecipe, "build", lambda self, documents, num_proc=1, progress=True: big)
    docs = ["zz top, zz!", "jazz buzz fizz", "the quick brown fox " * 5]
    dm = _Documents(docs, data_dir=str(tmp_path / "d"), tokenizer=TokenizerRecipe("bpe"), val_tokens=8, shard_size=64,
                    num_proc=1)
    dm.prepare_data()
    dm.setup("fit")
    headers = [read_header(p) for p in sorted(dm.shard_dir.glob("*.bin"))]
    assert {h.itemsize for h in headers} == {4}
    stream = np.concatenate([dm.val_shards.read(0, np.array([0]), dm.val_shards.num_tokens)[0],
                             dm.test_shards.read(0, np.array([0]), dm.test_shards.num_tokens)[0]]
                            + [dm.train_shards.read(i, np.array([0]), n)[0] for i, n in enumerate(dm.train_shards.lengths)])
    assert int(stream.max()) > 65_535 and 65_791 in stream.tolist()
    eot = big.eot_id
    texts = [big.decode(part) for part in np.split(stream, np.flatnonzero(stream == eot))[1:]]
    assert [t.removeprefix(big.decode([eot])) for t in texts] == docs
