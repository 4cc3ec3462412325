"""Mining against a real Docker engine: validated tasks, rejection reasons, flaky tests,
incremental re-runs."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from evalkit.harness import evaluate
from evalkit.mining import Issue, IssueIndex, MineOptions, mine
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
    earlier = {c["fix_commit"]: c for c in rows(out / "candidates.jsonl")}
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
    # Only the two new changes that reached the sandbox ran there; old lines are untouched.
    assert summary.validated == 2
    now = {c["fix_commit"]: c for c in rows(out / "candidates.jsonl")}
    assert all(now[sha] == line for sha, line in earlier.items())
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


CALC = "def add(a, b):\n    return a - b\n\n\ndef mul(a, b):\n    return a * b\n"
LOOP = (
    "def countdown(n):\n    steps = 0\n    while n != 0:\n        n -= 1\n"
    "        steps += 1\n    return steps\n"
)
LOOP_TESTS = (
    "from loop import countdown\n\n\ndef test_negative_is_zero_steps():\n"
    "    assert countdown(-2) == 0\n\n\ndef test_positive():\n    assert countdown(3) == 3\n"
)


@pytest.fixture(scope="module")
def calc(docker_engine: Any, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Any]:
    """One repository exercising each validation outcome, mined from an issue export."""
    root = tmp_path_factory.mktemp("calc")
    repo = root / "calc"
    repo.mkdir()
    git(repo, "init", "-q")
    commit(
        repo,
        {
            "pyproject.toml": "[project]\nname = 'calc'\nversion = '0'\n"
            "[build-system]\nrequires = ['setuptools']\n"
            "build-backend = 'setuptools.build_meta'\n"
            "[tool.setuptools]\npy-modules = ['calc', 'loop']\n",
            "calc.py": CALC,
            "loop.py": LOOP,
            "tests/test_mul.py": "from calc import mul\n\n\ndef test_mul():\n"
            "    assert mul(2, 3) == 6\n",
        },
        "init",
    )
    fixed = CALC.replace("a - b", "a + b")
    test_add = "from calc import add\n\n\ndef test_add():\n    assert add(1, 2) == 3\n"
    commit(repo, {"calc.py": fixed, "tests/test_add.py": test_add}, "Fix add (fixes #1)")
    commit(
        repo,
        {
            "calc.py": fixed.replace("a * b", "a * b + 0.5"),
            # The new test passes only with the "fix", which breaks the old one.
            "tests/test_mul.py": "from calc import mul\n\n\ndef test_mul():\n"
            "    assert mul(2, 3) == 6\n\n\ndef test_mul_zero():\n    assert mul(1, 0) == 0.5\n",
        },
        "Make mul faster (fixes #2)",
    )
    commit(
        repo,
        {"loop.py": LOOP.replace("n != 0", "n > 0"), "tests/test_loop.py": LOOP_TESTS},
        "Stop countdown on negatives (fixes #3)",
    )
    commit(
        repo,
        {
            "calc.py": fixed + "\n\ndef neg(a):\n    return -a\n",
            "tests/test_neg.py": (
                "from calc import neg\n\n\ndef test_neg():\n    assert neg(2) == -2\n"
            ),
        },
        "Add neg (fixes #4)",
    )
    git(repo, "checkout", "-qb", "none")
    commit(
        repo,
        {
            "calc.py": fixed + "\n\ndef neg(a):\n    return -a if a is not None else None\n",
            "tests/test_none.py": "from calc import neg\n\n\ndef test_none():\n"
            "    assert neg(None) is None\n",
        },
        "Handle None",  # no closing keyword here: the pull request body has it
    )
    git(repo, "checkout", "-q", "main")
    git(repo, "merge", "-q", "--no-ff", "none", "-m", "Merge pull request #7 from me/none")
    issues = IssueIndex(
        {k: Issue(k, f"Issue {k}", f"Body {k}", "closed", "2024-05-01T00:00:00Z") for k in "12346"},
        {"7": Issue("7", "Handle None in neg", "Closes #6", "closed")},
    )
    spec = root / "evalkit.toml"
    spec.write_text('[instances."acme__calc-4"]\ninstall = ["exit 3"]\n')
    out = root / "tasks"
    summary = mine(
        str(repo),
        out,
        repo_name="acme/calc",
        issues=issues,
        source="export",
        options=MineOptions(runs=2, timeout=6, workers=2),
        spec_path=spec,
        **QUIET,
    )
    return repo, out, summary


def test_each_validation_outcome_is_recorded_with_its_reason(calc: tuple[Path, Path, Any]) -> None:
    _, out, summary = calc
    by_key = {c["issue_keys"][0]: c for c in rows(out / "candidates.jsonl")}
    assert by_key["1"]["status"] == "accepted"
    assert by_key["2"]["reason"] == "gold_breaks_tests"
    assert "tests/test_mul.py::test_mul" in by_key["2"]["detail"]
    assert by_key["4"]["reason"] == "environment"
    assert summary.rejected == {"gold_breaks_tests": 1, "environment": 1}


def test_a_test_that_hangs_before_the_fix_does_not_hide_the_tests_after_it(
    calc: tuple[Path, Path, Any],
) -> None:
    _, out, _ = calc
    instance = {r["instance_id"]: r for r in rows(out / "instances.jsonl")}["acme__calc-3"]
    assert instance["FAIL_TO_PASS"] == ["tests/test_loop.py::test_negative_is_zero_steps"]
    assert instance["PASS_TO_PASS"] == ["tests/test_loop.py::test_positive"]
    assert instance["evalkit_hung_before_fix"] == instance["FAIL_TO_PASS"]


def test_a_pull_request_body_links_its_merge_commit(calc: tuple[Path, Path, Any]) -> None:
    _, out, _ = calc
    by_key = {c["issue_keys"][0]: c for c in rows(out / "candidates.jsonl")}
    assert by_key["6"]["status"] == "accepted" and by_key["6"]["pull_request"] == "7"
    # Named as SWE-bench names it, by the pull request; the issue stays a field.
    instance = {r["instance_id"]: r for r in rows(out / "instances.jsonl")}["acme__calc-7"]
    assert instance["evalkit_issue_keys"] == ["6"]
    assert instance["problem_statement"] == "Issue 6\nBody 6\n"
    assert instance["FAIL_TO_PASS"] == ["tests/test_none.py::test_none"]
    assert instance["evalkit_merged_commits"] == 1


def test_an_environment_failure_is_retried_on_the_next_run(
    calc: tuple[Path, Path, Any], tmp_path: Path
) -> None:
    repo, out, _ = calc
    spec = tmp_path / "evalkit.toml"
    spec.write_text("[defaults]\ntimeout = 6\n")
    bundle = out / "repos" / "acme__calc.bundle"
    stamp = bundle.stat().st_mtime_ns
    summary = mine(
        str(repo),
        out,
        repo_name="acme/calc",
        issues=IssueIndex(
            {k: Issue(k, f"Issue {k}", "", "closed") for k in "12346"},
            {"7": Issue("7", "Handle None in neg", "Closes #6", "closed")},
        ),
        source="export",
        options=MineOptions(runs=1, timeout=6),
        spec_path=spec,
        **QUIET,
    )
    # A new [defaults] applies to every candidate that ran: all are validated again
    # (the environment failure among them), under the same names.
    assert summary.validated == 5 and summary.kept_from_before == 0
    assert bundle.stat().st_mtime_ns == stamp  # same refs: the bundle (and its cache) stay
    assert {c["issue_keys"][0]: c["status"] for c in rows(out / "candidates.jsonl")}["4"] == (
        "accepted"
    )
    ids = [r["instance_id"] for r in rows(out / "instances.jsonl")]
    assert len(ids) == len(set(ids)) and "acme__calc-7" in ids
    # The same spec again: nothing is validated twice.
    again = mine(
        str(repo),
        out,
        repo_name="acme/calc",
        issues=IssueIndex(
            {k: Issue(k, f"Issue {k}", "", "closed") for k in "12346"},
            {"7": Issue("7", "Handle None in neg", "Closes #6", "closed")},
        ),
        source="export",
        options=MineOptions(runs=1, timeout=6),
        spec_path=spec,
        **QUIET,
    )
    assert again.validated == 0 and again.kept_from_before == 5


def test_a_mined_task_set_carries_its_gold_check(calc: tuple[Path, Path, Any]) -> None:
    """Evaluating predictions on what mining wrote needs no separate validation."""
    from evalkit.dataset import load_task_set
    from evalkit.harness import read_gold_check

    _, out, _ = calc
    check = read_gold_check(out)
    assert check is not None and check.tasks_sha256 == load_task_set(out).sha256()
    accepted = {r["instance_id"] for r in rows(out / "instances.jsonl")}
    assert set(check.results) == accepted and all(r.passed for r in check.results.values())
