"""Tokenizers: the interface, the three kinds, the registry that rebuilds one from its stored dict, and the
recipe that says how a data source makes its tokenizer."""

from lit_gpt_mini.tokenizers.base import Tokenizer
from lit_gpt_mini.tokenizers.bpe import BPETokenizer
from lit_gpt_mini.tokenizers.char import CharTokenizer
from lit_gpt_mini.tokenizers.gpt2 import GPT2Tokenizer
from lit_gpt_mini.tokenizers.recipe import TokenizerRecipe
from lit_gpt_mini.tokenizers.registry import TOKENIZERS, tokenizer_from_dict

__all__ = [
    "BPETokenizer", "CharTokenizer", "GPT2Tokenizer", "Tokenizer", "TOKENIZERS", "TokenizerRecipe", "tokenizer_from_dict",
]
