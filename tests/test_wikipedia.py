"""Wikipedia module against a fake MediaWiki API (httpx transport): the real wikipedia-api client, no network."""

from __future__ import annotations

import functools

import httpx
import pytest
import torch
import wikipediaapi

import data_modules.wikipedia as wikipedia_module
from data_modules.shards import read_manifest
from data_modules.wikipedia import WikipediaDataModule
from lit_gpt_mini.cli.main import main
from lit_gpt_mini.errors import ConfigError, DataError
from lit_gpt_mini.tokenizers import TokenizerRecipe

from .conftest import CONFIGS


class FakeMediaWiki:
    """Answers wikipedia-api's queries (page info, extracts, category members) from dicts; counts requests."""

    def __init__(self, pages, redirects=None, categories=None, fail_first=()):
        self.pages, self.redirects, self.categories = pages, redirects or {}, categories or {}
        self.fail_first = set(fail_first)  # titles whose first request gets a 503
        self.requests = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        params = dict(request.url.params)
        self.requests.append(params)
        # Wikipedia's host, or this machine (a local server standing in for another wiki's data.api_url)
        assert request.url.host in ("en.wikipedia.org", "127.0.0.1") and "lit-gpt-mini" in request.headers["User-Agent"]
        if params.get("list") == "categorymembers":
            members = [{"pageid": 100 + i, "ns": 0, "title": t} for i, t in enumerate(self.categories[params["cmtitle"]])]
            members.append({"pageid": 999, "ns": 14, "title": "Category:A subcategory"})
            return httpx.Response(200, json={"query": {"categorymembers": members}})
        title = params["titles"]
        if title in self.fail_first:
            self.fail_first.discard(title)
            return httpx.Response(503, text="busy")
        target = self.redirects.get(title, title)
        query = {"redirects": [{"from": title, "to": target}]} if target != title else {}
        if target not in self.pages:
            query["pages"] = {"-1": {"ns": 0, "title": title, "missing": ""}}
        else:
            page = {"pageid": 1 + sorted(self.pages).index(target), "ns": 0, "title": target}
            if params.get("prop") == "extracts":
                page["extract"] = self.pages[target]
            query["pages"] = {str(page["pageid"]): page}
        return httpx.Response(200, json={"batchcomplete": "", "query": query})


@pytest.fixture
def fake_wiki(monkeypatch, shakespeare_path):
    text = shakespeare_path.read_text(encoding="utf-8")
    pages = {title: text[i * 40_000 : (i + 1) * 40_000] for i, title in enumerate(
        ["Alan Turing", "Ada Lovelace", "Grace Hopper", "Edsger W. Dijkstra", "Barbara Liskov"])}
    fake = FakeMediaWiki(
        pages,
        redirects={"Turing": "Alan Turing"},
        categories={"Category:Computer scientists": ["Edsger W. Dijkstra", "Barbara Liskov"]},
        fail_first={"Grace Hopper"},
    )
    # The real client, with its HTTP transport replaced: everything above the socket runs for real.
    transport = functools.partial(wikipedia_module._Transport, inner=httpx.MockTransport(fake))
    monkeypatch.setattr(wikipedia_module, "_Transport", transport)
    return fake


def module(tmp_path, **kwargs):
    defaults = dict(titles=["Alan Turing", "Ada Lovelace", "Turing", "No Such Article"], categories=["Computer scientists"],
                    requests_per_second=1000, tokenizer=TokenizerRecipe("bpe", vocab_size=300),
                    batch_size=4)
    return WikipediaDataModule(data_dir=str(tmp_path / "wiki"), **{**defaults, **kwargs})


def test_fetch_reports_missing_and_redirects_then_serves_from_the_cache(tmp_path, fake_wiki, capfd):
    titles_file = tmp_path / "titles.txt"
    titles_file.write_text("Grace Hopper\n\nAda Lovelace\nGrace Hopper\n")
    dm = module(tmp_path, titles_file=str(titles_file))
    dm.prepare_data()
    err = capfd.readouterr().err
    assert f"{titles_file}:2: blank title, skipped" in err
    assert f"{titles_file}:3: 'Ada Lovelace' repeats data.titles[1], skipped" in err
    assert f"{titles_file}:4: 'Grace Hopper' repeats {titles_file}:1, skipped" in err
    assert "'Turing' redirects to 'Alan Turing'" in err and "'Alan Turing' is already in the corpus" in err
    assert "1 missing page(s) on en.wikipedia.org: 'No Such Article'" in err
    manifest = read_manifest(dm.shard_dir)
    assert manifest["titles"] == ["Alan Turing", "Ada Lovelace", "Grace Hopper", "Barbara Liskov", "Edsger W. Dijkstra"]
    assert manifest["tokenizer"]["kind"] == "bpe" and dm.tokenizer.vocab_size == 300
    # Grace Hopper's first request failed (503) and was retried by the client
    assert sum(r.get("titles") == "Grace Hopper" for r in fake_wiki.requests) >= 3
    requests = len(fake_wiki.requests)
    again = module(tmp_path, titles_file=str(titles_file))
    again.prepare_data()
    again.setup("fit")
    assert len(fake_wiki.requests) == requests  # articles, category and tokenizer all came from the cache
    assert again.tokenizer == dm.tokenizer
    again.connect(32)  # the model's context
    windows = next(iter(again.train_dataloader()))
    assert windows.shape == (4, 33)


def test_an_article_that_cannot_be_fetched_is_reported_and_fetched_on_the_next_run(tmp_path, fake_wiki, monkeypatch):
    fake_wiki.fail_first = {"Ada Lovelace"}
    dm = module(tmp_path, max_retries=0, categories=[])
    with pytest.raises(DataError, match=r"1 article\(s\) could not be fetched \('Ada Lovelace'\).*run again"):
        dm.fetch_articles()
    fetched = module(tmp_path, max_retries=0, categories=[]).fetch_articles()
    assert [title for title, _ in fetched] == ["Alan Turing", "Ada Lovelace"]


def test_bad_settings_are_clear(tmp_path, fake_wiki):
    with pytest.raises(ConfigError, match="needs articles"):
        WikipediaDataModule(data_dir=str(tmp_path))
    with pytest.raises(DataError, match="cannot read data.titles_file"):
        module(tmp_path, titles_file=str(tmp_path / "nope.txt")).fetch_articles()
    with pytest.raises(DataError, match="none of the requested Wikipedia articles exists"):
        module(tmp_path, titles=["No Such Article"], categories=[]).fetch_articles()


def test_parsing_and_instantiating_the_config_make_no_request_and_train_nothing(tmp_path, monkeypatch, capsys):
    def refuse(*args, **kwargs):
        raise AssertionError("a request or a training happened while the config was parsed or instantiated")

    monkeypatch.setattr(wikipedia_module, "make_client", refuse)
    monkeypatch.setattr(wikipedia_module.wikipediaapi, "Wikipedia", refuse)
    monkeypatch.setattr("lit_gpt_mini.tokenizers.recipe.train_bpe", refuse)
    monkeypatch.chdir(tmp_path)  # an empty cache: data/wikipedia does not exist
    config = str(CONFIGS / "bpe_wikipedia.yaml")
    with pytest.raises(SystemExit) as e:
        main(["fit", "--config", config, "--print_config"])
    assert e.value.code in (0, None) and "kind: bpe" in capsys.readouterr().out
    from lit_gpt_mini.cli.main import GPTCLI
    from lit_gpt_mini.lit_module import GPTModule
    from data_modules.base import TokenDataModule

    cli = GPTCLI(GPTModule, TokenDataModule, subclass_mode_model=True, subclass_mode_data=True, run=False,
                 args=["--config", config, "--trainer.logger", "false"])
    assert isinstance(cli.datamodule, WikipediaDataModule) and cli.datamodule.recipe.vocab_size == 2048
    assert cli.model.hparams.vocab_size is None  # the model learns it from the data, in setup
    assert not (tmp_path / "data").exists()


@pytest.mark.parametrize("kind", ["char", "gpt2"])
def test_wikipedia_takes_the_other_tokenizer_kinds(tmp_path, fake_wiki, kind):
    dm = module(tmp_path, tokenizer=TokenizerRecipe(kind), categories=[])
    dm.prepare_data()
    dm.setup("fit")
    assert dm.tokenizer.kind == kind and read_manifest(dm.shard_dir)["tokenizer"]["kind"] == kind
    dm.connect(32)
    assert next(iter(dm.train_dataloader())).shape == (4, 33)


WRAPPER = """
import functools, hashlib, json, os, sys
sys.path.insert(0, {root!r})
import httpx, wikipediaapi
import data_modules.base, lit_gpt_mini.tokenizers.recipe as recipe
from lit_gpt_mini.cli.main import main
from tests.test_wikipedia import FakeMediaWiki

LOG = {log!r}
def note(**event):
    with open(LOG, "a") as f:
        f.write(json.dumps(dict(pid=os.getpid(), **event)) + "\\n")

text = open({text!r}, encoding="utf-8").read()
fake = FakeMediaWiki({{t: text[i * 30000 : (i + 1) * 30000] for i, t in enumerate(["Alan Turing", "Ada Lovelace"])}})
def transport(request):
    note(request=dict(request.url.params))
    return fake(request)
import data_modules.wikipedia as wikipedia
wikipedia._Transport = functools.partial(wikipedia._Transport, inner=httpx.MockTransport(transport))

train = recipe.train_bpe
def counted_train(*args, **kwargs):
    note(trained=True)
    return train(*args, **kwargs)
recipe.train_bpe = counted_train

load = data_modules.base.load_tokenizer_file
def noted_load(path):
    note(loaded=str(path), sha=hashlib.sha256(open(path, "rb").read()).hexdigest())
    return load(path)
data_modules.base.load_tokenizer_file = noted_load
main()
"""


def test_ddp_fetches_each_article_once_and_every_rank_loads_the_saved_tokenizer(tmp_path, shakespeare_path):
    import json
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    log = tmp_path / "events.jsonl"
    wrapper = tmp_path / "wrapper.py"
    wrapper.write_text(WRAPPER.format(root=str(root), log=str(log), text=str(shakespeare_path)))
    args = ["fit", "--config", str(CONFIGS / "bpe_wikipedia.yaml"), "--data.titles", '["Alan Turing", "Ada Lovelace"]',
            "--data.requests_per_second", "1000", "--data.tokenizer.vocab_size", "300",
            "--data.batch_size", "4", "--model.block_size", "32", "--model.n_layer", "1", "--model.n_embd", "32",
            "--model.n_head", "2", "--trainer.max_steps", "2", "--trainer.val_check_interval", "2",
            "--trainer.limit_val_batches", "1", "--trainer.devices", "2", "--trainer.strategy", "ddp",
            "--trainer.accelerator", "cpu"]
    run = subprocess.run([sys.executable, str(wrapper), *args], cwd=tmp_path, capture_output=True, text=True,
                         timeout=600, env={**__import__("os").environ, "PYTHONPATH": str(root)})
    assert run.returncode == 0, run.stderr[-3000:]
    events = [json.loads(line) for line in log.read_text().splitlines()]
    requests = [(e["request"].get("titles"), e["request"].get("prop")) for e in events if "request" in e]
    # each article's page info and text asked for once in all, by one process
    assert sorted(requests) == sorted(set(requests)) and {t for t, _ in requests} == {"Alan Turing", "Ada Lovelace"}
    assert len({e["pid"] for e in events if "request" in e}) == 1
    assert sum("trained" in e for e in events) == 1  # the tokenizer was trained once
    loads = [e for e in events if "loaded" in e]
    assert len({e["pid"] for e in loads}) == 2  # both ranks loaded it...
    assert len({(Path(e["loaded"]).resolve(), e["sha"]) for e in loads}) == 1  # ...from the same file
    ckpt = torch.load(tmp_path / "out/bpe_wikipedia/checkpoints/last.ckpt", weights_only=True)
    assert ckpt["hyper_parameters"]["vocab_size"] == len(ckpt["tokenizer"]["merges"]) + 257 == 300
