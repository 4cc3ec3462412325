"""Closing keywords link a change to the issues it closes; nothing else does."""

from __future__ import annotations

import pytest

from evalkit.errors import UsageError
from evalkit.mining import find_links, pull_request_number


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
        ("Closes https://gitlab.acme.internal/group/sub/api/-/issues/8", ["8"]),
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
        "Fixes https://github.com/other/lib/issues/3",  # ... also by URL
        "Fixes #12abc",
        "hotfix #3 and suffixes #4",  # keywords are whole words
        "Merge pull request #40 from a/b",
        "<!-- fixes #3 --> template comment only",
    ],
)
def test_mentions_without_a_closing_keyword_do_not_link(message: str) -> None:
    assert keys(message, repo="acme/api") == []


@pytest.mark.parametrize("pattern", [r"([A-Z]+-\d+)", r"[A-Z]+-\d+", r"(?:PROJ|OPS)-\d+"])
def test_tracker_keys_via_link_pattern_with_or_without_a_group(pattern: str) -> None:
    assert keys("Fixes PROJ-42: null deref", link_pattern=pattern) == ["PROJ-42"]
    assert keys("fixes typo-3 in docs", link_pattern=pattern) == []  # the key keeps its case


def test_an_invalid_link_pattern_is_a_usage_error() -> None:
    with pytest.raises(UsageError, match="link-pattern"):
        keys("Fixes X", link_pattern="([A-Z")


def test_slugs_match_by_name_so_a_local_default_owner_still_links() -> None:
    assert keys("Fixes pallets/itsdangerous#7", repo="local/itsdangerous") == ["7"]


@pytest.mark.parametrize(
    "message,number",
    [
        ("Merge pull request #40 from a/b\n\nAdd retries", "40"),
        ("Add retries (#123)", "123"),
        ("Add retries (#123) for real", None),
        ("Fix #3", None),
    ],
)
def test_merge_and_squash_titles_name_their_pull_request(message: str, number: str | None) -> None:
    assert pull_request_number(message) == number
