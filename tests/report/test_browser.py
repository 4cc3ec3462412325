"""The report renders in a real headless browser: its script runs and the page is drawn."""

from __future__ import annotations

import shutil
import subprocess
import zlib
from pathlib import Path

import pytest

from evalkit.records import Status
from evalkit.report import build_report
from tests.conftest import IN_CI
from tests.report.conftest import write_run, write_tasks

FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@pytest.fixture(scope="module")
def chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found is None:
        if IN_CI:
            pytest.fail("CI=true but chromium is missing (scripts/setup.sh installs it)")
        pytest.skip("chromium is not installed")
    return found


@pytest.fixture
def page(tmp_path: Path) -> Path:
    tasks = write_tasks(tmp_path / "tasks", 12, problem="<img src=x onerror=alert(1)> broken")
    write_run(
        tmp_path / "runs",
        "r",
        tasks,
        {
            "claude-opus-4-5": lambda iid, i, r: Status.RESOLVED if i % 3 else Status.UNRESOLVED,
            "team/agent": lambda iid, i, r: Status.RESOLVED if i % 2 else Status.PATCH_FAILED,
        },
    )
    return build_report(["r"], runs_dir=tmp_path / "runs", out=tmp_path / "report.html").html_path


def run(chromium: str, tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [chromium, *FLAGS, f"--user-data-dir={tmp_path / 'profile'}", *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_page_script_runs_without_errors(chromium: str, page: Path, tmp_path: Path) -> None:
    result = run(
        chromium, tmp_path, "--enable-logging=stderr", "--v=0", "--dump-dom", page.as_uri()
    )
    assert 'data-ready="1"' in result.stdout  # the sort script ran to its end
    assert "Uncaught" not in result.stderr
    assert "<img src=x" not in result.stdout  # untrusted text stayed text


def test_screenshot_shows_a_drawn_page(chromium: str, page: Path, tmp_path: Path) -> None:
    shot = tmp_path / "shot.png"
    run(chromium, tmp_path, f"--screenshot={shot}", "--window-size=1280,1600", page.as_uri())
    data = shot.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    # Decode the pixel stream: a blank or failed page is one colour.
    idat = b"".join(
        data[i + 8 : i + 8 + int.from_bytes(data[i : i + 4], "big")] for i in _chunks(data, b"IDAT")
    )
    pixels = zlib.decompress(idat)
    assert len(set(pixels)) > 40


def _chunks(data: bytes, kind: bytes) -> list[int]:
    offsets, pos = [], 8
    while pos < len(data):
        length = int.from_bytes(data[pos : pos + 4], "big")
        if data[pos + 4 : pos + 8] == kind:
            offsets.append(pos)
        pos += 12 + length
    return offsets


def test_matrix_sorts_tasks_naturally_and_cells_by_share_resolved(
    chromium: str, tmp_path: Path
) -> None:
    tasks = write_tasks(tmp_path / "tasks", 24)
    agents = {"a": lambda iid, i, r: Status.RESOLVED if r < i % 4 else Status.UNRESOLVED}
    for r in range(3):
        write_run(tmp_path / "runs", f"r{r}", tasks, agents, r)
    page = build_report(
        ["r0", "r1", "r2"], runs_dir=tmp_path / "runs", out=tmp_path / "report.html"
    ).html_path
    probe = (
        "<script>var h = document.querySelectorAll('#matrix th');"
        "function order(c){return Array.prototype.map.call("
        "document.querySelectorAll('#matrix tbody tr'), function(r){"
        "return r.cells[c].textContent;}).join('|');}"
        "h[0].click(); h[0].click(); var tasks = order(0);"  # second click: descending
        "h[1].click(); var cells = order(1);"
        "document.body.setAttribute('data-tasks', tasks);"
        "document.body.setAttribute('data-cells', cells);</script></body>"
    )
    probed = tmp_path / "probe.html"
    probed.write_text(page.read_text().replace("</body>", probe))
    dom = run(chromium, tmp_path, "--dump-dom", probed.as_uri()).stdout
    tasks_order = dom.split('data-tasks="')[1].split('"')[0].split("|")
    api = [t for t in tasks_order if t.startswith("acme__api")]
    assert api[:3] == ["acme__api-23", "acme__api-21", "acme__api-19"]  # not 9, 7, 5, 3, 23
    cells = dom.split('data-cells="')[1].split('"')[0].split("|")
    resolved = [int(c.split(" ")[1].split("/")[0]) for c in cells]
    assert resolved == sorted(resolved) and resolved[0] < resolved[-1]


def test_bakeoff_section_renders_its_links_and_keeps_hostile_text_inert(
    chromium: str, tmp_path: Path
) -> None:
    from evalkit.bakeoff.records import GateEvent
    from tests.report.conftest import write_bakeoff

    tasks = write_tasks(tmp_path / "tasks", 4)
    iids = [
        line.split('"instance_id": "')[1].split('"')[0]
        for line in (tasks / "instances.jsonl").read_text().splitlines()
    ]
    hostile = "<img src=x onerror=\"document.body.setAttribute('data-pwned','1')\">"
    attempts: list[dict[str, object]] = [
        {
            "agent": "liar",
            "instance_id": iid,
            "status": Status.EMPTY_PATCH,
            "claim": True,
            "destructive_attempted": [GateEvent(command=hostile, rule="r", layer="audit")],
        }
        for iid in iids
    ]
    attempts += [
        {"agent": "oracle", "instance_id": iid, "status": Status.RESOLVED, "claim": True}
        for iid in iids
    ]
    write_bakeoff(tmp_path / "runs", "night", tasks, attempts)
    page = build_report(
        ["night.r1"], runs_dir=tmp_path / "runs", out=tmp_path / "out" / "report.html"
    ).html_path
    probe = (
        "<script>var links = document.querySelectorAll('#bakeoff .refs a');"
        "var ok = Array.prototype.filter.call(links, function(a){"
        "return a.protocol === 'file:' && a.pathname.indexOf('/runs/night/attempts/') > 0;});"
        "document.body.setAttribute('data-links', links.length + '/' + ok.length);"
        "document.body.setAttribute('data-cells', document.querySelectorAll("
        "'#matrix .tm').length);</script></body>"
    )
    probed = page.with_name("probe.html")
    probed.write_text(page.read_text().replace("</body>", probe))
    result = run(chromium, tmp_path, "--enable-logging=stderr", "--dump-dom", probed.as_uri())
    dom = result.stdout
    assert 'data-ready="1"' in dom and "Uncaught" not in result.stderr
    assert "data-pwned" not in dom.split("<body")[1].split(">")[0]  # the handler never ran
    total, inside = dom.split('data-links="')[1].split('"')[0].split("/")
    assert int(total) > 0 and total == inside  # every bake-off link points into the run
    assert dom.split('data-cells="')[1].split('"')[0] == "4"  # liar's cells carry a mark
