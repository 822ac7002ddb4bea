"""Every shipped recipe trains as shipped: each file in configs/ runs ``main.py fit`` with its own precision,
callbacks, gradient accumulation, compile setting, optimizer, logger and checkpointing. Only what a CPU test must
change is changed, and the test checks that nothing else was: the model and data shapes (tiny), the data source
(files and servers the tests make), the step counts (2 optimizer steps, one validation, one checkpoint) and
``accelerator: cpu`` where a recipe names a GPU. Then, from that run's ``last.ckpt``: ``validate``, ``generate``
``test`` (the held-out loss and, for GPT-2-vocabulary recipes, HellaSwag against a local file, as ``eval`` too).

A config added to configs/ joins the matrix by itself; its data module needs a local source in ``SOURCES``.
"""

from __future__ import annotations

import copy
import json
import math
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest
import torch
import yaml

from lit_gpt_mini.cli.main import main
from lit_gpt_mini.inference.generate import generate
from lit_gpt_mini.muon import MuonAdamW

from .conftest import CONFIGS, serve_httpx, write_jsonl
from .test_discord import message
from .test_hellaswag import write_examples
from .test_reddit import rows, write_zst
from .test_wikipedia import FakeMediaWiki

RECIPES = sorted(p.name for p in CONFIGS.glob("*.yaml"))
STEPS = 2  # optimizer steps: a validation and a checkpoint at the last one
MODEL_SHAPE = {"block_size": 32, "n_layer": 1, "n_head": 2, "n_embd": 32}
DATA_SHAPE = {"batch_size": 4}
HELLASWAG_EXAMPLES = 10

# The keys a CPU test may change (dotted); any other difference fails the test.
SHRINKABLE = {
    "trainer.max_steps", "trainer.val_check_interval", "trainer.log_every_n_steps", "trainer.accelerator",
    *(f"model.init_args.{key}" for key in MODEL_SHAPE),
    *(f"data.init_args.{key}" for key in DATA_SHAPE),
    # data sources and their sizes
    "data.init_args.path", "data.init_args.shard_size", "data.init_args.val_tokens", "data.init_args.titles",
    "data.init_args.titles_file", "data.init_args.categories", "data.init_args.api_url",
    "hellaswag.data.init_args.path",
    # batch and step counts of the recipe's callbacks
    "accumulation.total_batch_tokens", "checkpoint.every_n_train_steps", "hellaswag.every_n_steps",
}


# --- local data sources ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def sources(tmp_path_factory, shakespeare_docs) -> Iterator[dict[str, Callable[[], dict[str, Any]]]]:
    """Per data module class name: the ``data.init_args`` that point it at local data (made on first use)."""
    root = tmp_path_factory.mktemp("recipe-data")
    docs = shakespeare_docs[:1500]
    made: dict[str, dict[str, Any]] = {}
    servers = []

    def once(name: str, make: Callable[[], dict[str, Any]]) -> Callable[[], dict[str, Any]]:
        def get() -> dict[str, Any]:
            if name not in made:
                made[name] = make()
            return made[name]
        return get

    def shakespeare() -> dict[str, Any]:
        path = root / "shakespeare.txt"
        path.write_text("\n\n".join(docs) + "\n", encoding="utf-8")
        return {"path": str(path)}

    def discord() -> dict[str, Any]:
        # each speech a message by its speaker, a minute apart; a long silence every 50 messages
        messages = []
        for i, speech in enumerate(docs):
            speaker, _, text = speech.partition(":\n")
            messages.append(message(i, " ".join(text.split()) or speaker, i + 90 * (i // 50), author=speaker))
        path = root / "export.json"
        path.write_text(json.dumps({"guild": {"id": "1", "name": "G"}, "channel": {"id": "2", "name": "general"},
                                    "messages": messages}), encoding="utf-8")
        return {"path": str(path)}

    def reddit() -> dict[str, Any]:
        return {"path": str(write_zst(root / "RC_2023-01.zst", rows(docs))), "shard_size": 20_000, "val_tokens": 2_000}

    def fineweb() -> dict[str, Any]:
        return {"path": str(write_jsonl(root / "fineweb.jsonl", docs)), "shard_size": 20_000}

    def wikipedia() -> dict[str, Any]:
        titles = ["Alan Turing", "Ada Lovelace", "Grace Hopper"]
        text = "\n\n".join(docs)
        wiki = FakeMediaWiki({title: text[i * 30_000 : (i + 1) * 30_000] for i, title in enumerate(titles)})
        server = serve_httpx(wiki)
        servers.append(server)
        (root / "titles.txt").write_text("\n".join(titles) + "\n", encoding="utf-8")
        return {"titles": [], "titles_file": str(root / "titles.txt"), "categories": [],
                "api_url": f"{server.url}/w/api.php"}

    yield {
        "ShakespeareDataModule": once("shakespeare", shakespeare),
        "DiscordDataModule": once("discord", discord),
        "RedditDataModule": once("reddit", reddit),
        "FineWebDataModule": once("fineweb", fineweb),
        "WikipediaDataModule": once("wikipedia", wikipedia),
    }
    for server in servers:
        server.close()


@pytest.fixture(scope="module")
def hellaswag_file(tmp_path_factory) -> Path:
    return write_examples(tmp_path_factory.mktemp("hellaswag") / "hellaswag_val.jsonl", HELLASWAG_EXAMPLES, seed=3)


# --- the shrinking and its check ------------------------------------------------------------------------------


def shrink(shipped: dict[str, Any], source: dict[str, Any], hellaswag: Path) -> dict[str, Any]:
    """The shipped config with tiny shapes, local data and 2 optimizer steps; everything else as shipped."""
    config = copy.deepcopy(shipped)
    trainer = config["trainer"]
    trainer["max_steps"] = STEPS
    trainer["val_check_interval"] = STEPS
    trainer["log_every_n_steps"] = 1
    if trainer.get("accelerator") in ("gpu", "cuda"):
        trainer["accelerator"] = "cpu"
    config["model"].setdefault("init_args", {}).update(MODEL_SHAPE)
    data = config["data"].setdefault("init_args", {})
    data.update(DATA_SHAPE)
    data.update(source)
    if (config.get("accumulation") or {}).get("total_batch_tokens"):  # 2 micro-batches a step: accumulation runs
        config["accumulation"]["total_batch_tokens"] = 2 * DATA_SHAPE["batch_size"] * MODEL_SHAPE["block_size"]
    if (config.get("checkpoint") or {}).get("every_n_train_steps"):
        config["checkpoint"]["every_n_train_steps"] = STEPS
    if (config.get("hellaswag") or {}).get("every_n_steps"):
        config["hellaswag"]["every_n_steps"] = STEPS
    if (config.get("hellaswag") or {}).get("data"):
        config["hellaswag"]["data"]["init_args"]["path"] = str(hellaswag)
    return config


def scalars(run_dir: Path) -> dict[str, list[float]]:
    """The TensorBoard scalars of a run, by tag."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    (events,) = run_dir.glob("events.*")
    accumulator = EventAccumulator(str(events))
    accumulator.Reload()
    return {tag: [e.value for e in accumulator.Scalars(tag)] for tag in accumulator.Tags()["scalars"]}


def flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    """Dotted keys to leaves."""
    if isinstance(value, dict):
        out = {}
        for key, item in value.items():
            out.update(flatten(item, f"{prefix}.{key}" if prefix else str(key)))
        return out
    return {prefix: value}


def changed_keys(shipped: dict[str, Any], shrunk: dict[str, Any]) -> set[str]:
    a, b = flatten(shipped), flatten(shrunk)
    return {key for key in a.keys() | b.keys() if a.get(key, "<absent>") != b.get(key, "<absent>")}


def test_the_check_catches_any_change_beyond_shapes_data_and_steps(hellaswag_file):
    shipped = yaml.safe_load((CONFIGS / "gpt2_fineweb.yaml").read_text(encoding="utf-8"))
    shrunk = shrink(shipped, {"path": "corpus.jsonl", "shard_size": 20_000}, hellaswag_file)
    assert changed_keys(shipped, shrunk) <= SHRINKABLE
    for change, key in [
        (lambda c: c["trainer"].update(precision="32-true"), "trainer.precision"),
        (lambda c: c["model"]["init_args"].update(compile=False), "model.init_args.compile"),
        (lambda c: c["trainer"].update(callbacks=[]), "trainer.callbacks"),
        (lambda c: c["sample"].update(max_new_tokens=1), "sample.max_new_tokens"),
        (lambda c: c["checkpoint"].update(save_top_k=1), "checkpoint.save_top_k"),
        (lambda c: c["data"]["init_args"].update(num_workers=0), "data.init_args.num_workers"),
    ]:
        changed = copy.deepcopy(shrunk)
        change(changed)
        assert key in changed_keys(shipped, changed) - SHRINKABLE, key


# --- the matrix ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("recipe", RECIPES)
def test_recipe_trains_as_shipped_then_validates_generates_and_scores(recipe, tmp_path, monkeypatch, sources,
                                                                      hellaswag_file):
    shipped = yaml.safe_load((CONFIGS / recipe).read_text(encoding="utf-8"))
    data_class = shipped["data"]["class_path"].rsplit(".", 1)[1]
    assert data_class in sources, f"{recipe}: give its data module ({data_class}) a local source in this test"
    config = shrink(shipped, sources[data_class](), hellaswag_file)
    unexpected = changed_keys(shipped, config) - SHRINKABLE
    assert not unexpected, f"{recipe}: the test changed {sorted(unexpected)}, which must stay as shipped"
    torch._dynamo.reset()  # each recipe compiles its own graphs, as a fresh process would (no recompiles to dynamic)
    path = tmp_path / recipe
    path.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    monkeypatch.chdir(tmp_path)

    cli = main(["fit", "--config", str(path)])
    trainer, module = cli.trainer, cli.model
    assert trainer.global_step == STEPS
    # what the recipe asked for (its resolved values: the file over the shared defaults) is what ran
    resolved = cli.config["fit"]
    assert trainer.precision == (resolved.trainer.precision or "32-true")
    assert trainer.gradient_clip_val == resolved.trainer.gradient_clip_val == 1.0
    hp = resolved.model.init_args
    assert module.hparams.compile == hp.compile
    if hp.compile:
        assert module.model._compiled_call_impl is not None
    optimizer = trainer.optimizers[0]
    if hp.optimizer == "muon":
        assert isinstance(optimizer, MuonAdamW)
    else:
        assert isinstance(optimizer, torch.optim.AdamW) and optimizer.defaults["fused"]
    val_loss = trainer.callback_metrics["val/loss"].item()
    assert math.isfinite(val_loss)
    last = Path(trainer.checkpoint_callback.dirpath) / "last.ckpt"
    saved = torch.load(last, weights_only=True)
    assert saved["global_step"] == STEPS and "tokenizer" in saved
    assert not any("_orig_mod" in key for key in saved["state_dict"])  # compiled in place: the keys stay clean
    logged = scalars(tmp_path / "out" / resolved.trainer.logger.init_args.name / "version_0")
    assert {"train/loss", "train/grad_norm", "val/loss"} <= logged.keys()
    if (shipped.get("hellaswag") or {}).get("every_n_steps"):
        assert 0 <= logged["hellaswag/acc"][-1] <= 1

    validated = main(["validate", "--config", str(path), "--ckpt_path", str(last)])
    assert validated.trainer.callback_metrics["val/loss"].item() == pytest.approx(val_loss, rel=1e-4)

    (text,) = generate(str(last), prompt="The", max_new_tokens=8, seed=0)
    assert text.startswith("The") and len(text) > len("The")

    tested = main(["test", "--config", str(path), "--ckpt_path", str(last)]).trainer.callback_metrics
    assert math.isfinite(tested["test/loss"].item())

    if saved["tokenizer"]["kind"] == "gpt2":  # every GPT-2-vocabulary recipe reports HellaSwag in test
        assert tested["hellaswag/examples"].item() == HELLASWAG_EXAMPLES and 0 <= tested["hellaswag/acc"].item() <= 1
        alone = main(["eval", "--ckpt_path", str(last), "--data.path", str(hellaswag_file)]).trainer.callback_metrics
        assert {k: alone[k].item() for k in alone} == {k: tested[k].item() for k in alone}
    else:
        assert not any(key.startswith("hellaswag/") for key in tested)
