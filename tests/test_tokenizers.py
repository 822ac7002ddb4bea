import numpy as np
import pytest

from lit_gpt_mini.tokenizers import CharTokenizer, tokenizer_from_dict


def test_char_tokenizer_round_trip_and_sorted_alphabet():
    text = "hello, World!\nÆsir ☃"
    tok = CharTokenizer.from_text(text)
    assert tok.vocab_size == len(set(text))
    assert tok.chars == sorted(set(text))
    assert tok.decode(tok.encode(text)) == text


def test_vectorised_encoding_matches_encode():
    text = "To be, or not to be: that is the question. ☃\n" * 50
    tok = CharTokenizer.from_text(text)
    arr = tok.encode_to_array(text)
    assert arr.dtype == np.uint16
    assert arr.tolist() == tok.encode(text)


def test_unknown_character_is_named():
    tok = CharTokenizer.from_text("abc")
    with pytest.raises(ValueError, match="'z'"):
        tok.encode("abz")
    with pytest.raises(ValueError, match="'z'"):
        tok.encode_to_array("abz")
    with pytest.raises(ValueError, match="'☃'"):
        tok.encode_to_array("a☃")


def test_to_dict_is_plain_and_restores_an_equal_tokenizer():
    tok = CharTokenizer.from_text("the cat sat\n")
    data = tok.to_dict()
    assert data == {"kind": "char", "chars": "\n acehst"}
    assert tokenizer_from_dict(data) == tok
    assert tokenizer_from_dict(data) != CharTokenizer.from_text("other")


def test_unknown_kind_is_refused():
    with pytest.raises(ValueError, match="unknown tokenizer kind"):
        tokenizer_from_dict({"kind": "sentencepiece"})
