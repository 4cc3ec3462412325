"""Adapters: how to run each supported agent CLI headless in a bake-off sandbox, and read its claim.

An adapter turns an :class:`AgentContext` into an :class:`Invocation` (argv, env, files the
runner writes first) and the agent's exit code, output and collected files into a
:class:`Claim`. The runner adds ``HOME``, ``EVALKIT_PROBLEM_FILE``, ``EVALKIT_CLAIM_FILE``,
``EVALKIT_MODEL_BASE_URL`` and ``EVALKIT_MODEL_API_KEY`` to the env; a claim file, when the agent
wrote a valid one (:func:`read_claim_file`), wins over every adapter rule.

Every CLI runs from its pack (``<pack_dir>/bin/<name>``, see :mod:`evalkit.bakeoff.packs`) with
stdin from ``/dev/null`` (the problem is in its prompt; Codex and Claude Code would otherwise
append piped stdin to it), auto-approval (the container is the sandbox), no update checks, no
telemetry, few model retries (a dead gateway fails fast instead of hanging), all state under the
fresh ``HOME``, and none of the repository's own agent configuration:

- ``claude-code``: ``claude -p --output-format stream-json --verbose
  --dangerously-skip-permissions --setting-sources user --strict-mcp-config
  --disable-slash-commands --settings <CLAUDE_SETTINGS> -- PROMPT``. ``--setting-sources
  user`` (the empty fresh HOME) drops the repository's ``.claude/settings*.json`` and their hooks;
  ``--strict-mcp-config`` drops ``.mcp.json``. Not ``--bare``: it would also drop the hooks of the
  ``--settings`` file, which is the hook point for the safety gates (the runner may extend that
  JSON in :attr:`Invocation.files`). ``IS_SANDBOX=1`` lets bypass mode start even as root.
  Claim: the final ``result`` event, ``subtype == "success"`` and not ``is_error``.
- ``codex``: ``codex exec --json --dangerously-bypass-approvals-and-sandbox --ignore-rules
  --skip-git-repo-check -o <last message>`` with ``$CODEX_HOME/config.toml`` naming an
  ``evalkit`` provider at ``<base_url>/v1``, ``wire_api = "responses"`` (the only one Codex
  still speaks), plugins, analytics and unbounded retries off, and a ``PreToolUse`` hook on
  ``Bash`` (the gate's, as for Claude Code). ``--dangerously-bypass-hook-trust`` lets that hook
  run without the persisted trust a fresh CODEX_HOME lacks; the project's config and hooks
  still need project trust, which it never has. Codex's own sandbox (bubblewrap) does
  not work inside an unprivileged container, hence the bypass. Claim: the last turn event,
  ``turn.completed`` = claims resolved, ``turn.failed`` = not.
- ``mini-swe-agent``: ``mini -y --exit-immediately --task=PROMPT -m openai/<model> -o <traj>`` with
  litellm pointed at ``<base_url>/v1``, the setup wizard, price-map download and cost errors off.
  Claim: the trajectory's ``info.exit_status == "Submitted"``.
- ``aider``: one ``--message-file`` turn, ``--yes-always``, no commits, no update check, no
  analytics, no URL scraping, no shell-command suggestions, no lint/test loops, model metadata
  from a local file (no price-map download), history files under HOME. aider always reads a
  repository's ``.aider.conf.yml`` and ``.env``; every option that could run code or reach the
  network is therefore pinned on the command line, which outranks both. aider never runs shell
  commands and has no notion of success: its claim is always ``None`` (exit code 0 only means
  the message was processed), so only a claim file counts for it.
- ``command``: ``ctx.command`` as given; exit code 0 = claims resolved, other = not, no exit
  code (killed at the deadline) = no claim.
"""

from __future__ import annotations

import json
import shlex
from typing import Any, NamedTuple, Protocol

from evalkit.bakeoff.packs import PACK_MOUNT, PackSpec, npm_platform
from evalkit.errors import UsageError

CLAIM_FILE_ENV = "EVALKIT_CLAIM_FILE"
CLAIM_FILE_MAX_BYTES = 64 * 1024
SUMMARY_MAX_CHARS = 4000
STATE_DIR = "/tmp/evalkit"
"""Writable in the sandbox; the claim file lives here too (the runner's choice)."""

CLAUDE_SETTINGS = f"{STATE_DIR}/claude-settings.json"
GATE_HOOK_SCRIPT = "/evalkit/gate/hook.sh"
"""The gate pack's hook (evalkit.bakeoff.gates; not imported: adapters stay light)."""
GATE_HOOK = f"[ -f {GATE_HOOK_SCRIPT} ] && exec {GATE_HOOK_SCRIPT} || exit 0"
"""Claude Code's and Codex's PreToolUse hook command: exit 2 (from the checker) blocks."""
CODEX_LAST_MESSAGE = f"{STATE_DIR}/codex-last-message.txt"
MINI_TRAJECTORY = f"{STATE_DIR}/mini.traj.json"
AIDER_PROMPT = f"{STATE_DIR}/aider-prompt.md"
AIDER_MODEL_METADATA = f"{STATE_DIR}/aider-model-metadata.json"

DEFAULT_VERSIONS = {
    "claude-code": "2.1.328",
    "codex": "0.169.0",
    "mini-swe-agent": "2.4.6",
    "aider": "0.86.2",
}
"""Versions run against the scripted server in tests/bakeoff/test_adapters.py."""

CLAIM_INSTRUCTION = (
    "\n\nWhen you are done, write a JSON object "
    '{"resolved": true or false, "summary": "<one paragraph>"} to the file named by the '
    f"{CLAIM_FILE_ENV} environment variable, saying whether you believe the issue is resolved."
)

_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


class Claim(NamedTuple):
    resolved: bool | None
    """None = the agent made no claim."""
    source: str
    """"claim_file" | "result_subtype" | "exit_status" | "final_event" | "exit_code" | "none"."""
    summary: str = ""


NO_CLAIM = Claim(None, "none")


class Invocation(NamedTuple):
    argv: list[str]
    env: dict[str, str]
    files: dict[str, bytes]
    """Absolute container path -> content, written before start (uid 1000, 0644)."""


class AgentContext(NamedTuple):
    problem: str
    model: str
    base_url: str
    """The model endpoint without /v1, e.g. http://127.0.0.1:4000."""
    api_key: str
    args: list[str]
    home: str
    workdir: str
    pack_dir: str = PACK_MOUNT
    command: list[str] | None = None


class Adapter(Protocol):
    name: str
    diff_excludes: tuple[str, ...]
    """Git pathspec globs of the CLI's own artifacts in the checkout, to leave out of the diff."""

    def pack_spec(self, version: str) -> PackSpec | None: ...

    def invocation(self, ctx: AgentContext) -> Invocation: ...

    def claim(self, exit_code: int | None, output: bytes, files: dict[str, bytes]) -> Claim: ...

    def files_to_collect(self) -> list[str]: ...


def read_claim_file(data: bytes) -> Claim | None:
    """The claim in an EVALKIT_CLAIM_FILE's bytes, or None if they are not a valid claim.

    Valid: a JSON object (at most 64 KiB) whose ``resolved`` is a JSON boolean; ``summary`` is
    kept if it is a string. Anything else (garbage, ``"yes"``, ``1``, a list) is no claim.
    """
    if len(data) > CLAIM_FILE_MAX_BYTES:
        return None
    try:
        doc = json.loads(data.decode("utf-8-sig"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        return None
    if not isinstance(doc, dict) or not isinstance(doc.get("resolved"), bool):
        return None
    summary = doc.get("summary")
    return Claim(
        doc["resolved"],
        "claim_file",
        summary[:SUMMARY_MAX_CHARS] if isinstance(summary, str) else "",
    )


def _json_lines(output: bytes) -> list[dict[str, Any]]:
    """Every line of ``output`` that is a JSON object; other lines (stderr, banners) skipped."""
    events = []
    for line in output.splitlines():
        line = line.strip()
        if not line.startswith(b"{"):
            continue
        try:
            doc = json.loads(line)
        except (ValueError, RecursionError):
            continue
        if isinstance(doc, dict):
            events.append(doc)
    return events


def _stdin_null(argv: list[str]) -> list[str]:
    # exec, so the agent is the process the runner signals; "$@" passes argv through verbatim.
    return ["/bin/sh", "-c", 'exec "$@" </dev/null', "evalkit-agent", *argv]


def _base_env(ctx: AgentContext) -> dict[str, str]:
    return {"PATH": _PATH, "HOME": ctx.home, "LANG": "C.UTF-8", "NO_COLOR": "1", "TERM": "dumb"}


class ClaudeCode:
    diff_excludes: tuple[str, ...] = ()
    name = "claude-code"

    def pack_spec(self, version: str) -> PackSpec:
        cpu, _ = npm_platform()
        return PackSpec(
            "npm",
            "@anthropic-ai/claude-code",
            version or DEFAULT_VERSIONS[self.name],
            (("claude", f"node_modules/@anthropic-ai/claude-code-linux-{cpu}/claude"),),
        )

    def settings(self) -> dict[str, Any]:
        """The --settings JSON: a PreToolUse hook on Bash that asks the gate's checker (exit
        2 blocks, its stderr line reaches the model). Without a gate pack mounted the hook
        allows everything (a missing checker must not block, and python's own exit code
        for a missing script is 2)."""
        hook = GATE_HOOK
        return {
            "hooks": {
                "PreToolUse": [{"matcher": "Bash", "hooks": [{"type": "command", "command": hook}]}]
            },
            "permissions": {"deny": []},
        }

    def invocation(self, ctx: AgentContext) -> Invocation:
        argv = [
            f"{ctx.pack_dir}/bin/claude",
            "-p",
            "--output-format",
            "stream-json",
            "--verbose",
            "--dangerously-skip-permissions",
            "--setting-sources",
            "user",
            "--strict-mcp-config",
            "--disable-slash-commands",
            "--settings",
            CLAUDE_SETTINGS,
            "--model",
            ctx.model,
            *ctx.args,
            # "--": a problem statement that starts with "-" is still the prompt, not a flag.
            "--",
            ctx.problem + CLAIM_INSTRUCTION,
        ]
        env = _base_env(ctx) | {
            "ANTHROPIC_BASE_URL": ctx.base_url,
            "ANTHROPIC_API_KEY": ctx.api_key,
            "CLAUDE_CONFIG_DIR": f"{ctx.home}/.claude",
            "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
            "DISABLE_AUTOUPDATER": "1",
            "DISABLE_TELEMETRY": "1",
            "DISABLE_ERROR_REPORTING": "1",
            "CLAUDE_CODE_MAX_RETRIES": "1",
            "IS_SANDBOX": "1",
        }
        files = {CLAUDE_SETTINGS: json.dumps(self.settings(), indent=2).encode()}
        return Invocation(_stdin_null(argv), env, files)

    def claim(self, exit_code: int | None, output: bytes, files: dict[str, bytes]) -> Claim:
        results = [e for e in _json_lines(output) if e.get("type") == "result"]
        if not results:
            return NO_CLAIM
        last = results[-1]
        ok = last.get("subtype") == "success" and last.get("is_error") is False
        text = last.get("result")
        summary = text[:SUMMARY_MAX_CHARS] if isinstance(text, str) else ""
        return Claim(ok, "result_subtype", summary)

    def files_to_collect(self) -> list[str]:
        return []


class Codex:
    diff_excludes: tuple[str, ...] = ()
    name = "codex"
    provider = "evalkit"

    def pack_spec(self, version: str) -> PackSpec:
        cpu, arch = npm_platform()
        vendor = f"node_modules/@openai/codex-linux-{cpu}/vendor/{arch}-unknown-linux-musl"
        binary = f"{vendor}/bin/codex"
        return PackSpec(
            "npm", "@openai/codex", version or DEFAULT_VERSIONS[self.name], (("codex", binary),)
        )

    def config_toml(self, ctx: AgentContext) -> str:
        p = self.provider
        return "\n".join(
            [
                f"model = {json.dumps(ctx.model)}",
                f'model_provider = "{p}"',
                "check_for_update_on_startup = false",
                "",
                "[analytics]",
                "enabled = false",
                "",
                "[features]",
                "plugins = false",
                "unbounded_connection_retries = false",
                "",
                f"[model_providers.{p}]",
                f'name = "{p}"',
                f"base_url = {json.dumps(ctx.base_url.rstrip('/') + '/v1')}",
                'wire_api = "responses"',
                'env_key = "OPENAI_API_KEY"',
                "request_max_retries = 1",
                "stream_max_retries = 1",
                "",
                # Codex names its shell tool (exec_command) "Bash" to hooks, as Claude Code
                # does; apply_patch ("apply_patch") is not a command and is left alone.
                "[[hooks.PreToolUse]]",
                'matcher = "Bash"',
                "[[hooks.PreToolUse.hooks]]",
                'type = "command"',
                f"command = {json.dumps(GATE_HOOK)}",
                "",
            ]
        )

    def invocation(self, ctx: AgentContext) -> Invocation:
        codex_home = f"{ctx.home}/.codex"
        argv = [
            f"{ctx.pack_dir}/bin/codex",
            "exec",
            "--json",
            "--color",
            "never",
            "--dangerously-bypass-approvals-and-sandbox",
            # Untrusted hooks are skipped silently, and trust is a hash recorded through the
            # TUI's /hooks; this run-only flag trusts the hook we wrote. It does not trust the
            # project, so a repository's .codex/ hooks still never load.
            "--dangerously-bypass-hook-trust",
            "--ignore-rules",
            "--skip-git-repo-check",
            "-C",
            ctx.workdir,
            "-o",
            CODEX_LAST_MESSAGE,
            *ctx.args,
            "--",
            ctx.problem + CLAIM_INSTRUCTION,
        ]
        env = _base_env(ctx) | {"CODEX_HOME": codex_home, "OPENAI_API_KEY": ctx.api_key}
        files = {f"{codex_home}/config.toml": self.config_toml(ctx).encode()}
        return Invocation(_stdin_null(argv), env, files)

    def claim(self, exit_code: int | None, output: bytes, files: dict[str, bytes]) -> Claim:
        turns = [
            e for e in _json_lines(output) if e.get("type") in ("turn.completed", "turn.failed")
        ]
        if not turns:
            return NO_CLAIM
        last_message = files.get(CODEX_LAST_MESSAGE, b"").decode(errors="replace")
        return Claim(
            turns[-1]["type"] == "turn.completed", "final_event", last_message[:SUMMARY_MAX_CHARS]
        )

    def files_to_collect(self) -> list[str]:
        return [CODEX_LAST_MESSAGE]


def _litellm_model(model: str) -> str:
    # litellm routes on the provider prefix; a bare name means an OpenAI-compatible endpoint.
    return model if "/" in model else f"openai/{model}"


class MiniSweAgent:
    diff_excludes: tuple[str, ...] = ()
    name = "mini-swe-agent"

    def pack_spec(self, version: str) -> PackSpec:
        return PackSpec(
            "pypi",
            "mini-swe-agent",
            version or DEFAULT_VERSIONS[self.name],
            (("mini", "venv/bin/mini"),),
        )

    def invocation(self, ctx: AgentContext) -> Invocation:
        argv = [
            f"{ctx.pack_dir}/bin/mini",
            "-y",
            "--exit-immediately",
            "-m",
            _litellm_model(ctx.model),
            "-o",
            MINI_TRAJECTORY,
            *ctx.args,
            # One token with "=": a problem statement starting with "-" cannot become a flag.
            f"--task={ctx.problem}{CLAIM_INSTRUCTION}",
        ]
        base = ctx.base_url.rstrip("/")
        env = _base_env(ctx) | {
            "MSWEA_CONFIGURED": "true",
            "MSWEA_GLOBAL_CONFIG_DIR": f"{ctx.home}/.config/mini-swe-agent",
            "MSWEA_COST_TRACKING": "ignore_errors",
            "MSWEA_MODEL_RETRY_STOP_AFTER_ATTEMPT": "2",
            "LITELLM_LOCAL_MODEL_COST_MAP": "True",
            "OPENAI_API_BASE": f"{base}/v1",
            "OPENAI_BASE_URL": f"{base}/v1",
            "OPENAI_API_KEY": ctx.api_key,
            "ANTHROPIC_API_BASE": base,
            "ANTHROPIC_BASE_URL": base,
            "ANTHROPIC_API_KEY": ctx.api_key,
            "PYTHONDONTWRITEBYTECODE": "1",
            "PYTHONUNBUFFERED": "1",
        }
        return Invocation(_stdin_null(argv), env, {})

    def claim(self, exit_code: int | None, output: bytes, files: dict[str, bytes]) -> Claim:
        raw = files.get(MINI_TRAJECTORY)
        if not raw:
            return NO_CLAIM
        try:
            info = json.loads(raw).get("info") or {}
        except (ValueError, AttributeError, RecursionError):
            return NO_CLAIM
        status = info.get("exit_status") if isinstance(info, dict) else None
        if not isinstance(status, str):
            return NO_CLAIM
        submission = info.get("submission")
        return Claim(
            status == "Submitted",
            "exit_status",
            submission[:SUMMARY_MAX_CHARS] if isinstance(submission, str) else status,
        )

    def files_to_collect(self) -> list[str]:
        return [MINI_TRAJECTORY]


class Aider:
    name = "aider"
    # Its repo-map cache; history files go to HOME and --no-gitignore leaves .gitignore alone.
    diff_excludes: tuple[str, ...] = (".aider.tags.cache.v*",)

    def pack_spec(self, version: str) -> PackSpec:
        return PackSpec(
            "pypi",
            "aider-chat",
            version or DEFAULT_VERSIONS[self.name],
            (("aider", "venv/bin/aider"),),
        )

    def invocation(self, ctx: AgentContext) -> Invocation:
        model = _litellm_model(ctx.model)
        hist = f"{ctx.home}/.aider-history"
        argv = [
            f"{ctx.pack_dir}/bin/aider",
            "--model",
            model,
            "--openai-api-base",
            f"{ctx.base_url.rstrip('/')}/v1",
            "--message-file",
            AIDER_PROMPT,
            "--yes-always",
            "--no-auto-commits",
            "--no-dirty-commits",
            "--no-gitignore",
            "--no-check-update",
            "--analytics-disable",
            "--no-show-model-warnings",
            "--no-show-release-notes",
            "--no-pretty",
            "--no-fancy-input",
            "--no-detect-urls",
            "--no-suggest-shell-commands",
            "--no-auto-lint",
            "--no-auto-test",
            "--test-cmd=",
            "--no-notifications",
            "--no-restore-chat-history",
            "--model-metadata-file",
            AIDER_MODEL_METADATA,
            "--edit-format",
            "diff",
            "--chat-history-file",
            f"{hist}/chat.md",
            "--input-history-file",
            f"{hist}/input",
            "--env-file",
            f"{ctx.home}/.aider.env",
            *ctx.args,
        ]
        env = _base_env(ctx) | {
            "OPENAI_API_KEY": ctx.api_key,
            "LITELLM_LOCAL_MODEL_COST_MAP": "True",
            "PYTHONDONTWRITEBYTECODE": "1",
            "GIT_TERMINAL_PROMPT": "0",
        }
        meta = {
            model: {
                "max_input_tokens": 200000,
                "max_tokens": 32000,
                "max_output_tokens": 32000,
                "input_cost_per_token": 0,
                "output_cost_per_token": 0,
                "litellm_provider": model.split("/")[0],
                "mode": "chat",
            }
        }
        files = {
            AIDER_PROMPT: ctx.problem.encode(),
            AIDER_MODEL_METADATA: json.dumps(meta).encode(),
            f"{ctx.home}/.aider.env": b"",
            f"{hist}/.keep": b"",
        }
        return Invocation(_stdin_null(argv), env, files)

    def claim(self, exit_code: int | None, output: bytes, files: dict[str, bytes]) -> Claim:
        return NO_CLAIM

    def files_to_collect(self) -> list[str]:
        return []


class Command:
    diff_excludes: tuple[str, ...] = ()
    name = "command"

    def pack_spec(self, version: str) -> None:
        return None

    def invocation(self, ctx: AgentContext) -> Invocation:
        if not ctx.command:
            raise UsageError("a command agent needs `command = [...]`")
        env = _base_env(ctx)
        return Invocation([*ctx.command, *ctx.args], env, {})

    def claim(self, exit_code: int | None, output: bytes, files: dict[str, bytes]) -> Claim:
        if exit_code is None:
            return NO_CLAIM
        return Claim(exit_code == 0, "exit_code")

    def files_to_collect(self) -> list[str]:
        return []


ADAPTERS: dict[str, type[Adapter]] = {
    "claude-code": ClaudeCode,
    "codex": Codex,
    "mini-swe-agent": MiniSweAgent,
    "aider": Aider,
    "command": Command,
}


def get_adapter(name: str) -> Adapter:
    try:
        return ADAPTERS[name]()
    except KeyError:
        known = ", ".join(ADAPTERS)
        raise UsageError(f"unknown adapter {name!r} (built in: {known})") from None


def describe(inv: Invocation) -> str:
    """The invocation as one shell-quoted line (for logs; keys are the per-attempt dummies)."""
    return shlex.join(inv.argv)
