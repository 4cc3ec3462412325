"""Closing keywords link a change to the issues it closes; nothing else does."""

from __future__ import annotations

import pytest

from evalkit.mining import find_links


def keys(message: str, **kw: str) -> list[str]:
    return [r.key for r in find_links(message, **kw)]


@pytest.mark.parametrize(
    "message,expected",
    [
        ("Fix crash on save (fixes #12)", ["12"]),
        ("fixed #3 and closes #4", ["3", "4"]),
        ("Resolves: #7", ["7"]),
        ("Fixes #1, #2 and #5", ["1", "2", "5"]),
        ("This closes GH-44", ["44"]),
        ("Fixes acme/api#9", ["9"]),
        ("Fixes https://git.acme.internal/acme/api/issues/31", ["31"]),
        ("Closes https://gitlab.acme.internal/web/app/-/issues/8", ["8"]),
        ("RESOLVED #100", ["100"]),
    ],
)
def test_closing_keywords_link_issues(message: str, expected: list[str]) -> None:
    assert keys(message, repo="acme/api") == expected


@pytest.mark.parametrize(
    "message",
    [
        "Add retries (#123)",  # a squash merge names the PR, not an issue
        "See #12 for context",
        "Prefix fixes-#12",
        "Fixes other/repo#9",  # another repository's issue
        "Merge pull request #40 from a/b",
        "<!-- fixes #3 --> template comment only",
    ],
)
def test_mentions_without_a_closing_keyword_do_not_link(message: str) -> None:
    assert keys(message, repo="acme/api") == []


def test_tracker_keys_via_link_pattern() -> None:
    assert keys("Fixes PROJ-42: null deref", link_pattern=r"([A-Z]+-\d+)") == ["PROJ-42"]
