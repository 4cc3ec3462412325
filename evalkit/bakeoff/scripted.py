"""A scripted model server: the real agent CLIs run against it, only the model is fake.

It speaks the three wire dialects the supported CLIs use, each as they use it:

- Anthropic Messages, ``POST /v1/messages`` (query such as ``?beta=true`` ignored), answered
  as SSE when ``stream`` is true (Claude Code always streams), else as one JSON message;
- OpenAI Chat Completions, ``POST /v1/chat/completions``, JSON or chunk SSE ending in
  ``data: [DONE]``; tool-call mode (mini-swe-agent's ``bash`` tool), mini-swe-agent's text
  mode (one ``mswea_bash_command`` fence) and aider's SEARCH/REPLACE text;
- OpenAI Responses, ``POST /v1/responses`` (Codex), SSE ending in ``response.completed``.

``HEAD``/``GET`` of ``/`` or ``/api/hello`` (Claude Code's connectivity preflight) get 200;
every other request gets a clear 404 and nothing ever hangs. Every request is recorded
(:attr:`ScriptedModelServer.requests`) so tests can assert which API calls were made, and every
answer reports tiny, fixed ``usage`` so a gateway in front can count tokens and cost. Replies are
never compressed, whatever ``Accept-Encoding`` says.

The script (JSON or TOML) is agent-neutral::

    schema_version = 1
    [[steps]]
    bash = "pytest -q"
    [[steps]]
    write = { path = "src/new.py", content = "print('hi')\\n" }
    [[steps]]
    edit = { path = "src/calc.py", old = "a - b", new = "a + b" }
    [[steps]]
    claim = { resolved = true, summary = "fixed add" }
    [[steps]]
    final = "Fixed add()."

Each step becomes the tool call the asking CLI understands, chosen from the tools its request
offers: Claude Code's ``Bash``/``Read``+``Write``/``Read``+``Edit``; Codex's ``exec_command`` and
``apply_patch``; mini-swe-agent's ``bash`` tool (or its text fence); where no file tool exists, a
shell command that writes the bytes exactly (base64). ``claim`` writes the JSON claim to
``$EVALKIT_CLAIM_FILE`` with a shell command. ``final`` ends the run: a plain answer for Claude
Code, Codex and aider, mini-swe-agent's submit command for mini-swe-agent. aider cannot run
commands, so it gets every ``write``/``edit`` as SEARCH/REPLACE blocks in its one reply (a
``write`` for aider must create a new file; it appends to an existing one) and ``bash``/``claim``
steps are skipped for it.

Which step to play is read from the request itself, not from a counter: every tool call the
server emits carries an id (``toolu_evalkit_<n>`` / ``call_evalkit_<n>``) or, in text modes, a
marker ``[evalkit step <n>]``; the next action is one past the highest one found in the
history. That ignores few-shot examples (aider), ``role: "system"`` entries inside ``messages``
and empty content lists (Claude Code), keeps the server stateless per conversation (many agents
may share it) and, past the end of the script, replays the final answer instead of hanging.

Run it: ``python -m evalkit.bakeoff.scripted SCRIPT --port N`` (or ``--unix-socket PATH``).
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import json
import os
import re
import shlex
import socketserver
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Literal, NamedTuple

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from evalkit.errors import UsageError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

SCRIPT_SCHEMA_VERSION = 1

MINI_SUBMIT = "echo COMPLETE_TASK_AND_SUBMIT_FINAL_OUTPUT"
"""mini-swe-agent ends its run with ``exit_status: Submitted`` when a command prints this."""

_ID_RE = re.compile(r"(?:toolu|call|fc)_evalkit_(\d+)")
_MARK_RE = re.compile(r"\[evalkit step (\d+)\]")

# --- the script ----------------------------------------------------------------------------


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class WriteFile(_Strict):
    path: str = Field(min_length=1)
    content: str


class EditFile(_Strict):
    path: str = Field(min_length=1)
    old: str = Field(min_length=1)
    new: str


class ClaimStep(_Strict):
    resolved: bool
    summary: str = ""


class Step(_Strict):
    """Exactly one of the fields is set."""

    bash: str | None = None
    write: WriteFile | None = None
    edit: EditFile | None = None
    claim: ClaimStep | None = None
    final: str | None = None

    @model_validator(mode="after")
    def _one(self) -> Step:
        kinds = ("bash", "write", "edit", "claim", "final")
        set_ = [k for k in kinds if getattr(self, k) is not None]
        if len(set_) != 1:
            raise ValueError(
                "a step has exactly one of bash, write, edit, claim, final"
                f" (got {', '.join(set_) or 'none'})"
            )
        return self


class UsageReport(_Strict):
    input_tokens: int = Field(default=100, ge=0)
    output_tokens: int = Field(default=20, ge=0)


class Script(_Strict):
    schema_version: int
    steps: list[Step] = Field(min_length=1)
    usage: UsageReport = UsageReport()
    """Reported in every answer, so a gateway in front can count cost deterministically."""

    @model_validator(mode="after")
    def _final_last(self) -> Script:
        if self.schema_version != SCRIPT_SCHEMA_VERSION:
            raise ValueError(
                f"schema_version {self.schema_version} is not supported"
                f" (this evalkit reads {SCRIPT_SCHEMA_VERSION})"
            )
        finals = [i for i, s in enumerate(self.steps) if s.final is not None]
        if finals != [len(self.steps) - 1]:
            raise ValueError("the script needs exactly one final step, and it must be the last")
        return self

    @property
    def final_text(self) -> str:
        return self.steps[-1].final or ""


def load_script(path: Path) -> Script:
    """Read a JSON or TOML script; any mistake is one UsageError line naming the file."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise UsageError(f"cannot read the script: {exc.strerror}", path=str(path)) from None
    try:
        if path.suffix.lower() == ".toml":
            data: Any = tomllib.loads(text)
        else:
            data = json.loads(text)
    except ValueError as exc:  # JSONDecodeError and TOMLDecodeError both are ValueErrors
        msg = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        line = getattr(exc, "lineno", None)
        found = re.search(r"\(at line (\d+), column \d+\)", msg)  # tomllib's wording
        if line is None and found:
            line = int(found.group(1))
            msg = msg[: found.start()].rstrip()
        kind = "TOML" if path.suffix.lower() == ".toml" else "JSON"
        raise UsageError(f"not valid {kind}: {msg}", path=str(path), line=line) from None
    return parse_script(data, source=str(path))


def parse_script(data: Any, *, source: str = "<script>") -> Script:
    try:
        return Script.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(p) for p in err["loc"]) or "(top level)"
        raise UsageError(f"{where}: {err['msg']}", path=source) from None


# --- actions: a script step in one CLI's vocabulary -------------------------------------------


class Action(NamedTuple):
    """One answer: either a tool call (``tool`` + ``args``) or plain text (``text``)."""

    tool: str | None
    args: dict[str, Any] | str | None  # str for Codex's freeform apply_patch
    text: str = ""


def _b64(data: str) -> str:
    return base64.b64encode(data.encode()).decode()


def shell_write(path: str, content: str) -> str:
    """A shell command that writes ``content`` to ``path`` byte for byte."""
    q = shlex.quote(path)
    return f'mkdir -p -- "$(dirname -- {q})" && printf %s {_b64(content)} | base64 -d > {q}'


def shell_edit(path: str, old: str, new: str) -> str:
    """A shell command replacing the first ``old`` by ``new`` in ``path``; fails if absent."""
    prog = (
        "import base64,sys;d=lambda s:base64.b64decode(s).decode();"
        "p,o,n=d(sys.argv[1]),d(sys.argv[2]),d(sys.argv[3]);s=open(p).read();"
        "assert o in s,'old text not found in '+p;open(p,'w').write(s.replace(o,n,1))"
    )
    return f"python3 -c {shlex.quote(prog)} {_b64(path)} {_b64(old)} {_b64(new)}"


def shell_claim(claim: ClaimStep) -> str:
    body = json.dumps({"resolved": claim.resolved, "summary": claim.summary})
    return (
        'mkdir -p "$(dirname "$EVALKIT_CLAIM_FILE")" && '
        f'printf %s {_b64(body)} | base64 -d > "$EVALKIT_CLAIM_FILE"'
    )


def _patch_lines(prefix: str, text: str) -> str:
    lines = text.split("\n")
    if text.endswith("\n"):
        lines.pop()
    return "".join(f"{prefix}{line}\n" for line in lines)


def codex_patch_add(path: str, content: str) -> str:
    return f"*** Begin Patch\n*** Add File: {path}\n{_patch_lines('+', content)}*** End Patch\n"


def codex_patch_update(path: str, old: str, new: str) -> str:
    return (
        f"*** Begin Patch\n*** Update File: {path}\n@@\n"
        f"{_patch_lines('-', old)}{_patch_lines('+', new)}*** End Patch\n"
    )


def aider_block(path: str, search: str, replace: str) -> str:
    def body(s: str) -> str:
        return s if not s or s.endswith("\n") else s + "\n"

    return (
        f"{path}\n```\n<<<<<<< SEARCH\n{body(search)}=======\n{body(replace)}>>>>>>> REPLACE\n```\n"
    )


Flavor = Literal["claude", "codex", "chat-tools", "mini-text", "aider"]


def plan(script: Script, flavor: Flavor, tools: set[str]) -> list[Action]:
    """The script as the list of answers one CLI gets, in order."""
    out: list[Action] = []
    if flavor == "aider":
        blocks = []
        for s in script.steps:
            if s.write is not None:
                blocks.append(aider_block(s.write.path, "", s.write.content))
            elif s.edit is not None:
                blocks.append(aider_block(s.edit.path, s.edit.old, s.edit.new))
        if blocks:
            out.append(Action(None, None, "\n".join(blocks)))
        out.append(Action(None, None, script.final_text))
        return out
    for s in script.steps:
        if s.final is not None:
            if flavor in ("chat-tools", "mini-text"):
                out.append(Action("bash", {"command": MINI_SUBMIT}, s.final))
            else:
                out.append(Action(None, None, s.final))
            continue
        cmd: str | None = None
        if s.bash is not None:
            cmd = s.bash
        elif s.claim is not None:
            cmd = shell_claim(s.claim)
        elif s.write is not None:
            w = s.write
            if flavor == "claude" and "Write" in tools:
                # Claude Code refuses to overwrite a file it has not read; a Read of a missing
                # file is a harmless error.
                if "Read" in tools:
                    out.append(Action("Read", {"file_path": w.path}))
                out.append(Action("Write", {"file_path": w.path, "content": w.content}))
                continue
            if flavor == "codex" and "apply_patch" in tools:
                out.append(Action("apply_patch", codex_patch_add(w.path, w.content)))
                continue
            cmd = shell_write(w.path, w.content)
        elif s.edit is not None:
            e = s.edit
            if flavor == "claude" and "Edit" in tools and "Read" in tools:
                out.append(Action("Read", {"file_path": e.path}))
                out.append(
                    Action("Edit", {"file_path": e.path, "old_string": e.old, "new_string": e.new})
                )
                continue
            whole_lines = e.old.endswith("\n") and (not e.new or e.new.endswith("\n"))
            if flavor == "codex" and "apply_patch" in tools and whole_lines:
                out.append(Action("apply_patch", codex_patch_update(e.path, e.old, e.new)))
                continue
            cmd = shell_edit(e.path, e.old, e.new)
        assert cmd is not None
        if flavor == "claude":
            out.append(Action("Bash", {"command": cmd, "description": "scripted step"}))
        elif flavor == "codex":
            if "exec_command" in tools or "shell" not in tools:
                out.append(Action("exec_command", {"cmd": cmd}))
            else:
                out.append(Action("shell", {"command": ["bash", "-lc", cmd]}))
        else:
            out.append(Action("bash", {"command": cmd}))
    return out


def _next_index(history: str) -> int:
    seen = [int(m) for m in _ID_RE.findall(history)] + [int(m) for m in _MARK_RE.findall(history)]
    return max(seen) + 1 if seen else 0


# --- request inspection ----------------------------------------------------------------------


def _text_of(content: Any) -> str:
    """All text in a message's content, whatever its shape (string, list of parts, None)."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "\n".join(_text_of(p) for p in content)
    if isinstance(content, dict):
        return "\n".join(
            _text_of(v) for k, v in content.items() if k in ("text", "content", "input", "output")
        )
    return ""


def _history_ids(messages: Any) -> str:
    """The ids and markers of earlier answers, as text to scan (assistant side only)."""
    parts: list[str] = []
    for m in messages if isinstance(messages, list) else []:
        if not isinstance(m, dict):
            continue
        role, typ = m.get("role"), m.get("type")
        if role == "assistant":
            parts.append(_text_of(m.get("content")))
            content = m.get("content")
            if isinstance(content, list):
                parts += [str(b.get("id", "")) for b in content if isinstance(b, dict)]
            for tc in m.get("tool_calls") or []:
                if isinstance(tc, dict):
                    parts.append(str(tc.get("id", "")))
        elif typ in ("function_call", "custom_tool_call"):
            parts.append(str(m.get("call_id", "")))
    return "\n".join(parts)


def _tool_names(tools: Any) -> set[str]:
    names: set[str] = set()
    for t in tools if isinstance(tools, list) else []:
        if isinstance(t, dict):
            name = t.get("name") or (t.get("function") or {}).get("name")
            if isinstance(name, str):
                names.add(name)
    return names


def chat_flavor(body: dict[str, Any]) -> Flavor:
    if _tool_names(body.get("tools")):
        return "chat-tools"
    system = "\n".join(
        _text_of(m.get("content"))
        for m in body.get("messages") or []
        if isinstance(m, dict) and m.get("role") in ("system", "developer")
    )
    if "mswea_bash_command" in system:
        return "mini-text"
    return "aider"


# --- wire formats ----------------------------------------------------------------------------


def _sse(event: str | None, data: Any) -> bytes:
    head = f"event: {event}\n" if event else ""
    return f"{head}data: {json.dumps(data)}\n\n".encode()


class Reply(NamedTuple):
    status: int
    content_type: str
    body: bytes


def anthropic_reply(action: Action, n: int, usage: UsageReport, model: str, stream: bool) -> Reply:
    if action.tool is not None:
        block: dict[str, Any] = {
            "type": "tool_use",
            "id": f"toolu_evalkit_{n}",
            "name": action.tool,
            "input": {},
        }
        full = {**block, "input": action.args}
        stop = "tool_use"
    else:
        block = {"type": "text", "text": ""}
        full = {"type": "text", "text": action.text}
        stop = "end_turn"
    message: dict[str, Any] = {
        "id": f"msg_evalkit_{n}",
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": [],
        "stop_reason": None,
        "stop_sequence": None,
        "usage": {"input_tokens": usage.input_tokens, "output_tokens": 1},
    }
    if not stream:
        done = {
            **message,
            "content": [full],
            "stop_reason": stop,
            "usage": {"input_tokens": usage.input_tokens, "output_tokens": usage.output_tokens},
        }
        return Reply(200, "application/json", json.dumps(done).encode())
    delta: dict[str, Any]
    if action.tool is not None:
        delta = {"type": "input_json_delta", "partial_json": json.dumps(action.args)}
    else:
        delta = {"type": "text_delta", "text": action.text}
    frames = [
        _sse("message_start", {"type": "message_start", "message": message}),
        _sse(
            "content_block_start",
            {"type": "content_block_start", "index": 0, "content_block": block},
        ),
        _sse("content_block_delta", {"type": "content_block_delta", "index": 0, "delta": delta}),
        _sse("content_block_stop", {"type": "content_block_stop", "index": 0}),
        _sse(
            "message_delta",
            {
                "type": "message_delta",
                "delta": {"stop_reason": stop, "stop_sequence": None},
                "usage": {"output_tokens": usage.output_tokens},
            },
        ),
        _sse("message_stop", {"type": "message_stop"}),
    ]
    return Reply(200, "text/event-stream", b"".join(frames))


def responses_reply(action: Action, n: int, usage: UsageReport, model: str) -> Reply:
    item: dict[str, Any]
    if action.tool is None:
        item = {
            "type": "message",
            "id": f"msg_evalkit_{n}",
            "role": "assistant",
            "status": "completed",
            "content": [{"type": "output_text", "text": action.text, "annotations": []}],
        }
    elif isinstance(action.args, str):
        item = {
            "type": "custom_tool_call",
            "id": f"ctc_evalkit_{n}",
            "call_id": f"call_evalkit_{n}",
            "name": action.tool,
            "input": action.args,
            "status": "completed",
        }
    else:
        item = {
            "type": "function_call",
            "id": f"fc_evalkit_{n}",
            "call_id": f"call_evalkit_{n}",
            "name": action.tool,
            "arguments": json.dumps(action.args),
            "status": "completed",
        }
    u = {
        "input_tokens": usage.input_tokens,
        "output_tokens": usage.output_tokens,
        "total_tokens": usage.input_tokens + usage.output_tokens,
        "input_tokens_details": {"cached_tokens": 0},
        "output_tokens_details": {"reasoning_tokens": 0},
    }
    frames = [
        _sse(
            "response.output_item.done",
            {"type": "response.output_item.done", "output_index": 0, "item": item},
        ),
        _sse(
            "response.completed",
            {
                "type": "response.completed",
                "response": {
                    "id": f"resp_evalkit_{n}",
                    "object": "response",
                    "status": "completed",
                    "model": model,
                    "output": [item],
                    "usage": u,
                },
            },
        ),
    ]
    return Reply(200, "text/event-stream", b"".join(frames))


def chat_reply(
    action: Action,
    n: int,
    usage: UsageReport,
    model: str,
    stream: bool,
    flavor: Flavor,
    *,
    include_usage: bool = False,
) -> Reply:
    mark = f"[evalkit step {n}]"
    message: dict[str, Any] = {"role": "assistant"}
    if flavor == "mini-text":
        cmd = (action.args or {}).get("command", "") if isinstance(action.args, dict) else ""
        message["content"] = f"THOUGHT: {mark} {action.text}\n\n```mswea_bash_command\n{cmd}\n```"
        finish = "stop"
    elif action.tool is not None:
        message["content"] = f"{mark} {action.text}".strip()
        message["tool_calls"] = [
            {
                "id": f"call_evalkit_{n}",
                "type": "function",
                "function": {"name": action.tool, "arguments": json.dumps(action.args)},
            }
        ]
        finish = "tool_calls"
    else:
        # aider shows the whole reply; the marker sits on its own line, outside any edit block.
        message["content"] = f"{mark}\n{action.text}"
        finish = "stop"
    u = {
        "prompt_tokens": usage.input_tokens,
        "completion_tokens": usage.output_tokens,
        "total_tokens": usage.input_tokens + usage.output_tokens,
    }
    base = {"id": f"chatcmpl-evalkit-{n}", "created": int(time.time()), "model": model}
    if not stream:
        body = {
            **base,
            "object": "chat.completion",
            "usage": u,
            "choices": [
                {"index": 0, "message": message, "finish_reason": finish, "logprobs": None}
            ],
        }
        return Reply(200, "application/json", json.dumps(body).encode())
    chunk = {**base, "object": "chat.completion.chunk"}
    delta: dict[str, Any] = {"role": "assistant", "content": message.get("content") or ""}
    if "tool_calls" in message:
        delta["tool_calls"] = [{"index": 0, **message["tool_calls"][0]}]
    last: dict[str, Any] = {
        **chunk,
        "choices": [{"index": 0, "delta": {}, "finish_reason": finish}],
    }
    frames = [
        _sse(None, {**chunk, "choices": [{"index": 0, "delta": delta, "finish_reason": None}]})
    ]
    if include_usage:  # as OpenAI does: a last chunk with no choices, only usage
        frames += [_sse(None, last), _sse(None, {**chunk, "choices": [], "usage": u})]
    else:  # not asked for, but a gateway in front must still be able to count the call
        frames += [_sse(None, {**last, "usage": u})]
    frames.append(b"data: [DONE]\n\n")
    return Reply(200, "text/event-stream", b"".join(frames))


# --- the server ------------------------------------------------------------------------------


class RecordedRequest(NamedTuple):
    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    dialect: str  # "anthropic" | "chat" | "responses" | "preflight" | "unknown"
    action_index: int | None


class ScriptedModelServer:
    """Serve ``script`` on TCP (``host``/``port``, port 0 = any) or on ``unix_socket``.

    Use as a context manager, or :meth:`start` / :meth:`close`. ``base_url`` is the URL to give
    a CLI on the host (no ``/v1`` suffix); with ``unix_socket`` it is None.
    """

    def __init__(
        self,
        script: Script,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        unix_socket: Path | None = None,
    ):
        self.script = script
        self.requests: list[RecordedRequest] = []
        self._lock = threading.Lock()
        handler = _make_handler(self)
        self._server: socketserver.BaseServer
        self.unix_socket = unix_socket
        if unix_socket is not None:
            with contextlib.suppress(FileNotFoundError):
                unix_socket.unlink()
            self._server = _UnixHTTPServer(str(unix_socket), handler)
            # The agent runs as another uid; connecting needs write permission on the socket.
            os.chmod(unix_socket, 0o666)
            self.base_url: str | None = None
        else:
            self._server = ThreadingHTTPServer((host, port), handler)
            self._server.daemon_threads = True
            self.base_url = f"http://{host}:{self._server.server_address[1]}"
        self._thread: threading.Thread | None = None

    def start(self) -> ScriptedModelServer:
        self._thread = threading.Thread(
            target=self._server.serve_forever, args=(0.05,), daemon=True, name="scripted-model"
        )
        self._thread.start()
        return self

    def close(self) -> None:
        if self._thread is not None:
            self._server.shutdown()
            self._thread.join(5)
            self._thread = None
        self._server.server_close()
        if self.unix_socket is not None:
            with contextlib.suppress(FileNotFoundError):
                self.unix_socket.unlink()

    def __enter__(self) -> ScriptedModelServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def model_calls(self) -> list[RecordedRequest]:
        with self._lock:
            return [r for r in self.requests if r.dialect in ("anthropic", "chat", "responses")]

    # The pure part: one request body in, one reply out.
    def answer(self, path: str, body: dict[str, Any]) -> tuple[str, int | None, Reply]:
        route = path.split("?", 1)[0].rstrip("/")
        model = str(body.get("model") or "scripted")
        usage = self.script.usage
        if route.endswith("/v1/messages"):
            tools = _tool_names(body.get("tools"))
            actions = plan(self.script, "claude", tools)
            n = min(_next_index(_history_ids(body.get("messages"))), len(actions) - 1)
            return (
                "anthropic",
                n,
                anthropic_reply(actions[n], n, usage, model, bool(body.get("stream"))),
            )
        if route.endswith("/v1/responses"):
            tools = _tool_names(body.get("tools"))
            actions = plan(self.script, "codex", tools)
            items = body.get("input")
            n = min(_next_index(_history_ids(items)), len(actions) - 1)
            return "responses", n, responses_reply(actions[n], n, usage, model)
        if route.endswith("/v1/chat/completions"):
            flavor = chat_flavor(body)
            actions = plan(self.script, flavor, _tool_names(body.get("tools")))
            n = min(_next_index(_history_ids(body.get("messages"))), len(actions) - 1)
            options = body.get("stream_options")
            include = isinstance(options, dict) and options.get("include_usage") is True
            reply = chat_reply(
                actions[n],
                n,
                usage,
                model,
                bool(body.get("stream")),
                flavor,
                include_usage=include,
            )
            return "chat", n, reply
        err = {
            "type": "error",
            "error": {
                "type": "not_found_error",
                "message": f"scripted model server: no route {route}",
            },
        }
        return "unknown", None, Reply(404, "application/json", json.dumps(err).encode())


class _UnixHTTPServer(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True
    allow_reuse_address = True


def _make_handler(server: ScriptedModelServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        server_version = "evalkit-scripted/1"

        def log_message(self, format: str, *args: Any) -> None:  # quiet: requests are recorded
            pass

        def address_string(self) -> str:  # unix sockets have no peer address
            return "local"

        def _record(self, body: bytes, dialect: str, n: int | None) -> None:
            rec = RecordedRequest(
                self.command,
                self.path,
                {k.lower(): v for k, v in self.headers.items()},
                body,
                dialect,
                n,
            )
            with server._lock:
                server.requests.append(rec)

        def _send(self, reply: Reply, *, head_only: bool = False) -> None:
            self.send_response(reply.status)
            self.send_header("Content-Type", reply.content_type)
            self.send_header("Content-Length", str(len(reply.body)))
            self.send_header("Cache-Control", "no-cache")
            self.send_header("request-id", "req_evalkit")
            self.end_headers()
            if not head_only:
                self.wfile.write(reply.body)
                self.wfile.flush()

        def _read_body(self) -> bytes:
            if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
                chunks = []
                while True:
                    size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                    if size == 0:
                        self.rfile.readline()
                        break
                    chunks.append(self.rfile.read(size))
                    self.rfile.readline()
                return b"".join(chunks)
            return self.rfile.read(int(self.headers.get("Content-Length") or 0))

        def _preflight(self, head_only: bool) -> None:
            route = self.path.split("?", 1)[0].rstrip("/")
            if route in ("", "/api/hello"):
                self._record(b"", "preflight", None)
                self._send(Reply(200, "application/json", b"{}"), head_only=head_only)
            else:
                self._record(b"", "unknown", None)
                self._send(
                    Reply(404, "application/json", b'{"error":"not found"}'), head_only=head_only
                )

        def do_HEAD(self) -> None:
            self._preflight(True)

        def do_GET(self) -> None:
            self._preflight(False)

        def do_POST(self) -> None:
            raw = self._read_body()
            try:
                body = json.loads(raw or b"{}")
                if not isinstance(body, dict):
                    raise ValueError("not an object")
            except ValueError:
                self._record(raw, "unknown", None)
                self._send(Reply(400, "application/json", b'{"error":"body is not a JSON object"}'))
                return
            dialect, n, reply = server.answer(self.path, body)
            self._record(raw, dialect, n)
            self._send(reply)

    return Handler


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m evalkit.bakeoff.scripted",
        description="Replay a scripted conversation as a model API.",
    )
    parser.add_argument("script", type=Path)
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--port", type=int, default=8765)
    where.add_argument("--unix-socket", type=Path)
    parser.add_argument("--host", default="127.0.0.1")
    args = parser.parse_args(argv)
    try:
        script = load_script(args.script)
    except UsageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    server = ScriptedModelServer(
        script, host=args.host, port=args.port, unix_socket=args.unix_socket
    )
    where_ = args.unix_socket or server.base_url
    print(f"scripted model server on {where_} ({len(script.steps)} steps)", flush=True)
    with server, contextlib.suppress(KeyboardInterrupt):
        threading.Event().wait()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())


__all__ = [
    "SCRIPT_SCHEMA_VERSION",
    "Action",
    "RecordedRequest",
    "Script",
    "ScriptedModelServer",
    "Step",
    "load_script",
    "parse_script",
    "plan",
]
