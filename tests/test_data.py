from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from data_modules.windows import SequentialWindows, ShuffledWindows, split_windows
from data_modules.shakespeare import SHA256, ShakespeareDataModule
from data_modules.shards import ShardSet, ShardWriter
from lit_gpt_mini.errors import ConfigError, DataError
from lit_gpt_mini.tokenizers import CharTokenizer

# 3000 distinct symbols: a token's id is its position in the stream, so a window shows where it came from.
TOKENIZER = CharTokenizer([chr(0x100 + i) for i in range(3000)])


def make_shards(directory: Path, lengths: list[int], val_tokens: int = 100) -> dict[str, ShardSet]:
    """Shards of the stream 0, 1, 2, ... cut to ``lengths`` (the first val_tokens tokens are validation)."""
    writer = ShardWriter(directory, TOKENIZER, max(lengths + [val_tokens]), val_tokens=val_tokens, settings={})
    writer.resume()
    stream = np.arange(val_tokens + sum(lengths), dtype=np.uint16)
    writer.add(0, stream[:val_tokens])
    start = val_tokens
    for n in lengths:  # one document per shard, so each shard holds exactly n tokens
        writer.add(1, stream[start : start + n], start - val_tokens)
        writer._flush()
        start += n
    writer.finish()
    return {split: ShardSet.open(directory, split, TOKENIZER) for split in ("train", "val")}


@pytest.fixture
def shards(tmp_path):
    return make_shards(tmp_path / "shards", [700, 500, 300])


def test_windows_are_shifted_pairs_from_one_shard(shards):
    ds = ShuffledWindows(shards["train"], block_size=16, batch_size=4, seed=0)
    windows = ds.batch(0)
    # one contiguous tensor in the shards' dtype leaves the host; inputs and targets are cut on the device
    assert windows.shape == (4, 17) and windows.dtype == torch.uint16 and windows.is_contiguous()
    x, y = split_windows(windows)
    assert x.shape == y.shape == (4, 16) and x.dtype == torch.int64
    assert torch.equal(y[:, :-1], x[:, 1:])  # targets are the inputs shifted by one
    assert torch.equal(x[:, 1:] - x[:, :-1], torch.ones(4, 15, dtype=torch.int64))  # consecutive stream tokens
    shard_ids, starts = ds.locate(ds.positions(0))
    first_token = np.array([100, 800, 1300])[shard_ids] + starts  # where each shard begins in the stream
    assert torch.equal(x[:, 0], torch.from_numpy(first_token))


def test_an_epoch_visits_every_window_once_in_a_shuffled_order(shards):
    ds = ShuffledWindows(shards["train"], block_size=16, batch_size=4, seed=0)
    per_epoch = ds.windows_per_epoch
    assert per_epoch == (700 - 16) // 16 + (500 - 16) // 16 + (300 - 16) // 16
    for epoch in range(3):
        shard_ids, starts = ds.locate(np.arange(epoch * per_epoch, (epoch + 1) * per_epoch))
        assert len(set(zip(shard_ids.tolist(), starts.tolist()))) == per_epoch  # no window twice
        offsets = set((starts % 16).tolist())
        assert len(offsets) == 1 and starts.max() + 17 <= 700  # one grid offset per epoch, inside the shards
        in_stream_order = np.all(np.diff(shard_ids) >= 0) and all(
            np.all(np.diff(starts[shard_ids == s]) > 0) for s in range(3)
        )
        assert not in_stream_order
    epochs = [ds.locate(np.arange(e * per_epoch, (e + 1) * per_epoch)) for e in range(2)]
    assert not np.array_equal(epochs[0][1], epochs[1][1])  # each epoch has its own order


def test_ranks_take_disjoint_windows_and_together_make_the_single_device_stream(shards):
    one = ShuffledWindows(shards["train"], 16, 4, seed=5)
    ranks = [ShuffledWindows(shards["train"], 16, 4, seed=5, rank=r, world_size=3) for r in range(3)]
    for step in range(10):
        together = np.concatenate([ds.positions(step) for ds in ranks])
        assert len(np.unique(together)) == 12
        # the global batch of 3 ranks x 4 windows is the single-device stream's next 12 windows
        assert np.array_equal(np.sort(together), np.arange(step * 12, step * 12 + 12))
        for r, ds in enumerate(ranks):
            assert np.array_equal(ds.positions(step), one.positions(3 * step + r))


def test_stream_depends_on_seed_and_is_the_same_for_any_number_of_workers(shards):
    def first(n, ds, workers):
        it = iter(DataLoader(ds, batch_size=None, num_workers=workers))
        return [next(it) for _ in range(n)]

    full = first(8, ShuffledWindows(shards["train"], 16, 4, seed=3), 0)
    assert all(torch.equal(a, b) for a, b in zip(full, first(8, ShuffledWindows(shards["train"], 16, 4, seed=3), 2)))
    other_seed = first(8, ShuffledWindows(shards["train"], 16, 4, seed=4), 0)
    assert not all(torch.equal(a, b) for a, b in zip(full, other_seed))
    # resuming after 3 batches (12 windows) continues the same stream
    resumed = first(5, ShuffledWindows(shards["train"], 16, 4, seed=3, start_window=12), 0)
    assert all(torch.equal(a, b) for a, b in zip(full[3:], resumed))


@pytest.mark.parametrize("workers", [0, 2])
def test_sequential_windows_cover_the_split_once_across_ranks(tmp_path, workers):
    sets = make_shards(tmp_path / "s", [35, 25], val_tokens=60)  # val: one 60-token shard; train unused
    val = ShardSet(sets["val"].paths + sets["train"].paths, sets["val"].headers + sets["train"].headers)
    seen = []
    for rank in range(3):
        ds = SequentialWindows(val, block_size=10, batch_size=4, rank=rank, world_size=3)
        batches = list(DataLoader(ds, batch_size=None, num_workers=workers))
        assert len(batches) == len(ds)
        seen += [row[0].item() for windows in batches for row in windows]
    # 5 windows of 10 (+1 target) in the 60-token shard, 3 in the 35-token one, 2 in the 25-token one
    expected = list(range(0, 50, 10)) + [60, 70, 80] + [95, 105]
    assert sorted(seen) == expected


def test_too_short_shards_are_refused(tmp_path):
    sets = make_shards(tmp_path / "s", [20, 20], val_tokens=20)
    with pytest.raises(DataError, match=r"model.block_size \(16\) is too large for the training data"):
        ShuffledWindows(sets["train"], block_size=16, batch_size=2, seed=0)
    with pytest.raises(DataError, match=r"model.block_size \(20\) is too large for the validation data"):
        SequentialWindows(sets["val"], block_size=20, batch_size=2)


# --- Tiny Shakespeare -----------------------------------------------------------------------------------------


def test_download_verifies_checksum_and_is_then_reused(tmp_path, http_server, shakespeare_path):
    root, base = http_server
    (root / "input.txt").write_bytes(shakespeare_path.read_bytes())
    dm = ShakespeareDataModule(data_dir=str(tmp_path / "data"), url=f"{base}/input.txt")
    dm.prepare_data()
    dest = tmp_path / "data" / "tinyshakespeare.txt"
    assert dest.read_bytes() == shakespeare_path.read_bytes()
    assert not list(dest.parent.glob("*.part"))  # no temporary file left behind
    (root / "input.txt").unlink()  # a second run must not download again
    dm2 = ShakespeareDataModule(data_dir=str(tmp_path / "data"), url=f"{base}/input.txt")
    dm2.prepare_data()
    dm2.setup("fit")
    assert dm2.tokenizer.vocab_size == 65
    assert dm2.train_shards.num_tokens + dm2.val_shards.num_tokens + dm2.test_shards.num_tokens == 1_115_394
    assert dm2.val_shards.num_tokens == 111_539  # the last 10%
    val = dm2.val_shards.read(0, np.array([0]), 111_539)[0]
    assert dm2.tokenizer.decode(val.tolist()) == shakespeare_path.read_text()[-111_539:]


def test_download_with_wrong_checksum_is_refused_and_removed(tmp_path, http_server):
    root, base = http_server
    (root / "input.txt").write_text("not shakespeare at all\n" * 100)
    dm = ShakespeareDataModule(data_dir=str(tmp_path / "data"), url=f"{base}/input.txt")
    with pytest.raises(DataError, match="sha256") as e:
        dm.prepare_data()
    assert SHA256 in str(e.value) and "tinyshakespeare.txt" in str(e.value)
    # nothing left but the preparation's lock file (the download runs under it)
    assert [p.name for p in (tmp_path / "data").iterdir()] == [".prepare.lock"]


def test_corrupt_cached_file_is_reported(tmp_path):
    (tmp_path / "tinyshakespeare.txt").write_text("truncated")
    with pytest.raises(DataError, match="corrupt.*delete it"):
        ShakespeareDataModule(data_dir=str(tmp_path)).prepare_data()


def test_failed_download_says_how_to_work_offline(tmp_path, http_server):
    _, base = http_server
    dm = ShakespeareDataModule(data_dir=str(tmp_path / "data"), url=f"{base}/missing.txt")
    with pytest.raises(DataError, match="could not download.*data.path"):
        dm.prepare_data()


def test_local_path_is_used_without_checksum(small_text):
    dm = ShakespeareDataModule(data_dir=str(small_text.parent / "data"), path=str(small_text))
    dm.prepare_data()
    dm.setup("fit")
    text = small_text.read_text(encoding="utf-8")
    # the local file's text is what was tokenized: its head is the test split, training follows it
    assert dm.tokenizer.decode(dm.test_shards.read(0, np.array([0]), 7)[0].tolist()) == "Line 0:"
    n_test = int(dm.test_shards.lengths.sum())
    assert dm.tokenizer.decode(dm.train_shards.read(0, np.array([0]), 7)[0].tolist()) == text[n_test:n_test + 7]
    assert not (small_text.parent / "data" / "tinyshakespeare.txt").exists()


@pytest.mark.parametrize(
    "content, message",
    [(b"", "is empty"), (b"\xff\xfe\x00bad", "not UTF-8")],
)
def test_bad_local_files_are_named(tmp_path, content, message):
    path = tmp_path / "bad.txt"
    path.write_bytes(content)
    with pytest.raises(DataError, match=message) as e:
        ShakespeareDataModule(data_dir=str(tmp_path), path=str(path)).prepare_data()
    assert str(path) in str(e.value)


def test_missing_local_file_is_named(tmp_path):
    with pytest.raises(DataError, match="nope.txt does not exist"):
        ShakespeareDataModule(data_dir=str(tmp_path), path=str(tmp_path / "nope.txt")).prepare_data()


def test_block_size_larger_than_the_data_is_refused(small_text):
    dm = ShakespeareDataModule(data_dir=str(small_text.parent / "data"), path=str(small_text))
    dm.prepare_data()
    dm.setup("fit")
    dm.connect(4096)  # the model's context
    with pytest.raises(DataError, match=r"model.block_size \(4096\) is too large for the validation data"):
        dm.val_dataloader()


def test_the_data_takes_the_model_context_and_gives_its_tokenizer(small_text):
    dm = ShakespeareDataModule(data_dir=str(small_text.parent / "data"), path=str(small_text), batch_size=3)
    dm.prepare_data()
    dm.setup("fit")
    with pytest.raises(ConfigError, match="no window length yet"):
        dm.train_dataloader()
    assert dm.connect(16) is dm.tokenizer and dm.tokenizer.vocab_size == 41
    x, y = dm.on_after_batch_transfer(next(iter(dm.train_dataloader())), 0)
    assert x.shape == y.shape == (3, 16) and torch.equal(x[:, 1:], y[:, :-1])
    with pytest.raises(ConfigError, match=r"model.block_size is 0; it must be positive"):
        dm.connect(0)


def test_another_text_in_the_same_data_dir_is_refused_not_mixed(tmp_path, small_text, shakespeare_path):
    ShakespeareDataModule(data_dir=str(tmp_path / "d"), path=str(small_text)).prepare_data()
    with pytest.raises(DataError, match="prepared with other settings.*text_sha256.*delete that directory"):
        ShakespeareDataModule(data_dir=str(tmp_path / "d"), path=str(shakespeare_path)).prepare_data()


def test_datamodule_state_round_trip(small_text):
    dm = ShakespeareDataModule(path=str(small_text))
    dm.train_windows_seen = 42
    other = ShakespeareDataModule(path=str(small_text))
    other.load_state_dict(dm.state_dict())
    assert other.train_windows_seen == 42


def test_ordered_map_keeps_few_tasks_in_flight_on_an_endless_stream():
    # Pool.imap would drain an endless task stream into its queue; ordered_map reads ahead two tasks a process.
    import itertools
    import multiprocessing

    from lit_gpt_mini.streams import ordered_map

    pulled = []

    def tasks():
        for i in itertools.count():
            pulled.append(i)
            yield i

    with multiprocessing.get_context("fork").Pool(2) as pool:
        results = list(itertools.islice(ordered_map(abs, tasks(), pool=pool, num_proc=2), 20))
    assert results == list(range(20))  # in input order
    assert len(pulled) <= 20 + 2 * 2
    assert list(itertools.islice(ordered_map(abs, tasks()), 3)) == [0, 1, 2]  # no pool: here, lazily
