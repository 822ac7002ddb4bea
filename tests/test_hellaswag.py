"""HellaSwag: scoring against a per-candidate reference, acc vs acc_norm, bad files, its data module, and
``main.py test`` (1 and 2 processes, against an independent scorer) and the training section via the CLI."""

from __future__ import annotations

import json
import os
import math
import random
import subprocess
import sys

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from torch.nn import functional as F

from data_modules import hellaswag
from data_modules.hellaswag import HellaSwagDataModule
from lit_gpt_mini import scoring
from lit_gpt_mini.checkpoint import load_checkpoint
from lit_gpt_mini.cli.main import main
from lit_gpt_mini.errors import ConfigError, DataError
from lit_gpt_mini.model import GPT, GPTConfig

from .conftest import CONFIGS, ROOT, write_jsonl

DEBUG = str(CONFIGS / "debug_gpt2.yaml")


def write_examples(path, n, seed=0, empty_every=0, long_every=0):
    """``n`` examples in the real format; every ``empty_every``-th has an empty context and every
    ``long_every``-th a context and endings longer than a 64-token model context."""
    rng = random.Random(seed)
    words = "the a man woman dog cat runs jumps into over quickly slowly house water ball park".split()
    with open(path, "w") as f:
        for i in range(n):
            long = long_every and i % long_every == long_every - 1
            ctx = " ".join(rng.choice(words) for _ in range(rng.randint(40, 70) if long else rng.randint(5, 30)))
            if empty_every and i % empty_every == 0:
                ctx = ""
            endings = [" ".join(rng.choice(words) for _ in range(rng.randint(30, 80) if long else rng.randint(2, 12)))
                       for _ in range(4)]
            f.write(json.dumps({"ind": i, "ctx": ctx, "endings": endings, "label": rng.randint(0, 3)}) + "\n")
    return path


def logits_of(model, ids):
    out = model(ids)
    return out[0] if isinstance(out, tuple) else out  # forward may also return a loss


def reference_losses(model, example, tokenizer, max_length):
    """The slow, obvious scorer: each candidate alone through the model's full forward, the loss of each ending
    token read from the log-softmax over the whole vocabulary (an empty context is the end-of-text token; an
    ending too long for the window keeps its last max_length - 1 tokens)."""
    context = tokenizer.encode(example.context) or [tokenizer.eot_id]
    totals, means = [], []
    for ending in example.endings:
        ending_ids = tokenizer.encode(" " + ending)[-(max_length - 1):]
        ids = (context + ending_ids)[-max_length:]
        start = len(ids) - len(ending_ids)
        with torch.no_grad():
            log_probs = F.log_softmax(logits_of(model, torch.tensor([ids]))[0].float(), dim=-1)
        losses = [-log_probs[start + j - 1, t].item() for j, t in enumerate(ending_ids)]
        totals.append(sum(losses))
        means.append(sum(losses) / len(losses))
    return totals, means


def random_model(block_size=64, seed=0):
    """A random GPT-2-vocabulary model with weights 10x the init's, so that candidates' losses differ clearly."""
    torch.manual_seed(seed)
    model = GPT(GPTConfig(vocab_size=50257, block_size=block_size, n_layer=2, n_head=2, n_embd=32)).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(10)
    return model


def test_packed_scoring_matches_the_per_candidate_reference_example_by_example(tmp_path, gpt2_tokenizer):
    model = random_model()
    examples = hellaswag.read_examples(write_examples(tmp_path / "h.jsonl", 36, seed=3, empty_every=7, long_every=5))
    tokenized = [hellaswag.tokenize(e, gpt2_tokenizer) for e in examples]
    assert sum(e.context == "" for e in examples) >= 5
    truncated = [len(t.context) + max(map(len, t.endings)) > 64 for t in tokenized]
    assert sum(truncated) >= 5 and any(max(map(len, t.endings)) > 64 for t in tokenized)
    rows = [hellaswag.pack(t, 64) for t in tokenized]
    order = sorted(range(len(rows)), key=lambda i: len(rows[i]))  # hellaswag.batches' order
    totals, means, decisions = [], [], []
    for batch in hellaswag.batches(rows, examples_per_batch=5):
        with torch.no_grad():
            total, mean = scoring.candidate_losses(model, batch)
        totals += total.tolist()
        means += mean.tolist()
        decisions += zip(*(d.tolist() for d in scoring.evaluate_batch(model, batch)))
    for position, i in enumerate(order):
        want_total, want_mean = reference_losses(model, examples[i], gpt2_tokenizer, 64)
        assert totals[position] == pytest.approx(want_total, rel=1e-4), i
        assert means[position] == pytest.approx(want_mean, rel=1e-4), i
        label = examples[i].label
        want = (min(range(4), key=want_total.__getitem__) == label, min(range(4), key=want_mean.__getitem__) == label)
        assert decisions[position] == want, i
    # the methods are not trivially the same on this set
    assert any(a != b for a, b in decisions)


def test_an_empty_context_scores_every_ending_token(gpt2_tokenizer):
    example = hellaswag.tokenize(hellaswag.Example("", ("a b", "c", "d e f", "g"), 2), gpt2_tokenizer)
    assert example.context == (gpt2_tokenizer.eot_id,)
    row = hellaswag.pack(example, 64)
    for k, ending in enumerate(example.endings):
        assert row.scored[row.scored[:, 2] == k, 1].tolist() == list(ending)  # every token, first included
    # the context once, then each ending but its last token
    assert len(row) == 1 + sum(len(e) - 1 for e in example.endings)


def test_acc_and_acc_norm_disagree_when_lengths_matter():
    # candidate 0: one ending token at loss ln 4 (sum 1.39, mean 1.39); candidate 1: three tokens at loss 0.5
    # (sum 1.5, mean 0.5); candidates 2 and 3 are worse on both. acc picks 0, acc_norm picks 1.
    vocab = 4
    candidate = torch.tensor([0, 1, 1, 1, 2, 2, 2, 3, 3, 3])
    logits = torch.zeros(len(candidate), vocab)
    confident = math.log(3 * math.exp(-0.5) / (1 - math.exp(-0.5)))  # makes token 0's loss exactly 0.5
    logits[1:4, 0] = confident
    logits[4:, 0] = -5.0
    total, mean = scoring.losses_from_logits(logits, torch.zeros(len(candidate), dtype=torch.long), candidate, 1, 4)
    assert total[0, 0].item() == pytest.approx(math.log(4)) and total[0, 1].item() == pytest.approx(1.5, rel=1e-5)
    assert total.argmin().item() == 0 and mean.argmin().item() == 1


GOOD = {"ctx": "x", "endings": ["a", "b", "c", "d"], "label": 0}


@pytest.mark.parametrize(
    "line, message",
    [
        ("{broken", r"h.jsonl:2: malformed JSON"),
        (json.dumps([1, 2]), r"h.jsonl:2: an example is a JSON object .* not a list"),
        (json.dumps({**GOOD, "endings": ["a", "b", "c"]}), r"h.jsonl:2: an example needs 4 'endings' strings, this one has 3"),
        (json.dumps({**GOOD, "endings": "abcd"}), r"h.jsonl:2: an example needs 4 'endings' strings, this one has no list"),
        (json.dumps({**GOOD, "endings": ["a", "b", 3, "d"]}), r"h.jsonl:2: 'endings' must be 4 strings"),
        (json.dumps({**GOOD, "label": 4}), r"h.jsonl:2: 'label' must be an integer 0 to 3, got 4"),
        (json.dumps({**GOOD, "label": True}), r"h.jsonl:2: 'label' must be an integer 0 to 3, got True"),
        (json.dumps({**GOOD, "label": 1.0}), r"h.jsonl:2: 'label' must be an integer 0 to 3, got 1.0"),
        (json.dumps({k: v for k, v in GOOD.items() if k != "label"}), r"h.jsonl:2: 'label' must be .* got None"),
        (json.dumps({"endings": ["a", "b", "c", "d"], "label": 1}), r"h.jsonl:2: an example needs a 'ctx' string"),
        (json.dumps({**GOOD, "ctx": 7}), r"h.jsonl:2: an example needs a 'ctx' string, got 7"),
    ],
)
def test_bad_lines_are_named_with_their_line_number(tmp_path, line, message):
    good = json.dumps({"ctx": "x", "endings": ["a", "b", "c", "d"], "label": "2"})
    (tmp_path / "h.jsonl").write_text(good + "\n" + line + "\n")
    with pytest.raises(DataError, match=message):
        hellaswag.read_examples(tmp_path / "h.jsonl")


def test_a_bad_row_is_one_error_line_from_the_test_command(tmp_path, monkeypatch):
    from .helpers import write_checkpoint

    ckpt = write_checkpoint(tmp_path / "gpt2.ckpt", "gpt2")
    (tmp_path / "h.jsonl").write_text(json.dumps({**GOOD, "label": True}) + "\n")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exit:
        main(["test", "--ckpt_path", ckpt, "--data", "HellaSwagDataModule", "--data.path", "h.jsonl"])
    assert str(exit.value) == "error: h.jsonl:1: 'label' must be an integer 0 to 3, got True"


@pytest.mark.parametrize("key, value", [("examples_per_batch", 0), ("limit", 0)])
def test_batch_settings_below_one_are_refused_with_their_key(key, value):
    with pytest.raises(ConfigError, match=rf"data\.{key} must be at least 1.*, got 0"):
        HellaSwagDataModule(**{key: value})


@pytest.fixture
def trained(tmp_path, shakespeare_docs, monkeypatch):
    """A tiny GPT-2-vocabulary checkpoint (8 steps of debug_gpt2; HellaSwag scored every 4 steps by its
    hellaswag section) and 23 HellaSwag-format examples."""
    corpus = write_jsonl(tmp_path / "corpus.jsonl", shakespeare_docs[:2000])
    examples = write_examples(tmp_path / "hs.jsonl", 23)
    monkeypatch.chdir(tmp_path)
    main(["fit", "--config", DEBUG, "--data.path", str(corpus), "--hellaswag.every_n_steps", "4",
          "--hellaswag.data.init_args.path", str(examples), "--hellaswag.data.init_args.examples_per_batch", "4"])
    return tmp_path, tmp_path / "out/debug_gpt2/checkpoints/last.ckpt", examples


def scalars(run_dir) -> dict[str, list]:
    """The TensorBoard scalars of the one run in ``run_dir``: tag -> [(step, value)]."""
    (events,) = run_dir.glob("events.*")
    acc = EventAccumulator(str(events))
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def run_test(cwd, ckpt, examples, *extra) -> tuple[dict, str]:
    """``main.py test --data HellaSwagDataModule`` in a process of its own: its logged figures and its output."""
    name = f"test{len(list((cwd / 'out').glob('test*')))}"
    run = subprocess.run([sys.executable, str(ROOT / "main.py"), "test", "--ckpt_path", str(ckpt), "--data",
                          "HellaSwagDataModule", "--data.path", str(examples), "--data.examples_per_batch", "4",
                          "--trainer.logger.init_args.name", name, *extra],
                         cwd=cwd, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    logged = scalars(cwd / "out" / name / "version_0")
    return {key.split("/")[1]: values[-1][1] for key, values in logged.items() if key.startswith("hellaswag/")}, run.stdout


def independent_figures(ckpt, examples_path) -> dict:
    """acc, acc_norm and examples by the per-candidate reference scorer (no packing, no batching)."""
    model, tokenizer = load_checkpoint(ckpt)
    examples = hellaswag.read_examples(examples_path)
    right = right_norm = 0
    for example in examples:
        total, mean = reference_losses(model, example, tokenizer, model.config.block_size)
        right += min(range(4), key=total.__getitem__) == example.label
        right_norm += min(range(4), key=mean.__getitem__) == example.label
    return {"acc": right / len(examples), "acc_norm": right_norm / len(examples), "examples": len(examples)}


def test_test_reports_hellaswag_as_an_independent_scorer_on_one_and_two_processes(trained):
    tmp_path, ckpt, examples = trained
    want = independent_figures(ckpt, examples)
    one, printed = run_test(tmp_path, ckpt, examples, "--trainer.accelerator", "cpu")
    two, _ = run_test(tmp_path, ckpt, examples, "--trainer.accelerator", "cpu", "--trainer.devices", "2",
                          "--trainer.strategy", "ddp")
    for got in (one, two):
        assert got["examples"] == 23  # an odd number over two processes: each example once, none repeated
        assert got["acc"] == pytest.approx(want["acc"]) and got["acc_norm"] == pytest.approx(want["acc_norm"])
    assert one == two
    # Lightning's results table
    assert all(f"hellaswag/{name}" in printed for name in ("acc", "acc_norm", "examples"))


def test_the_training_section_logs_what_test_reports_for_its_checkpoint(trained):
    tmp_path, ckpt, examples = trained
    logged = scalars(tmp_path / "out/debug_gpt2/version_0")
    assert [step for step, _ in logged["hellaswag/acc"]] == [0, 4, 8]
    assert [step for step, _ in logged["hellaswag/acc_norm"]] == [0, 4, 8]
    figures, _ = run_test(tmp_path, ckpt, examples, "--trainer.accelerator", "cpu")
    # the last evaluation in training (step 8) scored the model the checkpoint holds, through the same code
    assert logged["hellaswag/acc"][-1][1] == pytest.approx(figures["acc"])
    assert logged["hellaswag/acc_norm"][-1][1] == pytest.approx(figures["acc_norm"])


def test_test_on_a_gpt2_recipe_reports_hellaswag_beside_the_test_loss(trained):
    tmp_path, ckpt, examples = trained
    run = subprocess.run([sys.executable, str(ROOT / "main.py"), "test", "--config", DEBUG, "--data.path", "corpus.jsonl",
                          "--ckpt_path", str(ckpt), "--hellaswag.data.init_args.path", str(examples),
                          "--trainer.logger.init_args.name", "recipe_test"],
                         cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    logged = scalars(tmp_path / "out/recipe_test/version_0")
    assert {"test/loss", "hellaswag/acc", "hellaswag/acc_norm", "hellaswag/examples"} <= set(logged)
    assert logged["hellaswag/examples"][-1][1] == 23
    assert math.isfinite(logged["test/loss"][-1][1])


def test_a_checkpoint_without_gpt2_vocabulary_is_refused(tmp_path, monkeypatch):
    from .helpers import write_checkpoint

    monkeypatch.chdir(tmp_path)
    write_checkpoint(tmp_path / "char.ckpt", "char")
    for command in (["test", "--data", "HellaSwagDataModule"], ["eval"]):
        with pytest.raises(SystemExit) as exit:
            main([*command, "--ckpt_path", "char.ckpt"])
        assert str(exit.value) == (
            "error: HellaSwag is scored with gpt2 tokens (50257) and this model's vocabulary has 62: only a model "
            "trained on gpt2 tokens (data.tokenizer.kind: gpt2) can be scored on it")
    assert not (tmp_path / "data/hellaswag").exists()  # refused before anything was downloaded


def test_test_without_a_config_points_to_hellaswag(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit):
        main(["test"])
    assert "HellaSwag: main.py test --ckpt_path X --data HellaSwagDataModule" in capsys.readouterr().err


def test_the_validation_file_is_downloaded_once(tmp_path, http_server, monkeypatch):
    root, base = http_server
    write_examples(root / "hellaswag_val.jsonl", 7)
    monkeypatch.setattr(hellaswag, "URL", base + "/hellaswag_{split}.jsonl")
    data = HellaSwagDataModule(data_dir=str(tmp_path / "hs"))
    data.prepare_data()
    (root / "hellaswag_val.jsonl").unlink()
    data.prepare_data()  # cached: no second download
    assert len(hellaswag.read_examples(data.file)) == 7
    assert len(list(data.batches(64, rank=1, world_size=2))) == 1  # examples 1, 3, 5
    with pytest.raises(DataError, match="could not download HellaSwag.*put the file at"):
        HellaSwagDataModule(data_dir=str(tmp_path / "other")).prepare_data()


def test_the_train_split_becomes_training_text_for_the_fineweb_module(tmp_path):
    from data_modules.fineweb import FineWebDataModule

    source = write_examples(tmp_path / "hellaswag_train.jsonl", 300)
    hellaswag.main(["--split", "train", "--path", str(source), "--out", str(tmp_path / "text.jsonl")])
    first = json.loads((tmp_path / "text.jsonl").read_text().splitlines()[0])
    example = hellaswag.read_examples(source)[0]
    assert first == {"text": example.context + " " + example.endings[example.label]}
    dm = FineWebDataModule(data_dir=str(tmp_path / "d"), path=str(tmp_path / "text.jsonl"), shard_size=2000,
                           val_tokens=500, num_proc=1, batch_size=2)
    dm.prepare_data()
    dm.setup("fit")
    assert dm.train_shards.num_tokens > 1000


def test_token_ids_are_cached_once_and_follow_the_file(tmp_path, monkeypatch):
    source = write_examples(tmp_path / "h.jsonl", 9, empty_every=4)
    first = HellaSwagDataModule(data_dir=str(tmp_path / "cache"), path=str(source), examples_per_batch=4)
    with pytest.raises(DataError, match=r"token ids .* are missing .* each node prepares its own copy"):
        first.batches(64)
    first.prepare_data()
    (cache,) = (tmp_path / "cache").glob("h.*.gpt2.npz")
    want = first.batches(64, rank=1, world_size=2)

    def no_tokenizing(*args):
        raise AssertionError("tokenized again")

    monkeypatch.setattr(hellaswag, "tokenize", no_tokenizing)
    again = HellaSwagDataModule(data_dir=str(tmp_path / "cache"), path=str(source), examples_per_batch=4)
    again.prepare_data()  # finds the cache
    got = again.batches(64, rank=1, world_size=2)
    assert [b["labels"].tolist() for b in got] == [b["labels"].tolist() for b in want]
    assert all(torch.equal(g[k], w[k]) if torch.is_tensor(w[k]) else g[k] == w[k] for g, w in zip(got, want) for k in w)
    assert [len(b["labels"]) for b in got] == [4]  # examples 1, 3, 5 and 7: one batch
    monkeypatch.undo()
    write_examples(source, 9, seed=1)  # another file at the same path: another cache, never the stale one
    HellaSwagDataModule(data_dir=str(tmp_path / "cache"), path=str(source)).prepare_data()
    assert len(list((tmp_path / "cache").glob("h.*.gpt2.npz"))) == 2 and cache.is_file()


def test_batches_are_sorted_by_length_and_shard_exactly(tmp_path):
    data = HellaSwagDataModule(data_dir=str(tmp_path), path=str(write_examples(tmp_path / "h.jsonl", 23)),
                               examples_per_batch=3)
    data.prepare_data()
    lengths = [b["tokens"].size(1) for b in data.batches(64)]
    assert lengths == sorted(lengths)
    shares = [sum(len(b["labels"]) for b in data.batches(64, rank, 3)) for rank in range(3)]
    assert shares == [8, 8, 7]


def test_examples_are_cut_to_the_model_context(tmp_path):
    data = HellaSwagDataModule(data_dir=str(tmp_path), path=str(write_examples(tmp_path / "h.jsonl", 12, long_every=2)))
    data.prepare_data()
    # long candidates fill the model's 64 positions (the last token of an ending, at 63, is not fed)
    assert max(b["pos"].max().item() for b in data.batches(64)) == 62


def test_the_callback_scores_through_the_strategy_wrapper(tmp_path):
    """Like FSDP, the wrapper only makes the weights usable inside its own forward: scoring must go through it."""
    from contextlib import nullcontext
    from types import SimpleNamespace

    from lightning.pytorch.strategies.strategy import _ForwardRedirection

    from lit_gpt_mini.benchmark import BenchmarkEval
    from lit_gpt_mini.lit_module import GPT2

    module = GPT2(vocab_size=50257, block_size=64, n_layer=1, n_head=2, n_embd=32)
    module.configure_model()

    class Wrapper(torch.nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner, self.inside = inner, False

        def forward(self, *args):
            self.inside = True
            try:
                return self.inner(*args)
            finally:
                self.inside = False

    wrapper = Wrapper(module)
    seen = []
    original = module.model.hidden_states
    module.model.hidden_states = lambda *a: (seen.append(wrapper.inside), original(*a))[1]
    strategy = SimpleNamespace(model=wrapper, _forward_redirection=_ForwardRedirection(), reduce=lambda t, reduce_op: t)
    trainer = SimpleNamespace(strategy=strategy, global_rank=0, world_size=1,
                              precision_plugin=SimpleNamespace(forward_context=nullcontext))
    data = HellaSwagDataModule(data_dir=str(tmp_path), path=str(write_examples(tmp_path / "h.jsonl", 5)))
    callback = BenchmarkEval(every_n_steps=1, data=data)
    data.prepare_data()
    data.connect(64)
    callback._loader = data.test_dataloader()
    got = callback.evaluate(trainer, module)
    assert seen and all(seen)
    right = [scoring.evaluate_batch(module.model, b) for b in data.batches(64)]
    assert got == {"examples": 5, "acc": sum(r[0].sum().item() for r in right) / 5,
                   "acc_norm": sum(r[1].sum().item() for r in right) / 5}


@pytest.mark.parametrize("local, global_, per_node, prepares", [
    (0, 0, True, True), (0, 2, True, True), (1, 1, True, False), (0, 2, False, False), (0, 0, False, True)])
def test_hellaswag_is_prepared_by_the_first_process_of_each_node(local, global_, per_node, prepares):
    from lit_gpt_mini.benchmark import BenchmarkEval

    assert BenchmarkEval.prepares_here(local, global_, per_node) is prepares


def test_two_nodes_without_a_shared_filesystem_each_download_and_tokenize(tmp_path, http_server, shakespeare_docs):
    """Two single-process 'nodes' (Lightning's NODE_RANK/LOCAL_RANK environment), each in its own directory:
    the hellaswag section must download and tokenize on both, not only on global rank 0."""
    import socket

    root, base = http_server
    write_examples(root / "hellaswag_val.jsonl", 11)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    script = ("import sys; import data_modules.hellaswag as h; h.URL = sys.argv[1]; "
              "from lit_gpt_mini.cli.main import main; main(sys.argv[2:])")
    args = ["fit", "--config", DEBUG, "--data.path", "corpus.jsonl", "--trainer.strategy", "ddp",
            "--trainer.num_nodes", "2", "--trainer.max_steps", "4",
            "--hellaswag.every_n_steps", "2"]
    runs = []
    for node in (0, 1):
        (tmp_path / f"node{node}").mkdir()
        write_jsonl(tmp_path / f"node{node}" / "corpus.jsonl", shakespeare_docs[:2000])
        env = {**os.environ, "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "NODE_RANK": str(node), "LOCAL_RANK": "0",
               "PYTHONPATH": str(ROOT)}
        runs.append(subprocess.Popen([sys.executable, "-c", script, base + "/hellaswag_{split}.jsonl", *args],
                                     cwd=tmp_path / f"node{node}", env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    for run in runs:
        out, err = run.communicate(timeout=600)
        assert run.returncode == 0, err[-3000:]
    for node in (0, 1):
        cached = tmp_path / f"node{node}" / "data/hellaswag"
        assert (cached / "hellaswag_val.jsonl").is_file() and len(list(cached.glob("*.npz"))) == 1
    (events,) = (tmp_path / "node0/out/debug_gpt2").glob("version_0/events.*")
    acc = EventAccumulator(str(events))
    acc.Reload()
    # no accumulation at world size 2: the first batch ends at step 1; DDP training goes on after an evaluation
    assert [e.step for e in acc.Scalars("hellaswag/acc")] == [2, 4]
