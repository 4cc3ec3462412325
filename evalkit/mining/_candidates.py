"""From a linked change to a draft task: pure checks on the linked issues and the diff.

Every function here takes values and returns values; a rejected candidate gets a short
reason code (listed in :data:`REASONS`) and a detail line for ``candidates.jsonl``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import PurePosixPath
from typing import Literal, NamedTuple

from pydantic import Field

from evalkit.mining._history import Change
from evalkit.mining._links import IssueRef
from evalkit.mining._sources import Comments, Issue
from evalkit.patch import PatchRejected, inspect_patch, is_test_path
from evalkit.records import Record, TaskInstance

SourceKind = Literal["export", "github", "gitlab", "commit"]

REASONS = {
    "issue_not_found": "no linked issue exists in the issue source",
    "issue_not_closed": "the linked issues are all still open",
    "binary_only": "the change is only binary files",
    "no_test_change": "the change touches no test file",
    "no_source_change": "the change touches only tests",
    "too_large": "over --max-lines or --max-files",
    "unsafe_patch": "the patch fails evalkit's safety checks (see evalkit.patch)",
    "no_runnable_tests": "the test change adds or edits no test module",
    "environment": "the environment image could not be built, or the sandbox failed "
    "(retried on the next run)",
    "test_patch_does_not_apply": "the test change does not apply at base_commit",
    "patch_does_not_apply": "the fix does not apply on top of the test change",
    "gold_run_untrusted": "a run with the fix timed out or crashed",
    "gold_breaks_tests": "a test that passed before the fix fails after it",
    "no_fail_to_pass": "no test fails before the fix and passes after it in every run",
    "gold_check_failed": "the finished instance does not resolve under evaluate --gold",
}
"""Every rejection reason ``candidates.jsonl`` can carry, with what it means."""


class Candidate(Record):
    """One line of ``candidates.jsonl``: a change considered, and what became of it."""

    schema_version: int = 1
    fix_commit: str
    """The mainline commit (a merge, a squash or a plain commit) that closed the issues."""
    base_commit: str
    title: str
    issue_keys: list[str] = Field(default_factory=list)
    issue_urls: list[str] = Field(default_factory=list)
    pull_request: str | None = None
    """The pull request a merge or squash commit names (its title and body can link too)."""
    source: str = "commit"
    status: Literal["accepted", "rejected"] = "rejected"
    reason: str | None = None
    """Why it was rejected: a code from :data:`REASONS`."""
    detail: str = ""
    instance_id: str | None = None
    lines_changed: int = 0
    files_changed: int = 0
    flaky_tests: list[str] = Field(default_factory=list)
    validated_at: str = ""
    spec_sha256: str = ""
    """Of the evalkit.toml tables it was validated with: another spec validates it again."""


@dataclass(frozen=True)
class MineOptions:
    since: str | None = None
    until: str | None = None
    max_candidates: int | None = None
    """Consider at most this many linked changes, newest first (earlier verdicts count)."""
    workers: int = 1
    runs: int = 3
    link_pattern: str | None = None
    test_globs: tuple[str, ...] = ()
    max_lines: int = 2000
    max_files: int = 50
    branches: tuple[str, ...] = ()
    """Maintenance branches mined too (their own first-parent chains), beside HEAD."""
    timeout: float = 300.0
    executor: str = "thread"
    """Where validation runs execute: ``thread`` or ``ray`` (see evalkit.executors)."""
    ray_address: str | None = None


class Rejection(NamedTuple):
    reason: str
    detail: str = ""


class SplitChange(NamedTuple):
    patch: str
    test_patch: str
    test_files: list[str]
    """Test files the change adds or edits (not deletes)."""
    lines: int
    files: int
    only_binary: bool


def split_diff(diff: str, test_globs: tuple[str, ...] = ()) -> SplitChange:
    """Split a change into the gold ``patch`` (source) and ``test_patch`` (tests), by path
    components, not substrings (``latest.py`` is source)."""
    from unidiff.patch import PatchSet

    source, tests, test_files = [], [], []
    lines = files = binary = 0
    for patched in PatchSet(diff):
        files += 1
        if patched.is_binary_file:
            binary += 1
            continue  # a text task cannot carry binary content
        lines += patched.added + patched.removed
        if is_test_path(patched.path, test_globs):
            tests.append(str(patched))
            if not patched.is_removed_file:
                test_files.append(patched.path)
        else:
            source.append(str(patched))
    only_binary = binary > 0 and not (source or tests)
    return SplitChange("".join(source), "".join(tests), test_files, lines, files, only_binary)


def runnable_tests(test_files: Sequence[str]) -> tuple[str, ...]:
    """The test modules a runner should run: Python files other than ``conftest.py``, and
    JavaScript / TypeScript test files (``*.test.*``, ``*.spec.*``, ``__tests__/``)."""
    from evalkit.runners.node import is_js_test_module

    return tuple(
        f
        for f in test_files
        if (f.endswith(".py") and PurePosixPath(f).name != "conftest.py") or is_js_test_module(f)
    )


def _same_url(a: str, b: str) -> bool:
    def norm(url: str) -> str:
        return url.split("://", 1)[-1].lower().replace("/-/", "/").rstrip("/")

    return norm(a) == norm(b)


def check_issues(
    refs: Sequence[IssueRef], lookup: Callable[[str], Issue | None]
) -> tuple[list[Issue], Rejection | None]:
    """The closed issues ``refs`` name in the source. A full URL must be the issue's own
    URL there: the same number on another tracker is another issue."""
    found = []
    for ref in refs:
        issue = lookup(ref.key)
        if issue is not None and not (ref.url and issue.url and not _same_url(ref.url, issue.url)):
            found.append(issue)
    if not found:
        keys = ", ".join(r.key for r in refs)
        return [], Rejection("issue_not_found", f"no issue {keys} in the issue source")
    closed = [i for i in found if i.closed]
    if not closed:
        return [], Rejection("issue_not_closed", ", ".join(f"#{i.key} {i.state}" for i in found))
    return closed, None


def check_change(change: SplitChange, options: MineOptions) -> Rejection | None:
    """Why the split change cannot become a task, or None."""
    if change.only_binary:
        return Rejection("binary_only")
    if not change.test_patch:
        return Rejection("no_test_change")
    if not change.patch:
        return Rejection("no_source_change")
    if change.lines > options.max_lines or change.files > options.max_files:
        return Rejection(
            "too_large",
            f"{change.lines} lines in {change.files} files "
            f"(limits {options.max_lines} / {options.max_files})",
        )
    for text in (change.patch, change.test_patch):
        try:
            inspect_patch(text)
        except PatchRejected as exc:
            return Rejection("unsafe_patch", str(exc))
    if not runnable_tests(change.test_files):
        return Rejection("no_runnable_tests", "the test change adds or edits no test module")
    return None


def _instant(stamp: str) -> datetime | None:
    try:
        parsed = datetime.fromisoformat(stamp.strip().replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)


def hints_before(comments: Comments, fixed_at: str) -> str:
    """Comments made before the fix, oldest first (times compared as instants)."""
    cutoff = _instant(fixed_at)
    kept = []
    for created, body in comments:
        when = _instant(created)
        if cutoff is not None and when is not None and when < cutoff and body.strip():
            kept.append((when, body.strip()))
    return "\n\n".join(body for _, body in sorted(kept, key=lambda pair: pair[0]))


def instance_id_for(repo_name: str, key: str, sha: str, taken: set[str]) -> str:
    """``owner__name-KEY``; a second change closing the same issue adds its short sha."""
    instance_id = f"{repo_name.replace('/', '__')}-{key}"
    return instance_id if instance_id not in taken else f"{instance_id}-{sha[:7]}"


def make_instance(
    change: Change,
    split: SplitChange,
    linked: Sequence[Issue],
    *,
    instance_id: str,
    repo_name: str,
    refs: Sequence[IssueRef],
    source: SourceKind,
    commit_text: str,
    comments: Mapping[str, Comments],
    pull_request: str | None = None,
) -> TaskInstance:
    """The draft task (FAIL_TO_PASS / PASS_TO_PASS still empty) for a linked change."""
    commit = change.commit
    if linked:
        problem = "\n\n".join(f"{i.title}\n{i.body}".strip() for i in linked) + "\n"
    else:
        problem = commit_text.strip() + "\n"
    hints = "\n\n".join(
        h for i in linked if (h := hints_before(comments.get(i.key, ()), commit.committed_at))
    )
    closed = max((i.closed_at for i in linked if i.closed_at), default="")
    return TaskInstance.model_validate(
        dict(
            instance_id=instance_id,
            repo=repo_name,
            base_commit=commit.parents[0],
            patch=split.patch,
            test_patch=split.test_patch,
            problem_statement=problem,
            hints_text=hints,
            created_at=closed or commit.committed_at,
            version="",
            environment_setup_commit=commit.parents[0],
            problem_statement_source="issue" if linked else "commit",
            evalkit_fix_commit=commit.sha,
            evalkit_merged_commits=len(change.merged),
            evalkit_pull_request=pull_request,
            evalkit_issue_keys=[r.key for r in refs],
            evalkit_issue_urls=[i.url for i in linked if i.url] or [r.url for r in refs if r.url],
            evalkit_source=source,
            evalkit_lines_changed=split.lines,
            evalkit_files_changed=split.files,
        )
    )
