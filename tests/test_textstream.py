"""TextStream: text shown as it is sampled never holds half a character, a piece of a stop string or the start of
the next speaker's line, and ends where the reply ends."""

from __future__ import annotations

from lit_gpt_mini.inference.textstream import TextStream
from lit_gpt_mini.tokenizers import CharTokenizer

CHARS = CharTokenizer(sorted(set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ .,:?!'\n")))


def feed(stream: TextStream, tokens: list[int]) -> list[str]:
    """The pieces returned token by token (then the rest), stopping where the stream stops, as callers do."""
    pieces = []
    for token in tokens:
        pieces.append(stream.add(token))
        if stream.stopped:
            break
    pieces.append(stream.finish())
    return pieces


def test_a_stop_string_ends_the_text_and_no_piece_of_it_is_ever_shown():
    stream = TextStream(CHARS, stop=["world"])
    pieces = feed(stream, CHARS.encode("Hello world, again"))
    assert stream.stopped and stream.result == "Hello " and "".join(pieces) == "Hello "
    assert pieces[6:10] == ["", "", "", ""]  # "w", "o", "r", "l" held back while they may begin "world"


def test_text_held_back_for_a_stop_string_that_does_not_come_is_shown_once_it_is_decided():
    stream = TextStream(CHARS, stop=["xyz"])
    pieces = feed(stream, CHARS.encode("abxya xy"))
    assert pieces[:5] == ["a", "b", "", "", "xya"]
    assert not stream.stopped and pieces[-1] == "xy" and "".join(pieces) == "abxya xy"  # the end releases all


def test_a_speakers_line_ends_the_reply_but_a_colon_inside_a_line_does_not():
    stream = TextStream(CHARS, speaker_lines=True)
    pieces = feed(stream, CHARS.encode(" Ay: my lord.\nThou art here.\nFirst Citizen: Speak."))
    assert stream.stopped and stream.result == " Ay: my lord.\nThou art here."
    assert "".join(pieces) == stream.result and not any("Citizen" in p for p in pieces)
    # a line whose text before a colon is longer than a name is text, not a speaker
    stream = TextStream(CHARS, speaker_lines=True)
    long_line = " ok\nthis line is far longer than any name could be: it goes on"
    assert "".join(feed(stream, CHARS.encode(long_line))) == long_line and not stream.stopped


def test_split_characters_wait_for_their_last_byte(gpt2_tokenizer):
    text = "Thé king 🤴 said: ça va"
    tokens = gpt2_tokenizer.encode(text)
    assert len(tokens) > len(text.split())  # the accented letters and the emoji span several tokens
    stream = TextStream(gpt2_tokenizer)
    pieces = feed(stream, tokens)
    assert "".join(pieces) == text and not any("\ufffd" in p for p in pieces)


def test_the_end_of_text_token_ends_the_text_or_is_left_out(gpt2_tokenizer):
    tokens = gpt2_tokenizer.encode("one") + [gpt2_tokenizer.eot_id] + gpt2_tokenizer.encode(" two")
    stopping = TextStream(gpt2_tokenizer)
    assert "".join(feed(stopping, tokens)) == "one" and stopping.stopped and stopping.tokens == 2
    going_on = TextStream(gpt2_tokenizer, stop_at_eot=False)
    assert "".join(feed(going_on, tokens)) == "one two" and not going_on.stopped


def test_an_answer_after_a_name_loses_its_leading_whitespace_only():
    stream = TextStream(CHARS, speaker_lines=True, lstrip=True)
    pieces = feed(stream, CHARS.encode("  Ay, my lord.  \nBOB: no"))
    assert pieces[:3] == ["", "", "A"] and "".join(pieces) == stream.result == "Ay, my lord.  "
