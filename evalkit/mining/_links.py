"""Which issues a change closes: closing keywords in commit messages, parsed as text."""

from __future__ import annotations

import re
from dataclasses import dataclass

KEYWORDS = r"(?:fix(?:e[sd])?|close[sd]?|resolve[sd]?)"
_REF = (
    r"(?:(?P<url>https?://[^\s)>\]]+?/(?:-/)?issues/(?P<url_num>\d+))"
    r"|(?P<slug>[\w.-]+/[\w.-]+)#(?P<slug_num>\d+)"
    r"|GH-(?P<gh_num>\d+)"
    r"|#(?P<num>\d+))"
)
_REF_PLAIN = re.sub(r"\?P<\w+>", "?:", _REF)
# "Fixes #1, #2 and #3": a keyword may govern a list of references.
_CLOSING = re.compile(
    rf"\b{KEYWORDS}\b:?\s+(?P<refs>{_REF_PLAIN}(?:\s*(?:,|and|&)\s*{_REF_PLAIN})*)",
    re.IGNORECASE,
)
_ONE_REF = re.compile(_REF, re.IGNORECASE)


@dataclass(frozen=True)
class IssueRef:
    """A reference to an issue: a number in this repository, or a tracker key."""

    key: str
    """``"123"`` for forge issues, or the tracker key (``"PROJ-42"``) for --link-pattern."""
    url: str = ""


def _strip_comments(text: str) -> str:
    return re.sub(r"<!--.*?-->", "", text, flags=re.S)


def find_links(message: str, *, repo: str = "", link_pattern: str | None = None) -> list[IssueRef]:
    """Issues that ``message`` says it closes, in order, without duplicates.

    ``#N``, ``GH-N``, ``owner/repo#N`` (only when it names ``repo``, if given) and full
    issue URLs on any host count after a closing keyword. ``(#123)`` alone names a pull
    request, not an issue, and does not count. ``link_pattern`` (a regex with one group,
    e.g. ``(PROJ-\\d+)``) adds tracker keys, matched after a closing keyword too.
    """
    text = _strip_comments(message)
    found: dict[str, IssueRef] = {}
    for match in _CLOSING.finditer(text):
        for ref in _ONE_REF.finditer(match.group("refs")):
            if ref.group("slug") and repo and ref.group("slug").lower() != repo.lower():
                continue  # another repository's issue
            number = next(
                ref.group(g) for g in ("url_num", "slug_num", "gh_num", "num") if ref.group(g)
            )
            found.setdefault(number, IssueRef(number, ref.group("url") or ""))
    if link_pattern:
        custom = re.compile(rf"\b{KEYWORDS}\b:?\s+(?:{link_pattern})", re.IGNORECASE)
        for match in custom.finditer(text):
            key = match.group(1) if match.groups() else match.group(0)
            found.setdefault(key, IssueRef(key))
    return list(found.values())
