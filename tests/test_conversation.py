"""A conversation's prompt is the text the Discord data module trained the model on, cut to fit the context."""

from __future__ import annotations

import json

import pytest

from data_modules.discord import DiscordDataModule
from lit_gpt_mini.inference.conversation import Conversation, Transcript
from lit_gpt_mini.errors import UserError
from lit_gpt_mini.tokenizers import CharTokenizer

from .test_discord import message

TURNS = [("alice", "Hi everyone 👋 — ça va?"), ("bob", "  look <:party:123456> <#42>, *fine*  "),
         ("alice", "<@&7> multi\nline")]


def test_turns_are_rendered_as_the_discord_data_module_renders_messages(tmp_path, gpt2_tokenizer):
    export = tmp_path / "export.json"
    export.write_text(json.dumps({"messages": [message(i, text, i, author=name) for i, (name, text) in enumerate(TURNS)]}))
    data = DiscordDataModule(path=str(export), data_dir=str(tmp_path / "d"))
    (document,) = data.conversations()
    conversation = Conversation(gpt2_tokenizer, block_size=1024, reserve=100)
    for name, text in TURNS:
        conversation.add(name.title(), text)  # the export's display names ("nickname") are title-cased
    assert "\n".join(conversation.lines) == document
    # a document starts with the end-of-text token; the prompt ends with the next speaker's name
    assert conversation.prompt("Alice") == [gpt2_tokenizer.eot_id] + gpt2_tokenizer.encode(document + "\nAlice:")
    assert conversation.prompt(None)[-1] == gpt2_tokenizer.encode("\n")[0]


def test_the_oldest_turns_are_dropped_to_keep_room_for_the_answer():
    chars = CharTokenizer(sorted(set("abcdefghijklmnopqrstuvwxyz :\n0123456789")))
    conversation = Conversation(chars, block_size=64, reserve=24)  # 40 characters of prompt at most
    for i in range(10):
        conversation.add("bob", f"turn {i}")  # "bob: turn 7" is 11 characters, 12 with its line break
    ids = conversation.prompt("amy")
    assert len(ids) <= 40 and chars.decode(ids) == "bob: turn 7\nbob: turn 8\nbob: turn 9\namy:"
    assert conversation.lines == ["bob: turn 7", "bob: turn 8", "bob: turn 9"]  # forgotten for good
    conversation.add("bob", "a very long turn that cannot fit in forty characters")
    assert chars.decode(conversation.prompt("amy")) == "bob: a very long turn that cannot fit in forty characters\namy:"[-40:]
    assert conversation.lines == ["bob: a very long turn that cannot fit in forty characters"]
    with pytest.raises(UserError, match="the last turn is 62 tokens .* over the 40 the context of 64 leaves with 24"):
        conversation.prompt("amy", cut_last=False)


def test_a_plain_text_transcript_keeps_its_end():
    chars = CharTokenizer(sorted(set("abcdefghij")))
    transcript = Transcript(chars, block_size=8, reserve=2)
    assert chars.decode(transcript.prompt("abc")) == "abc"
    transcript.add("def")
    assert chars.decode(transcript.prompt("ghij")) == "defghij"[-6:]
    for _ in range(20):
        transcript.prompt("abcdefghij")
    assert len(transcript.text) <= 2 * 6 + 10  # what the model cannot see any more is forgotten
    with pytest.raises(UserError, match="character 'z' is not in this tokenizer's alphabet"):
        transcript.prompt("z")


def test_the_writer_keeps_the_readers_name_rules():
    # a display name the reader could not take as a speaker (a colon, a line break, too long) is made valid when a
    # message is written, so that chat and serve recognise every line the data module writes
    from data_modules.discord_render import line as data_line
    from lit_gpt_mini.chat_format import MAX_NAME, SPEAKER_LINE, check_name

    for author in ("a:b", "two\nlines", "x" * (MAX_NAME + 5), " : ", "ok name"):
        written = data_line(author, "hello")
        name = written.split(": ", 1)[0]
        check_name(name, "the written name")  # raises if the writer broke the rule
        assert SPEAKER_LINE.match("\n" + written)
    assert data_line("a:b", "hi") == "a b: hi" and data_line(" : ", "hi") == "someone: hi"
