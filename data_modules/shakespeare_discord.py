"""Tiny Shakespeare's dialogue as a DiscordChatExporter JSON export: an offline chat corpus anyone can make.

    python -m data_modules.shakespeare_discord --out data/shakespeare_discord/export.json
    python -m data_modules.shakespeare_discord --path ../shared/data/tinyshakespeare.txt --out export.json

Each speech (``NAME:`` then its lines) becomes a message: the speaker is the author, the speech the content
(its lines kept), one minute after the previous message. A scene break becomes a silence of ``gap_minutes``,
longer than :class:`~data_modules.discord.DiscordDataModule`'s ``conversation_gap_minutes`` (60 by default), so
each scene is one conversation. Tiny Shakespeare has no scene headings: a break is taken where the text has a
run of blank lines, or where the cast changes (the next two speakers have not spoken in the last ``cast_window``
speeches). Speeches with no text (the corpus has a few) are left out and counted.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Optional

from lit_gpt_mini.errors import DataError, UserError
from lit_gpt_mini.files import atomic_write, missing_path

_SPEAKER = re.compile(r"([^\n:]{1,40}):(?:\n|$)")  # "First Citizen:" on a line of its own
START = datetime(2024, 1, 1, tzinfo=timezone.utc)


@dataclass
class Speech:
    speaker: str
    text: str
    scene_break: bool  # a new scene starts with this speech


def speeches(text: str, cast_window: int = 20) -> tuple[list[Speech], int]:
    """The speeches of a play text (blocks ``NAME:\\nlines`` separated by blank lines), each marked when a scene
    starts with it, and how many speeches without text were left out."""
    parts = re.split(r"(\n{2,})", text.replace("\r\n", "\n").strip("\n"))
    found: list[tuple[str, str, bool]] = []  # speaker, text, after a run of 2+ blank lines
    empty = 0
    long_pause = False
    for part in parts:
        if not part.strip():
            long_pause = long_pause or part.count("\n") > 2
            continue
        match = _SPEAKER.match(part)
        if match is None:  # a block without a speaker continues the previous speech
            if found:
                speaker, speech, pause = found[-1]
                found[-1] = (speaker, f"{speech}\n\n{part}".strip("\n"), pause)
            continue
        speech = part[match.end():].strip("\n")
        if not speech.strip():
            empty += 1
        else:
            found.append((match.group(1).strip(), speech, long_pause))
        long_pause = False
    result = []
    for i, (speaker, speech, pause) in enumerate(found):
        recent = {s for s, _, _ in found[max(0, i - cast_window):i]}
        nxt = found[i + 1][0] if i + 1 < len(found) else None
        cast_change = i > 0 and speaker not in recent and nxt is not None and nxt not in recent
        result.append(Speech(speaker, speech, scene_break=i > 0 and (pause or cast_change)))
    return result, empty


def to_export(items: list[Speech], gap_minutes: float = 180.0, minutes_per_message: float = 1.0,
              start: datetime = START) -> dict:
    """The speeches as a DiscordChatExporter JSON export (guild, channel, messages with ids, increasing
    timestamps, authors)."""
    authors: dict[str, dict] = {}
    messages = []
    time = start
    for i, speech in enumerate(items):
        if i:
            time += timedelta(minutes=gap_minutes if speech.scene_break else minutes_per_message)
        author = authors.setdefault(speech.speaker, {
            "id": str(100000 + len(authors)), "name": speech.speaker, "nickname": speech.speaker, "isBot": False,
        })
        messages.append({
            "id": str(1_000_000_000 + i), "type": "Default", "timestamp": time.isoformat(),
            "timestampEdited": None, "isPinned": False, "content": speech.text, "author": author,
            "attachments": [], "embeds": [], "reactions": [], "mentions": [],
        })
    return {
        "guild": {"id": "1", "name": "Tiny Shakespeare"},
        "channel": {"id": "2", "type": "GuildTextChat", "category": "Plays", "name": "the-globe"},
        "dateRange": {"after": None, "before": None},
        "messages": messages,
        "messageCount": len(messages),
    }


def convert(out: str, path: Optional[str] = None, data_dir: str = "data/shakespeare", gap_minutes: float = 180.0,
            cast_window: int = 20) -> dict:
    """Write Tiny Shakespeare (``path``, or downloaded once into ``data_dir``) as an export at ``out``; returns
    counts (messages, scenes, speakers, speeches without text)."""
    from data_modules.shakespeare import ShakespeareDataModule

    if gap_minutes <= 60:
        raise UserError(f"--gap_minutes {gap_minutes}: a scene break must be a silence longer than the Discord data "
                        f"module's default conversation_gap_minutes (60)")
    if path is not None and Path(path).is_dir():
        raise UserError(f"--path {path} is a directory: give the Tiny Shakespeare text file")
    if path is not None and not Path(path).is_file():
        raise missing_path(Path(path), what="--path", fix="give a local Tiny Shakespeare, or leave --path out to "
                           "download it")
    out_path = Path(out)
    blocking = next((parent for parent in out_path.parents if parent.exists() and not parent.is_dir()), None)
    if blocking is not None:
        raise UserError(f"--out {out}: {blocking} is a file, not a directory: give a path in a directory")
    text = ShakespeareDataModule(data_dir=data_dir, path=path).read_text()
    items, empty = speeches(text, cast_window)
    if not items:
        raise DataError(f"{path or data_dir}: no speech found (expected blocks 'NAME:' + lines, separated by blank "
                        f"lines)")
    export = to_export(items, gap_minutes)
    if out_path.is_dir():
        raise UserError(f"--out {out} is a directory: give the .json file to write")
    with atomic_write(out_path, "w", encoding="utf-8") as f:
        json.dump(export, f, ensure_ascii=False, indent=1)
    counts = {"messages": len(items), "scenes": 1 + sum(s.scene_break for s in items),
              "speakers": len({s.speaker for s in items}), "speeches_without_text": empty}
    print(f"wrote {out_path}: {counts['messages']} messages in {counts['scenes']} scenes by {counts['speakers']} "
          f"speakers ({empty} speeches without text left out)")
    return counts


def main(argv: Optional[list[str]] = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m data_modules.shakespeare_discord",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="data/shakespeare_discord/export.json", help="the .json export to write")
    parser.add_argument("--path", default=None, help="a local Tiny Shakespeare (default: download into --data_dir)")
    parser.add_argument("--data_dir", default="data/shakespeare", help="where the download is kept")
    parser.add_argument("--gap_minutes", type=float, default=180.0,
                        help="the silence at a scene break (longer than conversation_gap_minutes)")
    parser.add_argument("--cast_window", type=int, default=20,
                        help="a scene breaks where the next two speakers have not spoken in this many speeches")
    args = parser.parse_args(argv)
    try:
        convert(args.out, args.path, args.data_dir, args.gap_minutes, args.cast_window)
    except UserError as e:
        sys.exit(f"error: {e}")


if __name__ == "__main__":
    main()
