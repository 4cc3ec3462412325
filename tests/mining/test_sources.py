"""Issue sources: exports parse, API clients paginate, respect rate limits and cache on disk,
all against a recorded-pages server on 127.0.0.1 (nothing leaves the machine)."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar

import pytest

from evalkit.errors import UsageError
from evalkit.mining import (
    HttpCache,
    fetch_github_issues,
    fetch_gitlab_issues,
    github_auth,
    gitlab_auth,
    hints_before,
    load_issue_export,
    rate_limit_delay,
)

TOKEN = "ghp_secret_token_do_not_store"
Reply = tuple[int, dict[str, str], Any]


def issue(n: int, state: str = "closed", pr: bool = False, comments: int = 0) -> dict[str, Any]:
    item: dict[str, Any] = {
        "number": n,
        "title": f"Bug {n}",
        "body": f"body {n}",
        "state": state,
        "closed_at": "2025-01-02T00:00:00Z" if state == "closed" else None,
        "html_url": f"https://ghe.acme.internal/acme/api/issues/{n}",
        "comments": comments,
    }
    if pr:
        item["pull_request"] = {"url": "x"}
    return item


class Recorded(BaseHTTPRequestHandler):
    """Serves recorded replies by path; a list of replies is played in order, the last
    one repeating (a rate limit, then the page)."""

    replies: ClassVar[dict[str, list[Reply]]] = {}
    seen: ClassVar[list[tuple[str, str | None]]] = []

    def do_GET(self) -> None:
        token = self.headers.get("Authorization") or self.headers.get("PRIVATE-TOKEN")
        Recorded.seen.append((self.path, token))
        queue = Recorded.replies.get(self.path, [(404, {}, {"message": "Not Found"})])
        status, headers, body = queue.pop(0) if len(queue) > 1 else queue[0]
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
    Recorded.seen = []
    Recorded.replies = {}
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


GH = "/api/v3/repos/acme/api/issues"


def record_github(base: str) -> None:
    page1, page2 = f"{GH}?state=all&per_page=100", f"{GH}?state=all&per_page=100&page=2"
    Recorded.replies.update(
        {
            page1: [
                (
                    200,
                    {"Link": f'<{base}{page2}>; rel="next", <{base}{page2}>; rel="last"'},
                    [issue(1, comments=1), issue(2, pr=True), issue(5)],
                )
            ],
            # A primary rate limit whose reset is now: waited out, then served.
            page2: [
                (
                    403,
                    {"X-RateLimit-Remaining": "0", "X-RateLimit-Reset": str(int(time.time()))},
                    {"message": "API rate limit exceeded"},
                ),
                (200, {}, [issue(3), issue(4, state="open")]),
            ],
            f"{GH}/1/comments?per_page=100": [
                (
                    200,
                    {},
                    [
                        {"created_at": "2024-12-30T00:00:00Z", "body": "repro: save twice"},
                        {"created_at": "2025-03-01T00:00:00Z", "body": "after the fix"},
                    ],
                )
            ],
        }
    )


def test_github_client_paginates_waits_out_a_rate_limit_and_keeps_prs_apart(
    server: str, tmp_path: Path
) -> None:
    record_github(server)
    waits: list[float] = []
    http = HttpCache(tmp_path / "cache", TOKEN, github_auth, sleep=waits.append)
    index = fetch_github_issues(http, f"{server}/api/v3", "acme/api")
    assert sorted(index) == ["1", "3", "4", "5"]
    assert sorted(index.pull_requests) == ["2"]  # a pull request is not an issue
    assert len(waits) == 1 and 0 < waits[0] <= 2.0  # bounded by X-RateLimit-Reset
    assert all(auth == f"Bearer {TOKEN}" for _, auth in Recorded.seen)


def test_a_rerun_is_served_from_the_cache_which_never_holds_the_token(
    server: str, tmp_path: Path
) -> None:
    record_github(server)
    http = HttpCache(tmp_path / "cache", TOKEN, github_auth, sleep=lambda _: None)
    index = fetch_github_issues(http, f"{server}/api/v3", "acme/api")
    assert index.comments(index["1"])[0][1] == "repro: save twice"
    assert index.comments(index["5"]) == ()  # the listing said 0 comments: no request
    before = len(Recorded.seen)
    again = HttpCache(tmp_path / "cache", TOKEN, github_auth, sleep=lambda _: None)
    index = fetch_github_issues(again, f"{server}/api/v3", "acme/api")
    assert sorted(index) == ["1", "3", "4", "5"]
    assert len(index.comments(index["1"])) == 2
    assert len(Recorded.seen) == before and again.requests == 0
    files = list((tmp_path / "cache").rglob("*"))
    assert files
    for path in files:
        assert TOKEN not in path.name and TOKEN.encode() not in path.read_bytes()


def test_issues_missing_or_open_in_a_cached_listing_are_looked_up_one_by_one(
    server: str, tmp_path: Path
) -> None:
    record_github(server)
    Recorded.replies[f"{GH}/9"] = [(200, {}, issue(9))]
    Recorded.replies[f"{GH}/4"] = [(200, {}, issue(4, state="closed"))]
    http = HttpCache(tmp_path / "cache", None, github_auth, sleep=lambda _: None)
    index = fetch_github_issues(http, f"{server}/api/v3", "acme/api")
    found = index.lookup("9")  # closed after the listing was cached
    assert found is not None and found.closed
    assert index.lookup("4") is not None and index["4"].closed  # was open when listed
    assert index.lookup("77") is None  # 404: no such issue, and not an error
    paths = [p for p, _ in Recorded.seen]
    assert paths.count(f"{GH}/9") == paths.count(f"{GH}/4") == paths.count(f"{GH}/77") == 1
    assert all(auth is None for _, auth in Recorded.seen)  # no token, no header


def test_a_rate_limit_beyond_the_bound_fails_fast_without_waiting(
    server: str, tmp_path: Path
) -> None:
    path = f"{GH}?state=all&per_page=100"
    reset = str(int(time.time()) + 3600)
    Recorded.replies[path] = [(403, {"X-RateLimit-Remaining": "0", "X-RateLimit-Reset": reset}, {})]
    waits: list[float] = []
    http = HttpCache(tmp_path / "cache", TOKEN, github_auth, sleep=waits.append)
    with pytest.raises(UsageError, match="rate limited") as caught:
        fetch_github_issues(http, f"{server}/api/v3", "acme/api")
    assert waits == [] and TOKEN not in str(caught.value)


def test_server_errors_are_retried_a_bounded_number_of_times(server: str, tmp_path: Path) -> None:
    path = f"{GH}?state=all&per_page=100"
    Recorded.replies[path] = [(502, {}, {}), (200, {}, [issue(1)])]
    http = HttpCache(tmp_path / "a", None, github_auth, sleep=lambda _: None)
    assert list(fetch_github_issues(http, f"{server}/api/v3", "acme/api")) == ["1"]
    Recorded.replies[path] = [(503, {}, {})]
    http = HttpCache(tmp_path / "b", None, github_auth, sleep=lambda _: None)
    with pytest.raises(UsageError, match="503"):
        fetch_github_issues(http, f"{server}/api/v3", "acme/api")


def test_rate_limit_headers_of_both_forges_give_a_wait() -> None:
    now = 1_000.0
    assert rate_limit_delay(429, {"Retry-After": "3"}, now) == 3.0
    assert rate_limit_delay(403, {"x-ratelimit-remaining": "0", "x-ratelimit-reset": "1010"}, now)
    assert rate_limit_delay(429, {"RateLimit-Remaining": "0", "RateLimit-Reset": "1004"}, now)
    assert rate_limit_delay(403, {"X-RateLimit-Remaining": "12"}, now) is None  # a real 403
    assert rate_limit_delay(500, {"Retry-After": "3"}, now) is None


def test_gitlab_client_follows_next_page_and_skips_system_notes(
    server: str, tmp_path: Path
) -> None:
    base = "/api/v4/projects/acme%2Fweb/issues"
    Recorded.replies.update(
        {
            f"{base}?state=all&per_page=100": [
                (
                    200,
                    {"X-Next-Page": "2"},
                    [
                        {
                            "iid": 7,
                            "title": "t",
                            "description": "d",
                            "state": "closed",
                            "web_url": "https://gitlab.acme.internal/acme/web/-/issues/7",
                            "user_notes_count": 2,
                        }
                    ],
                )
            ],
            f"{base}?state=all&per_page=100&page=2": [
                (200, {}, [{"iid": 8, "title": "t8", "description": "", "state": "opened"}])
            ],
            f"{base}/7/notes?per_page=100&sort=asc": [
                (
                    200,
                    {},
                    [
                        {"created_at": "2025-01-01T10:00:00Z", "body": "closed", "system": True},
                        {"created_at": "2025-01-01T09:00:00Z", "body": "stack trace here"},
                    ],
                )
            ],
        }
    )
    http = HttpCache(tmp_path / "cache", "glpat-x", gitlab_auth)
    index = fetch_gitlab_issues(http, f"{server}/api/v4", "acme/web")
    assert sorted(index) == ["7", "8"]
    assert index["7"].closed and not index["8"].closed
    assert index.comments(index["7"]) == (("2025-01-01T09:00:00Z", "stack trace here"),)
    assert {auth for _, auth in Recorded.seen} == {"glpat-x"}


def test_hints_are_comments_made_before_the_fix_whatever_the_time_zone() -> None:
    comments = (
        ("2024-03-01T09:10:00Z", "second"),
        ("2024-03-01T11:00:00+02:00", "first"),  # 09:00 UTC: before, though "11" > "09"
        ("2024-03-01T09:00:00-01:00", "late"),  # 10:00 UTC: after, though "09:00" < "09:30"
    )
    assert hints_before(comments, "2024-03-01T09:30:00Z") == "first\n\nsecond"
    assert hints_before(comments, "2024-03-01T10:05:00+01:00") == "first"


def test_rest_export_pages_concatenated_and_gh_cli_json(tmp_path: Path) -> None:
    rest = tmp_path / "rest.json"
    rest.write_text(json.dumps([issue(1), issue(2, pr=True)]) + "\n" + json.dumps([issue(3)]))
    index = load_issue_export(rest)
    assert sorted(index) == ["1", "3"] and sorted(index.pull_requests) == ["2"]
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


def test_a_broken_export_is_a_usage_error_naming_the_file(tmp_path: Path) -> None:
    bad = tmp_path / "issues.json"
    bad.write_text('[{"number": 1,')
    with pytest.raises(UsageError, match=r"issues\.json"):
        load_issue_export(bad)


def test_a_squash_commit_links_the_issues_its_pull_request_closed(tmp_path: Path) -> None:
    """gh's ``closedByPullRequestsReferences`` names the pull request that closed an
    issue; a squash commit ``Title (#12)`` with no closing keyword then links it."""
    from evalkit.mining._candidates import MineOptions
    from evalkit.mining._history import Change, Commit
    from evalkit.mining._mine import _select

    export = tmp_path / "gh.json"
    export.write_text(
        json.dumps(
            [
                {
                    "number": 5,
                    "title": "Crash on empty input",
                    "body": "...",
                    "state": "CLOSED",
                    "closedAt": "2024-02-01T00:00:00Z",
                    "closedByPullRequestsReferences": [{"number": 12, "url": "x"}],
                },
                {"number": 6, "title": "Other", "body": "", "state": "CLOSED"},
            ]
        )
    )
    index = load_issue_export(export)
    assert index.closed_by == {"12": ["5"]}
    squash = Change(Commit("b" * 40, ("a" * 40,), "", "2024-02-01", "Handle empty input (#12)"))
    plain = Change(Commit("c" * 40, ("b" * 40,), "", "2024-02-02", "Tidy (#13)"))
    plan, linked, _ = _select(
        [plain, squash], {}, index, repo_name="o/r", source="export", options=MineOptions()
    )
    assert [r.key for item in linked for r in item.refs] == ["5"]
    assert [c.pull_request for c in plan] == ["12"]
