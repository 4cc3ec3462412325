"""Repository history in one ``git log`` pass, and diffs for the few candidates in one
``git diff-tree --stdin`` pass. Parsing is pure; :func:`git` is the only adapter."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterable, Sequence
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


@dataclass(frozen=True)
class Change:
    """A commit on the mainline (first-parent chain from HEAD) and, for a merge, the
    branch commits it brought in: their messages can close issues too."""

    commit: Commit
    merged: tuple[Commit, ...] = ()

    @property
    def messages(self) -> str:
        return "\n\n".join(c.message for c in (self.commit, *self.merged))


def git(repo: Path, *args: str, input_text: str | None = None) -> str:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GIT_")}
    env["GIT_TERMINAL_PROMPT"] = "0"
    proc = subprocess.run(
        ["git", *args],
        cwd=repo,
        input=None if input_text is None else input_text.encode(),
        capture_output=True,
        env=env,
        check=False,
    )
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
    """Every commit reachable from ``rev`` (newest first, ``rev`` itself first), in one
    subprocess."""
    args = ["log", f"--format={_FORMAT}", "--no-color"]
    if since:
        args.append(f"--since={since}")
    if until:
        args.append(f"--until={until}")
    return parse_log(git(repo, *args, rev, "--"))


def in_date_range(repo: Path, since: str | None, until: str | None, rev: str = "HEAD") -> set[str]:
    """Commits in ``--since``/``--until`` (git's date syntax, so git parses it)."""
    args = ["rev-list"]
    args += [f"--since={since}"] if since else []
    args += [f"--until={until}"] if until else []
    return set(git(repo, *args, rev, "--").split())


def mainline_changes(commits: Sequence[Commit]) -> list[Change]:
    """Group ``git log`` output (head first) into mainline changes, newest first.

    Only first-parent commits become candidates, so a pull request is one candidate
    (its merge, diffed against the first parent) rather than one per branch commit. A
    branch commit belongs to the oldest merge that brought it in.
    """
    by_sha = {c.sha: c for c in commits}
    chain: list[Commit] = []
    sha = commits[0].sha if commits else None
    while sha is not None and sha in by_sha:
        chain.append(by_sha[sha])
        sha = by_sha[sha].parents[0] if by_sha[sha].parents else None
    claimed = {c.sha for c in chain}
    changes = []
    for commit in reversed(chain):
        merged: list[Commit] = []
        stack = list(commit.parents[1:])
        while stack:
            sha = stack.pop()
            if sha in claimed or sha not in by_sha:
                continue
            claimed.add(sha)
            merged.append(by_sha[sha])
            stack.extend(by_sha[sha].parents)
        changes.append(Change(commit, tuple(merged)))
    changes.reverse()
    return changes


def parse_diff_tree(text: str) -> dict[str, str]:
    """Split ``git diff-tree --stdin --pretty=format:%x00%H`` output by commit."""
    diffs: dict[str, str] = {}
    for chunk in text.split("\x00")[1:]:
        sha, _, diff = chunk.partition("\n")
        # diff-tree puts a blank line between commits; no diff line is ever empty
        # (context lines start with a space), so one trailing newline is dropped.
        diffs[sha.strip()] = diff[:-1] if diff.endswith("\n\n") else diff
    return diffs


def first_parent_diffs(repo: Path, commits: Iterable[Commit]) -> dict[str, str]:
    """Each commit's change against its first parent (what a merge brought in), for all
    of them in one subprocess. Renames are spelled as delete + add so the test-path
    classifier sees both paths."""
    pairs = "".join(f"{c.sha} {c.parents[0]}\n" for c in commits if c.parents)
    if not pairs:
        return {}
    out = git(
        repo,
        "diff-tree",
        "--stdin",
        "-p",
        "--binary",
        "--no-renames",
        "--no-color",
        "--no-ext-diff",
        "--pretty=format:%x00%H",
        input_text=pairs,
    )
    return parse_diff_tree(out)
