"""Issue sources: exports parse, API clients paginate, respect rate limits and cache on disk,
all against a recorded-pages server on 127.0.0.1 (nothing leaves the machine)."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar

import pytest

from evalkit.mining import (
    HttpCache,
    fetch_github_comments,
    fetch_github_issues,
    fetch_gitlab_issues,
    github_auth,
    gitlab_auth,
    load_issue_export,
)

TOKEN = "ghp_secret_token_do_not_store"


def issue(n: int, state: str = "closed", pr: bool = False) -> dict[str, Any]:
    item: dict[str, Any] = {
        "number": n,
        "title": f"Bug {n}",
        "body": f"body {n}",
        "state": state,
        "closed_at": "2025-01-02T00:00:00Z",
        "html_url": f"https://ghe.acme.internal/acme/api/issues/{n}",
    }
    if pr:
        item["pull_request"] = {"url": "x"}
    return item


class Recorded(BaseHTTPRequestHandler):
    pages: ClassVar[dict[str, tuple[int, dict[str, str], Any]]] = {}
    seen: ClassVar[list[tuple[str, str | None]]] = []

    def do_GET(self) -> None:
        Recorded.seen.append(
            (self.path, self.headers.get("Authorization") or self.headers.get("PRIVATE-TOKEN"))
        )
        status, headers, body = Recorded.pages.get(self.path, (404, {}, {"message": "nf"}))
        if status == 403 and Recorded.seen.count((self.path, Recorded.seen[-1][1])) > 1:
            status, headers, body = Recorded.pages[self.path + "#after"]
        self.send_response(status)
        for key, value in headers.items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(json.dumps(body).encode())

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def server() -> Iterator[str]:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Recorded)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{httpd.server_address[1]}"
    Recorded.seen = []
    page1 = "/api/v3/repos/acme/api/issues?state=closed&per_page=100"
    page2 = page1 + "&page=2"
    Recorded.pages = {
        page1: (200, {"Link": f'<{base}{page2}>; rel="next"'}, [issue(1), issue(2, pr=True)]),
        page2: (403, {"X-RateLimit-Remaining": "0", "X-RateLimit-Reset": "0"}, {"m": "rate"}),
        page2 + "#after": (200, {}, [issue(3), issue(4, state="open")]),
        "/api/v3/repos/acme/api/issues/1/comments?per_page=100": (
            200,
            {},
            [{"created_at": "2024-12-30T00:00:00Z", "body": "repro: save twice"}],
        ),
        "/api/v4/projects/acme%2Fweb/issues?state=closed&per_page=100": (
            200,
            {"X-Next-Page": "2"},
            [{"iid": 7, "title": "t", "description": "d", "state": "closed", "web_url": "u"}],
        ),
        "/api/v4/projects/acme%2Fweb/issues?state=closed&per_page=100&page=2": (
            200,
            {},
            [{"iid": 8, "title": "t8", "description": "", "state": "closed"}],
        ),
    }
    yield base
    httpd.shutdown()


def test_github_client_paginates_waits_out_rate_limits_and_caches(
    server: str, tmp_path: Path
) -> None:
    waits: list[float] = []
    http = HttpCache(tmp_path / "cache", TOKEN, github_auth, sleep=waits.append)
    issues = fetch_github_issues(http, f"{server}/api/v3", "acme/api")
    assert sorted(issues) == ["1", "3", "4"]  # the pull request is not an issue
    assert issues["1"].closed and not issues["4"].closed
    assert waits and waits[0] <= 2.0  # bounded wait from X-RateLimit-Reset
    assert all(auth == f"Bearer {TOKEN}" for _, auth in Recorded.seen)
    assert (
        fetch_github_comments(http, f"{server}/api/v3", "acme/api", "1")[0][1]
        == "repro: save twice"
    )
    requests = len(Recorded.seen)
    again = HttpCache(tmp_path / "cache", TOKEN, github_auth, sleep=waits.append)
    assert sorted(fetch_github_issues(again, f"{server}/api/v3", "acme/api")) == ["1", "3", "4"]
    assert len(Recorded.seen) == requests and again.requests == 0  # a re-run makes no calls
    for path in (tmp_path / "cache").iterdir():
        assert TOKEN not in path.read_text() and TOKEN not in path.name


def test_gitlab_client_follows_next_page_header(server: str, tmp_path: Path) -> None:
    http = HttpCache(tmp_path / "cache", "glpat-x", gitlab_auth)
    issues = fetch_gitlab_issues(http, f"{server}/api/v4", "acme/web")
    assert sorted(issues) == ["7", "8"]
    assert Recorded.seen[0][1] == "glpat-x"


def test_rest_export_pages_concatenated_and_gh_cli_json(tmp_path: Path) -> None:
    rest = tmp_path / "rest.json"
    rest.write_text(json.dumps([issue(1), issue(2, pr=True)]) + "\n" + json.dumps([issue(3)]))
    assert sorted(load_issue_export(rest)) == ["1", "3"]
    gh = tmp_path / "gh.json"
    gh.write_text(
        json.dumps(
            [
                {
                    "number": 9,
                    "title": "T",
                    "body": "B",
                    "state": "CLOSED",
                    "createdAt": "2025-01-01",
                    "closedAt": "2025-02-01",
                    "url": "https://x/issues/9",
                    "labels": [],
                }
            ]
        )
    )
    only = load_issue_export(gh)["9"]
    assert only.closed and only.closed_at == "2025-02-01" and only.url.endswith("/9")
