"""Mining against a real Docker engine: validated tasks, rejection reasons, flaky tests,
incremental re-runs."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from evalkit.harness import evaluate
from evalkit.mining import Issue, MineOptions, mine
from evalkit.sample import build_sample_repo
from tests.conftest import git, write_tree

pytestmark = pytest.mark.docker
SAMPLE = Path(__file__).resolve().parents[2] / "tasks" / "sample"
QUIET = {"log": lambda _: None, "progress": False}


def rows(path: Path) -> list[dict[str, Any]]:
    return [json.loads(x) for x in path.read_text().splitlines()]


def commit(repo: Path, files: dict[str, str | None], message: str) -> None:
    write_tree(repo, files)
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", message)


@pytest.fixture(scope="module")
def mined(docker_engine: Any, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Any]:
    root = tmp_path_factory.mktemp("mine")
    repo = root / "textkit"
    build_sample_repo(repo)
    out = root / "tasks"
    summary = mine(
        str(repo),
        out,
        repo_name="evalkit-samples/textkit",
        issues=None,
        source="commit",
        options=MineOptions(runs=1, timeout=8, workers=2),
        **QUIET,
    )
    return repo, out, summary


def test_mined_sample_matches_the_hand_checked_task_set(mined: tuple[Path, Path, Any]) -> None:
    _, out, summary = mined
    assert summary.accepted == 4
    got = {r["instance_id"]: r for r in rows(out / "instances.jsonl")}
    for expected in rows(SAMPLE / "instances.jsonl"):
        instance = got[expected["instance_id"]]
        assert sorted(instance["FAIL_TO_PASS"]) == sorted(expected["FAIL_TO_PASS"])
        assert sorted(instance["PASS_TO_PASS"]) == sorted(expected["PASS_TO_PASS"])
        assert instance["problem_statement_source"] == "commit"
        assert instance["patch"] == expected["patch"]


def test_mined_task_set_resolves_under_evaluate_gold(
    mined: tuple[Path, Path, Any], tmp_path: Path
) -> None:
    _, out, _ = mined
    outcome = evaluate(out, None, "g", gold=True, runs_dir=tmp_path, **QUIET)
    assert {v.status.value for v in outcome.verdicts} == {"resolved"}


def test_rejections_are_recorded_and_re_mining_validates_only_new_changes(
    mined: tuple[Path, Path, Any], tmp_path: Path
) -> None:
    repo, out, _ = mined
    commit(repo, {"README.md": "# textkit\n\nNow with docs.\n"}, "Document slugs (fixes #20)")
    commit(
        repo, {"tests/test_extra.py": "def test_x():\n    assert True\n"}, "Add a test (fixes #21)"
    )
    commit(
        repo,
        {
            "src/textkit/extra.py": "def shout(s):\n    return s.upper()\n",
            "tests/test_shout.py": "from textkit.extra import shout\n\n\n"
            "def test_shout():\n    assert shout('a') == 'A'\n",
        },
        "Add shout() (fixes #22)",
    )
    commit(
        repo,
        {
            "src/textkit/noop.py": "X = 1\n",
            "tests/test_noop.py": "def test_noop():\n    assert True\n",
        },
        "Refactor (fixes #23)",
    )
    summary = mine(
        str(repo),
        out,
        repo_name="evalkit-samples/textkit",
        issues=None,
        source="commit",
        options=MineOptions(runs=1, timeout=8),
        **QUIET,
    )
    assert summary.kept_from_before == 4 and summary.candidates == 8
    assert summary.accepted == 5
    reasons = {c["issue_keys"][0]: c["reason"] for c in rows(out / "candidates.jsonl")}
    assert reasons["20"] == "no_test_change"
    assert reasons["21"] == "no_source_change"
    assert reasons["22"] is None
    assert reasons["23"] == "no_fail_to_pass"


def test_issue_source_decides_which_links_count(
    mined: tuple[Path, Path, Any], tmp_path: Path
) -> None:
    repo, _, _ = mined
    issues = {
        "1": Issue("1", "Slugs keep capitals", "Body one", "closed", "2024-03-02T00:00:00Z"),
        "2": Issue("2", "Durations", "Body two", "open"),
    }
    summary = mine(
        str(repo),
        tmp_path / "t",
        repo_name="evalkit-samples/textkit",
        issues=issues,
        source="export",
        options=MineOptions(runs=1, timeout=8, max_candidates=8),
        **QUIET,
    )
    by_key = {c["issue_keys"][0]: c for c in rows(tmp_path / "t" / "candidates.jsonl")}
    assert by_key["1"]["status"] == "accepted"
    assert by_key["2"]["reason"] == "issue_not_closed"
    assert by_key["3"]["reason"] == "issue_not_found"
    instance = rows(tmp_path / "t" / "instances.jsonl")[0]
    assert instance["problem_statement"].startswith("Slugs keep capitals\nBody one")
    assert instance["created_at"] == "2024-03-02T00:00:00Z"
    assert summary.accepted == 1


def test_a_test_that_passes_only_sometimes_is_dropped_as_flaky(
    docker_engine: Any, tmp_path: Path
) -> None:
    repo = tmp_path / "r"
    repo.mkdir()
    git(repo, "init", "-q")
    commit(
        repo,
        {
            "pyproject.toml": "[project]\nname = 'f'\nversion = '0'\n"
            "[build-system]\nrequires = ['setuptools']\n"
            "build-backend = 'setuptools.build_meta'\n",
            "f.py": "def one():\n    return 0\n",
        },
        "init",
    )
    flaky = (
        "import os\n\nfrom f import one\n\n\ndef test_one():\n    assert one() == 1\n\n\n"
        "def test_sometimes():\n    assert os.urandom(1)[0] % 2\n"
    )
    commit(
        repo, {"f.py": "def one():\n    return 1\n", "tests/test_f.py": flaky}, "Fix one (fixes #1)"
    )
    mine(
        str(repo),
        tmp_path / "t",
        repo_name="acme/f",
        issues=None,
        source="commit",
        options=MineOptions(runs=6, timeout=30),
        **QUIET,
    )
    instance = rows(tmp_path / "t" / "instances.jsonl")[0]
    assert instance["FAIL_TO_PASS"] == ["tests/test_f.py::test_one"]
    assert instance["evalkit_flaky_tests_dropped"] == ["tests/test_f.py::test_sometimes"]
