"""Train, validation and test splits: disjoint parts of each source's token stream that together cover it, the
same after preparing again or resuming, with `test` reporting the loss on the test part."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from data_modules.base import InMemoryTokenDataModule
from data_modules.fineweb import FineWebDataModule
from data_modules.reddit import RedditDataModule
from data_modules.shakespeare import ShakespeareDataModule
from data_modules.shards import HEADER_BYTES, SETTINGS, read_manifest
from lit_gpt_mini.cli.main import main
from lit_gpt_mini.errors import ConfigError, DataError

from .conftest import CONFIGS, write_jsonl
from .test_reddit import rows, write_zst


def split_arrays(dm) -> dict[str, np.ndarray]:
    """Each split's tokens, its shards in stream order."""
    manifest = read_manifest(dm.shard_dir)
    out = {}
    for split in ("val", "test", "train"):
        parts = [np.fromfile(dm.shard_dir / s["file"], dtype="<u2", offset=HEADER_BYTES)
                 for s in manifest["shards"] if s["split"] == split]
        out[split] = np.concatenate(parts)
    return out


def shard_bytes(directory: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(directory.iterdir()) if p.suffix == ".bin" or p.name == "manifest.json"}


def interrupt(directory: Path, keep: int) -> None:
    """What a preparation killed after its first ``keep`` shards leaves: those shards, no manifest."""
    (directory / "manifest.json").unlink()
    (directory / "verified.json").unlink(missing_ok=True)
    for path in directory.glob("*.bin"):
        if int(path.stem.partition("_")[2]) >= keep:
            path.unlink()


# --- a source read whole: the tail is validation, the head test ------------------------------------------------------


def test_a_fraction_split_is_test_then_train_then_the_unchanged_validation_tail(tmp_path, shakespeare_path):
    dm = ShakespeareDataModule(data_dir=str(tmp_path / "d"), path=str(shakespeare_path), num_proc=1)
    dm.prepare_data()
    splits = split_arrays(dm)
    stream = np.asarray(dm.tokenizer.encode(shakespeare_path.read_text(encoding="utf-8")), dtype=np.uint16)
    n = len(stream)
    # validation is the last val_fraction, exactly the tokens it was before there was a test split
    assert np.array_equal(splits["val"], stream[n - int(n * 0.1):])
    assert len(splits["test"]) == int(n * 0.05) > 0
    # test, train, validation: disjoint consecutive parts that together are the whole stream (training keeps the
    # text just before validation)
    assert np.array_equal(np.concatenate([splits["test"], splits["train"], splits["val"]]), stream)
    manifest = read_manifest(dm.shard_dir)
    assert manifest["tokens"] == {k: len(v) for k, v in splits.items()}
    assert manifest["settings"]["test_fraction"] == 0.05

    # preparing again writes nothing; a fresh directory, or one whose preparation was killed, gets the same bytes
    before = {p.name: p.stat().st_mtime_ns for p in dm.shard_dir.iterdir()}
    ShakespeareDataModule(data_dir=str(tmp_path / "d"), path=str(shakespeare_path), num_proc=1).prepare_data()
    assert before == {p.name: p.stat().st_mtime_ns for p in dm.shard_dir.iterdir()}
    shutil.copytree(tmp_path / "d", tmp_path / "resumed")
    interrupt(tmp_path / "resumed" / "shards", keep=2)  # validation and test written, training not
    ShakespeareDataModule(data_dir=str(tmp_path / "resumed"), path=str(shakespeare_path), num_proc=1).prepare_data()
    assert shard_bytes(tmp_path / "resumed" / "shards") == shard_bytes(dm.shard_dir)

    # the test loader serves the test part, every window once, in order
    dm.setup("test")
    dm.connect(64)
    first = next(iter(dm.test_dataloader()))
    assert np.array_equal(first[0].numpy(), splits["test"][:65])
    assert np.array_equal(next(iter(dm.val_dataloader()))[0].numpy(), splits["val"][:65])


def test_split_fractions_are_checked_naming_the_key(small_text):
    for kwargs in ({"test_fraction": 0.0}, {"test_fraction": 0.9}, {"val_fraction": 0.5, "test_fraction": 0.5}):
        with pytest.raises(ConfigError, match=r"data.test_fraction must be above 0 and below 1 - val_fraction"):
            ShakespeareDataModule(path=str(small_text), **kwargs)
    assert InMemoryTokenDataModule().test_fraction == 0.05


def test_a_text_too_small_for_a_test_split_is_refused(tmp_path):
    path = tmp_path / "tiny.txt"
    path.write_text("abcdefghijklmno", encoding="utf-8")  # 15 characters: 5% is less than one
    with pytest.raises(DataError, match="too few to hold out val_fraction=0.1 and test_fraction=0.05"):
        ShakespeareDataModule(data_dir=str(tmp_path / "d"), path=str(path), num_proc=1).prepare_data()


# --- a streamed source: validation at the head, test right after it ----------------------------------------------


def fineweb(tmp_path: Path, docs: list[str], directory: str, **kwargs) -> FineWebDataModule:
    corpus = tmp_path / "corpus.jsonl"
    if not corpus.exists():
        write_jsonl(corpus, docs)
    return FineWebDataModule(data_dir=str(tmp_path / directory), path=str(corpus), num_proc=1, **kwargs)


def reddit(tmp_path: Path, docs: list[str], directory: str, **kwargs) -> RedditDataModule:
    dump = tmp_path / "RC_2023-01.zst"
    if not dump.exists():
        write_zst(dump, rows(docs))
    return RedditDataModule(path=str(dump), data_dir=str(tmp_path / directory), subreddits=["python"],
                            start_date="2023-01-01", end_date="2023-02-01", num_proc=1, **kwargs)


@pytest.mark.parametrize("make", [fineweb, reddit], ids=["fineweb", "reddit"])
def test_a_streamed_split_is_validation_then_test_at_the_head(tmp_path, shakespeare_docs, make):
    docs = shakespeare_docs[:600]
    # the split boundaries fall inside shards of 2,000 tokens: no shard crosses one
    dm = make(tmp_path, docs, "d", shard_size=2_000, val_tokens=2_500, test_tokens=1_700)
    dm.prepare_data()
    manifest = read_manifest(dm.shard_dir)
    assert [(s["split"], s["tokens"]) for s in manifest["shards"][:5]] == [
        ("val", 2_000), ("val", 500), ("test", 1_700), ("train", 2_000), ("train", 2_000)]
    splits = split_arrays(dm)
    stream = np.concatenate([splits["val"], splits["test"], splits["train"]])
    # the three splits are consecutive cuts of one stream: the same stream whatever the sizes held out
    other = make(tmp_path, docs, "other", shard_size=3_000, val_tokens=100)
    other.prepare_data()
    assert other.held_out_tokens == (100, 100)  # test_tokens defaults to the validation's size
    other_splits = split_arrays(other)
    assert np.array_equal(np.concatenate([other_splits["val"], other_splits["test"], other_splits["train"]]), stream)
    # and that stream is the whole corpus, each document after an end-of-text token
    text = dm.tokenizer.decode(stream.tolist())
    assert text.count(dm.tokenizer.decode([dm.tokenizer.eot_id])) == manifest["documents"]

    # a killed preparation resumes to the same shards, wherever it stopped
    for keep in (1, 2, 4):
        resumed = tmp_path / f"resumed{keep}"
        shutil.copytree(tmp_path / "d", resumed)
        interrupt(resumed / "shards", keep)
        make(tmp_path, docs, resumed.name, shard_size=2_000, val_tokens=2_500, test_tokens=1_700).prepare_data()
        assert shard_bytes(resumed / "shards") == shard_bytes(dm.shard_dir), keep
    # another test size is other data: refused, not mixed
    with pytest.raises(DataError, match=r"prepared with other settings \(test_tokens: 1700 -> 1800\)"):
        make(tmp_path, docs, "d", shard_size=2_000, val_tokens=2_500, test_tokens=1_800).prepare_data()


def test_streamed_split_sizes_are_checked_naming_the_key(tmp_path):
    with pytest.raises(ConfigError, match=r"data.test_tokens is 0; it must be positive or null"):
        FineWebDataModule(path=str(tmp_path), test_tokens=0)
    with pytest.raises(ConfigError, match=r"data.max_tokens \(1500\) leaves nothing to train on after the first "
                                          r"1000 tokens for validation and 500 for test"):
        FineWebDataModule(path=str(tmp_path), val_tokens=1000, test_tokens=500, max_tokens=1500)


# --- data prepared before there was a test split ------------------------------------------------------------------


def as_prepared_without_a_test_split(shard_dir: Path) -> None:
    # what an earlier version left: no test_tokens in its settings (its training shards include the test part)
    for name in (SETTINGS, "manifest.json"):
        path = shard_dir / name
        data = json.loads(path.read_text())
        settings = data if name == SETTINGS else data["settings"]
        settings.pop("test_tokens")
        settings.pop("test_fraction", None)
        path.write_text(json.dumps(data))


def test_data_prepared_without_a_test_split_is_refused_in_one_line(tmp_path, small_text, monkeypatch):
    data_dir = tmp_path / "d"
    dm = ShakespeareDataModule(data_dir=str(data_dir), path=str(small_text), num_proc=1)
    dm.prepare_data()
    as_prepared_without_a_test_split(dm.shard_dir)
    with pytest.raises(DataError, match="prepared by an earlier version, without a test split.*delete .* and prepare"):
        ShakespeareDataModule(data_dir=str(data_dir), path=str(small_text), num_proc=1).prepare_data()
    with pytest.raises(DataError, match="without a test split"):  # reading it without preparing: refused too
        ShakespeareDataModule(data_dir=str(data_dir), path=str(small_text)).setup("test")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as e:
        main(["prepare", "--config", str(CONFIGS / "debug_char.yaml"), "--data.path", str(small_text),
              "--data.data_dir", str(data_dir)])
    line = str(e.value.code)  # main.py prints it as the one line of its exit
    assert line.startswith("error: ") and "\n" not in line and "without a test split" in line and str(data_dir) in line


# --- the commands ------------------------------------------------------------------------------------------------


def test_test_reports_the_held_out_split_and_validate_the_validation_one(tmp_path, shakespeare_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    common = ["--config", str(CONFIGS / "debug_char.yaml"), "--data.path", str(shakespeare_path),
              "--data.data_dir", str(tmp_path / "data"), "--trainer.max_steps", "4"]
    fit = main(["fit", *common])
    last = Path(fit.trainer.checkpoint_callback.dirpath) / "last.ckpt"
    # both evaluations over their whole split: on one and the same split they would give the same loss
    evaluate = [*common, "--ckpt_path", str(last), "--trainer.limit_val_batches", "1.0",
                "--trainer.limit_test_batches", "1.0"]
    validated = main(["validate", *evaluate])
    tested = main(["test", *evaluate])
    val_loss = validated.trainer.callback_metrics["val/loss"].item()
    test_loss = tested.trainer.callback_metrics["test/loss"].item()
    assert np.isfinite(test_loss) and abs(test_loss - val_loss) > 1e-4
    dm = tested.datamodule
    assert dm.test_shards.paths != dm.val_shards.paths
    # the windows `test` read are the test split's, none of them validation or training data
    splits = split_arrays(dm)
    served = np.concatenate([b.numpy()[:, :-1].ravel() for b in dm.test_dataloader()])
    assert np.array_equal(served, splits["test"][: len(served)]) and len(served) > len(splits["test"]) - 8 * 33
