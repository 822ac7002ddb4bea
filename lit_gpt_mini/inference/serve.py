"""Serve a model over HTTP: ``python main.py serve --ckpt_path <file.ckpt>``, then http://127.0.0.1:8000.

Routes: ``POST /v1/completions`` and ``POST /v1/chat/completions`` (OpenAI's request and response shapes,
streamed as server-sent events with ``"stream": true``; beyond OpenAI's fields, ``top_k`` and vLLM's
``ignore_eos``), ``GET /v1/models``, ``GET /health`` (200 once the model is loaded) and the playground page at ``/``.

Built on LitServe. Its inference worker (a process holding the model) runs the :class:`GPTAPI` below; the HTTP
side is a LitServe *spec* (:class:`OpenAIEndpoints`, LitServe's documented hook for custom routes), because
LitServe's own ``OpenAISpec`` has chat only, no ``/v1/models``, and answers a bad request after the stream
started. Requests are checked in the HTTP process, before they reach the model: a bad one gets a 4xx JSON
error naming the field (OpenAI's ``{"error": {"message", "type", "param", "code"}}``). The worker runs
LitServe's async loop: every request is its own task with its own KV cache and random generator, and the
tasks take turns token by token (at most ``max_parallel`` at once), so one seed gives the same text whatever
else is served. A client that disconnects mid-stream stops its generation: the HTTP process passes the
request's id to the worker, which checks between tokens. LitServe's ``/`` route ("litserve running") is
replaced by the playground, and no other route answers.

Before any route, :class:`RequestGuard` refuses what a web page could make a browser send (a foreign ``Host``,
another page's ``Origin``, a POST not declared JSON), and :class:`GuardedH11` (uvicorn's HTTP/1.1 connection)
closes connections that send their headers too slowly or exceed the connection limit.
"""

from __future__ import annotations

import asyncio
import functools
import json
import multiprocessing as mp
import os
import re
import secrets
import signal
import socket
import time
import uuid
from collections import OrderedDict, deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any, AsyncIterator, Literal, Optional

import h11
import litserve as ls
import torch
from fastapi import HTTPException, Request, Response
from fastapi.responses import HTMLResponse, JSONResponse, StreamingResponse
from starlette.requests import ClientDisconnect
from litserve.specs.base import LitSpec
from litserve.utils import LitAPIStatus, ResponseBufferItem
from uvicorn.protocols.http.h11_impl import H11Protocol

from lit_gpt_mini.checkpoint import check_device, load_model
from lit_gpt_mini.inference.conversation import Conversation, check_name, encode, render_turn
from lit_gpt_mini.errors import UserError
from lit_gpt_mini.inference.generate import SamplingError, check_sampling, stream_text
from lit_gpt_mini.log import get_logger
from lit_gpt_mini.inference.textstream import TextStream
from lit_gpt_mini.tokenizers import Tokenizer, tokenizer_from_dict

log = get_logger(__name__)
PLAYGROUND = Path(__file__).with_name("playground.html")
HOSTS = ("127.0.0.1", "0.0.0.0", "::")  # what LitServe binds to: this machine only, or every interface
MAX_STOPS = 4  # as OpenAI
MAX_STOP_CHARS = 200
CANCEL_CHECK_SECONDS = 0.02  # how often a generation looks for its client having gone
STREAM_INTERVAL = 0.02  # a stream's text is sent at most this often (50 times a second), the first piece at once
_MAIN_PID = -1  # the process of `main.py serve` (set by serve)
MAX_JSON_DEPTH = 32  # an OpenAI request nests 4 deep; Python's JSON parser recurses once per level
MAX_HEADER_BYTES = 16 * 1024  # a request line and headers larger than this are refused (uvicorn's h11 limit)
KEEP_ALIVE_SECONDS = 5  # an idle connection between requests is closed after this
FILE_RESERVE = 128  # open files kept for the server itself (model file, queues, logs) beyond its connections
LOOPBACK_NAMES = ("127.0.0.1", "localhost", "::1")  # what a client on this machine calls it


# --- what the HTTP process knows of the model, and the limits -------------------------------------------------


@dataclass
class ServedModel:
    """What the HTTP process needs to check and render requests (plain data: it travels to every process)."""

    name: str
    tokenizer_dict: dict[str, Any]
    block_size: int
    text_format: str
    user: str  # a conversation model's name for user messages without one
    bot: Optional[str]  # ... and for its own turns; None: the model writes who speaks
    max_tokens: int  # the largest max_tokens a request may ask for
    default_max_tokens: int

    @functools.cached_property
    def tokenizer(self) -> Tokenizer:
        return tokenizer_from_dict(self.tokenizer_dict)

    def __getstate__(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if k != "tokenizer"}  # rebuilt where it is used


class ApiError(Exception):
    """A request the server refuses: the HTTP status and OpenAI's error object, naming the field (``param``)."""

    def __init__(self, status: int, message: str, param: Optional[str] = None, code: Optional[str] = None) -> None:
        super().__init__(message)
        self.status, self.message, self.param, self.code = status, message, param, code

    def response(self) -> JSONResponse:
        kind = "invalid_request_error" if self.status < 500 else "server_error"
        return JSONResponse({"error": {"message": self.message, "type": kind, "param": self.param,
                                       "code": self.code}}, status_code=self.status)


def _typed(body: dict[str, Any], key: str, kinds: tuple[type, ...], what: str, default: Any = None) -> Any:
    value = body.get(key, default)
    if value is None:
        return default
    if isinstance(value, bool) and bool not in kinds or not isinstance(value, kinds):
        raise ApiError(400, f"{key} must be {what}, got {json.dumps(value)[:60]}", key, "invalid_type")
    return value


# The one rule for fields: a field is implemented, or refused unless it holds its default (null counts as the
# default), so nothing a client asks for is silently ignored. Unknown fields are refused too: a misspelt one
# would otherwise be ignored.
IMPLEMENTED = ("model", "max_tokens", "temperature", "top_p", "top_k", "seed", "stop", "stream", "stream_options",
               "ignore_eos")
IMPLEMENTED_BY_ROUTE = {False: ("prompt",), True: ("messages", "max_completion_tokens")}
# Fields that only label a request (an end user's id for the client's own records): they change no output, so
# every value is honoured by accepting it.
LABELS = ("user",)
NOT_IMPLEMENTED = {  # OpenAI's fields this server does not do, with the values that ask for nothing
    "n": (1,), "best_of": (1,), "echo": (False,), "logprobs": (False, 0), "top_logprobs": (0,), "suffix": ("",),
    "frequency_penalty": (0,), "presence_penalty": (0,), "logit_bias": ({},), "response_format": ({"type": "text"},),
    "tools": ([],), "tool_choice": ("none",), "functions": ([],), "function_call": ("none",),
}


def check_fields(body: dict[str, Any], chat: bool) -> None:
    """Refuse a field this server does not implement unless it holds its default, and any unknown field."""
    for key, value in body.items():
        if key in IMPLEMENTED or key in IMPLEMENTED_BY_ROUTE[chat] or key in LABELS or value is None:
            continue
        if key not in NOT_IMPLEMENTED:
            raise ApiError(400, f"unknown field {key!r}: this server does not implement it (docs/serving.md lists "
                                f"the fields)", key, "unsupported")
        # (True == 1 in Python: a boolean matches only a boolean)
        if not any(value == v and isinstance(value, bool) == isinstance(v, bool) for v in NOT_IMPLEMENTED[key]):
            shown = " or ".join(json.dumps(v) for v in NOT_IMPLEMENTED[key])
            raise ApiError(400, f"{key}={json.dumps(value)[:60]} is not supported by this server: leave it out or "
                                f"give {shown}", key, "unsupported")


def check_request(body: Any, served: ServedModel, chat: bool) -> dict[str, Any]:
    """The job for the worker (prompt ids and sampling settings) of a request body, or an :class:`ApiError`."""
    if not isinstance(body, dict):
        raise ApiError(400, "the request body must be a JSON object", None, "invalid_type")
    model = _typed(body, "model", (str,), "a string")
    if model is not None and model != served.name:
        raise ApiError(404, f"model {model!r} does not exist: this server has {served.name!r} (GET /v1/models)",
                       "model", "model_not_found")
    check_fields(body, chat)
    limit = served.max_tokens
    key = "max_completion_tokens" if chat and body.get("max_completion_tokens") is not None else "max_tokens"
    max_tokens = _typed(body, key, (int,), "an integer", served.default_max_tokens)
    if not 1 <= max_tokens <= limit:
        raise ApiError(400, f"{key} must be between 1 and {limit} (this server's limit), got {max_tokens}", key,
                       "invalid_value")
    temperature = _typed(body, "temperature", (int, float), "a number", 1.0)
    top_p = _typed(body, "top_p", (int, float), "a number")
    top_k = _typed(body, "top_k", (int,), "an integer")
    seed = _typed(body, "seed", (int,), "an integer")
    try:
        check_sampling(max_tokens, temperature, top_k, top_p, names={"max_new_tokens": key}, seed=seed)
    except SamplingError as e:
        raise ApiError(400, str(e), e.name, "invalid_value") from None
    stop = _typed(body, "stop", (str, list), "a string or a list of strings")
    stop = [stop] if isinstance(stop, str) else stop or []
    if len(stop) > MAX_STOPS or not all(isinstance(s, str) and 0 < len(s) <= MAX_STOP_CHARS for s in stop):
        raise ApiError(400, f"stop must be at most {MAX_STOPS} non-empty strings of at most {MAX_STOP_CHARS} "
                            f"characters", "stop", "invalid_value")
    ignore_eos = _typed(body, "ignore_eos", (bool,), "true or false", False)
    stream = _typed(body, "stream", (bool,), "true or false", False)
    options = _typed(body, "stream_options", (dict,), "an object", {})
    usage = _typed(options, "include_usage", (bool,), "true or false", False)
    job = {"max_tokens": max_tokens, "temperature": float(temperature), "top_k": top_k,
           "top_p": None if top_p is None else float(top_p), "stop": stop, "stream": stream, "include_usage": usage,
           "seed": secrets.randbits(63) if seed is None else seed, "ignore_eos": ignore_eos, "speaker_lines": False,
           "lstrip": False}
    job.update(_chat_prompt(body, served, max_tokens) if chat else _completion_prompt(body, served))
    return job


def _completion_prompt(body: dict[str, Any], served: ServedModel) -> dict[str, Any]:
    prompt = body.get("prompt")
    if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], str):
        prompt = prompt[0]
    if not isinstance(prompt, str):
        raise ApiError(400, "prompt must be a string (one prompt per request)", "prompt",
                       "missing" if prompt is None else "invalid_type")
    ids = _encode(served, prompt, "prompt")
    if not ids:
        raise ApiError(400, "prompt is empty: give at least one character", "prompt", "invalid_value")
    if len(ids) > served.block_size:
        raise ApiError(400, f"prompt is {len(ids)} tokens, over the model's context of {served.block_size} tokens",
                       "prompt", "context_length_exceeded")
    return {"ids": ids}


def _chat_prompt(body: dict[str, Any], served: ServedModel, max_tokens: int) -> dict[str, Any]:
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise ApiError(400, "messages must be a non-empty list of {role, content} objects", "messages",
                       "missing" if messages is None else "invalid_type")
    turns = []
    for i, message in enumerate(messages):
        where = f"messages[{i}]"
        if not isinstance(message, dict) or message.get("role") not in ("system", "user", "assistant"):
            raise ApiError(400, f"{where} must be an object with a role of system, user or assistant", where,
                           "invalid_value")
        content = message.get("content")
        if isinstance(content, list):  # OpenAI's content parts: only text ones
            if not all(isinstance(p, dict) and p.get("type") == "text" and isinstance(p.get("text"), str)
                       for p in content):
                raise ApiError(400, f"{where}.content parts must all be text", f"{where}.content", "invalid_type")
            content = "".join(p["text"] for p in content)
        if not isinstance(content, str):
            raise ApiError(400, f"{where}.content must be a string", f"{where}.content", "invalid_type")
        name = _typed(message, "name", (str,), "a string")
        if name is not None:
            try:
                check_name(name, f"{where}.name")
            except UserError as e:
                raise ApiError(400, str(e), f"{where}.name", "invalid_value") from None
        turns.append((message["role"], name, content))
    tokenizer = served.tokenizer
    if served.text_format != "chat":  # a plain-text model continues the messages' text
        ids = _encode(served, "\n".join(content for _, _, content in turns), "messages")
        if len(ids) > served.block_size:
            raise ApiError(400, f"messages are {len(ids)} tokens, over the model's context of {served.block_size}",
                           "messages", "context_length_exceeded")
        return {"ids": ids}
    conversation = Conversation(tokenizer, served.block_size, min(max_tokens, served.block_size // 2))
    for i, (role, name, content) in enumerate(turns):
        if role == "system" or not content.strip():
            continue  # a conversation model has seen no system messages: they are left out
        speaker = name or (served.user if role == "user" else served.bot)
        _encode(served, render_turn(speaker, content), f"messages[{i}]")
        conversation.add(speaker, content)
    if not conversation.lines:
        raise ApiError(400, "messages hold no user or assistant text", "messages", "invalid_value")
    try:
        ids = conversation.prompt(served.bot, cut_last=False)
    except UserError as e:
        raise ApiError(400, f"messages: {e}", "messages", "context_length_exceeded") from None
    # after a prompt ending "bot:" the answer starts with a space
    return {"ids": ids, "speaker_lines": True, "lstrip": served.bot is not None}


def _encode(served: ServedModel, text: str, field: str) -> list[int]:
    try:
        return encode(served.tokenizer, text, field)
    except UserError as e:
        raise ApiError(400, str(e), field, "invalid_value") from None


_JSON_TOKENS = re.compile(rb'"(?:[^"\\]++|\\.)*+"|[\[\]{}]')  # strings (skipped whole) and brackets


def parse_json(raw: bytes) -> Any:
    """A request body parsed as JSON, or an :class:`ApiError`; nesting deeper than ``MAX_JSON_DEPTH`` is refused
    before parsing (Python's parser recurses once per level, and a deep enough body would exhaust its stack)."""
    depth = 0
    for token in _JSON_TOKENS.finditer(raw):
        bracket = token.group()
        if bracket in (b"[", b"{"):
            depth += 1
            if depth > MAX_JSON_DEPTH:
                raise ApiError(400, f"the request body nests more than {MAX_JSON_DEPTH} levels deep", None,
                               "invalid_json")
        elif bracket in (b"]", b"}"):
            depth -= 1
    try:
        return json.loads(raw)
    except ValueError as e:
        raise ApiError(400, f"the request body is not JSON ({e})", None, "invalid_json") from None


# --- the HTTP side: what reaches the routes at all -------------------------------------------------------------


def host_name(header: str) -> str:
    """The name in a ``Host`` header, without its port (``[::1]:8000`` -> ``::1``), lowercased."""
    header = header.strip().lower()
    if header.startswith("["):
        return header[1:header.find("]")] if "]" in header else header
    return header.rsplit(":", 1)[0] if header.count(":") == 1 else header


class RequestGuard:
    """Refuses, before any route runs, what a web page could make a browser send: a ``Host`` that is not this
    server's (a DNS-rebinding page; 400), a request from a page of another origin (403: this server sends no CORS
    headers, so such a page could only ever send, never read), and a POST whose body is not declared JSON (415:
    the only kind a page of another origin can send without the browser asking first)."""

    def __init__(self, app: Any, allowed_hosts: frozenset[str]) -> None:
        self.app = app
        self.allowed_hosts = allowed_hosts  # "*": any

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
            error = self.check(scope["method"], headers)
            if error is not None:
                await error.response()(scope, receive, send)
                return
        await self.app(scope, receive, send)

    def check(self, method: str, headers: dict[str, str]) -> Optional[ApiError]:
        host = headers.get("host", "")
        if host and "*" not in self.allowed_hosts and host_name(host) not in self.allowed_hosts:
            return ApiError(400, f"Host {host!r} is not a name of this server: ask for it by "
                                 f"{' or '.join(sorted(self.allowed_hosts))}, or start it with --allowed_hosts "
                                 f"{host_name(host)}", "Host", "invalid_host")
        origin = headers.get("origin")
        if origin is not None and origin.lower().split("://", 1)[-1] != host.lower():
            return ApiError(403, f"requests from web pages of another origin ({origin}) are refused: use the "
                                 f"playground page of this server, or a client that is not a web page",
                            "Origin", "cross_origin")
        kind = headers.get("content-type", "").split(";")[0].strip().lower()
        if method == "POST" and kind != "application/json":
            return ApiError(415, f"the request body must be JSON sent with the header Content-Type: "
                                 f"application/json, got {kind or 'none'}", "Content-Type", "unsupported_media_type")
        return None


class GuardedH11(H11Protocol):
    """uvicorn's HTTP/1.1 connection with the limits it lacks: a connection over ``max_connections`` is closed at
    once (open files stay under the system's limit), and one that has not sent a whole request line and headers
    within ``header_timeout`` seconds (of opening, or of the first byte of a next request) is closed; uvicorn's
    keep-alive timeout closes one idle between requests. The class attributes
    are set by :func:`serve`."""

    header_timeout: float = 10.0
    max_connections: int = 256

    def connection_made(self, transport: Any) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._header_timer: Optional[asyncio.TimerHandle] = None
        if len(self.connections) > self.max_connections:
            transport.close()
            return
        self._wait_for_headers()

    def _wait_for_headers(self) -> None:
        self._stop_waiting()
        self._header_timer = self.loop.call_later(self.header_timeout, self._headers_too_slow)

    def _stop_waiting(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _headers_too_slow(self) -> None:
        self._header_timer = None
        if self.conn.their_state is h11.IDLE and not self.transport.is_closing():
            self.transport.close()

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self.conn.their_state is not h11.IDLE:  # the headers are in
            self._stop_waiting()
        elif self._header_timer is None and not self.transport.is_closing():
            # the first bytes of a next request on a kept-alive connection: uvicorn stopped its idle timer
            self._wait_for_headers()

    def connection_lost(self, exc: Optional[Exception]) -> None:
        self._stop_waiting()
        super().connection_lost(exc)


def raise_open_files_limit(max_connections: int) -> None:
    """Make room for ``max_connections`` open connections under the process's open-files limit, or say that the
    system's hard limit does not allow it."""
    try:
        import resource
    except ImportError:  # Windows: no such limit to raise
        return
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    need = max_connections + FILE_RESERVE
    if soft == resource.RLIM_INFINITY or soft >= need:
        return
    if hard != resource.RLIM_INFINITY and hard < need:
        raise UserError(f"--max_connections {max_connections}: this system allows {hard} open files and the server "
                        f"keeps {FILE_RESERVE} for itself: give at most {hard - FILE_RESERVE}")
    resource.setrlimit(resource.RLIMIT_NOFILE, (need, hard))


def check_port_free(host: str, port: int) -> None:
    """Refuse a port another process listens on, before the server says it serves (binding as uvicorn does)."""
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as e:
            raise UserError(f"--port {port}: {host}:{port} cannot be used ({e.strerror}): another program is "
                            f"probably serving there; stop it or give another --port") from None


def default_model_name(ckpt_path: str) -> str:
    """The model's id when ``--model_name`` gives none: the checkpoint's file name without its extension, after
    its run's directory when it lies in a ``checkpoints`` directory (``out/run/checkpoints/last.ckpt`` ->
    ``run/last``); a name, never a path of this machine."""
    path = Path(ckpt_path).resolve()
    if path.parent.name == "checkpoints" and path.parent.parent.name:
        return f"{path.parent.parent.name}/{path.stem}"
    return path.stem


# --- the HTTP side: a LitServe spec -----------------------------------------------------------------------------


class OpenAIEndpoints(LitSpec):
    """OpenAI's completions, chat completions and models routes, and the playground page, as a LitServe spec:
    requests are checked here and queued for the worker; its pieces of text come back as OpenAI's chunks."""

    def __init__(self, served: ServedModel, cancel: Any) -> None:
        super().__init__()
        self.api_path = "/v1/completions"  # LitServe's key for the worker's request queue
        self.served = served
        self.cancel = cancel  # request ids whose client went away, for the worker

    @property
    def stream(self) -> bool:
        return True

    def pre_setup(self, lit_api: ls.LitAPI) -> None:
        self.add_endpoint("/v1/completions", self.completions, ["POST"])
        self.add_endpoint("/v1/chat/completions", self.chat_completions, ["POST"])
        self.add_endpoint("/v1/models", self.models, ["GET"])
        self.add_endpoint("/", self.playground, ["GET"])

    def decode_request(self, request: Any, context_kwargs: Optional[dict] = None) -> Any:
        return request

    def encode_response(self, output: Any, context_kwargs: Optional[dict] = None) -> Any:
        return output

    async def playground(self) -> HTMLResponse:
        return HTMLResponse(PLAYGROUND.read_text(encoding="utf-8"))

    async def models(self) -> JSONResponse:
        return JSONResponse({"object": "list", "data": [
            {"id": self.served.name, "object": "model", "created": 0, "owned_by": "lit-gpt-mini",
             "context_length": self.served.block_size, "text_format": self.served.text_format,
             "max_tokens": self.served.max_tokens, "user": self.served.user, "bot": self.served.bot},
        ]})

    async def completions(self, request: Request) -> Response:
        return await self._answer(request, chat=False)

    async def chat_completions(self, request: Request) -> Response:
        return await self._answer(request, chat=True)

    async def _answer(self, request: Request, chat: bool) -> Response:
        try:
            try:
                raw = await request.body()
            except ClientDisconnect:  # gone before it finished sending: nothing to answer
                return Response(status_code=499)
            except HTTPException as e:  # LitServe's payload limit
                raise ApiError(e.status_code, str(e.detail), None, "payload_too_large") from None
            job = check_request(parse_json(raw), self.served, chat)
        except ApiError as e:
            return e.response()
        uid = uuid.uuid4().hex
        job["id"] = uid
        pieces: deque = deque()
        event = asyncio.Event()
        self.response_buffer[uid] = ResponseBufferItem(event=event, response_queue=pieces)
        self.request_queue.put((self.response_queue_id, uid, time.monotonic(), job))
        items = self._items(uid, self.data_streamer(pieces, event, send_status=True))
        meta = {"id": ("chatcmpl-" if chat else "cmpl-") + uid[:24], "created": int(time.time()),
                "model": self.served.name, "object": "chat.completion" if chat else "text_completion"}
        if job["stream"]:
            return StreamingResponse(self._events(items, meta, chat, job["include_usage"]),
                                     media_type="text/event-stream", headers={"Cache-Control": "no-cache"})
        collected: list[dict[str, Any]] = []

        async def collect() -> None:
            async for item in items:
                collected.append(item)

        answer, gone = asyncio.create_task(collect()), asyncio.create_task(_disconnected(request))
        await asyncio.wait({answer, gone}, return_when=asyncio.FIRST_COMPLETED)
        gone.cancel()
        if not answer.done():  # the client went away: stop its generation (the items' cleanup tells the worker)
            answer.cancel()
            return Response(status_code=499)
        if isinstance(answer.exception(), ApiError):
            return answer.exception().response()
        answer.result()
        text = "".join(item.get("text", "") for item in collected)
        last = collected[-1] if collected else {}
        choice = {"index": 0, "finish_reason": last.get("finish_reason"), "logprobs": None}
        choice.update({"message": {"role": "assistant", "content": text}} if chat else {"text": text})
        return JSONResponse({**meta, "choices": [choice], "usage": last.get("usage")})

    async def _items(self, uid: str, stream: AsyncIterator) -> AsyncIterator[dict[str, Any]]:
        """The worker's items for one request; whoever stops reading early (a client gone) cancels its
        generation."""
        finished = False
        try:
            async for data, status in stream:
                if status == LitAPIStatus.ERROR:
                    log.error(f"request {uid} failed in the worker (see the worker's log)")
                    raise ApiError(500, "the model failed on this request", None, "server_error")
                item = json.loads(data)
                finished = "finish_reason" in item
                yield item
        finally:
            self.response_buffer.pop(uid, None)
            if not finished:
                self.cancel.put(uid)

    async def _events(self, items: AsyncIterator[dict[str, Any]], meta: dict[str, Any], chat: bool,
                      include_usage: bool) -> AsyncIterator[str]:
        kind = "chat.completion.chunk" if chat else "text_completion"
        base = {**meta, "object": kind}

        def chunk(text: Optional[str], finish: Optional[str] = None, first: bool = False) -> str:
            if chat:
                delta = {"role": "assistant", "content": ""} if first else ({"content": text} if text else {})
                choice = {"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}
            else:
                choice = {"index": 0, "text": text or "", "finish_reason": finish, "logprobs": None}
            return f"data: {json.dumps({**base, 'choices': [choice]})}\n\n"

        try:
            if chat:
                yield chunk(None, first=True)
            async for item in items:
                if item.get("text"):
                    yield chunk(item["text"])
                if "finish_reason" in item:
                    yield chunk(None, item["finish_reason"])
                    if include_usage:
                        yield f"data: {json.dumps({**base, 'choices': [], 'usage': item['usage']})}\n\n"
            yield "data: [DONE]\n\n"
        except ApiError as e:  # after the stream started the status is sent: the error is an event
            yield f"data: {json.dumps({'error': {'message': e.message, 'type': 'server_error', 'code': e.code}})}\n\n"


async def _disconnected(request: Request) -> None:
    """Returns when the client of a (non-streamed) request goes away."""
    while (await request.receive())["type"] != "http.disconnect":
        pass


# --- the worker: the model ------------------------------------------------------------------------------------


class GPTAPI(ls.LitAPI):
    """The inference worker: loads the model once, then samples every request in its own task (own KV cache,
    own seeded generator), the tasks taking turns token by token."""

    def __init__(self, ckpt_path: str, served: ServedModel, max_parallel: int, cancel: Any) -> None:
        super().__init__(spec=OpenAIEndpoints(served, cancel), enable_async=True)
        self.ckpt_path = ckpt_path
        self.max_parallel = max_parallel
        self.cancel = cancel
        self.cancelled: OrderedDict[str, None] = OrderedDict()  # recent ids whose client went away

    def setup(self, device: str) -> None:
        loaded = load_model(self.ckpt_path, device)
        self.model, self.tokenizer, self.torch_device = loaded.model, loaded.tokenizer, device
        self.slots = asyncio.Semaphore(self.max_parallel)

    async def decode_request(self, request: dict[str, Any]) -> dict[str, Any]:
        return request

    async def predict(self, job: dict[str, Any]) -> AsyncIterator[dict[str, Any]]:
        async with self.slots:
            generator = torch.Generator(device=self.torch_device).manual_seed(job["seed"])
            text = TextStream(self.tokenizer, job["stop"], job["speaker_lines"], stop_at_eot=not job["ignore_eos"],
                              lstrip=job["lstrip"])
            pending, sent, checked = "", None, time.monotonic()
            for piece in stream_text(self.model, job["ids"], text, job["max_tokens"], job["temperature"],
                                     job["top_k"], job["top_p"], generator):
                pending += piece
                now = time.monotonic()
                # The first text goes at once; then what came in the last STREAM_INTERVAL goes as one message:
                # a fast model would otherwise spend more on messages between processes than on sampling.
                if pending and (sent is None or now - sent >= STREAM_INTERVAL):
                    yield {"text": pending}
                    pending, sent = "", now
                if now - checked > CANCEL_CHECK_SECONDS:
                    checked = now
                    if self._cancelled(job["id"]):
                        log.info(f"request {job['id']}: the client went away after {text.tokens} tokens; stopped")
                        return
                await asyncio.sleep(0)  # the other requests' turn
            usage = {"prompt_tokens": len(job["ids"]), "completion_tokens": text.tokens,
                     "total_tokens": len(job["ids"]) + text.tokens}
            yield {"text": pending, "finish_reason": "stop" if text.stopped else "length", "usage": usage}

    async def encode_response(self, outputs: AsyncIterator[dict[str, Any]]) -> AsyncIterator[dict[str, Any]]:
        async for output in outputs:
            yield output

    def _cancelled(self, uid: str) -> bool:
        while True:
            try:
                self.cancelled[self.cancel.get_nowait()] = None
            except Exception:  # queue.Empty: nothing more to read
                break
        while len(self.cancelled) > 10_000:  # ids of requests that had finished anyway
            self.cancelled.popitem(last=False)
        if uid in self.cancelled:
            del self.cancelled[uid]
            return True
        return False


# --- the command ---------------------------------------------------------------------------------------------


def serve(
    ckpt_path: str,
    host: str = "127.0.0.1",
    port: int = 8000,
    device: Literal["cpu", "cuda"] = "cpu",
    model_name: Optional[str] = None,
    user: str = "user",
    bot: Optional[str] = None,
    max_tokens: int = 2048,
    default_max_tokens: int = 256,
    max_parallel: int = 8,
    max_payload_bytes: int = 1_000_000,
    allowed_hosts: str = "",
    max_connections: int = 256,
    header_timeout: float = 10.0,
    log_level: Literal["critical", "error", "warning", "info", "debug"] = "info",
) -> None:
    """Serve a checkpoint over HTTP until interrupted (Ctrl+C).

    Args:
        ckpt_path: A checkpoint written by ``main.py fit`` or a ``.pth`` written by ``main.py export``.
        host: ``127.0.0.1`` (this machine only), or ``0.0.0.0`` / ``::`` (every network interface).
        port: The TCP port (1024 to 65535).
        device: ``cpu`` or ``cuda`` (the first visible GPU; choose it with ``CUDA_VISIBLE_DEVICES``).
        model_name: The model's id in ``/v1/models`` and responses; default: the checkpoint's file name without
            its extension, after its run's directory for a file in ``<run>/checkpoints/``.
        user: A conversation model's name for user messages that have none.
        bot: A conversation model's name for its own turns; ``None``: the model writes who speaks, and the
            answer starts with that name.
        max_tokens: The largest ``max_tokens`` a request may ask for.
        default_max_tokens: ``max_tokens`` of a request that gives none.
        max_parallel: Requests sampled at once (taking turns token by token); later ones wait for a slot.
        max_payload_bytes: The largest request body.
        allowed_hosts: Comma-separated names (or addresses) clients may call this server by in their ``Host``
            header, beyond 127.0.0.1, localhost, ::1 and ``--host``; ``*``: any (needed behind a name on a network).
        max_connections: Open connections at most; one more is closed at once.
        header_timeout: Seconds a connection may take to send a request's line and headers.
        log_level: The server's log level (``info`` logs every request).
    """
    if host not in HOSTS:
        raise UserError(f"--host {host}: give 127.0.0.1 (this machine only), 0.0.0.0 or :: (every interface)")
    if not 1024 <= port <= 65535:
        raise UserError(f"--port {port}: give a port from 1024 to 65535")
    for name, value in (("max_tokens", max_tokens), ("default_max_tokens", default_max_tokens),
                        ("max_parallel", max_parallel), ("max_payload_bytes", max_payload_bytes),
                        ("max_connections", max_connections)):
        if value < 1:
            raise UserError(f"--{name} must be at least 1, got {value}")
    if not 0 < header_timeout <= 3600:
        raise UserError(f"--header_timeout must be more than 0 and at most 3600 seconds, got {header_timeout}")
    names = [name.strip().lower() for name in allowed_hosts.split(",") if name.strip()]
    if any(not re.fullmatch(r"\*|[a-z0-9.:_-]{1,253}", name) for name in names):
        raise UserError(f"--allowed_hosts {allowed_hosts!r}: give host names or addresses separated by commas "
                        f"(without ports), or *")
    hosts = frozenset((*LOOPBACK_NAMES, *([host] if host == "127.0.0.1" else []), *names))
    if default_max_tokens > max_tokens:
        raise UserError(f"--default_max_tokens ({default_max_tokens}) is over --max_tokens ({max_tokens})")
    for role, name in (("--user", user), ("--bot", bot)):
        if name is not None:
            check_name(name, role)
    check_device(device)
    raise_open_files_limit(max_connections)
    check_port_free(host, port)
    loaded = load_model(ckpt_path, "cpu")  # checked here, in one line if it is not a model; the worker loads it
    served = ServedModel(model_name or default_model_name(ckpt_path), loaded.tokenizer.to_dict(), loaded.model.config.block_size,
                         loaded.text_format, user, bot, max_tokens, default_max_tokens)
    del loaded
    # The HTTP process tells the worker (a spawned process) which requests lost their client.
    cancel = mp.get_context("spawn").Queue()
    api = GPTAPI(ckpt_path, served, max_parallel, cancel)
    # disable_openapi_url: no /openapi.json, and with it no /docs or /redoc (FastAPI's pages of it)
    server = ls.LitServer(api, accelerator=device, devices=1, timeout=False, max_payload_size=max_payload_bytes,
                          disable_openapi_url=True, middlewares=[(RequestGuard, {"allowed_hosts": hosts})])
    # LitServe answers "/" itself ("litserve running"), where the playground goes, and "/info" (its settings),
    # which no client of this server needs: the routes are the documented ones only.
    ours = {path for path, _, _ in api.spec.endpoints}
    server.app.router.routes[:] = [r for r in server.app.router.routes if getattr(r, "path", None) == "/health" or
                                   getattr(r, "path", None) in ours and getattr(r, "name", None) != "index"]
    global _MAIN_PID
    _MAIN_PID = os.getpid()
    signal.signal(signal.SIGTERM, _interrupt)
    log.info(f"Serving {ckpt_path} ({served.text_format} model, context {served.block_size}) at "
             f"http://{'127.0.0.1' if host == '0.0.0.0' else host}:{port}/ (playground), /v1/completions, "
             f"/v1/chat/completions, /v1/models, /health")
    protocol = type("GuardedH11", (GuardedH11,), {"header_timeout": header_timeout,
                                                   "max_connections": max_connections})
    server.run(host=host, port=port, num_api_servers=1, log_level=log_level, generate_client_file=False,
               http=protocol, timeout_keep_alive=KEEP_ALIVE_SECONDS, h11_max_incomplete_event_size=MAX_HEADER_BYTES)


def _interrupt(signum: int, frame: Any) -> None:
    # SIGTERM as Ctrl+C: LitServe then stops its processes (the worker, the HTTP server) before exiting. Its
    # forked HTTP process inherits this handler: there the signal only ends the process, quietly.
    if os.getpid() != _MAIN_PID:
        raise SystemExit(0)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # a second SIGTERM must not break the shutdown
    raise KeyboardInterrupt


def main(args: Optional[list[str]] = None) -> None:
    from jsonargparse import auto_cli

    # (as generate: a parse error reaches cli.main(), which prints it as one line; no abbreviated options)
    auto_cli(serve, args=args, as_positional=False, exit_on_error=False, allow_abbrev=False, prog="main.py serve")
