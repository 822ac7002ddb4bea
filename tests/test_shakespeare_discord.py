"""Tiny Shakespeare as a DiscordChatExporter export: speakers are authors, speeches messages, time goes forward,
and a scene break is a silence that the Discord data module reads as a new conversation."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import datetime

from data_modules.discord import DiscordDataModule
from data_modules.shakespeare_discord import speeches

from .conftest import ROOT

PLAY = """First Citizen:
Before we proceed any further, hear me speak.

All:
Speak, speak.

TITUS:

First Citizen:
You are all resolved rather to die than to famish?
Is't a verdict?

All:
Resolved. resolved.



ROMEO:
But soft, what light: yonder window breaks.

JULIET:
Ay me!
"""


def test_speeches_scene_breaks_and_empty_speeches():
    found, empty = speeches(PLAY)
    assert [(s.speaker, s.scene_break) for s in found] == [
        ("First Citizen", False), ("All", False), ("First Citizen", False), ("All", False),
        ("ROMEO", True), ("JULIET", False),  # after a run of blank lines
    ]
    assert found[2].text == "You are all resolved rather to die than to famish?\nIs't a verdict?"
    assert found[4].text == "But soft, what light: yonder window breaks."  # a colon inside a speech stays text
    assert empty == 1  # TITUS says nothing
    # where the cast changes (the next two speakers have not spoken lately), a scene starts
    cast, _ = speeches(PLAY.replace("\n\n\n\n", "\n\n"), cast_window=3)
    assert [s.scene_break for s in cast] == [False, False, False, False, True, False]


def test_the_export_of_tiny_shakespeare_reads_as_its_scenes(tmp_path, shakespeare_path):
    out = tmp_path / "export.json"
    result = subprocess.run([sys.executable, "-m", "data_modules.shakespeare_discord", "--path", str(shakespeare_path),
                             "--out", str(out)], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    export = json.loads(out.read_text(encoding="utf-8"))
    messages = export["messages"]
    found, empty = speeches(shakespeare_path.read_text(encoding="utf-8"))
    scenes = 1 + sum(s.scene_break for s in found)
    assert result.stdout.strip() == (f"wrote {out}: {len(found)} messages in {scenes} scenes by "
                                     f"{len({s.speaker for s in found})} speakers ({empty} speeches without text left out)")
    assert len(messages) == len(found) > 7000 and 200 < scenes < 400
    assert [m["author"]["name"] for m in messages[:3]] == ["First Citizen", "All", "First Citizen"]
    assert messages[0]["content"] == "Before we proceed any further, hear me speak."
    times = [datetime.fromisoformat(m["timestamp"]) for m in messages]
    gaps = [(b - a).total_seconds() / 60 for a, b in zip(times, times[1:])]
    assert all(gap > 0 for gap in gaps)
    assert sorted(set(gaps)) == [1.0, 180.0] and gaps.count(180.0) == scenes - 1
    ids = [int(m["id"]) for m in messages]
    assert ids == sorted(set(ids))
    # the Discord data module (default conversation_gap_minutes: 60) reads one conversation per scene
    data = DiscordDataModule(path=str(out), data_dir=str(tmp_path / "data"))
    conversations = data.conversations()
    assert len(conversations) == scenes and data.counts == {"kept": len(messages)}
    assert conversations[0].startswith("First Citizen: Before we proceed any further, hear me speak.\nAll: Speak, speak.")
    first_speakers = [s.speaker for i, s in enumerate(found) if i == 0 or s.scene_break]
    assert [c.split(": ", 1)[0] for c in conversations] == first_speakers


def test_a_missing_text_is_one_error_line(tmp_path):
    result = subprocess.run([sys.executable, "-m", "data_modules.shakespeare_discord", "--path",
                             str(tmp_path / "none.txt"), "--out", str(tmp_path / "e.json")],
                            cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert result.stderr.strip() == (f"error: --path {tmp_path / 'none.txt'} does not exist; give a local Tiny "
                                     f"Shakespeare, or leave --path out to download it")
