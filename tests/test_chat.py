"""``main.py chat``: turns rendered as the Discord data module renders messages, answers cut at the next speaker,
a continuation loop for plain-text models, every tokenizer kind and file kind, piped standard input."""

from __future__ import annotations

import io
import re
import subprocess
import sys

import pytest
import torch

from lit_gpt_mini.checkpoint import load_model, save_pth
from lit_gpt_mini.cli.main import main
from lit_gpt_mini.inference.generate import generate
from lit_gpt_mini.model import GPT, GPTConfig
from lit_gpt_mini.tokenizers import tokenizer_from_dict

from .conftest import ROOT


pytestmark = pytest.mark.usefixtures("single_thread")


def chat(monkeypatch, capsys, ckpt, typed: str, *options: str) -> list[str]:
    """The lines ``main.py chat`` prints for ``typed`` piped to it (in-process)."""
    monkeypatch.setattr(sys, "stdin", io.StringIO(typed))
    main(["chat", "--ckpt_path", str(ckpt), *options])
    return capsys.readouterr().out.splitlines()


def free_run(ckpt, text: str, seed: int, max_new_tokens: int, temperature: float = 0.8, top_k: int = 200) -> str:
    """What the model writes after ``text`` (a document's start: end-of-text first) with nothing stopping it."""
    loaded = load_model(ckpt)
    ids = [loaded.tokenizer.eot_id] + loaded.tokenizer.encode(text)
    out = loaded.model.generate(torch.tensor([ids]), max_new_tokens, temperature, top_k,
                                generator=torch.Generator().manual_seed(seed))
    new = out[0, len(ids):].tolist()
    eot = loaded.tokenizer.eot_id
    return loaded.tokenizer.decode(new[: new.index(eot)] if eot in new else new)


def test_a_turn_is_a_discord_line_and_the_answer_stops_at_the_next_speaker(monkeypatch, capsys, chat_checkpoint):
    cuts = 0
    for seed in range(6):
        lines = chat(monkeypatch, capsys, chat_checkpoint, "Good morrow, sweet lady.\n", "--user", "ROMEO", "--bot",
                     "JULIET", "--seed", str(seed), "--max_new_tokens", "100")
        assert lines[0].startswith(f"Chatting with {chat_checkpoint} (conversation model: you speak as 'ROMEO', "
                                   f"the model answers as 'JULIET')")
        assert lines[1] == "ROMEO: Good morrow, sweet lady."
        answer = "\n".join(lines[2:])
        # the same prompt and seed with nothing stopping the model: the answer is its text up to the next speaker
        free = free_run(chat_checkpoint, "ROMEO: Good morrow, sweet lady.\nJULIET:", seed, max_new_tokens=100)
        cut = re.search(r"\n[^\n:]{1,40}: ", free)
        assert answer == "JULIET: " + (free[: cut.start()] if cut else free).lstrip()
        cuts += cut is not None
    assert cuts >= 2, "the model wrote another speaker's line in fewer than 2 of 6 answers: nothing was cut"


def test_reset_forgets_and_quit_leaves(monkeypatch, capsys, chat_checkpoint):
    greedy = ["--user", "ROMEO", "--bot", "JULIET", "--temperature", "0", "--max_new_tokens", "20"]
    fresh = chat(monkeypatch, capsys, chat_checkpoint, "What say you?\n", *greedy)
    lines = chat(monkeypatch, capsys, chat_checkpoint,
                 "Good morrow.\n/reset\nWhat say you?\n/quit\nnever read\n", *greedy)
    assert "(conversation reset)" in lines
    after = lines[lines.index("(conversation reset)") + 1:]
    assert after == fresh[1:]  # the answer after /reset is the answer to that turn alone
    assert not any("never read" in line for line in lines)


def test_a_plain_text_model_continues_the_text(monkeypatch, capsys, chat_checkpoint):
    lines = chat(monkeypatch, capsys, chat_checkpoint, "ROMEO:\n", "--mode", "text", "--temperature", "0",
                 "--max_new_tokens", "30")
    assert "plain-text model: each line you type is appended to the text and continued" in lines[0]
    (expected,) = generate(str(chat_checkpoint), prompt="ROMEO:", max_new_tokens=30, temperature=0, stream=False,
                           stop_at_eot=True)
    assert "\n".join(lines[1:]) == expected


def test_an_exported_pth_chats_as_its_checkpoint(monkeypatch, capsys, chat_checkpoint, tmp_path):
    main(["export", "--ckpt_path", str(chat_checkpoint), "--out", str(tmp_path / "m.pth")])
    assert load_model(tmp_path / "m.pth").text_format == "chat"  # the export keeps what the model's text is
    capsys.readouterr()
    typed = "Good morrow.\nAnd you?\n"
    from_ckpt = chat(monkeypatch, capsys, chat_checkpoint, typed, "--bot", "JULIET", "--max_new_tokens", "15")
    from_pth = chat(monkeypatch, capsys, tmp_path / "m.pth", typed, "--bot", "JULIET", "--max_new_tokens", "15")
    assert from_pth[1:] == from_ckpt[1:] and len(from_ckpt) >= 5


@pytest.mark.parametrize("kind", ["char", "bpe", "gpt2"])
def test_every_tokenizer_kind_chats_and_continues(kind, monkeypatch, capsys, chat_checkpoint, tmp_path):
    tokenizers = {"char": {"kind": "char", "chars": "".join(sorted(set("abcdefghijklmnopqrstuvwxyz :\n!")))},
                  "bpe": load_model(chat_checkpoint).tokenizer.to_dict(), "gpt2": {"kind": "gpt2"}}
    vocab = tokenizer_from_dict(tokenizers[kind]).vocab_size
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=vocab, block_size=32, n_layer=1, n_head=2, n_embd=16))
    for text_format in ("chat", "text"):
        save_pth(model, tokenizers[kind], tmp_path / f"{kind}.pth", text_format)
        lines = chat(monkeypatch, capsys, tmp_path / f"{kind}.pth", "hi there\nhow are you\n", "--bot", "amy",
                     "--max_new_tokens", "40")
        if text_format == "chat":
            assert lines[1] == "you: hi there" and lines[-1] != "you: how are you"
            assert [line for line in lines if line.startswith("you: ")] == ["you: hi there", "you: how are you"]
        else:
            assert lines[1].startswith("hi there") and any(line.startswith("how are you") for line in lines)


def test_piped_standard_input_through_main_py(chat_checkpoint):
    result = subprocess.run(
        [sys.executable, "main.py", "chat", "--ckpt_path", str(chat_checkpoint), "--bot", "JULIET",
         "--max_new_tokens", "10"],
        input="Hello there\n/quit\nnever read\n", cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[1] == "you: Hello there" and lines[2].startswith("JULIET:") and "never read" not in result.stdout


@pytest.mark.parametrize("options, message", [
    (["--user", "A: B"], "error: --user 'A: B': a name is 1 to 40 characters, without ':' or a line break"),
    (["--max_new_tokens", "0"], "error: max_new_tokens must be at least 1, got 0"),
    (["--top_p", "2"], "error: top_p must be in (0, 1], got 2.0"),
])
def test_bad_options_are_one_error_line(options, message, chat_checkpoint, monkeypatch, capsys):
    monkeypatch.setattr(sys, "stdin", io.StringIO("hi\n"))
    with pytest.raises(SystemExit) as e:
        main(["chat", "--ckpt_path", str(chat_checkpoint), *options])
    assert str(e.value) == message


# (1e-45: a positive temperature far below the logits' scale samples greedily, as 0 does)
@pytest.mark.parametrize("temperature", ["0", "1e-45"])
def test_a_turn_outside_a_char_models_alphabet_is_refused_and_the_chat_goes_on(temperature, tmp_path):
    chars = "".join(sorted(set("abcdefghijklmnopqrstuvwxyz :\n!")))
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=len(chars), block_size=32, n_layer=1, n_head=2, n_embd=16))
    save_pth(model, {"kind": "char", "chars": chars}, tmp_path / "char.pth", "chat")
    result = subprocess.run(
        [sys.executable, "main.py", "chat", "--ckpt_path", str(tmp_path / "char.pth"), "--bot", "amy",
         "--max_new_tokens", "10", "--temperature", temperature],
        input="hi there\nWHAT?\nhow are you\n", cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "'W' is not in this tokenizer's alphabet" in errors[0], result.stderr
    turns = [line for line in result.stdout.splitlines() if line.startswith("you: ")]
    assert turns == ["you: hi there", "you: how are you"]  # the refused turn left no trace; the next one went on
