import functools
import http.server
import threading
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from data_modules.base import RandomWindows, SequentialWindows
from data_modules.shakespeare import SHA256, ShakespeareDataModule
from lit_gpt_mini.errors import DataError

TOKENS = np.arange(1000, dtype=np.uint16)


def test_random_windows_are_shifted_pairs_from_the_stream():
    ds = RandomWindows(TOKENS, block_size=16, batch_size=4, seed=0)
    x, y = ds.batch(0)
    assert x.shape == y.shape == (4, 16) and x.dtype == torch.int64
    # consecutive tokens of the stream, targets shifted by one
    assert torch.equal(y[:, :-1], x[:, 1:])
    assert torch.equal(x[:, 1:] - x[:, :-1], torch.ones(4, 15, dtype=torch.int64))


def test_random_windows_depend_on_seed_index_and_rank_only():
    a = RandomWindows(TOKENS, 16, 4, seed=7)
    assert torch.equal(a.batch(5)[0], RandomWindows(TOKENS, 16, 4, seed=7).batch(5)[0])
    assert not torch.equal(a.batch(5)[0], a.batch(6)[0])
    assert not torch.equal(a.batch(5)[0], RandomWindows(TOKENS, 16, 4, seed=8).batch(5)[0])
    assert not torch.equal(a.batch(5)[0], RandomWindows(TOKENS, 16, 4, seed=7, rank=1).batch(5)[0])


def test_stream_resumes_at_start_batch_and_is_the_same_for_any_number_of_workers():
    def first(n, ds, workers):
        it = iter(DataLoader(ds, batch_size=None, num_workers=workers))
        return [next(it)[0] for _ in range(n)]

    full = first(8, RandomWindows(TOKENS, 16, 4, seed=3), 0)
    resumed = first(5, RandomWindows(TOKENS, 16, 4, seed=3, start_batch=3), 0)
    assert all(torch.equal(a, b) for a, b in zip(full[3:], resumed))
    with_workers = first(8, RandomWindows(TOKENS, 16, 4, seed=3), 2)
    assert all(torch.equal(a, b) for a, b in zip(full, with_workers))


@pytest.mark.parametrize("workers", [0, 2])
def test_sequential_windows_cover_the_split_once_across_ranks(workers):
    seen = []
    for rank in range(3):
        ds = SequentialWindows(TOKENS, block_size=10, batch_size=4, rank=rank, world_size=3)
        batches = list(DataLoader(ds, batch_size=None, num_workers=workers))
        assert len(batches) == len(ds)
        seen += [row[0].item() for x, _ in batches for row in x]
    assert sorted(seen) == list(range(0, 990, 10))  # 99 full windows of 10 (+1 target) in 1000 tokens


def test_too_short_stream_is_refused():
    with pytest.raises(DataError, match="fewer than block_size"):
        RandomWindows(TOKENS[:10], block_size=16, batch_size=2, seed=0)


# --- Tiny Shakespeare -----------------------------------------------------------------------------------------


@pytest.fixture
def http_server(tmp_path):
    """Serves tmp_path/www on 127.0.0.1; yields the base URL."""
    root = tmp_path / "www"
    root.mkdir()
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(root))
    handler.log_message = lambda *a, **k: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield root, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def test_download_verifies_checksum_and_is_then_reused(tmp_path, http_server, shakespeare_path):
    root, base = http_server
    (root / "input.txt").write_bytes(shakespeare_path.read_bytes())
    dm = ShakespeareDataModule(data_dir=str(tmp_path / "data"), url=f"{base}/input.txt", block_size=64)
    dm.prepare_data()
    dest = tmp_path / "data" / "tinyshakespeare.txt"
    assert dest.read_bytes() == shakespeare_path.read_bytes()
    assert not list(dest.parent.glob("*.part"))  # no temporary file left behind
    (root / "input.txt").unlink()  # a second run must not download again
    dm2 = ShakespeareDataModule(data_dir=str(tmp_path / "data"), url=f"{base}/input.txt", block_size=64)
    dm2.setup("fit")
    assert dm2.vocab_size == 65
    assert len(dm2.train_tokens) + len(dm2.val_tokens) == 1_115_394
    assert len(dm2.val_tokens) == 111_539  # the last 10%


def test_download_with_wrong_checksum_is_refused_and_removed(tmp_path, http_server):
    root, base = http_server
    (root / "input.txt").write_text("not shakespeare at all\n" * 100)
    dm = ShakespeareDataModule(data_dir=str(tmp_path / "data"), url=f"{base}/input.txt")
    with pytest.raises(DataError, match="sha256") as e:
        dm.prepare_data()
    assert SHA256 in str(e.value) and "tinyshakespeare.txt" in str(e.value)
    assert not any((tmp_path / "data").iterdir())


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
    dm = ShakespeareDataModule(data_dir="unused", path=str(small_text), block_size=16)
    dm.setup("fit")
    assert dm.tokenizer.decode(dm.train_tokens[:7].tolist()) == "Line 0:"
    assert not Path("unused").exists()


@pytest.mark.parametrize(
    "content, message",
    [(b"", "is empty"), (b"\xff\xfe\x00bad", "not UTF-8")],
)
def test_bad_local_files_are_named(tmp_path, content, message):
    path = tmp_path / "bad.txt"
    path.write_bytes(content)
    with pytest.raises(DataError, match=message) as e:
        ShakespeareDataModule(path=str(path)).setup("fit")
    assert str(path) in str(e.value)


def test_missing_local_file_is_named(tmp_path):
    with pytest.raises(DataError, match="nope.txt does not exist"):
        ShakespeareDataModule(path=str(tmp_path / "nope.txt")).setup("fit")


def test_block_size_larger_than_the_data_is_refused(small_text):
    with pytest.raises(DataError, match="block_size .4096. is too large.*validation split"):
        ShakespeareDataModule(path=str(small_text), block_size=4096).setup("fit")


def test_datamodule_state_round_trip(small_text):
    dm = ShakespeareDataModule(path=str(small_text), block_size=16)
    dm.train_batches_seen = 42
    other = ShakespeareDataModule(path=str(small_text), block_size=16)
    other.load_state_dict(dm.state_dict())
    assert other.train_batches_seen == 42
