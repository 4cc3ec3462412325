"""Mining: a team's closed issues and their fixes, validated into a task set.

Pure parts (history parsing, linking, the split into patch and test patch, the
FAIL_TO_PASS / PASS_TO_PASS / flaky rules) take text and return values; git, Docker
and HTTP stay in thin adapters.
"""

from __future__ import annotations

from evalkit.mining._candidates import (
    REASONS,
    Candidate,
    MineOptions,
    Rejection,
    SourceKind,
    SplitChange,
    check_change,
    check_issues,
    hints_before,
    split_diff,
)
from evalkit.mining._history import (
    Change,
    Commit,
    first_parent_diffs,
    mainline_changes,
    parse_diff_tree,
    parse_log,
    scan_history,
)
from evalkit.mining._links import IssueRef, find_links, pull_request_number
from evalkit.mining._mine import MineSummary, mine
from evalkit.mining._sources import (
    HttpCache,
    Issue,
    IssueIndex,
    fetch_github_comments,
    fetch_github_issues,
    fetch_gitlab_issues,
    fetch_gitlab_notes,
    github_auth,
    gitlab_auth,
    load_issue_export,
    rate_limit_delay,
)
from evalkit.mining._validate import (
    Classification,
    classify_runs,
    judge,
    unfinished_tests,
)

__all__ = [
    "REASONS",
    "Candidate",
    "Change",
    "Classification",
    "Commit",
    "HttpCache",
    "Issue",
    "IssueIndex",
    "IssueRef",
    "MineOptions",
    "MineSummary",
    "Rejection",
    "SourceKind",
    "SplitChange",
    "check_change",
    "check_issues",
    "classify_runs",
    "fetch_github_comments",
    "fetch_github_issues",
    "fetch_gitlab_issues",
    "fetch_gitlab_notes",
    "find_links",
    "first_parent_diffs",
    "github_auth",
    "gitlab_auth",
    "hints_before",
    "judge",
    "load_issue_export",
    "mainline_changes",
    "mine",
    "parse_diff_tree",
    "parse_log",
    "pull_request_number",
    "rate_limit_delay",
    "scan_history",
    "split_diff",
    "unfinished_tests",
]
