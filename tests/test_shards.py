"""The token shard format: header, atomic and resumable writing, checked reading, flat memory."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from data_modules.shards import HEADER_BYTES, ShardSet, ShardWriter, read_header, verify_checksum
from lit_gpt_mini.errors import DataError
from lit_gpt_mini.tokenizers import CharTokenizer

TOKENIZER = CharTokenizer([chr(0x100 + i) for i in range(3000)])  # ids 0..2999, uint16
DOCS = [np.random.default_rng(i).integers(0, 3000, size=n).astype(np.uint16) for i, n in enumerate([300, 50, 420, 7, 260, 500, 90])]


def write(directory: Path, docs=DOCS, fail_after: int | None = None, max_tokens: int | None = None) -> dict:
    writer = ShardWriter(directory, TOKENIZER, shard_size=200, val_tokens=250, settings={"source": "test"},
                         test_tokens=120)
    if writer.is_complete():
        return {}
    doc, token = writer.resume()
    for i in range(doc, len(docs)):
        if fail_after is not None and i == fail_after:
            raise KeyboardInterrupt  # the preparation is killed between two documents
        first = token if i == doc else 0
        if writer.add(i, docs[i][first:], first, max_tokens):
            break
    return writer.finish()


def shard_bytes(directory: Path) -> dict[str, bytes]:
    # verified.json records modification times, which differ between two runs by design
    return {p.name: p.read_bytes() for p in sorted(directory.iterdir()) if p.name != "verified.json"}


def test_shards_hold_the_stream_split_into_val_then_test_then_train(tmp_path):
    manifest = write(tmp_path)
    stream = np.concatenate(DOCS)
    assert [s["split"] for s in manifest["shards"]] == ["val"] * 2 + ["test"] + ["train"] * 7
    assert [s["tokens"] for s in manifest["shards"]] == [200, 50, 120] + [200] * 6 + [57]
    assert manifest["tokens"] == {"val": 250, "test": 120, "train": len(stream) - 370}
    got = np.concatenate([np.fromfile(tmp_path / s["file"], dtype="<u2", offset=HEADER_BYTES) for s in manifest["shards"]])
    assert np.array_equal(got, stream)
    header = read_header(tmp_path / "val_000000.bin")
    assert (header.tokenizer, header.vocab_size, header.itemsize, header.num_tokens) == (TOKENIZER.name, 3000, 2, 200)
    # each shard records where the stream continues: both validation shards end inside document 0 (300 tokens)
    assert (header.end_doc, header.end_token) == (0, 200)
    assert (read_header(tmp_path / "val_000001.bin").end_doc, read_header(tmp_path / "val_000001.bin").end_token) == (0, 250)


def test_a_killed_preparation_resumes_to_byte_identical_shards(tmp_path):
    write(tmp_path / "whole")
    with pytest.raises(KeyboardInterrupt):
        write(tmp_path / "resumed", fail_after=4)
    partial = shard_bytes(tmp_path / "resumed")
    assert "manifest.json" not in partial  # not complete, so never loaded as data
    (tmp_path / "resumed" / ".train_000009.bin.xyz.part").write_bytes(b"half a shard")  # a killed write
    write(tmp_path / "resumed")
    assert shard_bytes(tmp_path / "resumed") == shard_bytes(tmp_path / "whole")
    # the finished shards of the first attempt were kept, not rewritten
    assert all(shard_bytes(tmp_path / "resumed")[name] == data for name, data in partial.items() if name.endswith(".bin"))


def test_max_tokens_stops_mid_document_and_resumes_to_the_same_end(tmp_path):
    manifest = write(tmp_path / "a", max_tokens=700)
    assert manifest["tokens"] == {"val": 250, "test": 120, "train": 330}
    with pytest.raises(KeyboardInterrupt):
        write(tmp_path / "b", fail_after=2, max_tokens=700)
    write(tmp_path / "b", max_tokens=700)
    assert shard_bytes(tmp_path / "a") == shard_bytes(tmp_path / "b")


def test_a_finished_directory_is_not_written_again_and_other_settings_are_refused(tmp_path):
    write(tmp_path)
    before = {p.name: p.stat().st_mtime_ns for p in tmp_path.iterdir()}
    assert write(tmp_path) == {}
    assert before == {p.name: p.stat().st_mtime_ns for p in tmp_path.iterdir()}
    other = ShardWriter(tmp_path, TOKENIZER, shard_size=300, val_tokens=250, settings={"source": "test"}, test_tokens=120)
    with pytest.raises(DataError, match=r"prepared with other settings \(shard_size: 200 -> 300\).*delete"):
        other.is_complete()


def test_all_validation_and_no_training_data_is_refused(tmp_path):
    writer = ShardWriter(tmp_path, TOKENIZER, shard_size=200, val_tokens=10_000, settings={})
    writer.resume()
    writer.add(0, DOCS[0])
    with pytest.raises(DataError, match="nothing left to train on; lower val_tokens/test_tokens or add data"):
        writer.finish()


@pytest.mark.parametrize(
    "damage, message",
    [
        (lambda b: b[:-2], "is truncated or was changed"),
        (lambda b: b"GARBAGE!" + b[8:], "not a lit-gpt-mini token shard"),
        (lambda b: b[:8] + (99).to_bytes(4, "little") + b[12:], "format version 99"),
        (lambda b: b[:HEADER_BYTES] + bytes([b[HEADER_BYTES] ^ 1]) + b[HEADER_BYTES + 1 :], "do not match the checksum"),
    ],
)
def test_a_damaged_shard_is_named_with_what_to_do(tmp_path, damage, message):
    write(tmp_path)
    path = tmp_path / "train_000003.bin"
    path.write_bytes(damage(path.read_bytes()))
    with pytest.raises(DataError, match=re.escape(str(path)) + ".*" + message + ".*delete train_000003.bin") as e:
        verify_checksum(path)
    assert "run the preparation again" in str(e.value)
    # a resumed preparation checks the shards it keeps, so it refuses the damaged one too
    (tmp_path / "manifest.json").unlink()
    with pytest.raises(DataError, match="train_000003.bin"):
        write(tmp_path)


def test_reading_with_another_tokenizer_is_refused(tmp_path):
    write(tmp_path)
    other = CharTokenizer([chr(0x200 + i) for i in range(3000)])
    with pytest.raises(DataError, match=r"was tokenized with 'char3000-\w+' \(3000 tokens\) but this run's tokenizer is 'char3000-"):
        ShardSet.open(tmp_path, "train", other)
    with pytest.raises(DataError, match="no finished token shards"):
        ShardSet.open(tmp_path / "nowhere", "train", TOKENIZER)


def _rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads the resident size from Linux's /proc")
def test_reading_a_whole_shard_does_not_grow_memory(tmp_path):
    # 48 MB of tokens read window by window: a memmap kept open would add every page it touched to the
    # process's resident memory; ShardSet maps the file only while it copies a batch out.
    tokens = np.random.default_rng(0).integers(0, 3000, size=24_000_000).astype(np.uint16)
    writer = ShardWriter(tmp_path, TOKENIZER, shard_size=len(tokens), val_tokens=1000, settings={})
    writer.resume()
    writer.add(0, tokens)
    writer.finish()
    del tokens, writer
    shards = ShardSet.open(tmp_path, "train", TOKENIZER)
    starts = np.arange(0, shards.num_tokens - 1025, 1024)
    before = _rss_mb()
    total = 0
    for batch in np.array_split(starts, len(starts) // 64):
        total += int(shards.read(0, batch, 1025)[:, 0].sum())
    growth = _rss_mb() - before
    assert total > 0
    assert growth < 16, f"resident memory grew by {growth:.0f} MB reading a 48 MB shard"


def test_headers_record_the_largest_id_and_older_shards_without_it_still_read(tmp_path):
    write(tmp_path)
    path = tmp_path / "train_000003.bin"
    header = read_header(path)
    tokens = np.fromfile(path, dtype="<u2", offset=HEADER_BYTES)
    assert header.max_id == int(tokens.max())
    # a shard written before the field existed has zeros there: read as "not recorded", checked by scanning
    raw = bytearray(path.read_bytes())
    raw[152:156] = b"\x00\x00\x00\x00"
    path.write_bytes(bytes(raw))
    assert read_header(path).max_id is None and verify_checksum(path).num_tokens == header.num_tokens


def test_a_manifest_is_checked_against_the_headers_of_both_splits(tmp_path):
    import json

    write(tmp_path)
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    for entry in manifest["shards"]:  # the split fields swapped: each header still says what it is
        entry["split"] = "val" if entry["split"] == "train" else "train"
    (tmp_path / "manifest.json").write_text(json.dumps(manifest))
    for split in ("train", "val"):
        with pytest.raises(DataError, match=r"val_000000.bin: .*lists its split as 'train' but its header says 'val'"):
            ShardSet.open(tmp_path, split, TOKENIZER)
