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
from lit_gpt_mini.cli import main
from lit_gpt_mini.errors import ConfigError, DataError

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
        assert request.url.host == "en.wikipedia.org" and "lit-gpt-mini" in request.headers["User-Agent"]
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
    client = functools.partial(wikipediaapi.Wikipedia, transport=httpx.MockTransport(fake))
    monkeypatch.setattr(wikipedia_module.wikipediaapi, "Wikipedia", client)
    return fake


def module(tmp_path, **kwargs):
    defaults = dict(titles=["Alan Turing", "Ada Lovelace", "Turing", "No Such Article"], categories=["Computer scientists"],
                    requests_per_second=1000, bpe_vocab_size=300, block_size=32, batch_size=4)
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
    assert manifest["tokenizer"]["kind"] == "bpe" and dm.vocab_size == 300
    # Grace Hopper's first request failed (503) and was retried by the client
    assert sum(r.get("titles") == "Grace Hopper" for r in fake_wiki.requests) >= 3
    requests = len(fake_wiki.requests)
    again = module(tmp_path, titles_file=str(titles_file))
    again.prepare_data()
    again.setup("fit")
    assert len(fake_wiki.requests) == requests  # articles, category and tokenizer all came from the cache
    assert again.tokenizer == dm.tokenizer
    windows = next(iter(again.train_dataloader()))
    assert windows.shape == (4, 33)


def test_an_article_that_cannot_be_fetched_is_reported_and_fetched_on_the_next_run(tmp_path, fake_wiki, monkeypatch):
    fake_wiki.fail_first = {"Ada Lovelace"}
    dm = module(tmp_path, max_retries=0, categories=[])
    with pytest.raises(DataError, match=r"1 article\(s\) could not be fetched \('Ada Lovelace'\).*run again"):
        dm.fetch_articles()
    fetched = module(tmp_path, max_retries=0, categories=[]).fetch_articles()
    assert [a["title"] for a in fetched] == ["Alan Turing", "Ada Lovelace"]


def test_bad_settings_are_clear(tmp_path, fake_wiki):
    with pytest.raises(ConfigError, match="needs articles"):
        WikipediaDataModule(data_dir=str(tmp_path))
    with pytest.raises(DataError, match="cannot read data.titles_file"):
        module(tmp_path, titles_file=str(tmp_path / "nope.txt")).fetch_articles()
    with pytest.raises(DataError, match="none of the requested Wikipedia articles exists"):
        module(tmp_path, titles=["No Such Article"], categories=[]).fetch_articles()


def test_fit_through_the_cli_with_the_bpe_wikipedia_config(tmp_path, monkeypatch, fake_wiki):
    monkeypatch.chdir(tmp_path)
    cli = main(["fit", "--config", str(CONFIGS / "bpe_wikipedia.yaml"), "--data.titles", '["Alan Turing", "Ada Lovelace"]',
                "--data.requests_per_second", "1000", "--data.bpe_vocab_size", "300", "--data.block_size", "32",
                "--data.batch_size", "4", "--model.block_size", "32", "--model.n_layer", "1", "--model.n_embd", "32",
                "--model.n_head", "2", "--trainer.max_steps", "4", "--trainer.val_check_interval", "2",
                "--trainer.limit_val_batches", "2"])
    assert cli.trainer.global_step == 4 and "val/loss" in cli.trainer.callback_metrics
    ckpt = torch.load(tmp_path / "out/bpe_wikipedia/checkpoints/last.ckpt", weights_only=True)
    assert ckpt["tokenizer"]["kind"] == "bpe" and len(ckpt["tokenizer"]["merges"]) == 300 - 257
