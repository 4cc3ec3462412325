"""Issue sources: an export file, or a GitHub / GitHub Enterprise / GitLab API.

API responses are cached on disk, keyed by URL: the token travels only in a request
header and is never part of a key, a file or a message. A re-run makes no repeat
calls. Rate limits are waited out within a bound. Only an issue that is still open
is fetched again, since a new commit may have closed it since the last run.
"""

from __future__ import annotations

import hashlib
import json
import re
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from evalkit.errors import UsageError
from evalkit.records import write_atomic

MAX_RATE_LIMIT_WAIT_S = 120.0
_SERVER_ERROR_RETRIES = 2
_KEPT_HEADERS = frozenset({"link", "x-next-page"})

Comments = tuple[tuple[str, str], ...]


@dataclass(frozen=True)
class Issue:
    """An issue (or, in :attr:`IssueIndex.pull_requests`, a pull request), any tracker."""

    key: str
    title: str
    body: str
    state: str
    closed_at: str = ""
    created_at: str = ""
    url: str = ""
    comments: Comments = field(default=())
    """``(created_at, body)`` pairs, for hints made before the fix."""
    comment_count: int | None = None
    """What the listing said, so issues without comments cost no request."""

    @property
    def closed(self) -> bool:
        return self.state.lower() in {"closed", "close", "merged"}


class IssueIndex(dict[str, Issue]):
    """Issues by key, plus the pull requests the same listing carried (their bodies may
    close issues for a merge commit), and, for API sources, lookups of what a cached
    listing lacks. Look up with ``index[key]``: an API source fetches a missing or
    still-open issue then."""

    def __init__(
        self,
        issues: dict[str, Issue] | None = None,
        pull_requests: dict[str, Issue] | None = None,
        *,
        fetch_one: Callable[[str], Issue | None] | None = None,
        fetch_comments: Callable[[str], Comments] | None = None,
    ):
        super().__init__(issues or {})
        self.pull_requests = pull_requests or {}
        self.closed_by: dict[str, list[str]] = {}
        """Pull request number -> the issues the export says it closed (gh's
        ``closedByPullRequestsReferences``): links a squash commit ``Title (#N)``."""
        self._fetch_one = fetch_one
        self._fetch_comments = fetch_comments
        self._refreshed: set[str] = set()

    def __missing__(self, key: str) -> Issue:
        if self._fetch_one is None or key in self._refreshed:
            raise KeyError(key)
        self._refreshed.add(key)
        found = self._fetch_one(key)
        if found is None:
            raise KeyError(key)
        self[key] = found
        return found

    def lookup(self, key: str) -> Issue | None:
        """The issue ``key``; an API source re-reads one its listing shows open."""
        try:
            issue = self[key]
        except KeyError:
            return None
        if not issue.closed and self._fetch_one is not None and key not in self._refreshed:
            self._refreshed.add(key)
            fresh = self._fetch_one(key)
            if fresh is not None:
                self[key] = issue = fresh
        return issue

    def comments(self, issue: Issue) -> Comments:
        if issue.comments or self._fetch_comments is None or issue.comment_count == 0:
            return issue.comments
        return self._fetch_comments(issue.key)


def _issue_from_json(item: dict[str, Any]) -> Issue | None:
    number = item.get("number", item.get("iid"))
    if number is None:
        return None
    count = item.get("comments", item.get("user_notes_count"))
    return Issue(
        key=str(number),
        title=str(item.get("title") or ""),
        body=str(item.get("body") or item.get("description") or ""),
        state=str(item.get("state") or ""),
        closed_at=str(item.get("closed_at") or item.get("closedAt") or ""),
        created_at=str(item.get("created_at") or item.get("createdAt") or ""),
        url=str(item.get("html_url") or item.get("web_url") or item.get("url") or ""),
        comment_count=count if isinstance(count, int) else None,
    )


def _index(items: Iterator[dict[str, Any]], index: IssueIndex) -> IssueIndex:
    for item in items:
        issue = _issue_from_json(item)
        if issue is None:
            continue
        # The REST issues list includes pull requests; they never count as issues.
        target = index.pull_requests if "pull_request" in item else index
        target[issue.key] = issue
        closers = item.get("closedByPullRequestsReferences") or item.get("closed_by_pull_requests")
        for pr in closers if isinstance(closers, list) else []:
            number = pr.get("number") if isinstance(pr, dict) else pr
            if isinstance(number, (int, str)) and str(number).isdigit():
                index.closed_by.setdefault(str(number), []).append(issue.key)
    return index


def _json_values(text: str) -> Iterator[Any]:
    """One JSON document, or several concatenated (API pages saved one after another)."""
    decoder = json.JSONDecoder()
    pos = 0
    while pos < len(text):
        while pos < len(text) and text[pos].isspace():
            pos += 1
        if pos >= len(text):
            return
        value, pos = decoder.raw_decode(text, pos)
        yield value


def _flatten(value: Any) -> Iterator[dict[str, Any]]:
    if isinstance(value, list):
        for item in value:
            yield from _flatten(item)
    elif isinstance(value, dict):
        yield value


def load_issue_export(path: Path) -> IssueIndex:
    """Issues from a GitHub REST export (pages concatenated) or ``gh issue list --json``."""
    if not path.is_file():
        raise UsageError("issue export not found", path=str(path))
    try:
        values = list(_json_values(path.read_text(encoding="utf-8")))
    except json.JSONDecodeError as exc:
        raise UsageError(f"not valid JSON ({exc.msg})", path=str(path), line=exc.lineno) from None
    return _index((i for v in values for i in _flatten(v)), IssueIndex())


# --- HTTP with a disk cache ------------------------------------------------------


class HttpCache:
    """GET with a disk cache and rate-limit handling. Tokens go in headers only."""

    def __init__(
        self,
        cache_dir: Path,
        token: str | None,
        auth_header: Callable[[str], tuple[str, str]],
        *,
        sleep: Callable[[float], None] = time.sleep,
    ):
        self.cache_dir = cache_dir
        self._token = token
        self._auth_header = auth_header
        self._sleep = sleep
        self.requests = 0

    def _path(self, url: str) -> Path:
        return self.cache_dir / (hashlib.sha256(url.encode()).hexdigest() + ".json")

    def get(
        self, url: str, *, keep: Callable[[Any], bool] = lambda _: True
    ) -> tuple[Any, dict[str, str]]:
        """The JSON body and paging headers of ``url``; cached when ``keep(body)``."""
        found = self.get_optional(url, keep=keep)
        if found is None:
            raise UsageError(f"404 Not Found from {_redact(url)}")
        return found

    def get_optional(
        self, url: str, *, keep: Callable[[Any], bool] = lambda _: True
    ) -> tuple[Any, dict[str, str]] | None:
        """Like :meth:`get`, but ``None`` for a 404/410 (not cached: it may appear)."""
        cached = self._path(url)
        if cached.is_file():
            entry = json.loads(cached.read_text())
            return entry["body"], entry["headers"]
        fetched = self._fetch(url)
        if fetched is None:
            return None
        body, headers = fetched
        paging = {k.lower(): v for k, v in headers.items() if k.lower() in _KEPT_HEADERS}
        if keep(body):
            write_atomic(cached, json.dumps({"url": url, "headers": paging, "body": body}))
        return body, paging

    def _fetch(self, url: str) -> tuple[Any, dict[str, str]] | None:
        waited = 0.0
        server_errors = 0
        while True:
            request = urllib.request.Request(
                url, headers={"Accept": "application/json", "User-Agent": "evalkit"}
            )
            if self._token:
                name, value = self._auth_header(self._token)
                request.add_header(name, value)
            self.requests += 1
            try:
                with urllib.request.urlopen(request, timeout=60) as response:
                    return json.loads(response.read().decode()), dict(response.headers)
            except urllib.error.HTTPError as exc:
                if exc.code in (404, 410):
                    return None
                if exc.code in (502, 503, 504) and server_errors < _SERVER_ERROR_RETRIES:
                    server_errors += 1
                    self._sleep(float(server_errors))
                    continue
                delay = rate_limit_delay(exc.code, dict(exc.headers), time.time())
                if delay is None:
                    raise UsageError(f"{exc.code} {exc.reason} from {_redact(url)}") from None
                if waited + delay > MAX_RATE_LIMIT_WAIT_S:
                    raise UsageError(
                        f"rate limited by {_redact(url)} for {delay:.0f} s more; retry later"
                    ) from None
                self._sleep(delay)
                waited += delay
            except urllib.error.URLError as exc:
                raise UsageError(f"cannot reach {_redact(url)}: {exc.reason}") from None


def _redact(url: str) -> str:
    parts = urllib.parse.urlsplit(url)
    return urllib.parse.urlunsplit((parts.scheme, parts.netloc, parts.path, "", ""))


def rate_limit_delay(status: int, headers: dict[str, str], now: float) -> float | None:
    """Seconds to wait before retrying, or None when ``status`` is no rate limit.

    GitHub: ``Retry-After`` (secondary limits) or ``X-RateLimit-Remaining: 0`` with
    ``X-RateLimit-Reset`` (epoch seconds). GitLab: ``Retry-After`` or ``RateLimit-*``.
    """
    lower = {k.lower(): v for k, v in headers.items()}
    if status not in (403, 429):
        return None
    if "retry-after" in lower:
        try:
            return max(float(lower["retry-after"]), 0.0)
        except ValueError:
            return 60.0  # an HTTP date: rare; wait a minute
    for prefix in ("x-ratelimit-", "ratelimit-"):
        if lower.get(prefix + "remaining") == "0" and prefix + "reset" in lower:
            return max(float(lower[prefix + "reset"]) - now, 0.0) + 1.0
    return 5.0 if status == 429 else None


def _next_link(headers: dict[str, str]) -> str | None:
    match = re.search(r'<([^>]+)>;\s*rel="next"', headers.get("link", ""))
    return match.group(1) if match else None


def _pages(http: HttpCache, first: str) -> Iterator[dict[str, Any]]:
    """Items of every page (``Link: rel="next"``, or GitLab's ``X-Next-Page``)."""
    url: str | None = first
    while url:
        body, headers = http.get(url)
        yield from _flatten(body)
        url = _next_link(headers)
        if url is None and headers.get("x-next-page"):
            url = f"{first}&page={headers['x-next-page']}"


def _is_closed(body: Any) -> bool:
    return isinstance(body, dict) and str(body.get("state", "")).lower() == "closed"


def _single(http: HttpCache, url: str) -> Issue | None:
    # A closed issue is settled; an open one is re-read on the next run.
    found = http.get_optional(url, keep=_is_closed)
    if found is None or not isinstance(found[0], dict) or "pull_request" in found[0]:
        return None
    return _issue_from_json(found[0])


def fetch_github_issues(http: HttpCache, api_url: str, repo: str) -> IssueIndex:
    """Issues and pull requests of ``owner/name`` from the GitHub (Enterprise) REST API,
    all pages; issues missing from a cached listing are fetched one by one on lookup."""
    base = f"{api_url.rstrip('/')}/repos/{repo}/issues"
    return _index(
        _pages(http, f"{base}?state=all&per_page=100"),
        IssueIndex(
            fetch_one=lambda key: _single(http, f"{base}/{key}"),
            fetch_comments=lambda key: fetch_github_comments(http, api_url, repo, key),
        ),
    )


def fetch_github_comments(http: HttpCache, api_url: str, repo: str, key: str) -> Comments:
    url = f"{api_url.rstrip('/')}/repos/{repo}/issues/{key}/comments?per_page=100"
    return tuple(
        (str(c.get("created_at", "")), str(c.get("body") or "")) for c in _pages(http, url)
    )


def fetch_gitlab_issues(http: HttpCache, api_url: str, project: str) -> IssueIndex:
    """Issues of a GitLab project (path or id), all pages; comments are its notes."""
    base = f"{api_url.rstrip('/')}/projects/{urllib.parse.quote(project, safe='')}/issues"
    return _index(
        _pages(http, f"{base}?state=all&per_page=100"),
        IssueIndex(
            fetch_one=lambda key: _single(http, f"{base}/{key}"),
            fetch_comments=lambda key: fetch_gitlab_notes(http, api_url, project, key),
        ),
    )


def fetch_gitlab_notes(http: HttpCache, api_url: str, project: str, key: str) -> Comments:
    quoted = urllib.parse.quote(project, safe="")
    url = f"{api_url.rstrip('/')}/projects/{quoted}/issues/{key}/notes?per_page=100&sort=asc"
    return tuple(
        (str(n.get("created_at", "")), str(n.get("body") or ""))
        for n in _pages(http, url)
        if not n.get("system")  # "changed the description", "closed": not a hint
    )


def github_auth(token: str) -> tuple[str, str]:
    return "Authorization", f"Bearer {token}"


def gitlab_auth(token: str) -> tuple[str, str]:
    return "PRIVATE-TOKEN", token
