"""The model gateway: keys stay on the host, only model calls pass, every call is metered.

The upstream here is a small HTTP server on 127.0.0.1 that answers in the Anthropic and
OpenAI shapes (streams included) and records exactly what reached it.
"""

from __future__ import annotations

import http.client
import json
import os
import socket
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from evalkit.bakeoff.gateway import (
    SOCKET_NAME,
    CallUsage,
    Channel,
    Gateway,
    TranscriptRequest,
    TranscriptResponse,
    Upstream,
    call_cost,
    read_transcript,
)
from evalkit.errors import UsageError

ANTHROPIC_ENV = "EVALKIT_TEST_ANTHROPIC_KEY"
OPENAI_ENV = "EVALKIT_TEST_OPENAI_KEY"
REAL_ANTHROPIC = "sk-ant-REAL-0123456789abcdef"
REAL_OPENAI = "sk-proj-REAL-fedcba9876543210"

# Anthropic usage the fake reports for every /v1/messages call.
A_FRESH, A_WRITE, A_READ, A_OUT = 100, 1000, 10000, 50
# OpenAI usage for chat and responses.
O_IN, O_CACHED, O_OUT = 2000, 500, 300


# --- a fake provider --------------------------------------------------------------------


class Seen:
    def __init__(self, method: str, path: str, headers: list[tuple[str, str]], body: bytes):
        self.method, self.path, self.headers, self.body = method, path, headers, body

    def header(self, name: str) -> list[str]:
        return [v for k, v in self.headers if k.lower() == name.lower()]


def sse(event: str | None, data: dict[str, Any] | str) -> bytes:
    text = data if isinstance(data, str) else json.dumps(data)
    head = f"event: {event}\n" if event else ""
    return f"{head}data: {text}\n\n".encode()


def anthropic_stream(cut: bool = False) -> list[bytes]:
    usage = {
        "input_tokens": A_FRESH,
        "cache_creation_input_tokens": A_WRITE,
        "cache_read_input_tokens": A_READ,
        "output_tokens": 1,
    }
    events = [
        sse(
            "message_start",
            {
                "type": "message_start",
                "message": {
                    "id": "msg_1",
                    "type": "message",
                    "role": "assistant",
                    "model": "m",
                    "content": [],
                    "stop_reason": None,
                    "usage": usage,
                },
            },
        ),
        sse(
            "content_block_start",
            {
                "type": "content_block_start",
                "index": 0,
                "content_block": {"type": "text", "text": ""},
            },
        ),
        sse(
            "content_block_delta",
            {
                "type": "content_block_delta",
                "index": 0,
                "delta": {"type": "text_delta", "text": "Hel"},
            },
        ),
        sse(
            "content_block_delta",
            {
                "type": "content_block_delta",
                "index": 0,
                "delta": {"type": "text_delta", "text": "lo"},
            },
        ),
        sse(
            "content_block_start",
            {
                "type": "content_block_start",
                "index": 1,
                "content_block": {"type": "tool_use", "id": "toolu_1", "name": "Bash", "input": {}},
            },
        ),
        sse(
            "content_block_delta",
            {
                "type": "content_block_delta",
                "index": 1,
                "delta": {"type": "input_json_delta", "partial_json": '{"command": "ls"}'},
            },
        ),
        sse("content_block_stop", {"type": "content_block_stop", "index": 1}),
    ]
    if cut:
        return events
    return [
        *events,
        sse(
            "message_delta",
            {
                "type": "message_delta",
                "delta": {"stop_reason": "tool_use"},
                "usage": {"output_tokens": A_OUT},
            },
        ),
        sse("message_stop", {"type": "message_stop"}),
    ]


def chat_stream(include_usage: bool) -> list[bytes]:
    chunks = [
        {
            "id": "c1",
            "object": "chat.completion.chunk",
            "choices": [{"index": 0, "delta": {"role": "assistant", "content": "Hi"}}],
        },
        {
            "id": "c1",
            "object": "chat.completion.chunk",
            "choices": [
                {
                    "index": 0,
                    "delta": {
                        "tool_calls": [
                            {
                                "index": 0,
                                "id": "call_1",
                                "function": {"name": "bash", "arguments": '{"cmd":'},
                            }
                        ]
                    },
                }
            ],
        },
        {
            "id": "c1",
            "object": "chat.completion.chunk",
            "choices": [
                {
                    "index": 0,
                    "delta": {"tool_calls": [{"index": 0, "function": {"arguments": '"ls"}'}}]},
                    "finish_reason": "tool_calls",
                }
            ],
        },
    ]
    out = [sse(None, c) for c in chunks]
    if include_usage:
        usage = {
            "prompt_tokens": O_IN,
            "completion_tokens": O_OUT,
            "prompt_tokens_details": {"cached_tokens": O_CACHED},
        }
        out.append(
            sse(
                None, {"id": "c1", "object": "chat.completion.chunk", "choices": [], "usage": usage}
            )
        )
    out.append(sse(None, "[DONE]"))
    return out


def responses_stream() -> list[bytes]:
    response = {
        "id": "resp_1",
        "object": "response",
        "status": "completed",
        "output": [
            {
                "type": "message",
                "role": "assistant",
                "content": [{"type": "output_text", "text": "ok"}],
            }
        ],
        "usage": {
            "input_tokens": O_IN,
            "output_tokens": O_OUT,
            "input_tokens_details": {"cached_tokens": O_CACHED},
            "total_tokens": O_IN + O_OUT,
        },
    }
    return [
        sse(
            "response.created",
            {"type": "response.created", "response": {**response, "usage": None}},
        ),
        sse("response.output_text.delta", {"type": "response.output_text.delta", "delta": "ok"}),
        sse("response.completed", {"type": "response.completed", "response": response}),
    ]


class FakeProvider:
    """Answers like Anthropic and OpenAI would, and remembers every request it got."""

    def __init__(self, host: str = "127.0.0.1") -> None:
        self.seen: list[Seen] = []
        self.release = threading.Event()  # for the "hold" scenario
        provider = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                body = self.rfile.read(length)
                provider.seen.append(Seen("POST", self.path, list(self.headers.items()), body))
                provider.answer(self, body)

            def do_GET(self) -> None:
                provider.seen.append(Seen("GET", self.path, list(self.headers.items()), b""))
                self.send_response(200)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"{}")

        self.server = ThreadingHTTPServer((host, 0), Handler)
        self.server.daemon_threads = True
        self.server.handle_error = lambda request, address: None  # type: ignore[method-assign]
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def answer(self, h: BaseHTTPRequestHandler, raw: bytes) -> None:
        body = json.loads(raw or b"{}")
        scenario = (body.get("metadata") or {}).get("scenario", "")
        path = h.path.partition("?")[0]
        if scenario == "echo_key":
            key = h.headers.get("x-api-key") or h.headers.get("Authorization", "")
            self.json(
                h,
                401,
                {
                    "type": "error",
                    "error": {"type": "authentication_error", "message": f"bad key {key}"},
                },
            )
            return
        if path.endswith("/v1/messages/count_tokens"):
            self.json(h, 200, {"input_tokens": 42})
        elif path.endswith("/v1/messages"):
            if body.get("stream"):
                self.stream(h, anthropic_stream(cut=scenario == "cut"), hold=scenario == "hold")
            else:
                usage = {
                    "input_tokens": A_FRESH,
                    "cache_creation_input_tokens": A_WRITE,
                    "cache_read_input_tokens": A_READ,
                    "output_tokens": A_OUT,
                }
                message = {
                    "id": "msg_1",
                    "type": "message",
                    "role": "assistant",
                    "content": [{"type": "text", "text": "hi"}],
                    "usage": usage,
                }
                self.json(h, 200, message)
        elif path.endswith("/v1/chat/completions"):
            if body.get("stream"):
                include = bool((body.get("stream_options") or {}).get("include_usage"))
                self.stream(h, chat_stream(include))
            else:
                usage = {
                    "prompt_tokens": O_IN,
                    "completion_tokens": O_OUT,
                    "prompt_tokens_details": {"cached_tokens": O_CACHED},
                }
                self.json(
                    h,
                    200,
                    {
                        "id": "c1",
                        "object": "chat.completion",
                        "choices": [
                            {"index": 0, "message": {"role": "assistant", "content": "hi"}}
                        ],
                        "usage": usage,
                    },
                )
        elif path.endswith("/v1/responses"):
            self.stream(h, responses_stream())
        else:
            self.json(h, 404, {"error": "no such path"})

    def json(self, h: BaseHTTPRequestHandler, status: int, payload: Any) -> None:
        data = json.dumps(payload).encode()
        h.send_response(status)
        h.send_header("Content-Type", "application/json")
        h.send_header("Content-Length", str(len(data)))
        h.end_headers()
        h.wfile.write(data)

    def stream(self, h: BaseHTTPRequestHandler, events: list[bytes], hold: bool = False) -> None:
        h.send_response(200)
        h.send_header("Content-Type", "text/event-stream")
        h.send_header("Cache-Control", "no-cache")
        h.send_header("Connection", "close")  # close-delimited: no length, like many proxies
        h.end_headers()
        h.close_connection = True
        for i, event in enumerate(events):
            h.wfile.write(event)
            h.wfile.flush()
            if hold and i == 0:
                self.release.wait(10)


# --- helpers ----------------------------------------------------------------------------


def connect_unix(path: Path | str, timeout: float | None = 15) -> socket.socket:
    """connect() to a socket whose path may exceed sun_path (pytest's tmp paths do)."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    fd = os.open(Path(path).parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        sock.connect(f"/proc/self/fd/{fd}/{Path(path).name}")
    except OSError:
        sock.close()
        raise
    finally:
        os.close(fd)
    return sock


class UnixHTTPConnection(http.client.HTTPConnection):
    """HTTP to the gateway's socket, with the Host a forwarder on 127.0.0.1:4000 gives."""

    def __init__(self, path: Path, timeout: float = 15):
        super().__init__("127.0.0.1", 4000, timeout=timeout)
        self.unix_path = str(path)

    def connect(self) -> None:
        self.sock = connect_unix(self.unix_path, self.timeout)


def call(
    channel: Channel,
    path: str,
    body: dict[str, Any] | bytes | None = None,
    *,
    method: str = "POST",
    headers: dict[str, str] | None = None,
    key: str | None = "x-api-key",
) -> tuple[int, http.client.HTTPResponse, bytes]:
    conn = UnixHTTPConnection(channel.socket_dir / SOCKET_NAME)
    data = (
        body
        if isinstance(body, bytes)
        else (json.dumps(body).encode() if body is not None else None)
    )
    all_headers = {"Content-Type": "application/json", **(headers or {})}
    if key == "x-api-key":
        all_headers["x-api-key"] = channel.api_key
    elif key == "bearer":
        all_headers["Authorization"] = f"Bearer {channel.api_key}"
    conn.request(method, path, body=data, headers=all_headers)
    response = conn.getresponse()
    payload = response.read()
    conn.close()
    return response.status, response, payload


def raw_exchange(channel: Channel, data: bytes, timeout: float = 5) -> bytes:
    sock = connect_unix(channel.socket_dir / SOCKET_NAME, timeout)
    try:
        sock.sendall(data)
        sock.shutdown(socket.SHUT_WR)
    except (BrokenPipeError, ConnectionResetError):
        pass  # the gateway may answer and hang up before reading everything
    out = b""
    try:
        while True:
            piece = sock.recv(65536)
            if not piece:
                break
            out += piece
    except (TimeoutError, ConnectionResetError):
        pass  # a reset is how a server drops a peer whose bytes it did not read
    sock.close()
    return out


def events_of(payload: bytes) -> list[dict[str, Any]]:
    out = []
    for block in payload.decode().split("\n\n"):
        for line in block.splitlines():
            if line.startswith("data: ") and line != "data: [DONE]":
                out.append(json.loads(line[6:]))
    return out


@pytest.fixture
def provider() -> Iterator[FakeProvider]:
    fake = FakeProvider()
    yield fake
    fake.close()


def upstreams(provider: FakeProvider) -> dict[str, Upstream]:
    base = f"http://127.0.0.1:{provider.port}"
    return {
        "anthropic": Upstream("anthropic", base, ANTHROPIC_ENV, 5.0, 25.0),
        "openai": Upstream(
            "openai", base + "/v1", OPENAI_ENV, 1.25, 10.0, cache_read_per_mtok=0.125
        ),
        "scripted": Upstream("scripted", base, ANTHROPIC_ENV, 1.0, 2.0),
    }


@pytest.fixture
def gateway(
    provider: FakeProvider, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Gateway]:
    monkeypatch.setenv(ANTHROPIC_ENV, REAL_ANTHROPIC)
    monkeypatch.setenv(OPENAI_ENV, REAL_OPENAI)
    gw = Gateway(upstreams(provider), root=tmp_path / "gw")
    yield gw
    gw.close()


def open_channel(
    gateway: Gateway,
    tmp_path: Path,
    upstream: str = "anthropic",
    *,
    attempt: str = "run1/agent/acme__calc-1/0",
    budget: float = 10.0,
    deadline: float | None = None,
) -> Channel:
    return gateway.open_attempt(
        attempt,
        upstream,
        budget_usd=budget,
        deadline=time.time() + 600 if deadline is None else deadline,
        transcript=tmp_path / "attempts" / attempt.replace("/", "_") / "transcript.jsonl",
    )


MESSAGE = {"model": "claude-x", "max_tokens": 10, "messages": [{"role": "user", "content": "hi"}]}


# --- forwarding and metering ------------------------------------------------------------


def test_anthropic_stream_is_forwarded_whole_and_metered(
    gateway: Gateway, provider: FakeProvider, tmp_path: Path
) -> None:
    channel = open_channel(gateway, tmp_path)
    status, response, payload = call(channel, "/v1/messages?beta=true", {**MESSAGE, "stream": True})
    assert status == 200
    assert response.getheader("Content-Type") == "text/event-stream"
    assert payload == b"".join(anthropic_stream())  # byte for byte
    assert provider.seen[0].path == "/v1/messages?beta=true"

    usage = channel.usage()
    assert usage.model_calls == 1
    assert usage.input_tokens == A_FRESH + A_WRITE + A_READ
    assert usage.output_tokens == A_OUT
    assert (usage.cache_read_tokens, usage.cache_write_tokens) == (A_READ, A_WRITE)
    # 100 x $5 + 1000 x $6.25 (1.25x) + 10000 x $0.50 (0.1x) + 50 x $25, per million
    assert usage.cost_usd == pytest.approx(0.013)
    assert usage.estimated_calls == 0 and usage.refused == []

    entries = list(read_transcript(channel.transcript))
    response_entry = next(e for e in entries if isinstance(e, TranscriptResponse))
    assert response_entry.streamed and response_entry.status == 200
    assert response_entry.assembled["content"][0]["text"] == "Hello"
    assert response_entry.assembled["content"][1]["input"] == {"command": "ls"}
    assert response_entry.cost_usd == pytest.approx(0.013)


def test_stream_reaches_the_agent_event_by_event(
    gateway: Gateway, provider: FakeProvider, tmp_path: Path
) -> None:
    # The provider sends message_start, then waits until the agent has seen it.
    channel = open_channel(gateway, tmp_path)
    conn = UnixHTTPConnection(channel.socket_dir / SOCKET_NAME, timeout=5)
    body = {**MESSAGE, "stream": True, "metadata": {"scenario": "hold"}}
    conn.request(
        "POST", "/v1/messages", body=json.dumps(body), headers={"x-api-key": channel.api_key}
    )
    response = conn.getresponse()
    first = response.read1(65536)  # would time out if the gateway buffered the stream
    assert b"message_start" in first
    provider.release.set()
    rest = response.read()
    assert first + rest == b"".join(anthropic_stream())


def test_non_streamed_messages_and_count_tokens(
    gateway: Gateway, provider: FakeProvider, tmp_path: Path
) -> None:
    channel = open_channel(gateway, tmp_path)
    status, _, payload = call(channel, "/v1/messages", MESSAGE)
    assert status == 200 and json.loads(payload)["content"][0]["text"] == "hi"
    status, _, payload = call(channel, "/v1/messages/count_tokens", MESSAGE)
    assert status == 200 and json.loads(payload) == {"input_tokens": 42}
    usage = channel.usage()
    assert usage.model_calls == 1  # counting tokens is not a model call, and is free
    assert usage.cost_usd == pytest.approx(0.013)


def test_openai_chat_usage_is_counted_even_when_the_agent_does_not_ask(
    gateway: Gateway, provider: FakeProvider, tmp_path: Path
) -> None:
    channel = open_channel(gateway, tmp_path, "openai")
    chat = {"model": "gpt-x", "messages": [{"role": "user", "content": "hi"}], "stream": True}
    status, _, payload = call(channel, "/v1/chat/completions", chat, key="bearer")
    assert status == 200
    events = events_of(payload)
    # the gateway asked upstream for usage, and held the usage chunk back from the agent
    assert json.loads(provider.seen[0].body)["stream_options"] == {"include_usage": True}
    assert all(e["choices"] for e in events) and payload.endswith(b"data: [DONE]\n\n")
    usage = channel.usage()
    assert (usage.input_tokens, usage.output_tokens, usage.cache_read_tokens) == (
        O_IN,
        O_OUT,
        O_CACHED,
    )
    # (2000 - 500) x $1.25 + 500 x $0.125 + 300 x $10, per million
    assert usage.cost_usd == pytest.approx((1500 * 1.25 + 500 * 0.125 + 300 * 10) / 1e6)

    # an agent that asks for usage gets the chunk
    asked = {**chat, "stream_options": {"include_usage": True}}
    _, _, payload = call(channel, "/v1/chat/completions", asked, key="bearer")
    assert events_of(payload)[-1]["usage"]["prompt_tokens"] == O_IN
    # non-streamed
    status, _, payload = call(
        channel, "/v1/chat/completions", {**chat, "stream": False}, key="bearer"
    )
    assert status == 200 and json.loads(payload)["usage"]["completion_tokens"] == O_OUT
    assert channel.usage().model_calls == 3
    assert channel.usage().output_tokens == 3 * O_OUT
    assert provider.seen[0].path == "/v1/chat/completions"  # base_url's /v1 is not doubled

    entries = [e for e in read_transcript(channel.transcript) if isinstance(e, TranscriptResponse)]
    assert entries[0].assembled["tool_calls"] == [
        {"id": "call_1", "name": "bash", "arguments": '{"cmd":"ls"}'}
    ]


def test_openai_responses_stream_usage(
    gateway: Gateway, provider: FakeProvider, tmp_path: Path
) -> None:
    channel = open_channel(gateway, tmp_path, "openai")
    body = {"model": "gpt-x", "input": "hi", "stream": True}
    status, _, payload = call(channel, "/v1/responses", body, key="bearer")
    assert status == 200 and payload == b"".join(responses_stream())
    usage = channel.usage()
    assert (usage.input_tokens, usage.output_tokens) == (O_IN, O_OUT)
    assert usage.cost_usd == pytest.approx((1500 * 1.25 + 500 * 0.125 + 300 * 10) / 1e6)


def test_cost_arithmetic_defaults_and_overrides() -> None:
    up = Upstream("a", "https://api.anthropic.com", "K", 3.0, 15.0)
    assert call_cost(up, "messages", CallUsage(1_000_000, 0)) == pytest.approx(3.0)
    assert call_cost(up, "messages", CallUsage(0, 1_000_000)) == pytest.approx(15.0)
    assert call_cost(
        up, "messages", CallUsage(1_000_000, 0, cache_read_tokens=1_000_000)
    ) == pytest.approx(0.3)
    assert call_cost(
        up, "messages", CallUsage(1_000_000, 0, cache_write_tokens=1_000_000)
    ) == pytest.approx(3.75)
    priced = up._replace(cache_read_per_mtok=1.0, cache_write_per_mtok=2.0)
    both = CallUsage(3_000_000, 0, cache_read_tokens=1_000_000, cache_write_tokens=1_000_000)
    assert call_cost(priced, "messages", both) == pytest.approx(3.0 + 1.0 + 2.0)
    assert call_cost(
        up, "chat", CallUsage(1_000_000, 0, cache_read_tokens=500_000)
    ) == pytest.approx(3.0)
    assert call_cost(up, "count_tokens", CallUsage(1_000_000, 0)) == 0.0


def test_a_cut_stream_is_charged_by_estimate(
    gateway: Gateway, provider: FakeProvider, tmp_path: Path
) -> None:
    # No message_delta ever comes: the output tokens are unknown, so bytes stand in.
    channel = open_channel(gateway, tmp_path)
    status, _, payload = call(
        channel, "/v1/messages", {**MESSAGE, "stream": True, "metadata": {"scenario": "cut"}}
    )
    assert status == 200
    usage = channel.usage()
    assert usage.estimated_calls == 1
    assert usage.output_tokens >= len(payload) // 4 > 1
    assert usage.input_tokens >= A_FRESH + A_WRITE + A_READ


# --- keys -------------------------------------------------------------------------------


def test_real_key_goes_upstream_and_nowhere_else(
    gateway: Gateway, provider: FakeProvider, tmp_path: Path
) -> None:
    a = open_channel(gateway, tmp_path, "anthropic", attempt="a")
    o = open_channel(gateway, tmp_path, "openai", attempt="o")
    assert call(a, "/v1/messages", {**MESSAGE, "stream": True}, key="bearer")[0] == 200
    assert call(o, "/v1/responses", {"input": "x", "stream": True}, key="x-api-key")[0] == 200
    a_seen, o_seen = provider.seen
    # each provider gets its real key in its own header, whatever the agent used
    assert a_seen.header("x-api-key") == [REAL_ANTHROPIC] and a_seen.header("Authorization") == []
    assert (
        o_seen.header("Authorization") == [f"Bearer {REAL_OPENAI}"]
        and o_seen.header("x-api-key") == []
    )
    for seen, channel in ((a_seen, a), (o_seen, o)):
        assert channel.api_key not in json.dumps(seen.headers) + seen.body.decode()
        assert seen.header("Host") == [f"127.0.0.1:{provider.port}"]
    # the upstream echoes the key in an error: neither the agent nor the transcript sees it
    status, _, payload = call(a, "/v1/messages", {**MESSAGE, "metadata": {"scenario": "echo_key"}})
    assert status == 401 and REAL_ANTHROPIC not in payload.decode() and b"[redacted]" in payload
    for channel in (a, o):
        text = channel.transcript.read_text()
        assert REAL_ANTHROPIC not in text and REAL_OPENAI not in text
        assert channel.api_key not in text  # auth headers are redacted
        assert '"[redacted]"' in text
    assert not any(
        REAL_ANTHROPIC in p.read_text(errors="replace") for p in tmp_path.rglob("*") if p.is_file()
    )


def test_missing_key_variable_is_a_usage_error(
    provider: FakeProvider, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(ANTHROPIC_ENV, raising=False)
    gw = Gateway(upstreams(provider), root=tmp_path / "gw")
    with pytest.raises(UsageError, match=ANTHROPIC_ENV):
        gw.open_attempt(
            "x", "anthropic", budget_usd=1, deadline=time.time() + 60, transcript=tmp_path / "t"
        )
    with pytest.raises(UsageError, match=ANTHROPIC_ENV):
        gw.check_keys()
    with pytest.raises(UsageError, match="unknown upstream 'nope'"):
        gw.open_attempt(
            "x", "nope", budget_usd=1, deadline=time.time() + 60, transcript=tmp_path / "t"
        )
    with pytest.raises(UsageError, match=r"models\.bad\.base_url"):
        Gateway({"bad": Upstream("bad", "ftp://x", "K", 1, 1)}, root=tmp_path)
    gw.close()


# --- budget and deadline ----------------------------------------------------------------


def test_budget_refuses_the_next_call_in_the_provider_format(
    gateway: Gateway, provider: FakeProvider, tmp_path: Path
) -> None:
    channel = open_channel(gateway, tmp_path, budget=0.01)  # one call costs 0.013
    assert call(channel, "/v1/messages", {**MESSAGE, "stream": True})[0] == 200
    assert not channel.usage().budget_exceeded
    status, response, payload = call(channel, "/v1/messages", {**MESSAGE, "stream": True})
    assert status == 402
    assert response.getheader("x-should-retry") == "false"
    error = json.loads(payload)
    assert error["type"] == "error" and error["error"]["type"] == "billing_error"
    assert "budget" in error["error"]["message"]
    usage = channel.usage()
    assert usage.budget_exceeded and usage.model_calls == 1 and len(provider.seen) == 1
    assert [r.reason.split(" ")[0] for r in usage.refused] == ["budget"]

    o = open_channel(gateway, tmp_path, "openai", attempt="o", budget=0.0)
    status, _, payload = call(o, "/v1/responses", {"input": "x"}, key="bearer")
    assert status == 402 and json.loads(payload)["error"]["code"] == "budget_exceeded"


def test_deadline_refuses_calls_after_it(
    gateway: Gateway, provider: FakeProvider, tmp_path: Path
) -> None:
    channel = open_channel(gateway, tmp_path, deadline=time.time() + 0.5)
    assert call(channel, "/v1/messages", MESSAGE)[0] == 200
    time.sleep(0.6)
    status, _, payload = call(channel, "/v1/messages", MESSAGE)
    assert status == 403 and json.loads(payload)["error"]["type"] == "permission_error"
    usage = channel.usage()
    assert usage.deadline_exceeded and not usage.budget_exceeded
    assert len(provider.seen) == 1


# --- refusals ---------------------------------------------------------------------------


def test_everything_but_model_calls_is_refused_and_logged(
    gateway: Gateway, provider: FakeProvider, tmp_path: Path
) -> None:
    channel = open_channel(gateway, tmp_path)
    attacks: list[tuple[str, int, dict[str, Any]]] = [
        ("wrong key", 401, {"headers": {"x-api-key": "sk-guess"}, "key": None}),
        ("no key", 401, {"key": None}),
        ("other path", 404, {"path": "/v1/models"}),
        ("traversal", 404, {"path": "/v1/messages/../../admin"}),
        ("encoded", 404, {"path": "/v1/%6Dessages"}),
        ("query", 404, {"path": "/v1/messages?x=1"}),
        ("openai path on anthropic", 404, {"path": "/v1/chat/completions"}),
        ("GET", 405, {"method": "GET"}),
        ("DELETE", 405, {"method": "DELETE"}),
        ("PROPFIND", 405, {"method": "PROPFIND"}),
        ("Host elsewhere", 421, {"headers": {"Host": "api.anthropic.com"}}),
        ("absolute target", 400, {"path": "http://example.com/v1/messages"}),
    ]
    for name, expected, spec in attacks:
        conn = UnixHTTPConnection(channel.socket_dir / SOCKET_NAME)
        headers = {"Content-Type": "application/json", **spec.get("headers", {})}
        if spec.get("key", "x-api-key") == "x-api-key":
            headers["x-api-key"] = channel.api_key
        skip_host = "Host" in headers
        conn.putrequest(
            spec.get("method", "POST"), spec.get("path", "/v1/messages"), skip_host=skip_host
        )
        data = json.dumps(MESSAGE).encode()
        for k, v in {**headers, "Content-Length": str(len(data))}.items():
            conn.putheader(k, v)
        conn.endheaders(data)
        response = conn.getresponse()
        response.read()
        assert response.status == expected, name
        conn.close()
    # CONNECT: a tunnel request
    reply = raw_exchange(
        channel, b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n"
    )
    assert reply.startswith(b"HTTP/1.1 405")

    assert provider.seen == []  # nothing reached the upstream
    refused = channel.usage().refused
    assert len(refused) == len(attacks) + 1
    assert {r.method for r in refused} >= {"POST", "GET", "DELETE", "PROPFIND", "CONNECT"}
    assert any(r.path_or_host == "api.anthropic.com" for r in refused)
    assert any(r.path_or_host == "example.com:443" for r in refused)
    assert channel.usage().model_calls == 0
    # refused requests are in the transcript too, for the canary scan
    assert sum(
        1
        for e in read_transcript(channel.transcript)
        if isinstance(e, TranscriptRequest) and e.refused
    ) == len(refused)


def test_unmeterable_requests_are_refused(
    gateway: Gateway, provider: FakeProvider, tmp_path: Path
) -> None:
    channel = open_channel(gateway, tmp_path, "openai")
    # a background response keeps generating after the call returns: billed, never metered
    status, _, payload = call(
        channel, "/v1/responses", {"input": "x", "background": True}, key="bearer"
    )
    assert status == 400 and "background" in json.loads(payload)["error"]["message"]
    # control characters in a header (smuggling material) never go upstream
    reply = raw_exchange(
        channel,
        b"POST /v1/responses HTTP/1.1\r\nHost: 127.0.0.1:4000\r\nConnection: close\r\n"
        + f"Authorization: Bearer {channel.api_key}\r\nX-Evil: a\x00b\r\n".encode()
        + b"Content-Length: 2\r\n\r\n{}",
    )
    assert reply.startswith(b"HTTP/1.1 400")
    assert provider.seen == []
    assert [r.reason for r in channel.usage().refused] == [
        "background responses are not allowed",
        "control characters in a header",
    ]


def test_head_preflight_is_answered_without_the_upstream(
    gateway: Gateway, provider: FakeProvider, tmp_path: Path
) -> None:
    channel = open_channel(gateway, tmp_path)
    status, _, payload = call(channel, "/api/hello", method="HEAD", key=None)
    assert status == 200 and payload == b""
    assert (
        provider.seen == [] and channel.usage().refused == [] and channel.usage().model_calls == 0
    )


def test_scripted_upstream_accepts_both_families(
    gateway: Gateway, provider: FakeProvider, tmp_path: Path
) -> None:
    # an upstream of no known kind (a local scripted server): every model path, key as sent
    channel = open_channel(gateway, tmp_path, "scripted")
    assert call(channel, "/v1/messages", MESSAGE)[0] == 200
    assert call(channel, "/v1/chat/completions", {"messages": []}, key="bearer")[0] == 200
    assert provider.seen[0].header("x-api-key") == [REAL_ANTHROPIC]
    assert provider.seen[1].header("Authorization") == [f"Bearer {REAL_ANTHROPIC}"]
    assert call(channel, "/v1/embeddings", {}, key="bearer")[0] == 404


# --- robustness and isolation -----------------------------------------------------------


POST = b"POST /v1/messages HTTP/1.1\r\nHost: 127.0.0.1:4000\r\n"


def test_malformed_http_breaks_only_its_own_connection(
    gateway: Gateway, provider: FakeProvider, tmp_path: Path
) -> None:
    a = open_channel(gateway, tmp_path, attempt="a")
    b = open_channel(gateway, tmp_path, attempt="b")
    junk = [
        b"\x00\xff\xfe garbage\r\n\r\n",
        b"GET / HTTP/9.9\r\n\r\n",
        b"POST /v1/messages HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: -5\r\n\r\n",
        POST + b"Content-Length: 1\r\nContent-Length: 2\r\n\r\nab",
        b"POST /v1/messages HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 100\r\n\r\nshort",
        POST + b"Transfer-Encoding: chunked\r\n\r\nzz\r\n",
        b"POST /" + b"a" * 20000 + b" HTTP/1.1\r\n\r\n",
        b"POST /v1/messages HTTP/1.1\r\n" + b"X-H: v\r\n" * 200 + b"\r\n",
        b"POST /v1/messages HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Big: " + b"v" * 70000 + b"\r\n\r\n",
    ]
    for data in junk:
        raw_exchange(a, data, timeout=2)
    # both attempts still work, and b saw none of a's trouble
    assert call(a, "/v1/messages", MESSAGE)[0] == 200
    assert call(b, "/v1/messages", MESSAGE)[0] == 200
    assert len(a.usage().refused) >= 6
    assert b.usage().refused == []
    assert len(provider.seen) == 2


def test_request_bodies_are_capped(
    provider: FakeProvider, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(ANTHROPIC_ENV, REAL_ANTHROPIC)
    with Gateway(upstreams(provider), root=tmp_path / "gw", max_request_bytes=1000) as gw:
        channel = open_channel(gw, tmp_path)
        status, _, payload = call(channel, "/v1/messages", {**MESSAGE, "pad": "x" * 2000})
        assert status == 413 and json.loads(payload)["error"]["type"] == "request_too_large"
        assert provider.seen == []
        # chunked bodies are capped as well
        reply = raw_exchange(
            channel,
            POST
            + b"Transfer-Encoding: chunked\r\n\r\n"
            + b"800\r\n"
            + b"x" * 2048
            + b"\r\n0\r\n\r\n",
        )
        assert reply.startswith(b"HTTP/1.1 413")


def test_refusal_spam_is_bounded(
    provider: FakeProvider, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(ANTHROPIC_ENV, REAL_ANTHROPIC)
    with Gateway(upstreams(provider), root=tmp_path / "gw", max_transcript_bytes=200_000) as gw:
        channel = open_channel(gw, tmp_path)
        big = {"pad": "x" * 100_000}
        for _ in range(5):
            assert call(channel, "/v1/nope", big)[0] == 404
        entries = [
            e for e in read_transcript(channel.transcript) if isinstance(e, TranscriptRequest)
        ]
        assert all(e.body_truncated and len(e.body) <= 64 * 1024 for e in entries)
        assert entries[-1].body == ""  # past the transcript cap: no body at all
        assert channel.transcript.stat().st_size < 400_000
        assert len(channel.usage().refused) == 5


def test_chunked_request_bodies_are_forwarded(
    gateway: Gateway, provider: FakeProvider, tmp_path: Path
) -> None:
    channel = open_channel(gateway, tmp_path)
    data = json.dumps(MESSAGE).encode()
    half = len(data) // 2
    request = (
        b"POST /v1/messages HTTP/1.1\r\nHost: 127.0.0.1:4000\r\nConnection: close\r\n"
        + f"x-api-key: {channel.api_key}\r\nTransfer-Encoding: chunked\r\n\r\n".encode()
        + b"%x\r\n%s\r\n%x\r\n%s\r\n0\r\n\r\n" % (half, data[:half], len(data) - half, data[half:])
    )
    reply = raw_exchange(channel, request)
    assert reply.startswith(b"HTTP/1.1 200"), reply[:200]
    assert provider.seen[0].body == data


def test_attempts_are_isolated(gateway: Gateway, provider: FakeProvider, tmp_path: Path) -> None:
    a = open_channel(gateway, tmp_path, attempt="a")
    b = open_channel(gateway, tmp_path, attempt="b")
    assert a.socket_dir != b.socket_dir and a.api_key != b.api_key
    # b's key is no good on a's socket
    conn = UnixHTTPConnection(a.socket_dir / SOCKET_NAME)
    conn.request("POST", "/v1/messages", body=json.dumps(MESSAGE), headers={"x-api-key": b.api_key})
    assert conn.getresponse().status == 401
    # concurrent calls on both, each metered on its own channel
    errors: list[BaseException] = []

    def hammer(channel: Channel, n: int) -> None:
        try:
            for _ in range(n):
                assert call(channel, "/v1/messages", {**MESSAGE, "stream": True})[0] == 200
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=hammer, args=(c, n)) for c, n in ((a, 3), (b, 5), (a, 2))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert errors == []
    assert a.usage().model_calls == 5 and b.usage().model_calls == 5
    assert a.usage().cost_usd == pytest.approx(5 * 0.013)
    assert len(a.usage().refused) == 1 and b.usage().refused == []
    texts_a = list(a.requests_text())
    assert len(texts_a) == 6 and len(list(b.requests_text())) == 5
    assert a.transcript != b.transcript


def test_requests_text_yields_every_request_body(
    gateway: Gateway, provider: FakeProvider, tmp_path: Path
) -> None:
    channel = open_channel(gateway, tmp_path)
    call(channel, "/v1/messages", {**MESSAGE, "canary": "CANARY-1"})
    call(channel, "/v1/not-a-model", {"canary": "CANARY-2"})  # refused, still seen
    texts = list(channel.requests_text())
    assert len(texts) == 2
    assert "CANARY-1" in texts[0] and "CANARY-2" in texts[1]
    assert all(channel.api_key not in t for t in texts)


def test_socket_is_connectable_by_other_users_and_removed_on_close(
    gateway: Gateway, provider: FakeProvider, tmp_path: Path
) -> None:
    channel = open_channel(gateway, tmp_path)
    sock_path = channel.socket_dir / SOCKET_NAME
    assert os.stat(sock_path).st_mode & 0o777 == 0o666
    assert os.stat(channel.socket_dir).st_mode & 0o777 == 0o755
    assert [p.name for p in channel.socket_dir.iterdir()] == [SOCKET_NAME]  # nothing else there
    call(channel, "/v1/messages", MESSAGE)
    final = channel.close()
    assert final.model_calls == 1 and channel.close() == final
    assert not sock_path.exists()
    with pytest.raises(OSError):
        UnixHTTPConnection(sock_path).connect()
    gateway.close()
    with pytest.raises(RuntimeError):
        open_channel(gateway, tmp_path, attempt="late")


def test_long_root_paths_still_bind(
    provider: FakeProvider, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(ANTHROPIC_ENV, REAL_ANTHROPIC)
    deep = tmp_path / ("d" * 60) / ("e" * 60)
    with Gateway(upstreams(provider), root=deep) as gw:
        channel = open_channel(gw, tmp_path, attempt="x" * 80)
        assert len(str(channel.socket_dir / SOCKET_NAME)) > 108
        assert call(channel, "/v1/messages", MESSAGE)[0] == 200


def test_unreachable_upstream_is_a_502_in_the_provider_format(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(ANTHROPIC_ENV, REAL_ANTHROPIC)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed once the block ends: nothing listens
    up = {"anthropic": Upstream("anthropic", f"http://127.0.0.1:{port}", ANTHROPIC_ENV, 1, 1)}
    with Gateway(up, root=tmp_path / "gw") as gw:
        channel = open_channel(gw, tmp_path)
        status, _, payload = call(channel, "/v1/messages", MESSAGE)
        assert status == 502 and json.loads(payload)["error"]["type"] == "api_error"
        assert channel.usage().model_calls == 0 and channel.usage().cost_usd == 0


def test_transcript_readers_check_the_schema_version(tmp_path: Path) -> None:
    path = tmp_path / "t.jsonl"
    path.write_text(json.dumps({"schema_version": 99, "kind": "request"}) + "\n")
    with pytest.raises(UsageError, match=r"t\.jsonl:1: .*schema_version 99"):
        list(read_transcript(path))


def test_gateway_in_front_of_the_scripted_model_server(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The package's scripted server (from the agents work) as the upstream, on loopback,
    # exactly as a real provider would be used: all three dialects, metered from its usage.
    scripted = pytest.importorskip("evalkit.bakeoff.scripted")
    script = scripted.parse_script(
        {
            "schema_version": 1,
            "steps": [{"final": "done"}],
            "usage": {"input_tokens": 1000, "output_tokens": 200},
        }
    )
    monkeypatch.setenv(ANTHROPIC_ENV, REAL_ANTHROPIC)
    with scripted.ScriptedModelServer(script) as server:
        up = {"scripted": Upstream("scripted", server.base_url, ANTHROPIC_ENV, 3.0, 15.0)}
        with Gateway(up, root=tmp_path / "gw") as gw:
            channel = open_channel(gw, tmp_path, "scripted")
            user = [{"role": "user", "content": "fix it"}]
            status, _, payload = call(
                channel, "/v1/messages?beta=true", {"model": "m", "messages": user, "stream": True}
            )
            assert status == 200 and b"message_stop" in payload
            status, _, payload = call(
                channel,
                "/v1/responses",
                {"model": "m", "input": user, "stream": True},
                key="bearer",
            )
            assert status == 200 and b"response.completed" in payload
            status, _, payload = call(
                channel, "/v1/chat/completions", {"model": "m", "messages": user}, key="bearer"
            )
            assert status == 200 and json.loads(payload)["choices"]
            usage = channel.close()
    assert usage.model_calls == 3 and usage.estimated_calls == 0
    assert (usage.input_tokens, usage.output_tokens) == (3000, 600)
    assert usage.cost_usd == pytest.approx(3 * (1000 * 3.0 + 200 * 15.0) / 1e6)
    assert len(server.model_calls()) == 3


def test_close_cuts_a_running_stream_and_still_meters_it(
    gateway: Gateway, provider: FakeProvider, tmp_path: Path
) -> None:
    channel = open_channel(gateway, tmp_path)
    conn = UnixHTTPConnection(channel.socket_dir / SOCKET_NAME, timeout=5)
    body = {**MESSAGE, "stream": True, "metadata": {"scenario": "hold"}}
    conn.request(
        "POST", "/v1/messages", body=json.dumps(body), headers={"x-api-key": channel.api_key}
    )
    response = conn.getresponse()
    assert b"message_start" in response.read1(65536)
    started = time.monotonic()
    usage = channel.close()  # the upstream is still holding the stream open
    assert time.monotonic() - started < 5
    provider.release.set()
    assert usage.model_calls == 1 and usage.estimated_calls == 1
    assert usage.input_tokens >= A_FRESH + A_WRITE + A_READ  # message_start's count is kept
    last = list(read_transcript(channel.transcript))[-1]
    assert isinstance(last, TranscriptResponse) and last.usage_estimated


def test_https_upstreams_are_verified_against_ssl_cert_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import shutil
    import ssl
    import subprocess

    if shutil.which("openssl") is None:
        pytest.skip("no openssl to make a test certificate")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    make_cert = ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1"]
    make_cert += ["-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"]
    subprocess.run(
        [*make_cert, "-keyout", str(key), "-out", str(cert)],
        check=True,
        capture_output=True,
    )
    provider = FakeProvider()
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    provider.server.socket = context.wrap_socket(provider.server.socket, server_side=True)
    monkeypatch.setenv(ANTHROPIC_ENV, REAL_ANTHROPIC)
    up = {
        "anthropic": Upstream(
            "anthropic", f"https://127.0.0.1:{provider.port}", ANTHROPIC_ENV, 5, 25
        )
    }
    try:
        # not trusted by the system bundle: refused, the key never sent
        monkeypatch.delenv("SSL_CERT_FILE", raising=False)
        with Gateway(up, root=tmp_path / "gw1") as gw:
            channel = open_channel(gw, tmp_path, attempt="untrusted")
            assert call(channel, "/v1/messages", MESSAGE)[0] == 502
        assert provider.seen == []
        # trusted through SSL_CERT_FILE: forwarded over TLS, streaming included
        monkeypatch.setenv("SSL_CERT_FILE", str(cert))
        with Gateway(up, root=tmp_path / "gw2") as gw:
            channel = open_channel(gw, tmp_path, attempt="trusted")
            status, _, payload = call(channel, "/v1/messages", {**MESSAGE, "stream": True})
            assert status == 200 and payload == b"".join(anthropic_stream())
            assert channel.usage().cost_usd == pytest.approx(0.013)
        assert provider.seen[0].header("x-api-key") == [REAL_ANTHROPIC]
    finally:
        provider.close()
