"""Wikipedia articles as the corpus of a GPT with its own BPE tokenizer.

Articles are named by title (inline in the config or in a file, one a line) and by categories whose member
articles are added. Each article's plain text is fetched once with ``wikipedia-api`` and cached on disk, so
an interrupted fetch resumes and a second run makes no request; missing pages and redirects are reported.
The tokenizer (by default a BPE) is trained on the fetched articles in ``prepare_data`` (or reused while the
articles and the recipe are the same), then the articles become token shards, the last ``val_fraction`` of the
token stream being validation. Instantiating the module makes no request: only ``prepare_data`` fetches.
The articles are read from their cache files one at a time (only their titles stay in memory); the token
stream is held whole to cut its tail.
"""

from __future__ import annotations

import hashlib
import json
import sys
import time
from pathlib import Path
from typing import Any, Iterator, Optional

import httpx
import wikipediaapi
from tqdm import tqdm

from data_modules.base import InMemoryTokenDataModule
from data_modules.shards import write_json
from lit_gpt_mini.errors import ConfigError, DataError
from lit_gpt_mini.files import documents_sha256
from lit_gpt_mini.log import get_logger
from lit_gpt_mini.tokenizers import TokenizerRecipe

log = get_logger(__name__)

USER_AGENT = "lit-gpt-mini/0.1 (trains a small GPT on a few articles; set data.user_agent to include your contact)"


def make_client(
    language: str, user_agent: str, max_retries: int, retry_wait: float, api_url: Optional[str] = None
) -> wikipediaapi.Wikipedia:
    """The ``wikipedia-api`` client: this module's one network boundary. It retries failed requests
    ``max_retries`` times with exponential backoff from ``retry_wait`` seconds (and honours HTTP 429's
    ``Retry-After``). With ``api_url`` its requests go to that MediaWiki API instead of Wikipedia's."""
    return wikipediaapi.Wikipedia(
        user_agent=user_agent,
        language=language,
        extract_format=wikipediaapi.ExtractFormat.WIKI,
        max_retries=max_retries,
        retry_wait=retry_wait,
        transport=_Transport(api_url),
    )


class HostUnreachable(Exception):
    """The wiki's host cannot be connected to at all (its name does not resolve, it refuses connections): no
    request can succeed, so this passes through ``wikipedia-api``'s retries, which would wait on every article."""


class _Transport(httpx.BaseTransport):
    """httpx's transport, raising :class:`HostUnreachable` where httpx says it could not connect; with ``api_url``,
    each request goes to that MediaWiki API endpoint, query unchanged (``wikipedia-api`` always builds
    ``https://<language>.wikipedia.org/w/api.php`` itself)."""

    def __init__(self, api_url: Optional[str] = None, inner: Optional[httpx.BaseTransport] = None) -> None:
        self.url = httpx.URL(api_url) if api_url else None
        self.transport = inner or httpx.HTTPTransport()

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        if self.url is not None:
            request.url = request.url.copy_with(scheme=self.url.scheme, host=self.url.host, port=self.url.port,
                                                path=self.url.path)
            request.headers["Host"] = self.url.netloc.decode("ascii")
        try:
            return self.transport.handle_request(request)
        except httpx.ConnectError as e:  # a timeout, a 5xx or a dropped reply may be one article's: retried
            raise HostUnreachable(str(e) or type(e).__name__) from None

    def close(self) -> None:
        self.transport.close()


def check_api_url(api_url: Optional[str]) -> None:
    """A MediaWiki API URL is http(s) with a host (``https://wiki.example.org/w/api.php``)."""
    if api_url is None:
        return
    try:
        url = httpx.URL(api_url)
        ok = url.scheme in ("http", "https") and bool(url.host)
    except (httpx.InvalidURL, TypeError):
        ok = False
    if not ok:
        raise ConfigError(
            f"data.api_url {api_url!r} is not a MediaWiki API URL: give one like https://wiki.example.org/w/api.php, "
            f"or null for Wikipedia"
        )


def _read_cache(path: Path, key: str) -> Optional[dict[str, Any]]:
    """A cached JSON record, or ``None`` when absent or damaged (then it is fetched again)."""
    if not path.is_file():
        return None
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError):
        record = None
    valid = isinstance(record, dict) and key in record and (
        key == "titles" and isinstance(record["titles"], list) and all(isinstance(t, str) for t in record["titles"])
        or record.get("missing") is True
        or isinstance(record.get("title"), str) and isinstance(record.get("text"), str))
    if not valid:
        log.warning(f"{path}: damaged cache file, fetched again")
        return None
    return record


class WikipediaDataModule(InMemoryTokenDataModule):
    """Wikipedia articles, by default tokenized with a byte-level BPE trained on them.

    Args:
        titles: Article titles.
        titles_file: A text file with one title a line (blank lines and repeated titles are reported and
            skipped); used together with ``titles``.
        categories: Categories (with or without the ``Category:`` prefix) whose articles are added.
        max_articles_per_category: At most this many articles of each category (in title order).
        language: The Wikipedia's language code (``en``, ``fr``, ...).
        user_agent: Sent with every request; Wikimedia asks for a descriptive one with a contact.
        requests_per_second: At most this many article requests a second.
        max_retries: Retries of a failed request (with exponential backoff) before the article is reported as
            failed; a re-run fetches it again.
        api_url: Another MediaWiki's API (``https://wiki.example.org/w/api.php``: a self-hosted wiki, a mirror);
            ``None``: ``https://<language>.wikipedia.org/w/api.php``.

    The other arguments are :class:`~data_modules.base.InMemoryTokenDataModule`'s; the tokenizer's default
    kind here is ``bpe``. Articles are cached in ``data_dir/articles``, the tokenizer is ``data_dir/tokenizer.json``,
    the shards are in ``data_dir/shards``.
    """

    def __init__(
        self,
        data_dir: str = "data/wikipedia",
        titles: Optional[list[str]] = None,
        titles_file: Optional[str] = None,
        categories: Optional[list[str]] = None,
        max_articles_per_category: int = 100,
        language: str = "en",
        user_agent: str = USER_AGENT,
        requests_per_second: float = 1.0,
        max_retries: int = 3,
        api_url: Optional[str] = None,
        tokenizer: TokenizerRecipe = TokenizerRecipe("bpe"),
        **kwargs: Any,
    ) -> None:
        super().__init__(data_dir=data_dir, tokenizer=tokenizer, **kwargs)
        if not titles and not titles_file and not categories:
            raise ConfigError("WikipediaDataModule needs articles: set data.titles, data.titles_file or data.categories")
        if requests_per_second <= 0:
            raise ConfigError(f"data.requests_per_second must be positive, got {requests_per_second}")
        check_api_url(api_url)
        self.titles = list(titles or [])
        self.titles_file = Path(titles_file) if titles_file else None
        self.categories = list(categories or [])
        self.max_articles_per_category = max_articles_per_category
        self.language = language
        self.user_agent = user_agent
        self.requests_per_second = requests_per_second
        self.max_retries = max_retries
        self.api_url = api_url
        # where the articles come from, in messages; and the wiki's name in cache file names (one cache per wiki)
        self.site = httpx.URL(api_url).host if api_url else f"{language}.wikipedia.org"
        self._wiki = language if api_url is None else hashlib.sha1(api_url.encode()).hexdigest()[:12]
        self._client: Optional[wikipediaapi.Wikipedia] = None
        self._last_request = 0.0
        self._articles: Optional[list[tuple[str, Path]]] = None

    # --- which articles ---------------------------------------------------------------------------------------

    def requested_titles(self) -> list[str]:
        """The titles of the config and the titles file, in order, without blanks and repeats (reported)."""
        lines = [(f"data.titles[{i}]", t) for i, t in enumerate(self.titles)]
        if self.titles_file is not None:
            try:
                text = self.titles_file.read_text(encoding="utf-8-sig")  # (a byte order mark is not a title)
            except (OSError, UnicodeDecodeError) as e:
                raise DataError(f"cannot read data.titles_file {self.titles_file}: {e}") from None
            if not text.strip():
                raise DataError(f"data.titles_file {self.titles_file} is empty: put one article title a line in it")
            lines += [(f"{self.titles_file}:{n}", t) for n, t in enumerate(text.splitlines(), start=1)]
        seen: dict[str, str] = {}
        for where, title in lines:
            title = " ".join(title.split())
            if not title:
                log.info(f"{where}: blank title, skipped")
            elif title in seen:
                log.info(f"{where}: {title!r} repeats {seen[title]}, skipped")
            else:
                seen[title] = where
        return list(seen)

    @property
    def client(self) -> wikipediaapi.Wikipedia:
        if self._client is None:
            self._client = make_client(self.language, self.user_agent, self.max_retries, 1.0, self.api_url)
        return self._client

    def _wait_turn(self) -> None:
        # The rate limit: at most requests_per_second article requests a second.
        wait = self._last_request + 1.0 / self.requests_per_second - time.monotonic()
        if wait > 0:
            time.sleep(wait)
        self._last_request = time.monotonic()

    def category_titles(self, category: str) -> list[str]:
        """Article titles of a category (cached in ``data_dir/categories``)."""
        name = category if category.startswith("Category:") else f"Category:{category}"
        path = self.data_dir / "categories" / f"{self._wiki}-{hashlib.sha1(name.encode()).hexdigest()[:16]}.json"
        cached = _read_cache(path, "titles")
        if cached is not None:
            return cached["titles"]
        self._wait_turn()
        try:
            members = self.client.page(name).categorymembers
        except HostUnreachable as e:
            raise self._unreachable(e, 0) from None
        except wikipediaapi.WikipediaException as e:
            raise DataError(f"could not list {name} on {self.site}: {e}") from None
        titles = sorted(title for title, page in members.items() if page.namespace == 0)
        if not titles:
            log.info(f"{name}: no articles (missing or empty category)")
        titles = titles[: self.max_articles_per_category]
        write_json(path, {"category": name, "titles": titles})
        return titles

    def _article_path(self, title: str) -> Path:
        key = hashlib.sha1(f"{self._wiki}:{title}".encode()).hexdigest()[:20]
        return self.data_dir / "articles" / f"{key}.json"

    def fetch_articles(self) -> list[tuple[str, Path]]:
        """Each requested article's title and cache file, fetched (or found in the cache), without duplicates."""
        if self._articles is not None:
            return self._articles
        titles = self.requested_titles()
        for category in self.categories:
            titles += [t for t in self.category_titles(category) if t not in titles]
        articles, missing, failed, fetched, seen = [], [], [], 0, set()
        for title in tqdm(titles, desc=f"Wikipedia ({self.language})", unit="article", file=sys.stderr):
            path = self._article_path(title)
            record = _read_cache(path, "requested")
            if record is None:
                self._wait_turn()
                try:
                    page = self.client.page(title)
                    exists = page.exists()
                    record = {"requested": title, "title": page.title, "text": page.text} if exists else {
                        "requested": title, "missing": True}
                except HostUnreachable as e:
                    raise self._unreachable(e, fetched) from None
                except wikipediaapi.WikipediaException as e:
                    log.warning(f"{title!r}: could not fetch it ({type(e).__name__}: {e}); a re-run tries again")
                    failed.append(title)
                    continue
                write_json(path, record)
                fetched += 1
            if record.get("missing"):
                missing.append(title)
                continue
            if record["title"] != title:
                log.info(f"{title!r} redirects to {record['title']!r}")
            if record["title"] in seen:
                log.info(f"{title!r}: {record['title']!r} is already in the corpus, skipped")
                continue
            seen.add(record["title"])
            if record["text"].strip():
                articles.append((record["title"], path))
        if missing:
            log.warning(f"{len(missing)} missing page(s) on {self.site}: {', '.join(map(repr, missing))}")
        log.info(f"Wikipedia: {len(articles)} articles ({fetched} fetched now, {len(titles) - fetched - len(failed)} "
                 f"from the cache in {self.data_dir / 'articles'})")
        if failed:
            raise DataError(
                f"{len(failed)} article(s) could not be fetched ({', '.join(map(repr, failed))}); the others are "
                f"cached: run again to fetch the rest"
            )
        if not articles:
            raise DataError("none of the requested Wikipedia articles exists or has text: check the titles")
        self._articles = articles
        return articles

    def _unreachable(self, e: HostUnreachable, fetched: int) -> DataError:
        where = "data.api_url" if self.api_url else "the network connection (or data.language)"
        kept = f"; the {fetched} article(s) fetched before are cached" if fetched else ""
        return DataError(f"cannot connect to {self.site} ({e}): check {where} and run again{kept}")

    # --- the document stream and the shards ------------------------------------------------------------------

    def fetch(self) -> None:
        self.fetch_articles()

    def documents(self) -> Iterator[str]:
        """The articles' texts, in order, each read from its cache file when it is needed."""
        for title, path in self.fetch_articles():
            record = _read_cache(path, "requested")
            if record is None or record.get("title") != title:
                raise DataError(f"{path} changed during the preparation: run it again")
            yield record["text"]

    def corpus(self) -> dict[str, Any]:
        return {"corpus_sha256": documents_sha256(self.documents())}

    source = "the Wikipedia articles"

    def summary(self) -> dict[str, Any]:
        articles = self.fetch_articles()
        return {"documents": len(articles), "titles": [title for title, _ in articles]}
