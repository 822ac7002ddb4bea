"""FineWeb data module: local and `datasets`-streamed documents -> GPT-2 tokens -> shards, and bad input."""

from __future__ import annotations

import gzip
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from data_modules.fineweb import FineWebDataModule
from data_modules.shards import HEADER_BYTES, read_manifest
from lit_gpt_mini.errors import ConfigError, DataError
from tests.conftest import ROOT, write_jsonl


def module(tmp_path: Path, directory: str = "data", **kwargs) -> FineWebDataModule:
    kwargs = {"shard_size": 20_000, "val_tokens": 5_000, "num_proc": 1, "batch_size": 4, **kwargs}
    return FineWebDataModule(data_dir=str(tmp_path / directory), **kwargs)


def stream_of(directory: Path) -> np.ndarray:
    manifest = read_manifest(directory)
    return np.concatenate(
        [np.fromfile(directory / s["file"], dtype="<u2", offset=HEADER_BYTES) for s in manifest["shards"]]
    )


def shard_bytes(directory: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(directory.iterdir()) if p.suffix == ".bin"}


def test_documents_become_eot_separated_gpt2_tokens(tmp_path, gpt2_tokenizer):
    docs = ["Hello world.", "Ünïcödé and emoji 🤗 <|endoftext|> stays text", "Last one\n"]
    corpus = write_jsonl(tmp_path / "c.jsonl", docs * 400)
    dm = module(tmp_path, path=str(corpus), val_tokens=1000)
    dm.prepare_data()
    stream = stream_of(dm.shard_dir)
    expected = np.concatenate([[50256] + gpt2_tokenizer.encode(d) for d in docs * 400])
    assert np.array_equal(stream, expected)
    text = gpt2_tokenizer.decode(stream[:60].tolist())
    assert text.startswith("<|endoftext|>Hello world.<|endoftext|>Ünïcödé and emoji 🤗 <|endoftext|> stays text")
    manifest = read_manifest(dm.shard_dir)
    assert manifest["documents"] == 1200 and manifest["tokens"]["val"] == 1000
    assert manifest["tokenizer"] == {"kind": "gpt2"}
    dm.setup("fit")
    dm.connect(32)  # the model's context
    windows = next(iter(dm.train_dataloader()))
    assert windows.shape == (4, 33) and windows.dtype == torch.uint16 and int(windows.long().max()) <= 50256


def test_one_and_two_tokenizer_processes_write_identical_shards(tmp_path, shakespeare_docs):
    corpus = write_jsonl(tmp_path / "c.jsonl", shakespeare_docs)
    one, two = module(tmp_path, "one", path=str(corpus)), module(tmp_path, "two", path=str(corpus), num_proc=2)
    one.prepare_data()
    two.prepare_data()
    assert len(shard_bytes(one.shard_dir)) > 5
    assert shard_bytes(one.shard_dir) == shard_bytes(two.shard_dir)


def test_bad_rows_are_reported_counted_and_skipped(tmp_path, capfd, gpt2_tokenizer):
    lines = [
        json.dumps({"text": "good one " * 300}),
        "{not json",
        json.dumps({"id": 7}),
        json.dumps({"text": ""}),
        json.dumps({"text": 42}),
        json.dumps(["a", "list"]),
        "",
        json.dumps({"text": "good two " * 300}),
    ]
    (tmp_path / "c.jsonl").write_text("\n".join(lines) + "\n")
    dm = module(tmp_path, path=str(tmp_path / "c.jsonl"), val_tokens=500)
    dm.prepare_data()
    err = capfd.readouterr().err
    assert f"{tmp_path / 'c.jsonl'}:2: skipped a row (malformed JSON" in err
    assert f"{tmp_path / 'c.jsonl'}:3: skipped a row (no 'text' field)" in err
    assert "skipped 5 rows" in err
    manifest = read_manifest(dm.shard_dir)
    assert manifest["documents"] == 2
    assert manifest["rows_skipped"] == {
        "malformed JSON": 1, "no 'text' field": 1, "empty 'text'": 1, "'text' is not a string": 1, "not an object": 1,
    }
    assert len(stream_of(dm.shard_dir)) == 2 + len(gpt2_tokenizer.encode("good one " * 300)) * 2


def test_a_truncated_gzip_keeps_what_was_read(tmp_path, capfd):
    data = gzip.compress("".join(json.dumps({"text": f"document {i} " * 50}) + "\n" for i in range(400)).encode())
    (tmp_path / "c.jsonl.gz").write_bytes(data[: len(data) * 3 // 4])
    dm = module(tmp_path, path=str(tmp_path / "c.jsonl.gz"), val_tokens=1000)
    dm.prepare_data()
    assert "stopped reading after an error" in capfd.readouterr().err
    manifest = read_manifest(dm.shard_dir)
    assert 100 < manifest["documents"] < 400 and manifest["rows_skipped"] == {"unreadable file tail": 1}


def test_parquet_files_and_directories(tmp_path, shakespeare_docs):
    folder = tmp_path / "corpus"
    folder.mkdir()
    half = len(shakespeare_docs) // 2
    pq.write_table(pa.table({"text": shakespeare_docs[:half]}), folder / "a.parquet")
    pq.write_table(pa.table({"text": shakespeare_docs[half:] + [None]}), folder / "b.parquet")
    from_parquet = module(tmp_path, "pq", path=str(folder))
    from_parquet.prepare_data()
    from_jsonl = module(tmp_path, "js", path=str(write_jsonl(tmp_path / "c.jsonl", shakespeare_docs)))
    from_jsonl.prepare_data()
    assert shard_bytes(from_parquet.shard_dir) == shard_bytes(from_jsonl.shard_dir)
    assert read_manifest(from_parquet.shard_dir)["rows_skipped"] == {"no 'text' field": 1}


def test_datasets_streaming_path_gives_the_same_shards(tmp_path, shakespeare_docs):
    # The hub code path (datasets.load_dataset(..., streaming=True)) pointed at a local folder: no network.
    folder = tmp_path / "hub_like"
    folder.mkdir()
    write_jsonl(folder / "train.jsonl", shakespeare_docs)
    streamed = module(tmp_path, "streamed", dataset=str(folder), name=None, split="train")
    streamed.prepare_data()
    local = module(tmp_path, "local", path=str(folder / "train.jsonl"))
    local.prepare_data()
    assert shard_bytes(streamed.shard_dir) == shard_bytes(local.shard_dir)


def test_max_tokens_stops_early(tmp_path, shakespeare_docs):
    dm = module(tmp_path, path=str(write_jsonl(tmp_path / "c.jsonl", shakespeare_docs)), max_tokens=33_333)
    dm.prepare_data()
    assert read_manifest(dm.shard_dir)["tokens"] == {"val": 5_000, "test": 5_000, "train": 23_333}


@pytest.mark.parametrize(
    "setup, message",
    [
        (lambda d: (d / "c.jsonl").write_text(""), "gave no documents with a non-empty 'text' .0 rows read"),
        (lambda d: (d / "c.jsonl").write_text('{"title": "x"}\n'), r"gave no documents.*1 rows read; skipped: \{\"no 'text' field\": 1\}"),
        (lambda d: pq.write_table(pa.table({"body": ["x"]}), d / "c.parquet"), "has no column 'text' .columns: body.; set data.text_field"),
        (lambda d: (d / "c.parquet").write_bytes(b"not parquet"), "is not a readable parquet file"),
        (lambda d: (d / "c.csv").write_text("text\nx\n"), "unknown file type"),
    ],
)
def test_unusable_data_is_a_clear_error(tmp_path, setup, message):
    setup(tmp_path)
    path = next(p for p in tmp_path.iterdir() if p.name.startswith("c."))
    with pytest.raises(DataError, match=message):
        module(tmp_path, path=str(path)).prepare_data()


def test_bad_settings_are_refused(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        module(tmp_path, path=str(tmp_path / "missing.jsonl")).prepare_data()
    with pytest.raises(ConfigError, match="max_tokens .1000. leaves nothing to train on"):
        module(tmp_path, max_tokens=1000)
    with pytest.raises(DataError, match="could not stream .*no-such-dataset.*set data.path"):
        module(tmp_path, dataset=str(tmp_path / "no-such-dataset"), name=None).prepare_data()


KILLABLE = """
import sys, time
sys.path.insert(0, {root!r})
import data_modules.fineweb as fw
read = fw.DocumentReader.files
def slow(self, files):
    for i, text in enumerate(read(self, files)):
        if i == 15000:
            time.sleep(600)  # the test kills the process here, about two thirds through the corpus
        yield text
fw.DocumentReader.files = slow
fw.FineWebDataModule(data_dir={data_dir!r}, path={path!r}, shard_size=20000, val_tokens=5000, num_proc=1).prepare_data()
"""


def test_killed_preparation_resumes_to_byte_identical_shards(tmp_path, shakespeare_docs):
    corpus = write_jsonl(tmp_path / "c.jsonl", shakespeare_docs * 3)  # ~22k documents, ~1M tokens
    reference = module(tmp_path, "reference", path=str(corpus))
    reference.prepare_data()
    killed = module(tmp_path, "killed", path=str(corpus))
    script = KILLABLE.format(root=str(ROOT), data_dir=str(tmp_path / "killed"), path=str(corpus))
    proc = subprocess.Popen([sys.executable, "-c", script], start_new_session=True, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 120
        while len(list(killed.shard_dir.glob("*.bin"))) < 4:
            assert proc.poll() is None and time.time() < deadline, "the preparation ended before it was killed"
            time.sleep(0.05)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # no clean-up code runs: like a power cut or the OOM killer
        proc.wait()
    partial = shard_bytes(killed.shard_dir)
    assert read_manifest(killed.shard_dir) is None and 4 <= len(partial) < len(shard_bytes(reference.shard_dir))
    killed.prepare_data()
    assert shard_bytes(killed.shard_dir) == shard_bytes(reference.shard_dir)
    assert read_manifest(killed.shard_dir)["shards"] == read_manifest(reference.shard_dir)["shards"]
