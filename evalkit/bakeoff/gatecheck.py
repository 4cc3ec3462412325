"""The gate's checker: policy matching, and the entry point the gates run inside the sandbox.

Standard library only and no evalkit imports: the gate pack copies this file verbatim to
``/evalkit/gate/check.py`` where the image's python runs it (``-I -S``), and the host imports
the same matching code, so the sandbox and the audit cannot disagree on what a rule means.

In the sandbox it runs in three roles:

- ``shim-check TOOL ARGS...``: from a PATH shim of a named tool (a shell script that then
  execs the real binary, the first ``TOOL`` on PATH outside the shim directory);
- ``shell SHELL ARGS...``: the wrapper installed over ``/bin/sh`` and ``/bin/bash``; checks
  the ``-c`` string, then returns 0 (the wrapper execs the shell);
- ``hook``: a Claude Code PreToolUse hook; the tool call's JSON on stdin; exit 2 blocks.

A blocked command exits non-zero (126; 2 for the hook) with one line on stderr naming the
rule and its reason. Every match, blocked or logged, is one JSON line on the event FIFO,
which a root-owned reader drains to a file the agent cannot write (the agent can add lines
to it, never remove one).
"""

from __future__ import annotations

import json
import os
import re
import shlex
import stat
import sys
import time
from typing import Any, NamedTuple

EXIT_BLOCKED = 126
HOOK_EXIT_BLOCKED = 2
EVENTS_FIFO = "/tmp/.evalkit-trust/events.fifo"
POLICY_FILE = "policy.json"
COMMAND_LOG_CAP = 16 * 1024
"""Longest command line kept in one event (a FIFO write stays one piece up to PIPE_BUF)."""


class Rule(NamedTuple):
    name: str
    regex: re.Pattern[str]
    action: str  # "block" | "log"
    reason: str
    kind: str  # "destructive" | "tamper"


class Match(NamedTuple):
    rule: Rule
    command: str

    @property
    def blocked(self) -> bool:
        return self.rule.action == "block"


def compile_rules(doc: list[dict[str, Any]]) -> list[Rule]:
    """Rules from their JSON form (patterns already resolved; see evalkit.bakeoff.policy)."""
    return [
        Rule(
            str(r["name"]),
            re.compile(str(r["pattern"])),
            str(r["action"]),
            str(r["reason"]),
            str(r.get("kind", "destructive")),
        )
        for r in doc
    ]


def matches(rules: list[Rule], command: str) -> list[Match]:
    """Every rule whose pattern occurs in ``command``, block rules first."""
    found = [Match(r, command) for r in rules if r.regex.search(command)]
    return sorted(found, key=lambda m: not m.blocked)


def decide(rules: list[Rule], command: str) -> Match | None:
    """The deciding match: the first block rule, else the first log rule, else None."""
    found = matches(rules, command)
    return found[0] if found else None


_SHELL_OPTS_WITH_ARG = {"-o", "+o", "-O", "+O", "--rcfile", "--init-file"}


def shell_invocation(args: list[str]) -> tuple[str | None, str | None]:
    """``(command_string, script_path)`` of a sh/bash argv (without argv[0]).

    ``-c STRING`` (also inside combined flags like ``-lc``) gives the string; otherwise the
    first operand is a script file; neither (an interactive or stdin shell) gives two Nones.
    """
    want_c = False
    i = 0
    while i < len(args):
        a = args[i]
        if a == "--":
            i += 1
            break
        if a in _SHELL_OPTS_WITH_ARG:
            i += 2
            continue
        if a.startswith("--"):
            i += 1
            continue
        if len(a) > 1 and a[0] in "-+":
            if a[0] == "-" and "c" in a[1:]:
                want_c = True
            i += 1
            continue
        break
    if i >= len(args):
        return None, None
    if want_c:
        return args[i], None
    return None, args[i]


def command_line(argv: list[str]) -> str:
    """An argv as the one line rules match against."""
    return shlex.join(argv)


# --- inside the sandbox ------------------------------------------------------------------


def _load() -> list[Rule]:
    here = os.path.dirname(os.path.abspath(__file__))
    with open(os.path.join(here, POLICY_FILE), encoding="utf-8") as f:
        return compile_rules(json.load(f)["rules"])


def log_event(layer: str, match: Match, *, fifo: str = EVENTS_FIFO) -> None:
    """One JSON line to the event FIFO; silently nothing when no reader is there."""
    event = {
        "layer": layer,
        "rule": match.rule.name,
        "kind": match.rule.kind,
        "action": match.rule.action,
        "command": match.command[:COMMAND_LOG_CAP],
        "pid": os.getpid(),
        "time": time.time(),
    }
    data = (json.dumps(event) + "\n").encode()
    try:
        fd = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
    except OSError:
        return
    try:
        if stat.S_ISFIFO(os.fstat(fd).st_mode):
            os.set_blocking(fd, True)
            os.write(fd, data)
    except OSError:
        pass
    finally:
        os.close(fd)


def refusal(match: Match) -> str:
    return f"evalkit gate: blocked by policy rule {match.rule.name!r}: {match.rule.reason}"


def _check(rules: list[Rule], layer: str, command: str) -> Match | None:
    match = decide(rules, command)
    if match is not None:
        log_event(layer, match)
    return match


def shim_check(argv: list[str]) -> int:
    """``TOOL ARGS...`` as a PATH shim saw them: 0 to run it, EXIT_BLOCKED (reason on
    stderr) to refuse; the shim script execs the real tool."""
    match = _check(_load(), "shim", command_line(argv))
    if match is not None and match.blocked:
        print(refusal(match), file=sys.stderr)
        return EXIT_BLOCKED
    return 0


def shell_main(args: list[str]) -> int:
    command, _ = shell_invocation(args)
    if command is None:
        return 0
    match = _check(_load(), "shell", command)
    if match is not None and match.blocked:
        print(refusal(match), file=sys.stderr)
        return EXIT_BLOCKED
    return 0


def hook_main() -> int:
    try:
        doc = json.loads(sys.stdin.read())
    except ValueError:
        return 0
    tool_input = doc.get("tool_input") if isinstance(doc, dict) else None
    command = tool_input.get("command") if isinstance(tool_input, dict) else None
    if not isinstance(command, str):
        return 0
    match = _check(_load(), "hook", command)
    if match is not None and match.blocked:
        print(refusal(match), file=sys.stderr)
        return HOOK_EXIT_BLOCKED
    return 0


def main(argv: list[str]) -> int:
    role = argv[1] if len(argv) > 1 else ""
    if role == "shim-check":
        return shim_check(argv[2:])
    if role == "shell":
        return shell_main(argv[3:])
    if role == "hook":
        return hook_main()
    print("usage: check.py shim-check TOOL ARGS... | shell SHELL ARGS... | hook", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv))
