"""Repository history in one ``git log`` pass, and diffs for the few candidates."""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

from evalkit.errors import UsageError

_FIELD = "\x00"
_RECORD = "\x1e"
# git expands %x00 / %x1e itself: argv cannot carry NUL bytes.
_FORMAT = "%x00".join(["%H", "%P", "%aI", "%cI", "%B"]) + "%x1e"


@dataclass(frozen=True)
class Commit:
    sha: str
    parents: tuple[str, ...]
    authored_at: str
    committed_at: str
    message: str

    @property
    def title(self) -> str:
        return self.message.strip().splitlines()[0] if self.message.strip() else ""


def git(repo: Path, *args: str) -> str:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GIT_")}
    env["GIT_TERMINAL_PROMPT"] = "0"
    proc = subprocess.run(["git", *args], cwd=repo, capture_output=True, env=env, check=False)
    if proc.returncode != 0:
        message = proc.stderr.decode(errors="replace").strip().splitlines()
        raise UsageError(
            f"git {args[0]} failed: {message[-1] if message else proc.returncode}", path=str(repo)
        )
    return proc.stdout.decode("utf-8", errors="replace")


def parse_log(text: str) -> list[Commit]:
    """Parse ``git log --format`` output produced with :data:`_FORMAT`."""
    commits = []
    for record in text.split(_RECORD):
        record = record.lstrip("\n")
        if not record:
            continue
        sha, parents, authored, committed, message = record.split(_FIELD, 4)
        commits.append(Commit(sha, tuple(parents.split()), authored, committed, message))
    return commits


def scan_history(
    repo: Path, *, since: str | None = None, until: str | None = None, rev: str = "HEAD"
) -> list[Commit]:
    """Every commit reachable from ``rev`` (newest first), in one subprocess."""
    args = ["log", f"--format={_FORMAT}", "--no-color"]
    if since:
        args.append(f"--since={since}")
    if until:
        args.append(f"--until={until}")
    return parse_log(git(repo, *args, rev, "--"))


def first_parent_diff(repo: Path, commit: Commit) -> str:
    """The change a commit made against its first parent (what a merge brought in)."""
    if not commit.parents:
        return ""
    return git(
        repo, "diff", "--no-color", "--no-ext-diff", "--binary", commit.parents[0], commit.sha
    )
