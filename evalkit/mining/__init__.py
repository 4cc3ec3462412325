"""Mining: a team's closed issues and their fixes, validated into a task set.

Pure parts (history parsing, linking, the split into patch and test patch, the
FAIL_TO_PASS / PASS_TO_PASS / flaky rules) take text and return values; git, Docker
and HTTP stay in thin adapters.
"""

from __future__ import annotations

from evalkit.mining._history import Commit, parse_log, scan_history
from evalkit.mining._links import IssueRef, find_links
from evalkit.mining._mine import Candidate, MineOptions, MineSummary, SourceKind, mine, split_diff
from evalkit.mining._sources import (
    HttpCache,
    Issue,
    fetch_github_comments,
    fetch_github_issues,
    fetch_gitlab_issues,
    github_auth,
    gitlab_auth,
    load_issue_export,
)
from evalkit.mining._validate import Classification, classify_runs

__all__ = [
    "Candidate",
    "Classification",
    "Commit",
    "HttpCache",
    "Issue",
    "IssueRef",
    "MineOptions",
    "MineSummary",
    "SourceKind",
    "classify_runs",
    "fetch_github_comments",
    "fetch_github_issues",
    "fetch_gitlab_issues",
    "find_links",
    "github_auth",
    "gitlab_auth",
    "load_issue_export",
    "mine",
    "parse_log",
    "scan_history",
    "split_diff",
]
