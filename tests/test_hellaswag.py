"""HellaSwag: scoring against a per-candidate reference, acc vs acc_norm, bad files, test and callback via the CLI."""

from __future__ import annotations

import json
import math
import random
import re
import subprocess
import sys

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from torch.nn import functional as F

from lit_gpt_mini import hellaswag
from lit_gpt_mini.cli import main
from lit_gpt_mini.errors import DataError
from lit_gpt_mini.model import GPT, GPTConfig

from .conftest import CONFIGS, ROOT, write_jsonl

DEBUG = str(CONFIGS / "debug_gpt2.yaml")


def write_examples(path, n, seed=0):
    rng = random.Random(seed)
    words = "the a man woman dog cat runs jumps into over quickly slowly house water ball park".split()
    with open(path, "w") as f:
        for i in range(n):
            ctx = " ".join(rng.choice(words) for _ in range(rng.randint(5, 30)))
            endings = [" ".join(rng.choice(words) for _ in range(rng.randint(2, 12))) for _ in range(4)]
            f.write(json.dumps({"ind": i, "ctx": ctx, "endings": endings, "label": rng.randint(0, 3)}) + "\n")
    return path


def test_batched_scoring_matches_a_per_candidate_reference(tmp_path, gpt2_tokenizer):
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=50257, block_size=64, n_layer=2, n_head=2, n_embd=32)).eval()
    examples = hellaswag.read_examples(write_examples(tmp_path / "h.jsonl", 5))
    rendered = [hellaswag.render(e, gpt2_tokenizer, 64) for e in examples]
    batch = hellaswag.collate(rendered, [e.label for e in examples], 64)
    n, c, length = batch["tokens"].shape
    with torch.no_grad():
        logits = model(batch["tokens"].view(n * c, length))
    total, mean = hellaswag.candidate_losses(logits, batch["tokens"].view(n * c, length), batch["mask"].view(n * c, length))
    for e, example in enumerate(examples):
        context = gpt2_tokenizer.encode(example.context)
        for k, ending in enumerate(example.endings):
            ending_ids = gpt2_tokenizer.encode(" " + ending)
            ids = torch.tensor([context + ending_ids])
            with torch.no_grad():
                log_probs = F.log_softmax(model(ids)[0], dim=-1)
            # the loss of each ending token, predicted from everything before it, one candidate at a time
            losses = [-log_probs[len(context) + j - 1, t].item() for j, t in enumerate(ending_ids)]
            assert total[e * 4 + k].item() == pytest.approx(sum(losses), rel=1e-4)
            assert mean[e * 4 + k].item() == pytest.approx(sum(losses) / len(losses), rel=1e-4)


def test_acc_and_acc_norm_disagree_when_lengths_matter():
    # candidate 0: one ending token at loss ln 4 (sum 1.39, mean 1.39); candidate 1: three tokens at loss 0.5
    # (sum 1.5, mean 0.5); candidates 2 and 3 are worse on both. acc picks 0, acc_norm picks 1.
    vocab, length = 4, 5
    tokens = torch.zeros(4, length, dtype=torch.long)
    mask = torch.zeros(4, length, dtype=torch.bool)
    mask[0, 4] = True
    mask[1:, 2:5] = True
    logits = torch.zeros(4, length, vocab)
    confident = math.log(3 * math.exp(-0.5) / (1 - math.exp(-0.5)))  # makes token 0's loss exactly 0.5
    logits[1, :, 0] = confident
    logits[2:, :, 0] = -5.0
    total, mean = hellaswag.candidate_losses(logits, tokens, mask)
    assert total[0].item() == pytest.approx(math.log(4)) and total[1].item() == pytest.approx(1.5, rel=1e-5)
    assert total.argmin().item() == 0 and mean.argmin().item() == 1


@pytest.mark.parametrize(
    "line, message",
    [
        ("{broken", r"h.jsonl:2: malformed JSON"),
        (json.dumps({"ctx": "x", "endings": ["a", "b", "c"], "label": 0}), r"h.jsonl:2: an example needs 4 'endings' strings, this one has 3"),
        (json.dumps({"ctx": "x", "endings": ["a", "b", "c", "d"], "label": 4}), r"h.jsonl:2: 'label' must be 0 to 3, got 4"),
        (json.dumps({"endings": ["a", "b", "c", "d"], "label": 1}), r"h.jsonl:2: an example needs a 'ctx' string"),
    ],
)
def test_bad_lines_are_named_with_their_line_number(tmp_path, line, message):
    good = json.dumps({"ctx": "x", "endings": ["a", "b", "c", "d"], "label": "2"})
    (tmp_path / "h.jsonl").write_text(good + "\n" + line + "\n")
    with pytest.raises(DataError, match=message):
        hellaswag.read_examples(tmp_path / "h.jsonl")


@pytest.fixture
def trained(tmp_path, shakespeare_docs):
    """A tiny GPT-2-vocabulary checkpoint (8 steps of debug_gpt2) and 23 HellaSwag-format examples."""
    corpus = write_jsonl(tmp_path / "corpus.jsonl", shakespeare_docs[:2000])
    examples = write_examples(tmp_path / "hs.jsonl", 23)
    args = ["--config", DEBUG, "--data.path", str(corpus), "--data.hellaswag", "data_modules.hellaswag.HellaSwagDataModule",
            "--data.hellaswag.path", str(examples), "--data.hellaswag.examples_per_batch", "4"]
    return tmp_path, args


def test_callback_logs_during_fit_and_test_reports_both_metrics(trained, monkeypatch, capsys):
    tmp_path, args = trained
    monkeypatch.chdir(tmp_path)
    main(["fit", *args, "--trainer.callbacks+=lit_gpt_mini.callbacks.HellaSwagEval", "--trainer.callbacks.every_n_steps", "4"])
    (events,) = (tmp_path / "out/debug_gpt2").glob("version_0/events.*")
    acc = EventAccumulator(str(events))
    acc.Reload()
    assert [e.step for e in acc.Scalars("hellaswag/acc")] == [0, 4, 8]
    assert [e.step for e in acc.Scalars("hellaswag/acc_norm")] == [0, 4, 8]
    cli = main(["test", *args, "--ckpt_path", "out/debug_gpt2/checkpoints/last.ckpt"])
    metrics = cli.trainer.callback_metrics
    assert metrics["test/hellaswag_examples"].item() == 23
    assert 0 <= metrics["test/hellaswag_acc"].item() <= 1 and 0 <= metrics["test/hellaswag_acc_norm"].item() <= 1
    out = capsys.readouterr().out
    assert "test/hellaswag_acc " in out and "test/hellaswag_acc_norm" in out  # Lightning's results table
    # the callback's last evaluation (step 8) scored the same model the test restored
    assert acc.Scalars("hellaswag/acc")[-1].value == pytest.approx(metrics["test/hellaswag_acc"].item())


def test_two_ddp_processes_score_each_of_an_odd_number_of_examples_once(trained):
    tmp_path, args = trained
    fit = subprocess.run([sys.executable, str(ROOT / "main.py"), "fit", *args], cwd=tmp_path, capture_output=True, text=True)
    assert fit.returncode == 0, fit.stderr[-2000:]
    results = []
    for extra in ([], ["--trainer.devices", "2", "--trainer.strategy", "ddp"]):
        run = subprocess.run([sys.executable, str(ROOT / "main.py"), "test", *args, *extra,
                              "--ckpt_path", "out/debug_gpt2/checkpoints/last.ckpt"],
                             cwd=tmp_path, capture_output=True, text=True, timeout=600)
        assert run.returncode == 0, run.stderr[-2000:]
        # Lightning's results table, plain or drawn with rich's box characters
        table = dict(re.findall(r"(test/hellaswag_\w+)[\s│|]+([0-9.]+)", run.stdout))
        results.append(table)
    assert results[0]["test/hellaswag_examples"] == results[1]["test/hellaswag_examples"] == "23.0"
    assert results[0] == results[1]


def test_a_checkpoint_without_gpt2_vocabulary_is_refused(tmp_path, trained, shakespeare_path):
    _, args = trained
    run = subprocess.run([sys.executable, str(ROOT / "main.py"), "fit", "--config", str(CONFIGS / "debug_char.yaml"),
                          "--data.path", str(shakespeare_path), "--trainer.max_steps", "1"], cwd=tmp_path, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr[-2000:]
    run = subprocess.run([sys.executable, str(ROOT / "main.py"), "test", *args,
                          "--ckpt_path", "out/debug_char/checkpoints/last.ckpt"], cwd=tmp_path, capture_output=True, text=True)
    assert run.returncode == 1 and "Traceback" not in run.stderr
    assert run.stderr.strip().splitlines()[-1].startswith(
        "error: the checkpoint's char tokenizer (65 tokens) differs from the data's (50257 tokens)")


def test_the_validation_file_is_downloaded_once(tmp_path, http_server, monkeypatch):
    from data_modules import hellaswag as hellaswag_data

    root, base = http_server
    write_examples(root / "hellaswag_val.jsonl", 7)
    monkeypatch.setattr(hellaswag_data, "URL", base + "/hellaswag_{split}.jsonl")
    dm = hellaswag_data.HellaSwagDataModule(data_dir=str(tmp_path / "hs"))
    dm.prepare_data()
    (root / "hellaswag_val.jsonl").unlink()
    dm.prepare_data()  # cached: no second download
    assert len(dm.examples) == 7 and len(list(dm.batches(64, rank=1, world_size=2))) == 1  # examples 1, 3, 5
    with pytest.raises(DataError, match="could not download HellaSwag.*put the file at"):
        hellaswag_data.HellaSwagDataModule(data_dir=str(tmp_path / "other")).prepare_data()


def test_the_train_split_becomes_training_text_for_the_fineweb_module(tmp_path):
    from data_modules.fineweb import FineWebDataModule
    from data_modules.hellaswag import main as hellaswag_main

    source = write_examples(tmp_path / "hellaswag_train.jsonl", 300)
    hellaswag_main(["--split", "train", "--path", str(source), "--out", str(tmp_path / "text.jsonl")])
    first = json.loads((tmp_path / "text.jsonl").read_text().splitlines()[0])
    example = hellaswag.read_examples(source)[0]
    assert first == {"text": example.context + " " + example.endings[example.label]}
    dm = FineWebDataModule(data_dir=str(tmp_path / "d"), path=str(tmp_path / "text.jsonl"), shard_size=2000,
                           val_tokens=500, num_proc=1, block_size=16, batch_size=2)
    dm.prepare_data()
    dm.setup("fit")
    assert dm.train_shards.num_tokens > 1000
