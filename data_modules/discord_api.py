"""Discord's HTTP API as one careful client: bounded retries, the token sent only to the API's own host.

Every request is a GET to ``api_url``'s scheme, host and port. A redirect there is followed; a redirect
anywhere else is refused before anything is sent (the token would go with it). HTTP 429 and 5xx answers and
connection failures are retried under a :class:`RetryPolicy` (a cap on any single wait and on the total wait
for one request, and on the number of tries), so a server that refuses forever ends the run instead of
stalling it. Every failure becomes one :class:`~lit_gpt_mini.errors.DataError` line naming the URL; URLs never
hold the token, and whatever the server or the HTTP library says is stripped of it before it is shown.
"""

from __future__ import annotations

import json
import math
import re
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Optional
from urllib.parse import urljoin, urlsplit

import httpx

from lit_gpt_mini.errors import ConfigError, DataError

API_URL = "https://discord.com/api/v10"
USER_AGENT = "lit-gpt-mini (https://github.com/lit-gpt-mini, 0.1)"
MAX_BODY_BYTES = 16 << 20  # a page of 100 messages is well under 1 MB; more means something else answered
_MAX_REDIRECTS = 5
_LOOPBACK = {"127.0.0.1", "::1", "localhost"}


@dataclass
class RetryPolicy:
    """How long one request may keep being retried (HTTP 429, 5xx, connection failures).

    Args:
        max_wait: The longest single wait. A server asking for more (``retry_after: 86400``) ends the run
            with a message instead: waiting a day is never what the user wanted.
        max_total_wait: The longest total waiting for one request; then the run ends with the last failure. With
            the defaults a server that keeps failing (5xx, refused connections) is retried after 1, 2, 4 ... 32 s
            and given up after 63 s of waiting (7 tries); a 429 asking for up to 60 s is waited out twice.
        max_tries: Tries of one request in all (also bounds servers that ask for no wait at all).
        backoff: The first wait when the server says nothing usable; doubled at each try.
        timeout: Seconds allowed for one try: connecting, each read, and the whole answer (a server that
            trickles its answer byte by byte is cut off and retried).
        sleep: How to wait (tests pass a fake to run without real waits).
    """

    max_wait: float = 60.0
    max_total_wait: float = 120.0
    max_tries: int = 20
    backoff: float = 1.0
    timeout: float = 30.0
    sleep: Callable[[float], None] = field(default=time.sleep, repr=False)


def origin(url: str) -> tuple[str, str, int]:
    """(scheme, host, port) of a URL: what "the same host" means for sending the token."""
    parts = urlsplit(url)
    default = {"https": 443, "http": 80}.get(parts.scheme, 0)
    try:
        port = parts.port or default
    except ValueError:
        port = -1
    return parts.scheme, (parts.hostname or "").lower(), port


def check_api_url(api_url: str) -> str:
    """``api_url`` without its trailing slash, refused unless it is https (or http to this machine)."""
    scheme, host, port = origin(api_url)
    if scheme not in ("https", "http") or not host or port < 0:
        raise ConfigError(f"data.api_url must be an https:// URL like {API_URL}, got {api_url!r}")
    if scheme == "http" and host not in _LOOPBACK:
        raise ConfigError(
            f"data.api_url {api_url!r} is plain http: the token would cross the network unencrypted; use https"
        )
    return api_url.rstrip("/")


def _number(value: Any) -> Optional[float]:
    # A usable wait in seconds, or None (absent, negative, not a number, infinite, NaN).
    if value is None or isinstance(value, bool):
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) and number >= 0 else None


class DiscordClient:
    """GETs JSON from Discord's API with a token, under a :class:`RetryPolicy`; see the module docstring.

    ``token_name`` is how messages refer to the token (e.g. ``$DISCORD_TOKEN``), ``say`` prints a progress line.
    """

    def __init__(
        self,
        api_url: str,
        token: str,
        bot: bool,
        token_name: str,
        policy: Optional[RetryPolicy] = None,
        say: Callable[[str], None] = print,
    ) -> None:
        self.api_url = check_api_url(api_url)
        self.origin = origin(self.api_url)
        # Header values must be visible ASCII; say so without showing the value (it is the secret).
        if not re.fullmatch(r"[\x21-\x7e]+", token):
            raise DataError(
                f"the token in {token_name} has characters a Discord token cannot have (spaces, line breaks or "
                f"non-ASCII): set it to the token alone"
            )
        self._token = token
        self._authorization = f"Bot {token}" if bot else token
        self.token_name = token_name
        self.policy = policy or RetryPolicy()
        self.say = say
        # Plain http is only allowed to this machine: no proxy from the environment may see the token there.
        self._http = httpx.Client(follow_redirects=False, timeout=self.policy.timeout,
                                  trust_env=self.origin[0] == "https")

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> "DiscordClient":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def clean(self, text: str, limit: int = 200) -> str:
        """Text from the server or the HTTP library made safe for one line: no token, no line breaks."""
        text = text.replace(self._token, "<token>")
        text = " ".join(text.split())
        return text if len(text) <= limit else text[:limit] + "..."

    # --- one try ----------------------------------------------------------------------------------------------

    def _send(self, url: str) -> tuple[int, dict[str, str], bytes]:
        """One GET (following redirects on the API's own host): (status, lower-cased headers, body)."""
        started = time.monotonic()
        for _ in range(_MAX_REDIRECTS + 1):
            if origin(url) != self.origin:  # checked before every request, redirects included
                raise DataError(
                    f"Discord's API at {self.api_url} redirected to {self.clean(url)}, another host: the token is "
                    f"only sent to {self.origin[1]}, so the redirect was not followed (check data.api_url)"
                )
            with self._http.stream(
                "GET", url, headers={"Authorization": self._authorization, "User-Agent": USER_AGENT}
            ) as response:
                location = response.headers.get("location")
                if response.is_redirect and location:
                    url = urljoin(url, location)
                    continue
                body, size = [], 0
                for chunk in response.iter_bytes():
                    if time.monotonic() - started > self.policy.timeout:
                        raise httpx.ReadTimeout(f"the answer took longer than {self.policy.timeout:g} s")
                    size += len(chunk)
                    if size > MAX_BODY_BYTES:
                        raise DataError(
                            f"Discord's answer to {url} is larger than {MAX_BODY_BYTES >> 20} MB: that is not a "
                            f"page of messages (check data.api_url)"
                        )
                    body.append(chunk)
                return response.status_code, {k.lower(): v for k, v in response.headers.items()}, b"".join(body)
        raise DataError(f"Discord's API redirected {url} more than {_MAX_REDIRECTS} times (check data.api_url)")

    # --- the retry loop ---------------------------------------------------------------------------------------

    def get_json(self, url: str) -> Any:
        """The decoded JSON of a 200 answer to ``url``, retrying what may pass (see :class:`RetryPolicy`)."""
        policy, waited, tries = self.policy, 0.0, 0
        while True:
            tries += 1
            requested: Optional[float] = None
            try:
                status, headers, body = self._send(url)
            except httpx.HTTPError as e:  # connection refused or reset, timeouts, protocol errors
                problem = f"could not reach it ({type(e).__name__}: {self.clean(str(e))})"
            else:
                if status == 200:
                    payload = self._decode(url, body)
                    self._pace(url, headers)
                    return payload
                if status in (401, 403):
                    raise DataError(
                        f"Discord refused {url} (HTTP {status}): the token in {self.token_name} is invalid or "
                        f"cannot read this channel (a bot needs the View Channel and Read Message History "
                        f"permissions)"
                    )
                detail = self.clean(body.decode("utf-8", "replace"))
                if status != 429 and status < 500:
                    raise DataError(f"Discord answered {url} with HTTP {status}: {detail or '(no body)'}")
                problem = f"HTTP {status}" + (f": {detail}" if detail else "")
                if status == 429:
                    requested = self._retry_after(body, headers)
            wait = requested if requested is not None else policy.backoff * 2 ** (tries - 1)
            if requested is not None and requested > policy.max_wait:
                raise DataError(
                    f"Discord asks to wait {requested:.0f} s before retrying {url} ({problem}), longer than "
                    f"data.api_max_wait ({policy.max_wait:g} s): try again later"
                )
            wait = min(wait, policy.max_wait)
            if tries >= policy.max_tries or waited + wait > policy.max_total_wait:
                raise DataError(
                    f"gave up on {url} after {tries} tries and {waited:.1f} s of waiting (data.api_max_total_wait "
                    f"is {policy.max_total_wait:g} s); the last answer: {problem}"
                )
            at = time.strftime("%H:%M:%S", time.localtime(time.time() + wait))
            self.say(
                f"Discord: {problem} for {url}; try {tries + 1} of at most {policy.max_tries} in {wait:.1f} s (at "
                f"{at}; {waited + wait:.1f} of data.api_max_total_wait={policy.max_total_wait:g} s of waiting)"
            )
            policy.sleep(wait)
            waited += wait

    def _decode(self, url: str, body: bytes) -> Any:
        try:
            return json.loads(body)
        except (UnicodeDecodeError, ValueError, RecursionError):
            raise DataError(
                f"Discord answered {url} with HTTP 200 but the body is not JSON ({self.clean(repr(body[:80]))}): "
                f"is data.api_url Discord's API?"
            ) from None

    def _retry_after(self, body: bytes, headers: dict[str, str]) -> Optional[float]:
        try:
            payload = json.loads(body)
        except (UnicodeDecodeError, ValueError, RecursionError):
            payload = None
        value = _number(payload.get("retry_after")) if isinstance(payload, dict) else None
        return value if value is not None else _number(headers.get("retry-after"))

    def _pace(self, url: str, headers: dict[str, str]) -> None:
        # An exhausted bucket: the next request would be refused, so wait for it to refill (never longer than
        # max_wait; if that is too short, the 429 that follows is handled by the retry loop). A wait of a second
        # or more is said, as the retry loop's are: a fetch that seems stuck is waiting.
        if headers.get("x-ratelimit-remaining") == "0":
            wait = _number(headers.get("x-ratelimit-reset-after"))
            wait = min(wait if wait is not None else self.policy.backoff, self.policy.max_wait)
            if wait >= 1:
                self.say(f"Discord: rate limit reached after {url}; the next request in {wait:.1f} s (as Discord asks)")
            self.policy.sleep(wait)
