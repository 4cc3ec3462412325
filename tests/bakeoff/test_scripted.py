"""The scripted model server: script validation, each wire dialect, step choice, robustness."""

from __future__ import annotations

import http.client
import json
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from evalkit.bakeoff.scripted import (
    MINI_SUBMIT,
    Script,
    ScriptedModelServer,
    load_script,
    parse_script,
    plan,
    shell_edit,
    shell_write,
)
from evalkit.errors import UsageError

STEPS: list[dict[str, Any]] = [
    {"bash": "echo hi >> README.md"},
    {"write": {"path": "new.py", "content": "print(1)\n"}},
    {"edit": {"path": "a.py", "old": "x = 1\n", "new": "x = 2\n"}},
    {"claim": {"resolved": True, "summary": "done"}},
    {"final": "All done."},
]
SCRIPT = parse_script(
    {"schema_version": 1, "steps": STEPS, "usage": {"input_tokens": 7, "output_tokens": 3}}
)


@pytest.fixture
def server() -> Iterator[ScriptedModelServer]:
    with ScriptedModelServer(SCRIPT) as srv:
        yield srv


def post(
    srv: ScriptedModelServer,
    path: str,
    body: Any,
    *,
    method: str = "POST",
    headers: dict[str, str] | None = None,
) -> tuple[int, dict[str, str], bytes]:
    assert srv.base_url is not None
    host, port = srv.base_url.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=5)
    data = json.dumps(body).encode() if body is not None else None
    conn.request(
        method, path, body=data, headers={"Content-Type": "application/json", **(headers or {})}
    )
    resp = conn.getresponse()
    out = resp.read()
    conn.close()
    return resp.status, {k.lower(): v for k, v in resp.getheaders()}, out


def sse(raw: bytes) -> list[tuple[str | None, Any]]:
    frames = []
    for block in raw.decode().split("\n\n"):
        if not block.strip():
            continue
        event, data = None, None
        for line in block.splitlines():
            if line.startswith("event: "):
                event = line[7:]
            elif line.startswith("data: "):
                data = line[6:]
        frames.append((event, data if data == "[DONE]" else json.loads(data or "null")))
    return frames


# --- the script ---


def test_json_and_toml_scripts_load_alike(tmp_path: Path) -> None:
    (tmp_path / "s.json").write_text(json.dumps({"schema_version": 1, "steps": STEPS}))
    (tmp_path / "s.toml").write_text(
        'schema_version = 1\n[[steps]]\nbash = "echo hi >> README.md"\n'
        '[[steps]]\nwrite = { path = "new.py", content = "print(1)\\n" }\n'
        '[[steps]]\nedit = { path = "a.py", old = "x = 1\\n", new = "x = 2\\n" }\n'
        '[[steps]]\nclaim = { resolved = true, summary = "done" }\n'
        '[[steps]]\nfinal = "All done."\n'
    )
    assert load_script(tmp_path / "s.json") == load_script(tmp_path / "s.toml")


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("{not json", "not valid JSON"),
        ('{"steps": [{"final": "x"}]}', "schema_version"),
        ('{"schema_version": 2, "steps": [{"final": "x"}]}', "not supported"),
        ('{"schema_version": 1, "steps": [{"bash": "ls"}]}', "final"),
        ('{"schema_version": 1, "steps": [{"final": "a"}, {"final": "b"}]}', "final"),
        ('{"schema_version": 1, "steps": [{"bash": "ls", "final": "x"}]}', "exactly one"),
        ('{"schema_version": 1, "steps": [{"rm": "-rf /"}, {"final": "x"}]}', "steps.0"),
        ('{"schema_version": 1, "steps": []}', "steps"),
        ("[1, 2]", "(top level)"),
    ],
)
def test_bad_script_is_one_line_naming_the_file(tmp_path: Path, text: str, needle: str) -> None:
    path = tmp_path / "bad.json"
    path.write_text(text)
    with pytest.raises(UsageError) as err:
        load_script(path)
    msg = str(err.value)
    assert "\n" not in msg and str(path) in msg and needle in msg


def test_bad_toml_names_the_line(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text('schema_version = 1\n[[steps]]\nbash = "unterminated\n')
    with pytest.raises(UsageError, match=r"bad\.toml:3: "):
        load_script(path)


def test_cli_exits_2_on_a_bad_script(tmp_path: Path) -> None:
    path = tmp_path / "bad.json"
    path.write_text("{}")
    proc = subprocess.run(
        [sys.executable, "-m", "evalkit.bakeoff.scripted", str(path)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1 and "bad.json" in proc.stderr


# --- translations that run in a real shell ---

NASTY = 'it\'s "quoted" $HOME `id` \\ back\nslash\n\tEOF\nno newline at end'


def test_shell_write_and_edit_are_byte_exact_and_inject_nothing(tmp_path: Path) -> None:
    target = "dir with space/f;touch pwned.txt"
    subprocess.run(["bash", "-c", shell_write(target, NASTY)], cwd=tmp_path, check=True)
    assert (tmp_path / target).read_text() == NASTY
    subprocess.run(
        ["bash", "-c", shell_edit(target, "$HOME `id`", "$(touch pwned2)")],
        cwd=tmp_path,
        check=True,
    )
    assert (tmp_path / target).read_text() == NASTY.replace("$HOME `id`", "$(touch pwned2)")
    assert not list(tmp_path.glob("pwned*"))
    # An edit whose old text is absent fails instead of silently doing nothing.
    proc = subprocess.run(
        ["bash", "-c", shell_edit(target, "absent", "x")], cwd=tmp_path, capture_output=True
    )
    assert proc.returncode != 0


def test_plan_uses_the_tools_each_cli_offers() -> None:
    claude = plan(SCRIPT, "claude", {"Bash", "Read", "Write", "Edit"})
    assert [a.tool for a in claude] == ["Bash", "Read", "Write", "Read", "Edit", "Bash", None]
    bare = plan(SCRIPT, "claude", {"Bash", "Read", "Edit"})  # --bare: no Write tool
    assert [a.tool for a in bare] == ["Bash", "Bash", "Read", "Edit", "Bash", None]
    codex = plan(SCRIPT, "codex", {"exec_command", "apply_patch"})
    assert [a.tool for a in codex] == [
        "exec_command",
        "apply_patch",
        "apply_patch",
        "exec_command",
        None,
    ]
    assert codex[2].args == (
        "*** Begin Patch\n*** Update File: a.py\n@@\n-x = 1\n+x = 2\n*** End Patch\n"
    )
    no_patch = plan(SCRIPT, "codex", {"exec_command"})  # unknown model slug: no apply_patch
    assert [a.tool for a in no_patch] == ["exec_command"] * 4 + [None]
    mini = plan(SCRIPT, "chat-tools", {"bash"})
    assert mini[-1].args == {"command": MINI_SUBMIT}
    aider = plan(SCRIPT, "aider", set())
    assert len(aider) == 2 and "<<<<<<< SEARCH\nx = 1\n=======\nx = 2\n>>>>>>> REPLACE" in (
        aider[0].text
    )


# --- the Anthropic Messages dialect ---

TOOLS: list[dict[str, Any]] = [
    {"name": n, "input_schema": {}} for n in ("Bash", "Read", "Write", "Edit")
]


def test_anthropic_stream_is_a_tool_call_with_usage(server: ScriptedModelServer) -> None:
    status, headers, raw = post(
        server,
        "/v1/messages?beta=true",
        {
            "model": "claude-x",
            "stream": True,
            "tools": TOOLS,
            "messages": [{"role": "user", "content": "fix it"}, {"role": "system", "content": []}],
        },
        headers={"Accept-Encoding": "gzip, deflate, br, zstd"},
    )
    assert status == 200 and headers["content-type"] == "text/event-stream"
    assert "content-encoding" not in headers  # never compressed, whatever the client accepts
    frames = sse(raw)
    assert [e for e, _ in frames] == [
        "message_start",
        "content_block_start",
        "content_block_delta",
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]
    assert frames[0][1]["message"]["usage"]["input_tokens"] == 7
    assert frames[4][1]["usage"]["output_tokens"] == 3
    block = frames[1][1]["content_block"]
    assert (block["type"], block["name"], block["id"]) == ("tool_use", "Bash", "toolu_evalkit_0")
    args = json.loads(frames[2][1]["delta"]["partial_json"])
    assert args["command"] == "echo hi >> README.md"
    assert frames[4][1]["delta"]["stop_reason"] == "tool_use"


def test_anthropic_step_follows_the_history_not_a_counter(server: ScriptedModelServer) -> None:
    history = [
        {"role": "user", "content": "fix it"},
        {"role": "system", "content": "reminder"},  # Claude Code puts these inside messages
        {
            "role": "assistant",
            "content": [
                {"type": "tool_use", "id": "toolu_evalkit_2", "name": "Write", "input": {}}
            ],
        },
        {
            "role": "user",
            "content": [
                {
                    "type": "tool_result",
                    "tool_use_id": "toolu_evalkit_2",
                    "content": "mentions toolu_evalkit_9 in output",
                }
            ],
        },
    ]
    body = {"model": "m", "stream": False, "tools": TOOLS, "messages": history}
    # Asked twice (a client retry): the same answer both times.
    for _ in range(2):
        _, _, raw = post(server, "/v1/messages", body)
        msg = json.loads(raw)
        assert msg["content"][0]["id"] == "toolu_evalkit_3"
        assert msg["content"][0]["name"] == "Read"
        assert msg["usage"] == {"input_tokens": 7, "output_tokens": 3}


def test_past_the_end_the_final_answer_is_replayed(server: ScriptedModelServer) -> None:
    body = {
        "model": "m",
        "stream": True,
        "tools": TOOLS,
        "messages": [
            {"role": "assistant", "content": [{"type": "tool_use", "id": "toolu_evalkit_99"}]}
        ],
    }
    frames = sse(post(server, "/v1/messages", body)[2])
    assert frames[2][1]["delta"] == {"type": "text_delta", "text": "All done."}
    assert frames[4][1]["delta"]["stop_reason"] == "end_turn"


# --- OpenAI Responses (Codex) ---


def test_responses_function_call_then_custom_apply_patch(server: ScriptedModelServer) -> None:
    tools = [
        {"type": "function", "name": "exec_command"},
        {"type": "custom", "name": "apply_patch"},
    ]
    _, _, raw = post(
        server, "/v1/responses", {"model": "gpt-5.5", "stream": True, "tools": tools, "input": []}
    )
    frames = sse(raw)
    assert [e for e, _ in frames] == ["response.output_item.done", "response.completed"]
    item = frames[0][1]["item"]
    assert (item["type"], item["name"], item["call_id"]) == (
        "function_call",
        "exec_command",
        "call_evalkit_0",
    )
    assert frames[1][1]["response"]["usage"]["input_tokens"] == 7
    history = [item, {"type": "function_call_output", "call_id": "call_evalkit_0", "output": "ok"}]
    frames = sse(
        post(
            server,
            "/v1/responses",
            {"model": "gpt-5.5", "stream": True, "tools": tools, "input": history},
        )[2]
    )
    patch = frames[0][1]["item"]
    assert patch["type"] == "custom_tool_call" and patch["name"] == "apply_patch"
    assert patch["input"] == "*** Begin Patch\n*** Add File: new.py\n+print(1)\n*** End Patch\n"


# --- OpenAI Chat Completions (mini-swe-agent, aider) ---

BASH_TOOL = [{"type": "function", "function": {"name": "bash", "parameters": {}}}]


def test_chat_tool_mode_json_and_stream(server: ScriptedModelServer) -> None:
    body = {
        "model": "scripted",
        "tools": BASH_TOOL,
        "messages": [{"role": "system", "content": "sys"}, {"role": "user", "content": "t"}],
    }
    _, _, raw = post(server, "/v1/chat/completions", body)
    doc = json.loads(raw)
    call = doc["choices"][0]["message"]["tool_calls"][0]
    assert call["id"] == "call_evalkit_0" and call["function"]["name"] == "bash"
    assert doc["choices"][0]["finish_reason"] == "tool_calls"
    assert doc["usage"] == {"prompt_tokens": 7, "completion_tokens": 3, "total_tokens": 10}
    frames = sse(post(server, "/v1/chat/completions", {**body, "stream": True})[2])
    assert frames[-1] == (None, "[DONE]")
    assert frames[0][1]["choices"][0]["delta"]["tool_calls"][0]["id"] == "call_evalkit_0"
    # Usage even unasked (aider does not ask), on the chunk that finishes the choice ...
    assert frames[-2][1]["usage"]["completion_tokens"] == 3
    assert frames[-2][1]["choices"][0]["finish_reason"] == "tool_calls"
    # ... and, when asked (as a gateway does), in its own choice-less chunk, as OpenAI sends it.
    asked = {**body, "stream": True, "stream_options": {"include_usage": True}}
    frames = sse(post(server, "/v1/chat/completions", asked)[2])
    assert frames[-2][1]["choices"] == [] and frames[-2][1]["usage"]["prompt_tokens"] == 7
    assert "usage" not in frames[-3][1] and frames[-3][1]["choices"][0]["finish_reason"]


def test_chat_mini_text_mode_has_one_fenced_command(server: ScriptedModelServer) -> None:
    body = {
        "model": "scripted",
        "messages": [
            {"role": "system", "content": "Reply with one ```mswea_bash_command block."},
            {"role": "user", "content": "task"},
        ],
    }
    content = json.loads(post(server, "/v1/chat/completions", body)[2])["choices"][0]["message"][
        "content"
    ]
    assert content.count("```mswea_bash_command\n") == 1
    assert "echo hi >> README.md" in content


def test_chat_aider_ignores_few_shot_turns(server: ScriptedModelServer) -> None:
    few_shot = [
        {"role": "system", "content": "Use SEARCH/REPLACE blocks."},
        {"role": "user", "content": "example"},
        {"role": "assistant", "content": "example reply\n<<<<<<< SEARCH\n"},
        {"role": "user", "content": "the real task"},
    ]
    frames = sse(
        post(server, "/v1/chat/completions", {"model": "s", "stream": True, "messages": few_shot})[
            2
        ]
    )
    text = "".join(
        f[1]["choices"][0]["delta"].get("content", "") for f in frames[:-1] if f[1]["choices"]
    )
    assert "new.py\n```\n<<<<<<< SEARCH\n=======\nprint(1)\n>>>>>>> REPLACE" in text
    assert "echo hi" not in text  # aider never runs commands: bash steps are skipped
    # aider asks again (e.g. a reflection): now the final answer, not the edits a second time.
    again = [*few_shot, {"role": "assistant", "content": text}, {"role": "user", "content": "?"}]
    doc = json.loads(post(server, "/v1/chat/completions", {"model": "s", "messages": again})[2])
    assert doc["choices"][0]["message"]["content"].endswith("All done.")


# --- robustness ---


def test_preflight_unknown_paths_and_garbage(server: ScriptedModelServer) -> None:
    assert post(server, "/api/hello", None, method="HEAD")[0] == 200
    status, _, raw = post(server, "/v1/models", None, method="GET")
    assert status == 404
    status, _, raw = post(server, "/v1/complete", {"prompt": "x"})
    assert status == 404 and b"no route" in raw
    assert post(server, "/v1/messages", [1, 2])[0] == 400
    assert post(server, "/v1/messages", {"messages": "not a list", "tools": 3})[0] == 200
    dialects = [r.dialect for r in server.requests]
    assert dialects == ["preflight", "unknown", "unknown", "unknown", "anthropic"]
    assert [r.path for r in server.model_calls()] == ["/v1/messages"]


def test_serves_on_a_unix_socket(tmp_path: Path) -> None:
    path = tmp_path / "model.sock"
    with ScriptedModelServer(SCRIPT, unix_socket=path):
        assert path.stat().st_mode & 0o777 == 0o666  # the agent's uid must be able to connect

        class UnixConnection(http.client.HTTPConnection):
            def connect(self) -> None:
                self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                self.sock.connect(str(path))

        conn = UnixConnection("localhost", timeout=5)
        conn.request(
            "POST",
            "/v1/chat/completions",
            body=json.dumps({"messages": [], "tools": BASH_TOOL}),
            headers={"Content-Type": "application/json"},
        )
        doc = json.loads(conn.getresponse().read())
        assert doc["choices"][0]["message"]["tool_calls"][0]["id"] == "call_evalkit_0"
    assert not path.exists()


def test_script_is_agent_neutral_data() -> None:
    # The record round-trips, so a gateway/test can log exactly what was played.
    assert Script.model_validate_json(SCRIPT.model_dump_json()) == SCRIPT


def test_concurrent_conversations_do_not_share_a_step(server: ScriptedModelServer) -> None:
    """Many agents may share one server: the step comes from each request's own history."""
    from concurrent.futures import ThreadPoolExecutor

    def ask(done: int) -> str:
        history: list[dict[str, Any]] = [{"role": "user", "content": "t"}]
        if done:
            history.append(
                {
                    "role": "assistant",
                    "tool_calls": [{"id": f"call_evalkit_{done - 1}", "type": "function"}],
                }
            )
        doc = json.loads(
            post(server, "/v1/chat/completions", {"messages": history, "tools": BASH_TOOL})[2]
        )
        return str(doc["choices"][0]["message"]["tool_calls"][0]["id"])

    with ThreadPoolExecutor(8) as pool:
        got = list(pool.map(ask, [0, 3, 1, 4, 2] * 4))
    assert got == [f"call_evalkit_{n}" for n in [0, 3, 1, 4, 2] * 4]
