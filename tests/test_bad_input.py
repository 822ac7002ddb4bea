"""Bad input, table-driven: every case runs the CLI (in-process), and must end with its exit status and one
``error:`` line naming the file, line or key, and no traceback; never train on wrong data or hang.

Each row builds one kind of damaged, half-written or wrong input from a small real run (shards and a
checkpoint of ``configs/debug_char.yaml``), as someone with a damaged download or an edited file would have.
"""

from __future__ import annotations

import errno
import json
import os
import pickle
import random
import resource
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable, Optional

import numpy as np
import pytest
import torch

from data_modules.shards import HEADER_BYTES, MANIFEST, ShardHeader
from lit_gpt_mini.cli.main import main

from .conftest import CONFIGS, ROOT, SHARED_DATA, sigint_as_in_a_terminal

DEBUG = str(CONFIGS / "debug_char.yaml")
TEXT = str(SHARED_DATA / "tinyshakespeare.txt")


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    """A 2-step run of the debug config: its prepared shards and its last.ckpt, built once for the module."""
    root = tmp_path_factory.mktemp("run")
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(root)
        main(["fit", "--config", DEBUG, "--data.path", TEXT, "--trainer.max_steps", "2",
              "--trainer.val_check_interval", "2", "--trainer.limit_val_batches", "1"])
    return root


class Case:
    """A working directory with copies of the run's files, where a row damages what it needs."""

    def __init__(self, run: Path, tmp: Path) -> None:
        self.run, self.tmp = run, tmp

    @property
    def data(self) -> Path:
        """A copy of the run's data directory (``data_dir``); its shards are in ``shards/``."""
        path = self.tmp / "data"
        if not path.exists():
            shutil.copytree(self.run / "data/shakespeare", path)
        return path

    @property
    def shards(self) -> Path:
        return self.data / "shards"

    @property
    def ckpt(self) -> Path:
        """A copy of the run's last.ckpt."""
        path = self.tmp / "run.ckpt"
        if not path.exists():
            shutil.copy(self.run / "out/debug_char/checkpoints/last.ckpt", path)
        return path

    def checkpoint(self, edit: Callable[[dict], object], name: str = "edited.ckpt") -> str:
        """The run's checkpoint after ``edit`` (which changes it in place, or returns what to save instead)."""
        ckpt = torch.load(self.ckpt, weights_only=True)
        replaced = edit(ckpt)
        path = self.tmp / name
        torch.save(ckpt if replaced is None else replaced, path)
        return name

    def manifest(self, edit: Callable[[dict], object]) -> None:
        path = self.shards / MANIFEST
        manifest = json.loads(path.read_text())
        replaced = edit(manifest)
        path.write_text(json.dumps(manifest if replaced is None else replaced))

    def write(self, name: str, content: bytes | str) -> str:
        path = self.tmp / name
        path.write_bytes(content.encode() if isinstance(content, str) else content)
        return name


def fit_args(c: Case, *extra: str, command: str = "fit") -> list[str]:
    return [command, "--config", DEBUG, "--data.path", TEXT, "--data.data_dir", str(c.data), *extra]


def prepare_args(c: Case) -> list[str]:
    return ["prepare", "--config", DEBUG, "--data.path", TEXT, "--data.data_dir", str(c.data)]


# --- shards and manifests ----------------------------------------------------------------------------------------


def overwrite_ids(c: Case) -> list[str]:
    # token ids overwritten (a bad disk, an edit), the header untouched: prepare must not say "data ready"
    path = c.shards / "train_000002.bin"
    raw = bytearray(path.read_bytes())
    raw[HEADER_BYTES + 100 : HEADER_BYTES + 104] = b"\xff\xff\xff\xff"
    path.write_bytes(bytes(raw))
    return prepare_args(c)


def ids_outside_vocab_with_valid_checksum(c: Case) -> list[str]:
    # ids >= vocab_size written by other code with a self-consistent header (checksum and all)
    import hashlib

    import numpy as np

    from data_modules.shards import read_header

    path = c.shards / "train_000002.bin"
    header = read_header(path)
    ids = np.fromfile(path, dtype="<u2", offset=HEADER_BYTES)
    ids[100] = 60000
    digest = hashlib.sha256(ids.tobytes()).hexdigest()
    fields = {**header.__dict__, "sha256": digest, "max_id": None}  # as a writer that records no maximum
    path.write_bytes(ShardHeader(**fields).pack() + ids.tobytes())
    c.manifest(lambda m: [e.update(sha256=digest) for e in m["shards"] if e["file"] == path.name] and None)
    return fit_args(c)


def damaged_in_place(value: int) -> Callable[[Case], list[str]]:
    """Every 16th id of a training shard overwritten on the disk, its size and modification time kept: what
    ``verified.json`` records is unchanged, so only reading the shard can tell."""

    def build(c: Case) -> list[str]:
        path = c.shards / "train_000002.bin"
        before = path.stat()
        ids = np.fromfile(path, dtype="<u2", offset=HEADER_BYTES)
        ids[::16] = value
        with open(path, "r+b") as f:
            f.seek(HEADER_BYTES)
            f.write(ids.tobytes())
        os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
        assert path.stat().st_size == before.st_size
        return fit_args(c)

    return build


def damaged_while_training(c: Case) -> list[str]:
    # the shard passes its checks, then changes on the disk mid-run: the windows cut after that carry the ids
    return fit_args(c, "--trainer.callbacks+=tests.helpers.DamageShard", "--trainer.callbacks.path",
                    str(c.shards / "train_000002.bin"))


def tampered_tokenizer_file(c: Case) -> list[str]:
    # two letters of the alphabet swapped: a valid tokenizer file, not the one the shards were made with
    path = c.data / "tokenizer.json"
    path.write_text(path.read_text().replace("ABCD", "BACD"))
    return fit_args(c)


def swap_splits(c: Case) -> list[str]:
    def edit(m):
        for entry in m["shards"]:
            entry["split"] = {"train": "val", "val": "train", "test": "test"}[entry["split"]]

    c.manifest(edit)
    return fit_args(c)


def header_tokenizer_not_utf8(c: Case) -> list[str]:
    path = c.shards / "val_000000.bin"
    raw = bytearray(path.read_bytes())
    name_at = 152 - 64  # the tokenizer name: the last 64 bytes of the packed fields
    raw[name_at : name_at + 4] = b"\xff\xfe\xfd\xfc"
    path.write_bytes(bytes(raw))
    return fit_args(c, command="validate")


def truncated_shard(c: Case) -> list[str]:
    path = c.shards / "train_000002.bin"
    path.write_bytes(path.read_bytes()[: HEADER_BYTES + 1000])  # a half-copied file
    return fit_args(c)


def listed_shard_missing(c: Case) -> list[str]:
    (c.shards / "train_000002.bin").unlink()
    return prepare_args(c)


def manifest_replaced(content: str) -> Callable[[Case], list[str]]:
    def build(c: Case) -> list[str]:
        (c.shards / MANIFEST).write_text(content)
        return prepare_args(c)

    return build


def manifest_edited(edit: Callable[[dict], object]) -> Callable[[Case], list[str]]:
    def build(c: Case) -> list[str]:
        c.manifest(edit)
        return fit_args(c)

    return build


def manifest_is_a_directory(c: Case) -> list[str]:
    (c.shards / MANIFEST).unlink()
    (c.shards / MANIFEST).mkdir()
    return prepare_args(c)


# --- checkpoints -------------------------------------------------------------------------------------------------


def generate_with(make: Callable[[Case], str]) -> Callable[[Case], list[str]]:
    return lambda c: ["generate", "--ckpt_path", make(c), "--max_new_tokens", "2"]


def validate_with(make: Callable[[Case], str]) -> Callable[[Case], list[str]]:
    return lambda c: fit_args(c, "--ckpt_path", make(c), command="validate")


def fit_with(make: Callable[[Case], str]) -> Callable[[Case], list[str]]:
    return lambda c: fit_args(c, "--ckpt_path", make(c))


def bare_tensor(c: Case) -> str:
    return c.checkpoint(lambda ckpt: torch.zeros(3))


def no_weights(c: Case) -> str:
    return c.checkpoint(lambda ckpt: ckpt.pop("state_dict") and None)


def unknown_tokenizer(c: Case) -> str:
    return c.checkpoint(lambda ckpt: ckpt["tokenizer"].update(kind="sentencepiece"))


def tokenizer_missing_fields(c: Case) -> str:
    return c.checkpoint(lambda ckpt: ckpt["tokenizer"].pop("chars") and None)


def weights_of_another_shape(c: Case) -> str:
    return c.checkpoint(lambda ckpt: ckpt["hyper_parameters"].update(n_embd=64))


def huge_model_config(c: Case) -> str:
    # must be refused from the shapes, without allocating a billion layers
    return c.checkpoint(lambda ckpt: ckpt["hyper_parameters"].update(n_layer=10**9))


def nan_weights(c: Case) -> str:
    return c.checkpoint(lambda ckpt: [v.fill_(float("nan")) for k, v in ckpt["state_dict"].items() if "wte" in k] and None)


def pickled_object(c: Case) -> str:
    path = c.tmp / "pickled.ckpt"
    torch.save({"state_dict": {}, "extra": Path("x")}, path)  # a Path: not loadable with weights_only
    return path.name


class RunsCode:
    """Unpickled, this runs a shell command that leaves a file named ``code_ran``: a file holding it must be
    refused without being run (the table checks that no ``code_ran`` appears)."""

    def __init__(self, directory: Path) -> None:
        self.marker = directory / "code_ran"

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def malicious_pickle(c: Case) -> str:
    c.write("evil.ckpt", pickle.dumps({"state_dict": RunsCode(c.tmp)}))  # a plain (non-zip) pickle
    return "evil.ckpt"


def random_bytes(c: Case) -> str:
    return c.write("random.ckpt", random.Random(0).randbytes(4096))


def tokenizer_smaller_than_model(c: Case) -> str:
    # 10 of the 65 characters: the model samples ids the tokenizer cannot decode
    return c.checkpoint(lambda ckpt: ckpt["tokenizer"].update(chars=ckpt["tokenizer"]["chars"][:10]))


def malicious_hf_dir(c: Case) -> list[str]:
    # A Hugging Face directory whose pytorch_model.bin is a pickle that runs code (and no safetensors)
    from transformers import GPT2Config

    directory = c.tmp / "hf"
    GPT2Config(n_layer=2, n_head=2, n_embd=32, n_positions=32, vocab_size=65).save_pretrained(directory)
    (directory / "pytorch_model.bin").write_bytes(pickle.dumps({"transformer.wte.weight": RunsCode(c.tmp)}))
    return fit_args(c, "--model.init_from", str(directory), "--trainer.max_steps", "1")


def half_downloaded(c: Case) -> str:
    return c.write("half.ckpt", c.ckpt.read_bytes()[: c.ckpt.stat().st_size // 2])


def empty_file(c: Case) -> str:
    return c.write("empty.ckpt", b"")


def text_file(c: Case) -> str:
    return c.write("notes.ckpt", "these are not weights\n")


def exported_pth(c: Case) -> str:
    main(["export", "--ckpt_path", str(c.ckpt), "--out", str(c.tmp / "model.pth")])
    return str(c.tmp / "model.pth")


def training_state_removed(c: Case) -> str:
    return c.checkpoint(lambda ckpt: [ckpt.pop(k) for k in ("optimizer_states", "loops")] and None)


def bad_pth(c: Case) -> list[str]:
    name = c.write("bad.pth", b"PK\x03\x04 damaged")
    return fit_args(c, "--model.init_from", str(c.tmp / name), "--trainer.max_steps", "1")


def cuda_without_cuda(c: Case) -> list[str]:
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    return ["generate", "--ckpt_path", str(c.ckpt), "--device", "cuda"]


def export_onto_directory(c: Case) -> list[str]:
    (c.tmp / "exports").mkdir()
    return ["export", "--ckpt_path", str(c.ckpt), "--out", str(c.tmp / "exports")]


def export_hf_onto_file(c: Case) -> list[str]:
    return ["export", "--ckpt_path", str(c.ckpt), "--out", c.write("taken", "x"), "--format", "hf"]


# --- configuration -----------------------------------------------------------------------------------------------


def config_file(content: bytes | str, *extra: str) -> Callable[[Case], list[str]]:
    return lambda c: ["fit", "--config", c.write("my.yaml", content), "--data.path", TEXT, *extra]


DEBUG_TEXT = Path(DEBUG).read_text()
TOKENIZER_KIND_YAML = "data:\n  init_args:\n    tokenizer:\n      kind: sentencepiece\n"

CASES = [
    # (id, build args, exit status, fragments the error line must hold)
    ("shard ids overwritten", overwrite_ids, 1, ["train_000002.bin", "do not match the checksum"]),
    ("shard ids outside the vocabulary", ids_outside_vocab_with_valid_checksum, 1,
     ["train_000002.bin", "holds token id 60000", "below 65"]),
    ("shard ids out of range, damaged in place (size and time kept)", damaged_in_place(65535), 1,
     ["train_000002.bin", "do not match the checksum"]),
    ("shard ids in range, damaged in place (size and time kept)", damaged_in_place(3), 1,
     ["train_000002.bin", "do not match the checksum"]),
    ("shard ids out of range, damaged while training", damaged_while_training, 1,
     ["train_000002.bin", "holds token id 65535 at token", "outside the vocabulary of 65"]),
    ("tokenizer.json changed after the shards were made", tampered_tokenizer_file, 1,
     ["tokenizer.json is not the tokenizer the shards in", "were made with"]),
    ("manifest splits swapped", swap_splits, 1, ["val_000000.bin", "lists its split as 'train'", "header says 'val'"]),
    ("header tokenizer name not UTF-8", header_tokenizer_not_utf8, 1, ["val_000000.bin", "not valid UTF-8"]),
    ("shard truncated", truncated_shard, 1, ["train_000002.bin", "truncated"]),
    ("listed shard missing", listed_shard_missing, 1, ["train_000002.bin", "is missing"]),
    ("manifest is []", manifest_replaced("[]"), 1, [MANIFEST, "not list"]),
    ("manifest half written", manifest_replaced('{"shards": [{"file": "val_0'), 1, [MANIFEST, "unreadable"]),
    ("manifest without shards", manifest_edited(lambda m: m.pop("shards") and None), 1, [MANIFEST, "'shards' is missing"]),
    ("manifest with no shard", manifest_edited(lambda m: m.update(shards=[])), 1, [MANIFEST, "'shards' is empty"]),
    ("manifest file outside the directory", manifest_edited(lambda m: m["shards"][0].update(file="../x.bin")), 1,
     [MANIFEST, "'../x.bin' is not a shard file name"]),
    ("manifest token count edited", manifest_edited(lambda m: m["shards"][2].update(tokens=5)), 1,
     ["train_000002.bin", "lists its tokens as 5"]),
    ("manifest is a directory", manifest_is_a_directory, 1, [MANIFEST, "unreadable"]),
    ("generate: bare tensor", generate_with(bare_tensor), 1, ["edited.ckpt", "holds a Tensor"]),
    ("generate: no weights", generate_with(no_weights), 1, ["edited.ckpt", "has no state_dict"]),
    ("generate: unknown tokenizer kind", generate_with(unknown_tokenizer), 1,
     ["edited.ckpt", "tokenizer cannot be rebuilt", "sentencepiece"]),
    ("generate: tokenizer fields missing", generate_with(tokenizer_missing_fields), 1,
     ["edited.ckpt", "tokenizer cannot be rebuilt"]),
    ("generate: weights of another shape", generate_with(weights_of_another_shape), 1,
     ["edited.ckpt", "weights do not fit"]),
    ("generate: a billion layers", generate_with(huge_model_config), 1, ["edited.ckpt", "weights do not fit"]),
    ("generate: NaN weights", generate_with(nan_weights), 1, ["edited.ckpt", "NaN or infinite", "diverged"]),
    ("generate: pickled objects", generate_with(pickled_object), 1, ["pickled.ckpt", "never loaded"]),
    ("generate: half downloaded", generate_with(half_downloaded), 1, ["half.ckpt", "could not be loaded"]),
    ("generate: empty file", generate_with(empty_file), 1, ["empty.ckpt", "could not be loaded"]),
    ("generate: missing file", lambda c: ["generate", "--ckpt_path", "nowhere.ckpt"], 1, ["nowhere.ckpt", "does not exist"]),
    ("generate: tokenizer smaller than the model",
     lambda c: ["generate", "--ckpt_path", tokenizer_smaller_than_model(c), "--max_new_tokens", "50"], 1,
     ["edited.ckpt", "its tokenizer has 10 tokens but its model predicts 65"]),
    ("export: tokenizer smaller than the model",
     lambda c: ["export", "--ckpt_path", tokenizer_smaller_than_model(c), "--out", "m.pth"], 1,
     ["edited.ckpt", "its tokenizer has 10 tokens but its model predicts 65"]),
    ("validate: tokenizer smaller than the model", validate_with(tokenizer_smaller_than_model), 1,
     ["edited.ckpt", "its tokenizer has 10 tokens but its model predicts 65"]),
    ("generate: cuda without cuda", cuda_without_cuda, 1, ["--device cuda", "no usable CUDA device"]),
    ("export: bare tensor", lambda c: ["export", "--ckpt_path", bare_tensor(c), "--out", "m.pth"], 1,
     ["edited.ckpt", "holds a Tensor"]),
    ("export: onto a directory", export_onto_directory, 1, ["exports", "is a directory"]),
    ("export: hf onto a file", export_hf_onto_file, 1, ["taken", "is a file"]),
    ("validate: missing ckpt_path", validate_with(lambda c: "nowhere.ckpt"), 1, ["nowhere.ckpt", "does not exist"]),
    ("validate: ckpt_path is a directory", validate_with(lambda c: str(c.data)), 1, ["is a directory"]),
    ("validate: text file", validate_with(text_file), 1, ["notes.ckpt", "could not be loaded"]),
    ("validate: bare tensor", validate_with(bare_tensor), 1, ["edited.ckpt", "holds a Tensor"]),
    ("validate: unknown tokenizer", validate_with(unknown_tokenizer), 1, ["edited.ckpt", "sentencepiece"]),
    ("validate: pickled objects", validate_with(pickled_object), 1, ["pickled.ckpt", "never loaded"]),
    ("validate: random bytes", validate_with(random_bytes), 1, ["random.ckpt", "could not be loaded"]),
    ("validate: empty file", validate_with(empty_file), 1, ["empty.ckpt", "could not be loaded"]),
    ("validate: a pickle that runs code", validate_with(malicious_pickle), 1, ["evil.ckpt", "never loaded"]),
    ("fit: random bytes", fit_with(random_bytes), 1, ["random.ckpt", "could not be loaded"]),
    ("fit: text file", fit_with(text_file), 1, ["notes.ckpt", "could not be loaded"]),
    ("fit: empty file", fit_with(empty_file), 1, ["empty.ckpt", "could not be loaded"]),
    ("fit: a pickle that runs code", fit_with(malicious_pickle), 1, ["evil.ckpt", "never loaded"]),
    ("fit: init_from a Hugging Face directory with a pickle that runs code", malicious_hf_dir, 1,
     ["hf/pytorch_model.bin", "never loaded"]),
    ("fit: resume from an export", fit_with(exported_pth), 1, ["model.pth", "use it as model.init_from"]),
    ("fit: resume without training state", fit_with(training_state_removed), 1,
     ["edited.ckpt", "--model.init_from"]),
    ("fit: init_from a damaged .pth", bad_pth, 1, ["bad.pth", "could not be loaded"]),
    ("model.learning_rate 0", lambda c: fit_args(c, "--model.learning_rate", "0"), 1, ["model.learning_rate is 0.0"]),
    ("model.learning_rate negative", lambda c: fit_args(c, "--model.learning_rate=-1e-3", "--model.min_lr", "0"),
     1, ["model.learning_rate is -0.001"]),
    ("model.min_lr negative", lambda c: fit_args(c, "--model.min_lr", "-1"), 1, ["model.min_lr is -1"]),
    ("model.beta2 1", lambda c: fit_args(c, "--model.beta2", "1.0"), 1, ["model.beta2 is 1.0"]),
    ("model.eps 0", lambda c: fit_args(c, "--model.eps", "0"), 1, ["model.eps is 0"]),
    ("model.learning_rate nan", lambda c: fit_args(c, "--model.learning_rate", "nan"), 2, ["model.learning_rate", "nan"]),
    ("model.learning_rate .nan in YAML", config_file(DEBUG_TEXT.replace("warmup_steps: 5", "learning_rate: .nan")),
     1, ["model.learning_rate is nan"]),
    ("data.seed -1", lambda c: fit_args(c, "--data.seed", "-1"), 1, ["data.seed is -1"]),
    ("data.num_workers -2", lambda c: fit_args(c, "--data.num_workers", "-2"), 1, ["data.num_workers is -2"]),
    ("trainer.val_check_interval 0", lambda c: fit_args(c, "--trainer.val_check_interval", "0"), 1,
     ["trainer.val_check_interval is 0"]),
    ("trainer.max_steps -5", lambda c: fit_args(c, "--trainer.max_steps", "-5"), 1, ["trainer.max_steps is -5"]),
    ("trainer.accumulate_grad_batches 0", lambda c: fit_args(c, "--trainer.accumulate_grad_batches", "0"), 1,
     ["trainer.accumulate_grad_batches is 0"]),
    ("data.path is a directory", lambda c: ["fit", "--config", DEBUG, "--data.path", str(c.tmp)], 1,
     ["data.path", "is a directory"]),
    ("YAML syntax error", config_file("model:\n  init_args: [1, 2\n"), 2, ["my.yaml", "YAML syntax error at line"]),
    ("binary YAML", config_file(bytes(range(128, 256)) * 4), 2, ["my.yaml", "not UTF-8"]),
    ("YAML that is a list", config_file("- 1\n- 2\n"), 2, ["my.yaml", "holds a list"]),
    ("YAML tab indentation", config_file("trainer:\n\tmax_steps: 3\n"), 2, ["my.yaml", "line 2"]),
    ("config is a directory", lambda c: ["fit", "--config", str(c.tmp)], 2, ["is a directory"]),
    ("config file missing", lambda c: ["fit", "--config", "nowhere.yaml"], 2, ["nowhere.yaml", "does not exist"]),
    ("unknown model key", config_file(DEBUG_TEXT.replace("n_embd: 32", "n_embed: 32")), 2,
     ["unknown key model.n_embed", "my.yaml", "did you mean model.n_embd?"]),
    ("unknown trainer key", config_file(DEBUG_TEXT.replace("max_steps: 20", "max_stepz: 20")), 2,
     ["unknown key trainer.max_stepz", "did you mean trainer.max_steps?"]),
    ("unknown data key on the command line", lambda c: fit_args(c, "--data.init_args.sed", "3"), 2,
     ["unknown key data.sed", "did you mean data.seed?"]),
    ("value of the wrong type", lambda c: fit_args(c, "--model.n_layer", "two"), 2, ["model.n_layer", "two"]),
    ("a command-line value of the wrong type", lambda c: fit_args(c, "--data.tokenizer.vocab_size", "big"), 2,
     ["data.tokenizer.vocab_size", "Got value: big (on the command line)"]),
    ("a command-line value not allowed", lambda c: fit_args(c, "--data.tokenizer.kind", "sentencepiece"), 2,
     ["data.tokenizer.kind", "Got value: sentencepiece (on the command line)"]),
    ("a value not allowed in the second config file",
     lambda c: ["fit", "--config", DEBUG, "--config", c.write("my.yaml", TOKENIZER_KIND_YAML), "--data.path", TEXT], 2,
     ["data.tokenizer.kind", "Got value: sentencepiece (in my.yaml)"]),
    ("a string where the tokenizer's mapping belongs, in YAML",
     config_file(DEBUG_TEXT.replace("    batch_size: 8\n", "    batch_size: 8\n    tokenizer: bpe\n")), 2,
     ["data.tokenizer takes a mapping of its settings (kind, vocab_size", "not 'bpe' (in my.yaml)",
      "--data.tokenizer.kind bpe"]),
    ("a string where the tokenizer's mapping belongs, on the command line",
     lambda c: fit_args(c, "--data.tokenizer", "bpe"), 2,
     ["data.tokenizer takes a mapping of its settings", "not 'bpe' (on the command line)"]),
    ("generate: unknown option", lambda c: ["generate", "--ckpt_path", "x", "--max_new_tokenz", "3"], 2,
     ["unknown option --max_new_tokenz", "did you mean --max_new_tokens?"]),
]


@pytest.mark.parametrize("build, status, fragments", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input_ends_with_one_error_line(run, tmp_path, monkeypatch, capsys, build, status, fragments):
    monkeypatch.chdir(tmp_path)
    args = build(Case(run, tmp_path))
    capsys.readouterr()  # only what the command prints
    code = 0
    try:
        main(args)  # any other exception fails the test: it would have been a traceback
    except SystemExit as e:
        code = e.code
        if isinstance(code, str):  # sys.exit("error: ..."): the interpreter prints it and exits with 1
            print(code, file=sys.stderr)
            code = 1
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert code == status, err
    assert len(errors) == 1, err
    for fragment in fragments:
        assert fragment in errors[0]
    assert "Traceback" not in err and "weights_only=False" not in err
    assert "torch.save" not in err and "_use_new_zipfile_serialization" not in err  # no advice from torch either
    assert len(err.splitlines()) < 10, err  # no page of usage
    assert not (tmp_path / "code_ran").exists()  # nothing in a file ran


def test_the_first_run_of_a_damaged_directory_does_not_train(run, tmp_path, monkeypatch):
    # The case of the issue: prepare used to say "data ready", then fit hit an IndexError in the model.
    monkeypatch.chdir(tmp_path)
    c = Case(run, tmp_path)
    with pytest.raises(SystemExit, match="train_000002.bin: the token ids do not match the checksum"):
        main(overwrite_ids(c))
    with pytest.raises(SystemExit, match="train_000002.bin: the token ids do not match the checksum"):
        main(fit_args(c))
    assert not (tmp_path / "out").exists() or not list((tmp_path / "out").rglob("*.ckpt"))


def test_an_intact_directory_is_fully_checked_once(run, tmp_path, monkeypatch):
    # verified.json records what the full check saw; an untouched directory is not re-hashed, a touched one is.
    from data_modules import shards

    c = Case(run, tmp_path)
    calls = []
    real = shards.verify_checksum
    monkeypatch.setattr(shards, "verify_checksum", lambda path: calls.append(path.name) or real(path))
    monkeypatch.chdir(tmp_path)
    main(prepare_args(c))
    assert calls == []  # written and checked by the run's preparation (copied with the shards)
    (c.shards / "verified.json").unlink()
    main(prepare_args(c))
    assert sorted(calls) == ["test_000001.bin", "train_000002.bin", "val_000000.bin"]


@pytest.mark.parametrize("content", [
    "\ufeff" + DEBUG_TEXT,  # a byte-order mark, as some editors write
    DEBUG_TEXT.replace("\n", "\r\n"),  # Windows line endings
])
def test_unusual_but_valid_config_files_are_accepted(tmp_path, content):
    path = tmp_path / "ok.yaml"
    path.write_bytes(content.encode("utf-8"))
    with pytest.raises(SystemExit) as e:
        main(["fit", "--config", str(path), "--print_config"])
    assert e.value.code == 0


def test_trainer_checks_leave_other_kinds_of_values_to_lightning():
    from lit_gpt_mini.cli.main import check_trainer_args

    check_trainer_args({"val_check_interval": "00:00:10:00", "max_steps": -1, "gradient_clip_val": None})
    check_trainer_args({"val_check_interval": 0.25, "max_steps": 0, "accumulate_grad_batches": 8})


def test_token_throughput_window_of_one_is_a_config_error():
    from lit_gpt_mini.callbacks import TokenThroughput
    from lit_gpt_mini.errors import ConfigError

    with pytest.raises(ConfigError, match="window_size is 1; it must be at least 2"):
        TokenThroughput(window_size=1)


@pytest.mark.parametrize("content, status", [(bytes(range(128, 256)) * 4, 2), ("model:\n  init_args: [1\n", 2)])
def test_from_a_real_process_the_exit_status_and_one_line(tmp_path, content, status):
    path = tmp_path / "bad.yaml"
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    result = subprocess.run([sys.executable, str(ROOT / "main.py"), "fit", "--config", str(path)],
                            capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert result.returncode == status
    assert "Traceback" not in result.stderr
    assert [line for line in result.stderr.splitlines() if line.startswith("error:")] == [
        result.stderr.strip().splitlines()[-1]]
    assert "bad.yaml" in result.stderr.strip().splitlines()[-1]


# --- where the data goes: read-only directories, full disks, Ctrl-C ----------------------------------------------


def run_cli(args: list[str], cwd: Path, read_only: Optional[Path] = None, limit_file_size: Optional[int] = None,
            new_session: bool = False) -> subprocess.Popen:
    """``python main.py ARGS`` in a fresh process. ``read_only``: a directory (already without write permission)
    that root, who writes anyway, sees through a read-only mount of its own; ``limit_file_size``: RLIMIT_FSIZE
    in bytes (a file over it fails with EFBIG)."""
    def limit() -> None:
        sigint_as_in_a_terminal()
        if limit_file_size is not None:
            resource.setrlimit(resource.RLIMIT_FSIZE, (limit_file_size, limit_file_size))

    command = [sys.executable, str(ROOT / "main.py"), *args]
    if read_only is not None and os.geteuid() == 0:
        command = ["unshare", "--mount", "--propagation", "private", "sh", "-c",
                   'mount --bind -o ro "$0" "$0" && exec "$@"', str(read_only), *command]
    return subprocess.Popen(command, cwd=cwd, text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            preexec_fn=limit, start_new_session=new_session)


def tree(directory: Path) -> dict[str, tuple[int, int]]:
    """Every path under ``directory`` (dot files too) with its size and modification time."""
    return {str(p.relative_to(directory)): (p.stat().st_size, p.stat().st_mtime_ns) for p in directory.rglob("*")}


def one_error_line(err: str) -> str:
    assert "Traceback" not in err, err
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, err
    return errors[0]


# (case, what the read-only data_dir holds, exit status, what the error line says)
READ_ONLY = [
    ("complete and prepared", "prepared", 0, []),
    ("prepared, without its lock file", "prepared, no lock", 0, []),
    ("empty", "nothing", 1, ["cannot write", "read-only"]),
    ("interrupted, with a killed writer's temporary file", "interrupted", 1, ["cannot write", "read-only"]),
]


@pytest.mark.parametrize("case, holds, status, says", READ_ONLY, ids=[c[0] for c in READ_ONLY])
def test_a_read_only_data_dir(run, tmp_path, case, holds, status, says):
    # A prepared dataset shared read-only (or a read-only mount) is valid input: training reads it and writes
    # nothing there. One that is not prepared is one line.
    data, work = tmp_path / "data", tmp_path / "work"
    try:
        if holds.startswith("prepared"):
            shutil.copytree(run / "data/shakespeare", data)
            if holds.endswith("no lock"):
                (data / ".prepare.lock").unlink()
        elif holds == "interrupted":  # the validation shard finished, the training one being written
            shutil.copytree(run / "data/shakespeare", data)
            shards = data / "shards"
            for name in ("manifest.json", "verified.json"):
                (shards / name).unlink(missing_ok=True)
            (shards / "train_000002.bin").rename(shards / ".train_000002.bin.part")
        else:
            data.mkdir()
        work.mkdir()
        for path in [data, *data.rglob("*")]:
            path.chmod(0o555 if path.is_dir() else 0o444)
        before = tree(data)
        done = run_cli(["fit", "--config", DEBUG, "--data.path", TEXT, "--data.data_dir", str(data),
                        "--trainer.max_steps", "2", "--trainer.val_check_interval", "2",
                        "--trainer.limit_val_batches", "1"], work, read_only=data)
        _, err = done.communicate(timeout=300)
        assert done.returncode == status, err
        assert tree(data) == before  # nothing written, not even a lock file
        if status == 0:
            assert "Traceback" not in err and (work / "out/debug_char/checkpoints/last.ckpt").is_file()
        else:
            line = one_error_line(err)
            assert str(data) in line and all(fragment in line for fragment in says), line
    finally:  # (so that pytest can remove it)
        for path in [data, *data.rglob("*")]:
            path.chmod(0o755 if path.is_dir() else 0o644)


class FullDisk:
    """Stands for ``os`` in :mod:`lit_gpt_mini.files`: the files it opens take ``room`` bytes in all, then every
    write fails with ENOSPC, as on a disk that fills up during the preparation."""

    def __init__(self, room: int) -> None:
        self.room = room

    def __getattr__(self, name: str):
        return getattr(os, name)

    def fdopen(self, fd: int, *args, **kwargs):
        disk, real = self, os.fdopen(fd, *args, **kwargs)

        class File:
            def __getattr__(self, name: str):
                return getattr(real, name)

            def __enter__(self):
                return self

            def __exit__(self, *exc):
                return real.__exit__(*exc)

            def write(self, data):
                disk.room -= len(data)
                if disk.room < 0:
                    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
                return real.write(data)

        return File()


def fail_in_process(c: Case, data: Path) -> tuple[int, str]:
    from lit_gpt_mini import files

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(files, "os", FullDisk(room=1 << 20))  # the tokenizer and the validation shard fit
        try:
            main(["prepare", "--config", DEBUG, "--data.path", TEXT, "--data.data_dir", str(data)])
        except SystemExit as e:
            return 1 if isinstance(e.code, str) else e.code, str(e.code)
    return 0, ""


def fail_in_a_process_with_a_size_limit(c: Case, data: Path) -> tuple[int, str]:
    done = run_cli(["prepare", "--config", DEBUG, "--data.path", TEXT, "--data.data_dir", str(data)], c.tmp,
                   limit_file_size=1 << 20)
    _, err = done.communicate(timeout=300)
    return done.returncode, one_error_line(err)


# (case, how the preparation fails, what the error line says)
WRITE_FAILURES = [
    ("disk full (ENOSPC)", fail_in_process, "(No space left on device): free some space"),
    ("file too large (EFBIG, RLIMIT_FSIZE)", fail_in_a_process_with_a_size_limit, "(File too large): the file is larger"),
]


@pytest.mark.parametrize("case, fail, says", WRITE_FAILURES, ids=[c[0] for c in WRITE_FAILURES])
def test_a_write_that_fails_midway_is_one_line_and_the_rerun_is_identical(run, tmp_path, monkeypatch, case, fail,
                                                                        says):
    monkeypatch.chdir(tmp_path)
    c, data = Case(run, tmp_path), tmp_path / "fresh"
    status, line = fail(c, data)
    assert status == 1 and line.startswith(f"error: cannot write {data / 'shards' / 'train_000002.bin'} {says}"), line
    assert (data / "shards/val_000000.bin").is_file() and not list(data.rglob("*.part"))  # finished files stay
    main(["prepare", "--config", DEBUG, "--data.path", TEXT, "--data.data_dir", str(data)])
    for shard in ("val_000000.bin", "test_000001.bin", "train_000002.bin"):
        assert (data / "shards" / shard).read_bytes() == (run / "data/shakespeare/shards" / shard).read_bytes()


def fineweb_config(tmp_path: Path, docs: list[str], data_dir: Path) -> str:
    from .conftest import write_jsonl

    corpus = tmp_path / "corpus.jsonl"
    if not corpus.exists():
        write_jsonl(corpus, docs * 8)  # ~2.6M GPT-2 tokens: seconds to prepare, in 53 shards
    config = tmp_path / f"{data_dir.name}.yaml"
    config.write_text(json.dumps({"data": {"class_path": "data_modules.fineweb.FineWebDataModule", "init_args": {
        "path": str(corpus), "data_dir": str(data_dir), "shard_size": 50_000, "num_proc": 2}}}))
    return str(config)


def interrupt_prepare(tmp_path: Path, docs: list[str]) -> tuple[list[str], Path]:
    data = tmp_path / "data"
    return ["prepare", "--config", fineweb_config(tmp_path, docs, data)], data / "shards/train_000002.bin"


def interrupt_fit(tmp_path: Path, docs: list[str]) -> tuple[list[str], Path]:
    return (["fit", "--config", DEBUG, "--data.path", TEXT, "--trainer.max_steps", "100000"],
            tmp_path / "out/debug_char/checkpoints/last.ckpt")


# (command, how to start it and the file whose appearance means it is under way, what the error line says)
INTERRUPTED = [
    ("prepare", interrupt_prepare, ["run the same command again to resume the preparation"]),
    ("fit", interrupt_fit, ["at step", "the last checkpoint is", "last.ckpt: resume with --ckpt_path"]),
]


@pytest.mark.parametrize("command, start, says", INTERRUPTED, ids=[c[0] for c in INTERRUPTED])
def test_ctrl_c_is_one_line_saying_how_to_resume(tmp_path, shakespeare_docs, command, start, says):
    args, under_way = start(tmp_path, shakespeare_docs)
    # Ctrl-C in a terminal: SIGINT to every process of the job (the tokenizer processes too)
    job = run_cli(args, tmp_path, new_session=True)
    deadline = time.monotonic() + 120
    while not under_way.exists() and job.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    os.killpg(job.pid, signal.SIGINT)
    _, err = job.communicate(timeout=120)
    line = one_error_line(err)
    assert job.returncode == 130 and line.startswith("error: interrupted (Ctrl-C)"), err
    assert all(fragment in line for fragment in says), line
    if command == "prepare":  # and the re-run resumes: the same shards as one uninterrupted preparation
        main(args)
        main(["prepare", "--config", fineweb_config(tmp_path, shakespeare_docs, tmp_path / "whole")])
        shards = sorted(p.name for p in (tmp_path / "whole/shards").glob("*.bin"))
        assert shards == sorted(p.name for p in (tmp_path / "data/shards").glob("*.bin")) and len(shards) > 10
        for name in shards:
            assert (tmp_path / "data/shards" / name).read_bytes() == (tmp_path / "whole/shards" / name).read_bytes()
