"""Our byte-level BPE: trainer, file format, tiktoken-backed encoding checked against a pure-Python reference."""

from __future__ import annotations

import json

import pytest
import regex
from hypothesis import given, settings
from hypothesis import strategies as st

from lit_gpt_mini.errors import ConfigError, DataError
from lit_gpt_mini.tokenizers import tokenizer_from_dict
from lit_gpt_mini.tokenizers.recipe import load_tokenizer_file
from lit_gpt_mini.tokenizers import recipe
from lit_gpt_mini.tokenizers.bpe import EOT, PATTERNS, BPETokenizer, count_chunks, train_bpe

VARIED = [
    "Hello, world! It's 2026; we'll see... 1234567 numbers.",
    "  leading and   inner   spaces\n\n\ttabs\r\nand CRLF  \n",
    "Ünïcödé: naïve café, Æsir, straße, İstanbul, ﬁ ligature",
    "emoji 🤗👩‍👩‍👧‍👦🇫🇷 and combining e\u0301 a\u030a\u0323",
    "控制字符\x00\x01\x7f 中文 日本語のテキスト 한국어",
    "def f(x):\n    return x**2  # code\n",
    "",
]


@pytest.fixture(scope="module")
def shakespeare_bpe(shakespeare_path):
    return train_bpe([shakespeare_path.read_text(encoding="utf-8")], 1024, "gpt4", progress=False)


def reference_encode(tokenizer: BPETokenizer, text: str) -> list[int]:
    """Byte-level BPE by rank, in plain Python: split, then merge the adjacent pair whose concatenation has the
    lowest rank (leftmost first) until no pair is a token."""
    ranks = {token: i for i, token in enumerate(tokenizer.vocab)}
    ids = []
    for chunk in regex.findall(tokenizer.pattern, text):
        parts = [bytes([b]) for b in chunk.encode("utf-8")]
        while len(parts) > 1:
            best = min(range(len(parts) - 1), key=lambda i: ranks.get(parts[i] + parts[i + 1], float("inf")))
            if parts[best] + parts[best + 1] not in ranks:
                break
            parts[best : best + 2] = [parts[best] + parts[best + 1]]
        ids += [ranks[p] for p in parts]
    return ids


def test_merges_of_a_hand_checked_corpus():
    # "aaabdaaabac": (a,a) x4 first; then (aa,a)/(a,b) tie at 2 and the smaller ids win: (a,b); then (aa,ab) x2
    tok = train_bpe(["aaabdaaabac"], vocab_size=256 + 3 + 1, pattern="gpt2", progress=False)
    assert tok.merges == [(97, 97), (97, 98), (256, 257)]
    assert [tok.token_bytes(i) for i in (256, 257, 258, 259)] == [b"aa", b"ab", b"aaab", EOT.encode()]
    assert tok.encode("aaabdaaabac") == [258, 100, 258, 97, 99]
    assert tok.vocab_size == 260 and tok.eot_id == 259


def test_training_is_deterministic_and_the_same_in_parallel(shakespeare_path, shakespeare_bpe):
    text = shakespeare_path.read_text(encoding="utf-8")
    again = train_bpe([text], 1024, "gpt4", progress=False)
    assert again.merges == shakespeare_bpe.merges and again.name == shakespeare_bpe.name
    assert count_chunks([text * 3], "gpt4", num_proc=2) == count_chunks([text * 3], "gpt4", num_proc=1)
    assert shakespeare_bpe.vocab_size == 1024 and len(set(shakespeare_bpe.vocab)) == 1023


def test_stored_dict_round_trips(tmp_path, shakespeare_bpe):
    data = json.loads(json.dumps(shakespeare_bpe.to_dict()))  # as in tokenizer.json and checkpoints
    assert data["pattern"] == PATTERNS["gpt4"] and data["special_tokens"] == [EOT]
    loaded = tokenizer_from_dict(data)
    assert loaded == shakespeare_bpe and loaded.name == shakespeare_bpe.name
    assert loaded.encode(VARIED[0]) == shakespeare_bpe.encode(VARIED[0])


@pytest.mark.parametrize("pattern", ["gpt2", "gpt4"])
def test_tiktoken_encoding_matches_the_reference_encoder(shakespeare_path, pattern):
    text = shakespeare_path.read_text(encoding="utf-8")
    tok = train_bpe([text[:300_000]], 800, pattern, progress=False)
    for sample in VARIED + [text[300_000:320_000], text[-5000:]]:
        assert tok.encode(sample) == reference_encode(tok, sample), sample[:40]


@settings(max_examples=300, deadline=None)
@given(st.text())
def test_any_unicode_text_round_trips(shakespeare_bpe, text):
    assert shakespeare_bpe.decode(shakespeare_bpe.encode(text)) == text


@settings(max_examples=100, deadline=None)
@given(st.text(alphabet=st.characters(codec=None, categories=["Cs", "Ll", "Zs"])))
def test_surrogates_are_paired_or_replaced(shakespeare_bpe, text):
    # a high + low surrogate pair is the character it encodes in UTF-16; a lone surrogate becomes U+FFFD
    expected, i = [], 0
    while i < len(text):
        c = ord(text[i])
        if 0xD800 <= c < 0xDC00 and i + 1 < len(text) and 0xDC00 <= ord(text[i + 1]) < 0xE000:
            expected.append(chr(0x10000 + ((c - 0xD800) << 10) + ord(text[i + 1]) - 0xDC00))
            i += 2
            continue
        expected.append("\ufffd" if 0xD800 <= c < 0xE000 else text[i])
        i += 1
    expected = "".join(expected)
    assert shakespeare_bpe.decode(shakespeare_bpe.encode(text)) == expected


def test_bad_input_is_refused_clearly(tmp_path):
    with pytest.raises(ConfigError, match=r"vocab_size \(200\) must be at least 256 byte tokens \+ 1 special"):
        train_bpe(["some text"], 200, progress=False)
    with pytest.raises(DataError, match="training text is empty"):
        train_bpe(["", ""], 300, progress=False)
    bad = tmp_path / "tokenizer.json"  # merges that do not make a vocabulary
    bad.write_text(json.dumps({"format": recipe.FORMAT, "version": recipe.VERSION, "tokenizer": {
        "kind": "bpe", "pattern": "x", "special_tokens": [], "merges": [[999, 3]]}}))
    with pytest.raises(DataError, match=f"{bad} is corrupt.*delete it and run the preparation again"):
        recipe.load_tokenizer_file(bad)
    bad.write_text("{truncated")
    with pytest.raises(DataError, match="unreadable"):
        recipe.load_tokenizer_file(bad)


def test_bpe_shakespeare_config_fits_and_samples_through_the_cli(tmp_path, monkeypatch, shakespeare_path):
    from lit_gpt_mini.cli.main import main
    from lit_gpt_mini.inference.generate import generate

    from .conftest import CONFIGS

    monkeypatch.chdir(tmp_path)
    args = ["fit", "--config", str(CONFIGS / "bpe_shakespeare.yaml"), "--data.path", str(shakespeare_path),
            "--data.tokenizer.vocab_size", "512", "--model.block_size", "32",
            "--model.n_layer", "1", "--trainer.max_steps", "6", "--trainer.val_check_interval", "3",
            "--trainer.limit_val_batches", "2"]
    cli = main(args)
    assert cli.trainer.global_step == 6 and cli.model.config.vocab_size == 512
    saved, record = load_tokenizer_file(tmp_path / "data/shakespeare_bpe/tokenizer.json")
    assert saved == cli.datamodule.tokenizer and record["recipe"]["vocab_size"] == 512
    ckpt = tmp_path / "out/bpe_shakespeare/checkpoints/last.ckpt"
    (sample,) = generate(str(ckpt), prompt="ROMEO:", max_new_tokens=20, seed=1)
    assert sample.startswith("ROMEO:") and len(sample) > len("ROMEO:")
