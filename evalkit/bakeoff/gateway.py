"""The model gateway: an agent sandbox's only way out, and the only holder of model keys.

One :class:`Gateway` per bake-off process. :meth:`Gateway.open_attempt` gives each attempt a
:class:`Channel`: a directory holding the Unix socket ``model.sock`` (the runner bind-mounts
the directory read-only at ``/evalkit/gateway``; ``evalkit/_container/forward.py`` bridges it
to ``127.0.0.1:4000`` inside the container) and a per-attempt dummy key. Every request on
the socket is checked (dummy key, method, the upstream API's model paths, Host header,
deadline, budget); anything else is refused with an error in the upstream's own format and
recorded as a :class:`Refusal`. Allowed requests get the real key, read from the host's
environment when the attempt opens and held in memory only, and are forwarded to the
upstream with streaming passed through as it arrives. Requests and responses go to the
attempt's transcript (JSONL, appended, secrets redacted, response bodies capped); tokens and
cost come from the responses' own ``usage``.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import http.client
import itertools
import json
import logging
import os
import re
import secrets
import shutil
import socket
import socketserver
import ssl
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Annotated, Any, Literal, NamedTuple, cast
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from evalkit.errors import UsageError

log = logging.getLogger(__name__)

SOCKET_NAME = "model.sock"
"""The socket's name inside :attr:`Channel.socket_dir`."""

# Where the runner puts things inside the agent's container.
CONTAINER_SOCKET_DIR = "/evalkit/gateway"  # Channel.socket_dir, mounted read-only
CONTAINER_FORWARD = "/evalkit/lib/forward.py"
CONTAINER_BASE_URL = "http://127.0.0.1:4000"  # what agents are given (no /v1)
FORWARD_SCRIPT = Path(__file__).resolve().parent.parent / "_container" / "forward.py"
"""The forwarder on the host, to copy or mount at :data:`CONTAINER_FORWARD`."""

TRANSCRIPT_SCHEMA_VERSION = 1
USAGE_SCHEMA_VERSION = 1

MAX_REQUEST_BYTES = 32 * 1024 * 1024
"""Largest request body accepted from an agent (a long Claude Code turn is a few MB)."""
MAX_RESPONSE_BYTES = 64 * 1024 * 1024
"""Largest non-streamed upstream response buffered (streams are not buffered)."""
TRANSCRIPT_BODY_CAP = 1024 * 1024
"""Response bytes kept per call in the transcript; requests are kept whole."""
REFUSED_BODY_CAP = 64 * 1024
"""Bytes of a refused request's body kept in the transcript (it never left the host)."""
MAX_TRANSCRIPT_BYTES = 1024 * 1024 * 1024
"""Past this, refused requests are logged without bodies (forwarded ones cost money)."""
MAX_REFUSALS_KEPT = 1000
MAX_CONNECTIONS = 32
"""Concurrent connections per attempt, so one agent cannot starve the others of threads."""
IDLE_TIMEOUT_S = 300.0
UPSTREAM_TIMEOUT_S = 600.0
CLOSE_WAIT_S = 10.0
MAX_REQUEST_LINE = 8192
CHUNK = 64 * 1024

Api = Literal["messages", "count_tokens", "chat", "responses"]
Kind = Literal["anthropic", "openai", "any"]

# Model endpoints per API family, matched exactly on the path (the query checked apart).
ANTHROPIC_PATHS: dict[str, Api] = {
    "/v1/messages": "messages",
    "/v1/messages/count_tokens": "count_tokens",
}
OPENAI_PATHS: dict[str, Api] = {
    "/v1/chat/completions": "chat",
    "/v1/responses": "responses",
}
ALLOWED_QUERIES = {"", "beta=true"}  # Claude Code appends ?beta=true

HOP_BY_HOP = {
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "trailers",
    "transfer-encoding",
    "upgrade",
}
# Never forwarded upstream (the gateway sets its own) and never written to a transcript.
CREDENTIAL_HEADERS = {
    "authorization",
    "x-api-key",
    "api-key",
    "proxy-authorization",
    "cookie",
    "set-cookie",
    "x-goog-api-key",
}
LOOPBACK_HOSTS = {"127.0.0.1", "localhost", "::1", "[::1]"}
REDACTED = "[redacted]"


def forward_argv(*, python: str = "/usr/bin/python3", ready_file: str | None = None) -> list[str]:
    """The command that starts the forwarder inside the container (as the agent's uid).

    It prints ``ready 127.0.0.1:4000`` once listening (and writes it to ``ready_file``).
    """
    port = CONTAINER_BASE_URL.rsplit(":", 1)[1]
    argv = [python, CONTAINER_FORWARD, "--listen", f"127.0.0.1:{port}"]
    argv += ["--socket", f"{CONTAINER_SOCKET_DIR}/{SOCKET_NAME}"]
    return argv + (["--ready-file", ready_file] if ready_file else [])


# --- records -----------------------------------------------------------------------------


class Upstream(NamedTuple):
    """A model provider the gateway forwards to (one ``[models.NAME]`` config table)."""

    name: str
    base_url: str  # scheme://host[:port][/prefix], without the API's /v1
    api_key_env: str  # host environment variable holding the real key
    input_per_mtok: float  # USD per million input tokens
    output_per_mtok: float  # USD per million output tokens
    kind: str = ""  # "anthropic" | "openai" | "" (inferred from name and host, else any)
    cache_read_per_mtok: float | None = None  # None: 0.1 x input (Anthropic), input (OpenAI)
    cache_write_per_mtok: float | None = None  # None: 1.25 x input (Anthropic's 5-minute TTL)


class Refusal(BaseModel):
    """One request the gateway refused instead of forwarding."""

    model_config = ConfigDict(frozen=True)

    when: float  # epoch seconds
    method: str
    path_or_host: str
    reason: str


class Usage(BaseModel):
    """What one attempt spent; a snapshot (the channel keeps counting until closed)."""

    schema_version: int = USAGE_SCHEMA_VERSION
    model_calls: int = 0  # requests forwarded to a model endpoint (count_tokens excluded)
    input_tokens: int = 0  # all prompt tokens, cached ones included
    output_tokens: int = 0
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0
    cost_usd: float = 0.0
    budget_exceeded: bool = False  # a call was refused because the budget was spent
    deadline_exceeded: bool = False  # a call was refused because the deadline had passed
    estimated_calls: int = 0  # successful calls without usage: tokens estimated from bytes
    refused: list[Refusal] = Field(default_factory=list)
    refusals_dropped: int = 0  # refusals past MAX_REFUSALS_KEPT, counted only


class CallUsage(NamedTuple):
    input_tokens: int = 0  # cached tokens included
    output_tokens: int = 0
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0


class TranscriptRequest(BaseModel):
    """A request as the agent sent it (credentials redacted), refused or not."""

    schema_version: int = TRANSCRIPT_SCHEMA_VERSION
    kind: Literal["request"] = "request"
    attempt_id: str
    seq: int
    when: float
    method: str
    target: str
    headers: list[tuple[str, str]]
    body: str  # UTF-8, undecodable bytes replaced
    body_bytes: int
    body_truncated: bool = False
    refused: str | None = None  # the reason, when not forwarded


class TranscriptResponse(BaseModel):
    """What the agent got back, from the upstream or from the gateway itself."""

    schema_version: int = TRANSCRIPT_SCHEMA_VERSION
    kind: Literal["response"] = "response"
    attempt_id: str
    seq: int
    when: float
    origin: Literal["upstream", "gateway"]
    status: int
    headers: list[tuple[str, str]] = Field(default_factory=list)
    body: str = ""  # for a stream: the event stream as received, capped
    body_bytes: int = 0
    body_truncated: bool = False
    streamed: bool = False
    assembled: Any = None  # a stream reassembled into one message (None if not parsed)
    duration_s: float = 0.0
    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0
    cost_usd: float = 0.0
    usage_estimated: bool = False
    error: str | None = None  # upstream unreachable, agent hung up, ...


TranscriptEntry = Annotated[TranscriptRequest | TranscriptResponse, Field(discriminator="kind")]
_ENTRY: TypeAdapter[TranscriptRequest | TranscriptResponse] = TypeAdapter(TranscriptEntry)


def read_transcript(path: Path) -> Iterator[TranscriptRequest | TranscriptResponse]:
    """The entries of a transcript, in order; a bad line is a UsageError naming it."""
    with path.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, 1):
            if not line.strip():
                continue
            try:
                raw = json.loads(line)
            except json.JSONDecodeError:
                raise UsageError("not a JSON line", path=str(path), line=number) from None
            version = raw.get("schema_version") if isinstance(raw, dict) else None
            if version != TRANSCRIPT_SCHEMA_VERSION:
                raise UsageError(
                    f"transcript schema_version {version!r}, this evalkit reads "
                    f"{TRANSCRIPT_SCHEMA_VERSION}",
                    path=str(path),
                    line=number,
                )
            try:
                yield _ENTRY.validate_python(raw)
            except ValidationError as exc:
                first = exc.errors()[0]
                where = ".".join(str(p) for p in first["loc"])
                raise UsageError(f"{where}: {first['msg']}", path=str(path), line=number) from None


# --- pure core: kinds, prices, usage -----------------------------------------------------


def upstream_kind(upstream: Upstream) -> Kind:
    """The API family an upstream speaks: explicit, else guessed from its name and host."""
    if upstream.kind == "anthropic":
        return "anthropic"
    if upstream.kind == "openai":
        return "openai"
    host = (urlsplit(upstream.base_url).hostname or "").lower()
    kinds: tuple[Kind, Kind] = ("anthropic", "openai")
    for kind in kinds:
        if kind in upstream.name.lower() or kind in host:
            return kind
    return "any"


def allowed_paths(kind: Kind) -> dict[str, Api]:
    if kind == "anthropic":
        return ANTHROPIC_PATHS
    if kind == "openai":
        return OPENAI_PATHS
    return {**ANTHROPIC_PATHS, **OPENAI_PATHS}


def call_cost(upstream: Upstream, api: Api, usage: CallUsage) -> float:
    """USD for one call at the upstream's prices per million tokens."""
    if api == "count_tokens":
        return 0.0
    price_in = upstream.input_per_mtok
    if api == "messages":
        read = upstream.cache_read_per_mtok
        write = upstream.cache_write_per_mtok
        read_price = 0.1 * price_in if read is None else read
        write_price = 1.25 * price_in if write is None else write
    else:  # OpenAI bills no cache writes; cached reads default to the full input price
        read_price = (
            price_in if upstream.cache_read_per_mtok is None else upstream.cache_read_per_mtok
        )
        write_price = price_in
    fresh = max(0, usage.input_tokens - usage.cache_read_tokens - usage.cache_write_tokens)
    total = (
        fresh * price_in
        + usage.cache_read_tokens * read_price
        + usage.cache_write_tokens * write_price
        + usage.output_tokens * upstream.output_per_mtok
    )
    return total / 1_000_000


def _count(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        return 0
    return value


def usage_from_payload(api: Api, raw: dict[str, Any]) -> CallUsage:
    """Token counts from a provider's ``usage`` object (the shape depends on the API)."""
    if api in ("messages", "count_tokens"):
        fresh = _count(raw.get("input_tokens"))
        write = _count(raw.get("cache_creation_input_tokens"))
        read = _count(raw.get("cache_read_input_tokens"))
        return CallUsage(fresh + write + read, _count(raw.get("output_tokens")), read, write)
    if api == "chat":
        details = raw.get("prompt_tokens_details")
        cached = _count(details.get("cached_tokens")) if isinstance(details, dict) else 0
        return CallUsage(
            _count(raw.get("prompt_tokens")), _count(raw.get("completion_tokens")), cached
        )
    details = raw.get("input_tokens_details")
    cached = _count(details.get("cached_tokens")) if isinstance(details, dict) else 0
    return CallUsage(_count(raw.get("input_tokens")), _count(raw.get("output_tokens")), cached)


_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")  # tab is the one allowed
_EVENT_END = re.compile(rb"\r\n\r\n|\n\n|\r\r")


class _Meter:
    """Reads usage (and reassembles the message) from a response, stream or JSON.

    For a stream it also decides what the agent sees: with ``drop_usage_chunks`` (set when
    the gateway itself asked for ``include_usage``) the usage-only chunk is held back so a
    client that did not ask for it never sees it.
    """

    STREAM_PARSE_CAP = 16 * 1024 * 1024

    def __init__(self, api: Api, *, drop_usage_chunks: bool = False):
        self.api = api
        self.drop_usage_chunks = drop_usage_chunks
        self.raw: dict[str, Any] = {}
        self.complete = False
        self._buffer = b""
        self._broken = False
        self._blocks: dict[int, dict[str, Any]] = {}
        self._message: dict[str, Any] = {}
        self._choice: dict[str, Any] = {"content": "", "tool_calls": {}}
        self._response: Any = None

    # JSON bodies
    def feed_json(self, data: bytes) -> None:
        try:
            body = json.loads(data)
        except (ValueError, UnicodeDecodeError):
            return
        if isinstance(body, dict) and isinstance(body.get("usage"), dict):
            self.raw = dict(body["usage"])
            self.complete = True

    # event streams
    def feed(self, chunk: bytes) -> bytes:
        """Take a chunk from the upstream; return the bytes to pass on to the agent now."""
        if self._broken:
            return chunk
        self._buffer += chunk
        out: list[bytes] = []
        while True:
            match = _EVENT_END.search(self._buffer)
            if match is None:
                break
            event = self._buffer[: match.end()]
            self._buffer = self._buffer[match.end() :]
            if self._event(event[: match.start()]):
                out.append(event)
        if len(self._buffer) > self.STREAM_PARSE_CAP:  # not SSE after all: stop parsing
            self._broken = True
            out.append(self._buffer)
            self._buffer = b""
        return b"".join(out)

    def flush(self) -> bytes:
        rest, self._buffer = self._buffer, b""
        if rest.strip() and not self._broken:
            self._event(rest)
        return rest

    def _event(self, event: bytes) -> bool:
        """Parse one SSE event; False if it is to be held back from the agent."""
        lines = event.decode("utf-8", "replace").splitlines()
        data = "\n".join(line[5:].removeprefix(" ") for line in lines if line.startswith("data:"))
        if not data or data == "[DONE]":
            return True
        try:
            payload = json.loads(data)
        except ValueError:
            return True
        if not isinstance(payload, dict):
            return True
        if self.api == "messages":
            self._anthropic(payload)
        elif self.api == "chat":
            return self._chat(payload)
        elif self.api == "responses":
            self._responses(payload)
        return True

    def _anthropic(self, event: dict[str, Any]) -> None:
        kind = event.get("type")
        if kind == "message_start" and isinstance(event.get("message"), dict):
            message = event["message"]
            self._message = {k: v for k, v in message.items() if k not in ("content", "usage")}
            if isinstance(message.get("usage"), dict):
                self.raw.update(message["usage"])
        elif kind == "message_delta":
            if isinstance(event.get("usage"), dict):
                # cumulative counts: later values replace earlier ones
                self.raw.update({k: v for k, v in event["usage"].items() if v is not None})
                self.complete = True
            if isinstance(event.get("delta"), dict):
                self._message.update(event["delta"])
        elif kind == "content_block_start" and isinstance(event.get("content_block"), dict):
            self._blocks[_count(event.get("index"))] = dict(event["content_block"])
        elif kind == "content_block_delta" and isinstance(event.get("delta"), dict):
            block = self._blocks.setdefault(_count(event.get("index")), {})
            delta = event["delta"]
            for field, into in (
                ("text", "text"),
                ("partial_json", "_json"),
                ("thinking", "thinking"),
            ):
                if isinstance(delta.get(field), str):
                    block[into] = block.get(into, "") + delta[field]

    def _chat(self, chunk: dict[str, Any]) -> bool:
        usage = chunk.get("usage")
        if isinstance(usage, dict):
            self.raw = dict(usage)
            self.complete = True
        choices = chunk.get("choices")
        if isinstance(choices, list) and choices and isinstance(choices[0], dict):
            choice = choices[0]
            raw_delta = choice.get("delta")
            delta: dict[str, Any] = raw_delta if isinstance(raw_delta, dict) else {}
            if isinstance(delta.get("content"), str):
                self._choice["content"] += delta["content"]
            for call in delta.get("tool_calls") or []:
                if not isinstance(call, dict):
                    continue
                slot = self._choice["tool_calls"].setdefault(
                    _count(call.get("index")), {"id": "", "name": "", "arguments": ""}
                )
                raw_function = call.get("function")
                function: dict[str, Any] = raw_function if isinstance(raw_function, dict) else {}
                for key, value in (
                    ("id", call.get("id")),
                    ("name", function.get("name")),
                    ("arguments", function.get("arguments")),
                ):
                    if isinstance(value, str):
                        slot[key] += value
            if choice.get("finish_reason"):
                self._choice["finish_reason"] = choice["finish_reason"]
        hold = self.drop_usage_chunks and isinstance(usage, dict) and choices == []
        return not hold

    def _responses(self, event: dict[str, Any]) -> None:
        response = event.get("response")
        if isinstance(response, dict) and isinstance(response.get("usage"), dict):
            self.raw = dict(response["usage"])
            self.complete = True
            self._response = response

    def usage(self) -> CallUsage:
        return usage_from_payload(self.api, self.raw)

    def assembled(self) -> Any:
        if self.api == "messages" and (self._message or self._blocks):
            content = []
            for _, block in sorted(self._blocks.items()):
                block = dict(block)
                partial = block.pop("_json", None)
                if partial is not None:
                    try:
                        block["input"] = json.loads(partial)
                    except ValueError:
                        block["input"] = partial
                content.append(block)
            return {**self._message, "content": content, "usage": self.raw}
        if self.api == "chat" and (self._choice["content"] or self._choice["tool_calls"]):
            calls = [call for _, call in sorted(self._choice["tool_calls"].items())]
            return {**self._choice, "tool_calls": calls, "usage": self.raw or None}
        if self.api == "responses":
            return self._response
        return None


def _inject_include_usage(body: bytes) -> bytes | None:
    """A chat request asking for a stream without usage, rewritten to ask for it.

    Without this an agent could stream without ``stream_options.include_usage`` and never
    be charged. Returns None when the body needs no change.
    """
    try:
        request = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return None
    if not isinstance(request, dict) or request.get("stream") is not True:
        return None
    options = request.get("stream_options")
    if isinstance(options, dict) and options.get("include_usage") is True:
        return None
    request["stream_options"] = {
        **(options if isinstance(options, dict) else {}),
        "include_usage": True,
    }
    return json.dumps(request, separators=(",", ":"), ensure_ascii=False).encode()


def _asks_background(body: bytes) -> bool:
    try:
        request = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return False
    return isinstance(request, dict) and bool(request.get("background"))


def _estimate(request_bytes: int, response_bytes: int, seen: CallUsage) -> CallUsage:
    """A conservative stand-in when a successful call reported no (complete) usage."""
    return seen._replace(
        input_tokens=max(seen.input_tokens, request_bytes // 4),
        output_tokens=max(seen.output_tokens, response_bytes // 4),
    )


def _error_body(
    style: Literal["anthropic", "openai"], status: int, code: str, message: str
) -> bytes:
    text = f"evalkit gateway: {message}"
    if style == "anthropic":
        kinds = {
            401: "authentication_error",
            402: "billing_error",
            403: "permission_error",
            404: "not_found_error",
            413: "request_too_large",
            502: "api_error",
            503: "api_error",
        }
        payload: dict[str, Any] = {
            "type": "error",
            "error": {"type": kinds.get(status, "invalid_request_error"), "message": text},
        }
    else:
        kinds = {401: "invalid_request_error", 402: "insufficient_quota", 502: "server_error"}
        payload = {
            "error": {
                "message": text,
                "type": kinds.get(status, "invalid_request_error"),
                "param": None,
                "code": code,
            }
        }
    return json.dumps(payload).encode()


def _host_only(host: str) -> str:
    host = host.strip().lower()
    if host.startswith("["):
        return host[: host.find("]") + 1] if "]" in host else host
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


# --- the HTTP side ------------------------------------------------------------------------


class _AttemptServer(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True
    block_on_close = False

    def __init__(self, address: str, channel: Channel):
        self.channel = channel
        self.active = 0
        self.active_lock = threading.Lock()
        super().__init__(address, _Handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        with self.active_lock:
            full = self.active >= MAX_CONNECTIONS
            if not full:
                self.active += 1
        if full:
            self.channel._refusal("-", "-", f"more than {MAX_CONNECTIONS} connections at once")
            self.shutdown_request(request)
            return
        super().process_request(request, client_address)

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            with self.active_lock:
                self.active -= 1

    def handle_error(self, request: Any, client_address: Any) -> None:
        # An agent can send anything; one broken connection is logged, never fatal.
        log.debug("gateway connection failed", exc_info=True)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    timeout = IDLE_TIMEOUT_S
    server_version = "evalkit-gateway"
    sys_version = ""

    def handle_one_request(self) -> None:
        # Our own loop step so that every method (CONNECT, PROPFIND, ...) reaches the
        # channel's checks instead of BaseHTTPRequestHandler's unlogged 501.
        channel = cast(_AttemptServer, self.server).channel
        try:
            self.raw_requestline = self.rfile.readline(MAX_REQUEST_LINE + 1)
        except OSError:
            self.close_connection = True
            return
        if not self.raw_requestline:
            self.close_connection = True
            return
        if len(self.raw_requestline) > MAX_REQUEST_LINE:
            self.requestline, self.request_version, self.command = "", "HTTP/1.1", ""
            channel._refusal("-", "-", "request line too long")
            with contextlib.suppress(OSError):
                self.send_error(414)
            self.close_connection = True
            return
        if not self.parse_request():  # it has answered with an error already
            line = self.raw_requestline[:200].decode("latin-1").strip()
            channel._refusal(self.command or "-", line, "malformed HTTP request")
            self.close_connection = True
            return
        channel._handle(self)
        try:
            self.wfile.flush()
        except OSError:
            self.close_connection = True

    def log_message(self, format: str, *args: Any) -> None:
        return  # the transcript is the log


def _read_body(handler: _Handler, cap: int) -> tuple[bytes, str | None]:
    """The request body (Content-Length or chunked), or an error reason."""
    headers = handler.headers
    if "chunked" in headers.get("Transfer-Encoding", "").lower():
        parts: list[bytes] = []
        size = 0
        while True:
            line = handler.rfile.readline(1024)
            try:
                length = int(line.split(b";")[0].strip(), 16)
            except ValueError:
                return b"", "bad chunked encoding"
            if length < 0:
                return b"", "bad chunked encoding"
            if length == 0:
                while handler.rfile.readline(8192) not in (b"\r\n", b"\n", b""):
                    pass  # trailers, dropped
                return b"".join(parts), None
            size += length
            if size > cap:
                return b"", f"request body over {cap} bytes"
            data = handler.rfile.read(length)
            if len(data) != length:
                return b"", "truncated request body"
            parts.append(data)
            handler.rfile.readline(8)
    values = headers.get_all("Content-Length") or []
    if not values:
        return b"", None
    if len(set(values)) != 1 or not values[0].strip().isdigit():
        return b"", "bad Content-Length"
    length = int(values[0])
    if length > cap:
        return b"", f"request body over {cap} bytes"
    data = handler.rfile.read(length)
    if len(data) != length:
        return b"", "truncated request body"
    return data, None


def _linger(handler: _Handler, limit: int) -> None:
    """Half-close, then drain what the agent is still sending, so it reads our error.

    Closing with unread input resets the connection, and a client still sending its body
    would see a broken pipe instead of the 413.
    """
    with contextlib.suppress(OSError):
        handler.wfile.flush()
        handler.connection.shutdown(socket.SHUT_WR)
        handler.connection.settimeout(2.0)
        drained = 0
        while drained < limit:
            data = handler.connection.recv(CHUNK)
            if not data:
                break
            drained += len(data)


def _write_chunk(handler: _Handler, data: bytes, chunked: bool) -> None:
    if not data:
        return
    if chunked:
        handler.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
    else:
        handler.wfile.write(data)
    handler.wfile.flush()


class _Refused(Exception):
    """A request the gateway answers itself, with an error, instead of forwarding."""

    def __init__(self, status: int, code: str, reason: str, what: str, *, close: bool = False):
        super().__init__(reason)
        self.status = status
        self.code = code  # OpenAI's error.code
        self.reason = reason
        self.what = what  # the path or host it was for, as the Refusal records it
        self.close = close  # the connection cannot be reused (body unread)


class Channel:
    """One attempt's way to its model: a socket, a dummy key, a transcript, a meter."""

    def __init__(
        self,
        gateway: Gateway,
        attempt_id: str,
        upstream: Upstream,
        real_key: str,
        *,
        socket_dir: Path,
        budget_usd: float,
        deadline: float,
        transcript: Path,
    ):
        self.attempt_id = attempt_id
        self.upstream = upstream
        self.socket_dir = socket_dir
        self.api_key = f"sk-evalkit-{secrets.token_urlsafe(24)}"
        self.budget_usd = budget_usd
        self.deadline = deadline  # epoch seconds (time.time())
        self.transcript = transcript
        self._gateway = gateway
        self._real_key = real_key
        self._kind = upstream_kind(upstream)
        self._paths = allowed_paths(self._kind)
        self._usage = Usage()
        self._lock = threading.Lock()
        self._write_lock = threading.Lock()
        self._seq = itertools.count(1)
        self._closed = threading.Event()
        self._final: Usage | None = None
        self._inflight = 0
        self._idle = threading.Condition(self._lock)
        self._upstream_socks: set[socket.socket] = set()  # of calls in flight, for close()
        self._written = 0  # transcript bytes this channel appended

        transcript.parent.mkdir(parents=True, exist_ok=True)
        self._server = self._bind(socket_dir / SOCKET_NAME)
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.2},
            name=f"gateway-{attempt_id}",
            daemon=True,
        )
        self._thread.start()

    @property
    def socket_path(self) -> Path:
        return self.socket_dir / SOCKET_NAME

    @property
    def base_url(self) -> str:
        """The model endpoint as the agent sees it, once the forwarder runs."""
        return CONTAINER_BASE_URL

    def _bind(self, path: Path) -> _AttemptServer:
        path.unlink(missing_ok=True)
        address = str(path)
        dir_fd = None
        if len(address.encode()) > 100:  # sun_path is 108 bytes: bind through the dir's fd
            dir_fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
            address = f"/proc/self/fd/{dir_fd}/{path.name}"
        try:
            server = _AttemptServer(address, self)
        finally:
            if dir_fd is not None:
                os.close(dir_fd)
        # connect() needs write permission on the socket: the agent's uid is not ours.
        os.chmod(path, 0o666)
        return server

    # --- public -------------------------------------------------------------------------

    def usage(self) -> Usage:
        with self._lock:
            return self._usage.model_copy(deep=True)

    def requests_text(self) -> Iterator[str]:
        """Every request the attempt sent, refused ones included, as text.

        Each item is the request line, the headers (credentials redacted) and the body,
        read back from the transcript, for scanning for tokens the agent should not know.
        """
        if not self.transcript.exists():
            return
        for entry in read_transcript(self.transcript):
            if isinstance(entry, TranscriptRequest) and entry.attempt_id == self.attempt_id:
                head = "\n".join(f"{k}: {v}" for k, v in entry.headers)
                yield f"{entry.method} {entry.target}\n{head}\n\n{entry.body}"

    def close(self) -> Usage:
        """Stop serving, remove the socket, and return the final usage. Idempotent."""
        if self._final is not None:
            return self._final
        self._closed.set()
        self._server.shutdown()
        self._server.server_close()
        # Cut upstream calls still running, and wait until each has been metered.
        with self._lock:
            socks = list(self._upstream_socks)
        for sock in socks:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        with self._idle:
            self._idle.wait_for(lambda: self._inflight == 0, timeout=CLOSE_WAIT_S)
        self.socket_path.unlink(missing_ok=True)
        shutil.rmtree(self.socket_dir, ignore_errors=True)
        self._gateway._forget(self.attempt_id)
        self._final = self.usage()
        return self._final

    # --- request handling ---------------------------------------------------------------

    def _refusal(self, method: str, what: str, reason: str) -> None:
        refusal = Refusal(when=time.time(), method=method, path_or_host=what[:500], reason=reason)
        with self._lock:
            if len(self._usage.refused) < MAX_REFUSALS_KEPT:
                self._usage.refused.append(refusal)
            else:  # an agent hammering the gateway must not grow our memory
                self._usage.refusals_dropped += 1

    def _style(self, path: str) -> Literal["anthropic", "openai"]:
        if self._kind != "any":
            return self._kind
        return "anthropic" if path.startswith("/v1/messages") else "openai"

    def _presented_keys(self, handler: _Handler) -> list[str]:
        keys = list(handler.headers.get_all("x-api-key") or [])
        for value in handler.headers.get_all("Authorization") or []:
            scheme, _, token = value.strip().partition(" ")
            if scheme.lower() == "bearer":
                keys.append(token.strip())
        return keys

    def _key_ok(self, handler: _Handler) -> bool:
        mine = self.api_key.encode()
        return any(hmac.compare_digest(key.encode(), mine) for key in self._presented_keys(handler))

    def _check(self, handler: _Handler, path: str, query: str) -> Api | None:
        """The API a request is for, None for a preflight; raises _Refused otherwise."""
        method, target = handler.command, handler.path
        if not target.startswith("/"):
            raise _Refused(
                400, "invalid_request", "request target is not a path (proxy use)", target
            )
        host = handler.headers.get("Host")
        if host is None or len(handler.headers.get_all("Host") or []) != 1:
            raise _Refused(400, "invalid_request", "missing or repeated Host header", str(host))
        if _host_only(host) not in LOOPBACK_HOSTS:
            raise _Refused(421, "invalid_request", "Host header points elsewhere", host)
        if any(_CONTROL.search(f"{k}{v}") for k, v in handler.headers.items()):
            raise _Refused(400, "invalid_request", "control characters in a header", target)
        if method == "HEAD":
            return None  # connectivity preflight (Claude Code's HEAD /api/hello)
        if not self._key_ok(handler):
            raise _Refused(401, "invalid_api_key", "wrong or missing API key", target)
        if method != "POST":
            raise _Refused(405, "method_not_allowed", f"method {method} not allowed", target)
        api = self._paths.get(path)
        if api is None or query not in ALLOWED_QUERIES:
            raise _Refused(404, "not_found", "not a model endpoint of this upstream", target)
        if self._closed.is_set():
            raise _Refused(503, "attempt_closed", "attempt is over", target)
        now = time.time()
        with self._lock:
            if now >= self.deadline:
                self._usage.deadline_exceeded = True
                raise _Refused(
                    403, "deadline_exceeded", "the attempt's deadline has passed", target
                )
            if api != "count_tokens" and self._usage.cost_usd >= self.budget_usd:
                self._usage.budget_exceeded = True
                raise _Refused(
                    402,
                    "budget_exceeded",
                    f"budget of ${self.budget_usd:.4f} spent (${self._usage.cost_usd:.4f})",
                    target,
                )
        return api

    def _handle(self, handler: _Handler) -> None:
        seq = next(self._seq)
        method, target = handler.command, handler.path
        path, _, query = target.partition("?")
        body = b""
        try:
            if method == "CONNECT":
                raise _Refused(
                    405, "method_not_allowed", "CONNECT tunnels are not allowed", target, close=True
                )
            body, problem = _read_body(handler, self._gateway.max_request_bytes)
            if problem is not None:
                status = 413 if "over" in problem else 400
                raise _Refused(status, "invalid_request", problem, target, close=True)
            api = self._check(handler, path, query)
            if api == "responses" and _asks_background(body):
                # runs on after the call returns, billed but never metered: refused
                raise _Refused(
                    400, "invalid_request", "background responses are not allowed", target
                )
        except _Refused as refused:
            self._log_request(seq, handler, body, refused=refused.reason)
            self._refusal(method, refused.what, refused.reason)
            self._answer(
                handler, seq, refused.status, self._style(path), refused.code, refused.reason
            )
            if refused.close:
                handler.close_connection = True
                _linger(handler, self._gateway.max_request_bytes)
            return
        self._log_request(seq, handler, body, refused=None)
        if api is None:
            self._preflight(handler, seq)
            return
        self._forward(handler, seq, api, path, query, body)

    def _answer(
        self,
        handler: _Handler,
        seq: int,
        status: int,
        style: Literal["anthropic", "openai"],
        code: str,
        reason: str,
        *,
        error: str | None = None,
    ) -> None:
        body = _error_body(style, status, code, reason)
        headers = [
            ("Content-Type", "application/json"),
            ("Content-Length", str(len(body))),
            ("x-should-retry", "false"),  # the SDKs honour it: stop, do not retry
        ]
        try:
            handler.send_response(status)
            for name, value in headers:
                handler.send_header(name, value)
            handler.end_headers()
            handler.wfile.write(body)
        except OSError:
            handler.close_connection = True
        self._log_response(
            TranscriptResponse(
                attempt_id=self.attempt_id,
                seq=seq,
                when=time.time(),
                origin="gateway",
                status=status,
                headers=headers,
                body=body.decode(),
                body_bytes=len(body),
                error=error,
            )
        )

    def _preflight(self, handler: _Handler, seq: int) -> None:
        try:
            handler.send_response(200)
            handler.send_header("Content-Length", "0")
            handler.end_headers()
        except OSError:
            handler.close_connection = True
        self._log_response(
            TranscriptResponse(
                attempt_id=self.attempt_id, seq=seq, when=time.time(), origin="gateway", status=200
            )
        )

    def _upstream_headers(self, handler: _Handler) -> list[tuple[str, str]]:
        connection_tokens = {
            token.strip().lower()
            for value in handler.headers.get_all("Connection") or []
            for token in value.split(",")
        }
        drop = (
            HOP_BY_HOP
            | CREDENTIAL_HEADERS
            | connection_tokens
            | {
                "host",
                "content-length",
                "accept-encoding",
                "expect",
            }
        )
        headers = [(k, v) for k, v in handler.headers.items() if k.lower() not in drop]
        used_x_api_key = bool(handler.headers.get_all("x-api-key"))
        if not self._real_key:
            pass  # keyless upstream: the agent's dummy key is dropped above and none is added
        elif self._kind == "anthropic" or (self._kind == "any" and used_x_api_key):
            headers.append(("x-api-key", self._real_key))
        else:
            headers.append(("Authorization", f"Bearer {self._real_key}"))
        headers.append(("Host", self._gateway._netloc(self.upstream)))
        headers.append(("Accept-Encoding", "identity"))  # usage must be readable
        return headers

    def _forward(
        self, handler: _Handler, seq: int, api: Api, path: str, query: str, body: bytes
    ) -> None:
        with self._lock:
            self._inflight += 1
        try:
            self._forward_call(handler, seq, api, path, query, body)
        finally:
            with self._idle:
                self._inflight -= 1
                self._idle.notify_all()

    def _forward_call(
        self, handler: _Handler, seq: int, api: Api, path: str, query: str, body: bytes
    ) -> None:
        started = time.monotonic()
        sent = body
        drop_usage_chunks = False
        if api == "chat":
            rewritten = _inject_include_usage(body)
            if rewritten is not None:
                sent, drop_usage_chunks = rewritten, True
        meter = _Meter(api, drop_usage_chunks=drop_usage_chunks)
        target = self._gateway._base_path(self.upstream) + path + (f"?{query}" if query else "")
        conn = self._gateway._connection(self.upstream)
        record = TranscriptResponse(
            attempt_id=self.attempt_id, seq=seq, when=time.time(), origin="upstream", status=0
        )
        captured = bytearray()
        received = 0
        settled = False

        def settle() -> None:
            nonlocal settled
            if not settled:
                settled = True
                self._settle(record, api, meter, len(body), received, captured, started)

        upstream_sock: socket.socket | None = None
        try:
            try:
                conn.connect()
                # http.client drops conn.sock once a response owns the connection; keep
                # our own handle so close() can cut a stream still running.
                upstream_sock = cast(socket.socket, conn.sock)
                with self._lock:
                    self._upstream_socks.add(upstream_sock)
                if self._closed.is_set():
                    raise ConnectionAbortedError("attempt closed")
                conn.putrequest("POST", target, skip_host=True, skip_accept_encoding=True)
                for name, value in self._upstream_headers(handler):
                    conn.putheader(name, value)
                conn.putheader("Content-Length", str(len(sent)))
                conn.endheaders(sent)
                response = conn.getresponse()
            except (OSError, http.client.HTTPException) as exc:
                reason = f"upstream unreachable ({exc.__class__.__name__})"
                self._answer(
                    handler, seq, 502, self._style(path), "upstream_error", reason, error=reason
                )
                return
            if api != "count_tokens":
                with self._lock:
                    self._usage.model_calls += 1
            record.status = response.status
            headers = [
                (k, v)
                for k, v in response.getheaders()
                if k.lower() not in HOP_BY_HOP | {"content-length", "set-cookie", "server", "date"}
            ]
            record.headers = headers
            streamed = "text/event-stream" in (response.getheader("Content-Type") or "").lower()
            record.streamed = streamed
            if not streamed:
                data = response.read(self._gateway.max_response_bytes + 1)
                if len(data) > self._gateway.max_response_bytes:
                    record.status = 0  # nothing usable came back; nothing is charged
                    reason = "upstream response too large"
                    self._answer(
                        handler, seq, 502, self._style(path), "upstream_error", reason, error=reason
                    )
                    return
                data = self._scrub(data)
                received = len(data)
                captured += data[:TRANSCRIPT_BODY_CAP]
                if 200 <= response.status < 300:
                    meter.feed_json(data)
                settle()  # metered before the agent has its answer (and might exit)
                handler.send_response(response.status, response.reason)
                for name, value in headers:
                    handler.send_header(name, value)
                handler.send_header("Content-Length", str(len(data)))
                handler.end_headers()
                handler.wfile.write(data)
                return
            chunked = handler.request_version == "HTTP/1.1"
            handler.send_response(response.status, response.reason)
            for name, value in headers:
                handler.send_header(name, value)
            if chunked:
                handler.send_header("Transfer-Encoding", "chunked")
            else:
                handler.close_connection = True
            handler.end_headers()
            handler.wfile.flush()
            while not self._closed.is_set():
                chunk = response.read1(CHUNK)
                if not chunk:
                    break
                received += len(chunk)
                if len(captured) < TRANSCRIPT_BODY_CAP:
                    captured += chunk[: TRANSCRIPT_BODY_CAP - len(captured)]
                _write_chunk(handler, meter.feed(chunk), chunked)
            _write_chunk(handler, meter.flush(), chunked)
            settle()
            if chunked:
                handler.wfile.write(b"0\r\n\r\n")
                handler.wfile.flush()
        except (OSError, http.client.HTTPException, ValueError) as exc:
            # the agent hung up, the upstream broke off, or close() cut the stream
            record.error = f"connection lost mid-response ({exc.__class__.__name__})"
            handler.close_connection = True
        finally:
            if upstream_sock is not None:
                with self._lock:
                    self._upstream_socks.discard(upstream_sock)
            conn.close()
            if record.status:
                settle()

    def _settle(
        self,
        record: TranscriptResponse,
        api: Api,
        meter: _Meter,
        request_bytes: int,
        received: int,
        captured: bytearray,
        started: float,
    ) -> None:
        usage = meter.usage()
        estimated = False
        if 200 <= record.status < 300 and api != "count_tokens" and not meter.complete:
            usage = _estimate(request_bytes, received, usage)
            estimated = True
        cost = call_cost(self.upstream, api, usage)
        with self._lock:
            self._usage.input_tokens += usage.input_tokens
            self._usage.output_tokens += usage.output_tokens
            self._usage.cache_read_tokens += usage.cache_read_tokens
            self._usage.cache_write_tokens += usage.cache_write_tokens
            self._usage.cost_usd += cost
            self._usage.estimated_calls += int(estimated)
        record.body = self._scrub(bytes(captured)).decode("utf-8", "replace")
        record.body_bytes = received
        record.body_truncated = received > len(captured)
        if record.streamed:
            record.assembled = meter.assembled()
        record.duration_s = round(time.monotonic() - started, 3)
        record.input_tokens, record.output_tokens = usage.input_tokens, usage.output_tokens
        record.cache_read_tokens = usage.cache_read_tokens
        record.cache_write_tokens = usage.cache_write_tokens
        record.cost_usd, record.usage_estimated = cost, estimated
        self._log_response(record)

    # --- transcript ---------------------------------------------------------------------

    def _scrub(self, data: bytes) -> bytes:
        if not self._real_key:
            return data
        return data.replace(self._real_key.encode(), REDACTED.encode())

    def _log_request(
        self, seq: int, handler: _Handler, body: bytes, *, refused: str | None
    ) -> None:
        headers = [
            (k, REDACTED if k.lower() in CREDENTIAL_HEADERS else v)
            for k, v in handler.headers.items()
        ]
        kept = body
        if refused is not None:
            full = self._written > self._gateway.max_transcript_bytes
            kept = b"" if full else body[:REFUSED_BODY_CAP]
        self._append(
            TranscriptRequest(
                attempt_id=self.attempt_id,
                seq=seq,
                when=time.time(),
                method=handler.command or "",
                target=handler.path or "",
                headers=headers,
                body=self._scrub(kept).decode("utf-8", "replace"),
                body_bytes=len(body),
                body_truncated=len(kept) < len(body),
                refused=refused,
            )
        )

    def _log_response(self, record: TranscriptResponse) -> None:
        self._append(record)

    def _append(self, entry: BaseModel) -> None:
        line = (entry.model_dump_json() + "\n").encode()
        line = self._scrub(line)  # belt and braces: the real key never reaches the disk
        with self._write_lock:
            fd = os.open(self.transcript, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            try:
                view = memoryview(line)
                while view:
                    written = os.write(fd, view)
                    view = view[written:]
            finally:
                os.close(fd)
            self._written += len(line)


class Gateway:
    """The host-side model gateway of one bake-off process (threads, one socket per attempt)."""

    def __init__(
        self,
        upstreams: dict[str, Upstream],
        *,
        root: Path,
        max_request_bytes: int = MAX_REQUEST_BYTES,
        max_response_bytes: int = MAX_RESPONSE_BYTES,
        max_transcript_bytes: int = MAX_TRANSCRIPT_BYTES,
    ):
        for name, upstream in upstreams.items():
            parts = urlsplit(upstream.base_url)
            if parts.scheme not in ("http", "https") or not parts.hostname:
                raise UsageError(
                    f"models.{name}.base_url: want http(s)://host[:port], got {upstream.base_url!r}"
                )
            if parts.query or parts.fragment:
                raise UsageError(f"models.{name}.base_url: no query or fragment allowed")
            if upstream.kind not in ("", "anthropic", "openai"):
                raise UsageError(
                    f"models.{name}.kind: want anthropic or openai, got {upstream.kind!r}"
                )
        self.upstreams = dict(upstreams)
        self.root = root
        self.max_request_bytes = max_request_bytes
        self.max_response_bytes = max_response_bytes
        self.max_transcript_bytes = max_transcript_bytes
        self._channels: dict[str, Channel] = {}
        self._lock = threading.Lock()
        self._closed = False
        self._ssl: ssl.SSLContext | None = None

    def __enter__(self) -> Gateway:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def real_key(self, upstream: str) -> str:
        """The real key of an upstream, from the host's environment (never stored)."""
        if upstream not in self.upstreams:
            known = ", ".join(sorted(self.upstreams)) or "none"
            raise UsageError(f"unknown upstream {upstream!r} (configured: {known})")
        env = self.upstreams[upstream].api_key_env
        if not env:
            return ""  # a keyless local upstream (the config allows api_key_env = "")
        key = os.environ.get(env, "").strip()
        if not key:
            raise UsageError(
                f"environment variable {env} is not set (models.{upstream}.api_key_env)"
            )
        return key

    def check_keys(self, names: list[str] | None = None) -> None:
        """Fail fast, before any attempt starts, if an upstream's key is missing."""
        for name in names if names is not None else sorted(self.upstreams):
            self.real_key(name)

    def open_attempt(
        self,
        attempt_id: str,
        upstream: str,
        *,
        budget_usd: float,
        deadline: float,
        transcript: Path,
    ) -> Channel:
        """Start serving one attempt. ``deadline`` is epoch seconds (``time.time()``)."""
        key = self.real_key(upstream)
        with self._lock:
            if self._closed:
                raise RuntimeError("gateway is closed")
            if attempt_id in self._channels:
                raise RuntimeError(f"attempt {attempt_id!r} already has an open channel")
            self.root.mkdir(parents=True, exist_ok=True)
            socket_dir = self.root / _dir_name(attempt_id)
            socket_dir.mkdir(exist_ok=True)
            socket_dir.chmod(0o755)
            channel = Channel(
                self,
                attempt_id,
                self.upstreams[upstream],
                key,
                socket_dir=socket_dir,
                budget_usd=budget_usd,
                deadline=deadline,
                transcript=transcript,
            )
            self._channels[attempt_id] = channel
            return channel

    def close(self) -> None:
        with self._lock:
            self._closed = True
            channels = list(self._channels.values())
        for channel in channels:
            channel.close()

    # --- for channels -------------------------------------------------------------------

    def _forget(self, attempt_id: str) -> None:
        with self._lock:
            self._channels.pop(attempt_id, None)

    def _netloc(self, upstream: Upstream) -> str:
        return urlsplit(upstream.base_url).netloc.rsplit("@", 1)[-1]

    def _base_path(self, upstream: Upstream) -> str:
        # "https://host/v1" and "https://host" both mean the API's own /v1/... paths
        path = urlsplit(upstream.base_url).path.rstrip("/")
        return path.removesuffix("/v1")

    def _connection(self, upstream: Upstream) -> http.client.HTTPConnection:
        parts = urlsplit(upstream.base_url)
        host = parts.hostname or ""
        if parts.scheme == "https":
            if self._ssl is None:
                # the system CA bundle; OpenSSL honours SSL_CERT_FILE / SSL_CERT_DIR
                self._ssl = ssl.create_default_context()
            return http.client.HTTPSConnection(
                host, parts.port, timeout=UPSTREAM_TIMEOUT_S, context=self._ssl
            )
        return http.client.HTTPConnection(host, parts.port, timeout=UPSTREAM_TIMEOUT_S)


def _dir_name(attempt_id: str) -> str:
    slug = re.sub(r"[^A-Za-z0-9_.-]+", "_", attempt_id)[:40].strip("._") or "attempt"
    digest = hashlib.sha256(attempt_id.encode()).hexdigest()[:10]
    return f"{slug}-{digest}"
