"""Talk to a model in the terminal: ``python main.py chat --ckpt_path <file.ckpt>``.

A model trained on conversations (the Discord data module; its checkpoint says ``text_format: chat``) takes
turns: each line you type is a message of ``--user``, rendered exactly as the data module renders a message
(``name: text``), and the model answers as ``--bot`` (or, without ``--bot``, as whoever it writes on the next
line). Its answer ends where it starts the next speaker's line or at its end-of-text token; the oldest turns are
dropped to keep the prompt inside the context. A plain-text model continues the text: each line you type is
appended to the text so far and continued. ``/reset`` forgets the conversation, ``/quit`` (or end of input)
leaves. Standard input may be a pipe: one turn per line, for scripts and tests.
"""

from __future__ import annotations

import sys
from typing import Literal, Optional

import torch

from lit_gpt_mini.checkpoint import check_device, load_model
from lit_gpt_mini.errors import UserError
from lit_gpt_mini.inference.conversation import Conversation, Transcript, check_name, encode
from lit_gpt_mini.inference.generate import check_sampling, stream_text
from lit_gpt_mini.inference.textstream import TextStream


def chat(
    ckpt_path: str,
    user: str = "you",
    bot: Optional[str] = None,
    mode: Literal["auto", "chat", "text"] = "auto",
    max_new_tokens: int = 200,
    temperature: float = 0.8,
    top_k: Optional[int] = 200,
    top_p: Optional[float] = None,
    seed: int = 1337,
    device: str = "cpu",
) -> None:
    """Chat with a checkpoint in the terminal (or through a pipe: a turn per line of standard input).

    Args:
        ckpt_path: A checkpoint written by ``main.py fit`` or a ``.pth`` written by ``main.py export``.
        user: Your name in the conversation (a conversation model sees your turns as ``user: text``).
        bot: The name the model answers as; ``None``: the model writes who speaks next.
        mode: ``chat`` (take turns), ``text`` (continue the text), or ``auto``: what the checkpoint was trained on
            (``chat`` for the Discord data module, ``text`` otherwise).
        max_new_tokens: The longest answer, in tokens.
        temperature: Softmax temperature; 0 picks the most likely token every time.
        top_k: Sample only among the ``top_k`` most likely tokens; ``None`` for all.
        top_p: Sample only among the most likely tokens whose probabilities add up to ``top_p``; ``None``: all.
        seed: Seed of the sampler: the same seed and turns give the same answers.
        device: ``cpu``, ``cuda``, ``cuda:1``, ...
    """
    check_sampling(max_new_tokens, temperature, top_k, top_p, seed=seed)
    for role, name in (("--user", user), ("--bot", bot)):
        if name is not None:
            check_name(name, role)
    check_device(device)
    loaded = load_model(ckpt_path, device)
    tokenizer, block = loaded.tokenizer, loaded.model.config.block_size
    turns = (mode if mode != "auto" else loaded.text_format) == "chat"
    reserve = min(max_new_tokens, block // 2)  # room for the answer; a longer one moves the window as it goes
    for role, name in (("--user", user), ("--bot", bot)):  # every turn holds them: refused once, here
        if name is not None:
            encode(tokenizer, name, role)
    conversation = Conversation(tokenizer, block, reserve)
    transcript = Transcript(tokenizer, block, reserve)
    generator = torch.Generator(device=device).manual_seed(seed)
    interactive = sys.stdin.isatty()
    if interactive:
        import readline  # noqa: F401  (input() then edits the line and keeps a history)

    def say(text: str = "", end: str = "\n") -> None:
        sys.stdout.write(text + end)
        sys.stdout.flush()

    how = (f"you speak as {user!r}, the model answers as {repr(bot) if bot else 'whoever it writes next'}" if turns
           else "each line you type is appended to the text and continued")
    say(f"Chatting with {ckpt_path} ({'conversation' if turns else 'plain-text'} model: {how}). "
        f"/reset forgets, /quit leaves.")
    while True:
        typed = _read_line(f"{user}: " if turns else "> ") if interactive else sys.stdin.readline()
        if not typed:  # end of input
            break
        typed = typed.rstrip("\r\n")
        if typed.strip() == "/quit":
            break
        if typed.strip() == "/reset":
            conversation.lines.clear()
            transcript.text = ""
            say("(conversation reset)")
            continue
        if not typed.strip():
            continue
        try:  # a turn the tokenizer cannot encode is refused; the conversation goes on without it
            rendered = conversation.add(user, typed) if turns else transcript.check(typed)
        except UserError as e:
            sys.stderr.write(f"error: {e}; type the turn again without it\n")
            sys.stderr.flush()
            continue
        if turns:
            if not interactive:
                say(rendered)  # a piped turn is shown, so the output reads as the conversation
            ids = conversation.prompt(bot)
            # after a prompt ending "bot:" the answer starts with a space, which the line already has
            text = TextStream(tokenizer, speaker_lines=True, lstrip=bot is not None)
            say(f"{bot}: " if bot else "", end="")
        else:
            if not interactive:
                say(typed, end="")
            ids = transcript.prompt(rendered)
            text = TextStream(tokenizer)
        try:
            for piece in stream_text(loaded.model, ids, text, max_new_tokens, temperature, top_k, top_p,
                                     generator):
                say(piece, end="")
        except KeyboardInterrupt:  # Ctrl+C cuts the answer short; the conversation goes on
            say(text.finish(), end="")
        say()
        if turns and text.result.strip():
            conversation.add(bot, text.result.strip()) if bot else conversation.add(None, text.result)
        elif not turns:
            transcript.add(text.result)


def _read_line(prompt: str) -> str:
    """A line typed at the terminal (with its line break), or '' at Ctrl+D / Ctrl+C."""
    try:
        return input(prompt) + "\n"
    except (EOFError, KeyboardInterrupt):
        print()
        return ""


def main(args: Optional[list[str]] = None) -> None:
    from jsonargparse import auto_cli

    # (as generate: a parse error reaches cli.main(), which prints it as one line; no abbreviated options)
    auto_cli(chat, args=args, as_positional=False, exit_on_error=False, allow_abbrev=False, prog="main.py chat")
