"""Issue sources: an export file, or a GitHub / GitHub Enterprise / GitLab API.

API responses are cached on disk (keyed by URL; the token is never part of a key, a
file or a log), so a re-run makes no repeat calls. Rate limits are honoured with a
bounded wait.
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

MAX_RATE_LIMIT_WAIT_S = 120.0


@dataclass(frozen=True)
class Issue:
    """A closed issue, whatever the tracker."""

    key: str
    title: str
    body: str
    state: str
    closed_at: str = ""
    created_at: str = ""
    url: str = ""
    comments: tuple[tuple[str, str], ...] = field(default=())
    """``(created_at, body)`` pairs, for hints made before the fix."""

    @property
    def closed(self) -> bool:
        return self.state.lower() in {"closed", "close"}


def _issue_from_json(item: dict[str, Any]) -> Issue | None:
    if "pull_request" in item:  # the REST issues list includes pull requests
        return None
    number = item.get("number", item.get("iid"))
    if number is None:
        return None
    return Issue(
        key=str(number),
        title=str(item.get("title") or ""),
        body=str(item.get("body") or item.get("description") or ""),
        state=str(item.get("state") or ""),
        closed_at=str(item.get("closed_at") or item.get("closedAt") or ""),
        created_at=str(item.get("created_at") or item.get("createdAt") or ""),
        url=str(item.get("html_url") or item.get("web_url") or item.get("url") or ""),
    )


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


def load_issue_export(path: Path) -> dict[str, Issue]:
    """Issues from a GitHub REST export (pages concatenated) or ``gh issue list --json``."""
    if not path.is_file():
        raise UsageError("issue export not found", path=str(path))
    try:
        values = list(_json_values(path.read_text(encoding="utf-8")))
    except json.JSONDecodeError as exc:
        raise UsageError(f"not valid JSON ({exc.msg})", path=str(path), line=exc.lineno) from None
    issues = {}
    for item in (i for v in values for i in _flatten(v)):
        issue = _issue_from_json(item)
        if issue is not None:
            issues[issue.key] = issue
    return issues


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

    def get(self, url: str) -> tuple[Any, dict[str, str]]:
        cached = self._path(url)
        if cached.is_file():
            entry = json.loads(cached.read_text())
            return entry["body"], entry["headers"]
        body, headers = self._fetch(url)
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        keep = {k.lower(): v for k, v in headers.items() if k.lower() in {"link", "x-next-page"}}
        cached.write_text(json.dumps({"url": url, "headers": keep, "body": body}))
        return body, keep

    def _fetch(self, url: str) -> tuple[Any, dict[str, str]]:
        waited = 0.0
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
                delay = _rate_limit_delay(exc.code, dict(exc.headers))
                if delay is None:
                    raise UsageError(f"{exc.code} {exc.reason} from {_redact(url)}") from None
                if waited + delay > MAX_RATE_LIMIT_WAIT_S:
                    raise UsageError(f"rate limited by {_redact(url)}; retry later") from None
                self._sleep(delay)
                waited += delay
            except urllib.error.URLError as exc:
                raise UsageError(f"cannot reach {_redact(url)}: {exc.reason}") from None


def _redact(url: str) -> str:
    parts = urllib.parse.urlsplit(url)
    return urllib.parse.urlunsplit((parts.scheme, parts.netloc, parts.path, "", ""))


def _rate_limit_delay(status: int, headers: dict[str, str]) -> float | None:
    lower = {k.lower(): v for k, v in headers.items()}
    if status not in (403, 429):
        return None
    if "retry-after" in lower:
        return max(float(lower["retry-after"]), 0.0)
    if lower.get("x-ratelimit-remaining") == "0" and "x-ratelimit-reset" in lower:
        return max(float(lower["x-ratelimit-reset"]) - time.time(), 0.0) + 1.0
    return 5.0 if status == 429 else None


def _next_link(headers: dict[str, str]) -> str | None:
    match = re.search(r'<([^>]+)>;\s*rel="next"', headers.get("link", ""))
    return match.group(1) if match else None


def _all_issues(http: HttpCache, first: str) -> dict[str, Issue]:
    """Follow pagination (``Link: rel="next"``, or GitLab's ``X-Next-Page``) to the end."""
    url: str | None = first
    issues: dict[str, Issue] = {}
    while url:
        body, headers = http.get(url)
        for item in _flatten(body):
            issue = _issue_from_json(item)
            if issue is not None:
                issues[issue.key] = issue
        url = _next_link(headers)
        if url is None and headers.get("x-next-page"):
            url = f"{first}&page={headers['x-next-page']}"
    return issues


def fetch_github_issues(http: HttpCache, api_url: str, repo: str) -> dict[str, Issue]:
    """Closed issues of ``owner/name`` from the GitHub (Enterprise) REST API, all pages."""
    return _all_issues(http, f"{api_url.rstrip('/')}/repos/{repo}/issues?state=closed&per_page=100")


def fetch_github_comments(
    http: HttpCache, api_url: str, repo: str, key: str
) -> tuple[tuple[str, str], ...]:
    body, _ = http.get(f"{api_url.rstrip('/')}/repos/{repo}/issues/{key}/comments?per_page=100")
    return tuple((str(c.get("created_at", "")), str(c.get("body") or "")) for c in _flatten(body))


def fetch_gitlab_issues(http: HttpCache, api_url: str, project: str) -> dict[str, Issue]:
    """Closed issues of a GitLab project (path or id), all pages."""
    quoted = urllib.parse.quote(project, safe="")
    return _all_issues(
        http, f"{api_url.rstrip('/')}/projects/{quoted}/issues?state=closed&per_page=100"
    )


def github_auth(token: str) -> tuple[str, str]:
    return "Authorization", f"Bearer {token}"


def gitlab_auth(token: str) -> tuple[str, str]:
    return "PRIVATE-TOKEN", token
