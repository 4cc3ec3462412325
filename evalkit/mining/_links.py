"""Which issues a change closes: closing keywords in commit messages, parsed as text."""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass

from evalkit.errors import UsageError

KEYWORDS = r"(?:fix(?:e[sd])?|close[sd]?|resolve[sd]?)"
_REF = (
    r"(?:(?P<url>https?://[^\s)>\]]+?/(?P<url_name>[\w.-]+)/(?:-/)?issues/(?P<url_num>\d+))\b"
    r"|(?P<slug>[\w.-]+/[\w.-]+)#(?P<slug_num>\d+)\b"
    r"|GH-(?P<gh_num>\d+)\b"
    r"|#(?P<num>\d+)\b)"
)
_REF_PLAIN = re.sub(r"\?P<\w+>", "?:", _REF)
# "Fixes #1, #2 and #3": a keyword may govern a list of references.
_CLOSING = re.compile(
    rf"\b{KEYWORDS}\b:?\s+(?P<refs>{_REF_PLAIN}(?:\s*(?:,|and|&)\s*{_REF_PLAIN})*)",
    re.IGNORECASE,
)
_ONE_REF = re.compile(_REF, re.IGNORECASE)
# How merges name their pull request: GitHub's merge commit title, or a squash title's
# trailing "(#123)".
_PR_MERGE = re.compile(r"^Merge pull request #(\d+) from ", re.MULTILINE)
_PR_SQUASH = re.compile(r"\(#(\d+)\)\s*$")


@dataclass(frozen=True)
class IssueRef:
    """A reference to an issue: a number in this repository, or a tracker key."""

    key: str
    """``"123"`` for forge issues, or the tracker key (``"PROJ-42"``) for --link-pattern."""
    url: str = ""


def _strip_comments(text: str) -> str:
    return re.sub(r"<!--.*?-->", "", text, flags=re.S)


def _same_repo(named: str, repo: str) -> bool:
    # Compare names, not owners: a local mine's default owner ("local/x") is made up,
    # and a URL on a self-hosted forge may carry a group path.
    return named.rsplit("/", 1)[-1].lower() == repo.rsplit("/", 1)[-1].lower()


def find_links(message: str, *, repo: str = "", link_pattern: str | None = None) -> list[IssueRef]:
    """Issues that ``message`` says it closes, in order, without duplicates.

    ``#N``, ``GH-N``, ``owner/repo#N`` and full issue URLs on any host count after a
    closing keyword; the last two only when they name ``repo`` (if given). ``(#123)``
    alone names a pull request, not an issue, and does not count. ``link_pattern`` (a
    regex with one group, e.g. ``(PROJ-\\d+)``) adds tracker keys, matched after a
    closing keyword too.
    """
    text = _strip_comments(message)
    found: dict[str, IssueRef] = {}
    for match in _CLOSING.finditer(text):
        for ref in _ONE_REF.finditer(match.group("refs")):
            named = ref.group("slug") or ref.group("url_name")
            if named and repo and not _same_repo(named, repo):
                continue  # another repository's issue
            number = next(
                ref.group(g) for g in ("url_num", "slug_num", "gh_num", "num") if ref.group(g)
            )
            found.setdefault(number, IssueRef(number, ref.group("url") or ""))
    if link_pattern:
        for match in _custom(link_pattern).finditer(text):
            own = match.group(2) if match.re.groups > 1 else None
            key = own if own is not None else match.group(1)
            found.setdefault(key, IssueRef(key))
    return list(found.values())


@functools.lru_cache(maxsize=8)
def _custom(link_pattern: str) -> re.Pattern[str]:
    # Keywords are case-insensitive; the tracker's key pattern keeps its own case
    # rules (``[A-Z]+-\d+`` must not match "typo-3"). Group 1 is the whole key, group
    # 2 the pattern's own first group, if it has one.
    try:
        return re.compile(rf"(?i:\b{KEYWORDS}\b):?\s+({link_pattern})")
    except re.error as exc:
        raise UsageError(f"--link-pattern {link_pattern!r} is not a valid regex: {exc}") from None


def pull_request_number(message: str) -> str | None:
    """The pull request a merge or squash commit names (``Merge pull request #7 from ...``,
    ``Title (#7)``), whose title and body may hold the closing keywords instead."""
    title = message.strip().splitlines()[0] if message.strip() else ""
    match = _PR_MERGE.match(title) or _PR_SQUASH.search(title)
    return match.group(1) if match else None
