"""Environments true to the task's time, in Docker: a Python 3.9 environment built with
no registry, dependencies resolved as of the commit's month, extras the build computes,
and a broken task reported as a task error for every model (never the agent's)."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from evalkit.cli import app
from evalkit.records import GOLD_CHECK_FILE, INSTANCES_FILE, REPOS_DIR, RunManifest
from tests.conftest import git, write_tree

pytestmark = pytest.mark.docker

# Extras computed at run time: no static reading of setup.py can see "testing".
SETUP = """\
from setuptools import setup


def extras():
    return {"test" + "ing": ["simplejson"]}


setup(
    name="dated",
    version="0.1",
    packages=["dated"],
    python_requires=">=3.7, <3.10",
    extras_require=extras(),
)
"""
BUGGY = "def double(x):\n    return x + x + 1\n"
FIXED = "def double(x):\n    return x + x\n"
TEST_OK = """\
import simplejson

from dated import double


def test_double():
    assert double(2) == 4
    assert simplejson.loads("[1]") == [1]
"""
TEST_BROKEN = """\
import nosuchmodule_evalkit

from dated import double


def test_double_again():
    assert double(3) == 6
"""


def _diff(repo: Path, a: str, b: str, *paths: str) -> str:
    return subprocess.run(
        ["git", "diff", a, b, "--", *paths], cwd=repo, capture_output=True, text=True, check=True
    ).stdout


def build_dated_tasks(root: Path) -> Path:
    repo = root / "src"
    repo.mkdir(parents=True)
    git(repo, "init", "-q")
    write_tree(repo, {"setup.py": SETUP, "dated/__init__.py": BUGGY, "tests/__init__.py": ""})
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", "initial")  # 2024-01-01 (conftest's fixed dates)
    base = git(repo, "rev-parse", "HEAD")
    write_tree(
        repo,
        {
            "dated/__init__.py": FIXED,
            "tests/test_ok.py": TEST_OK,
            "tests/test_broken.py": TEST_BROKEN,
        },
    )
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", "fix")
    fix = git(repo, "rev-parse", "HEAD")
    tasks = root / "tasks"
    (tasks / REPOS_DIR).mkdir(parents=True)
    git(repo, "bundle", "create", "-q", str(tasks / REPOS_DIR / "acme__dated.bundle"), "--all")
    common: dict[str, Any] = {
        "repo": "acme/dated",
        "base_commit": base,
        "patch": _diff(repo, base, fix, "dated"),
        "problem_statement": "double is off by one",
    }
    rows = [
        {
            **common,
            "instance_id": "acme__dated-1",
            "test_patch": _diff(repo, base, fix, "tests/test_ok.py"),
            "FAIL_TO_PASS": json.dumps(["tests/test_ok.py::test_double"]),
        },
        {
            **common,
            "instance_id": "acme__dated-2",
            "test_patch": _diff(repo, base, fix, "tests/test_broken.py"),
            "FAIL_TO_PASS": ["tests/test_broken.py::test_double_again"],
        },
    ]
    (tasks / INSTANCES_FILE).write_text("".join(json.dumps(r) + "\n" for r in rows))
    return tasks


@pytest.fixture(scope="module")
def dated(tmp_path_factory: pytest.TempPathFactory, docker_engine: Any) -> dict[str, Any]:
    """One gold run on the task set (builds the Python 3.9 image once for the module)."""
    root = tmp_path_factory.mktemp("dated")
    tasks = build_dated_tasks(root)
    runs = root / "runs"
    result = CliRunner().invoke(
        app, ["evaluate", "--tasks", str(tasks), "--gold", "--run-id", "g", "--runs-dir", str(runs)]
    )
    return {"tasks": tasks, "runs": runs, "result": result}


def test_python_39_environment_without_a_registry(dated: dict[str, Any]) -> None:
    manifest = RunManifest.model_validate_json((dated["runs"] / "g" / "run.json").read_text())
    (env,) = manifest.environments
    # python_requires "<3.10" picks 3.9; no registry here, so Debian bullseye's.
    assert env.python == "3.9" and env.base_image == "evalkit/base:bullseye"
    assert env.python_substituted is None
    verdicts = [json.loads(line) for line in (dated["runs"] / "g" / "results.jsonl").open()]
    assert {v["instance_id"]: v["status"] for v in verdicts}["acme__dated-1"] == "resolved"


def test_dependencies_resolve_as_of_the_commits_month(dated: dict[str, Any]) -> None:
    manifest = RunManifest.model_validate_json((dated["runs"] / "g" / "run.json").read_text())
    (env,) = manifest.environments
    assert env.exclude_newer == "2024-02-01"
    pins = dict(line.split("==", 1) for line in env.lock if "==" in line)
    # pytest 8.0.0 came out 2024-01-27, 8.0.1 on 2024-02-16: the bound picked 8.0.0.
    assert pins["pytest"] == "8.0.0"
    # The extra computed in setup.py came from the built metadata.
    assert "simplejson" in pins


def test_a_failing_gold_patch_is_a_task_error_with_its_cause(dated: dict[str, Any]) -> None:
    result = dated["result"]
    assert result.exit_code == 1, result.output
    assert "ModuleNotFoundError: No module named 'nosuchmodule_evalkit'" in result.output
    assert "acme__dated-2" in result.output and "gold patch fails on 1 task" in result.output
    check = json.loads((dated["tasks"] / GOLD_CHECK_FILE).read_text())
    assert check["results"]["acme__dated-1"]["passed"] is True
    assert check["results"]["acme__dated-2"]["passed"] is False
    report = json.loads((dated["runs"] / "g" / "report.json").read_text())["gold"]
    assert report["task_error_ids"] == ["acme__dated-2"] and report["total_instances"] == 1


def test_agents_are_not_charged_for_a_broken_task(dated: dict[str, Any], tmp_path: Path) -> None:
    tasks = dated["tasks"]
    rows = [json.loads(line) for line in (tasks / INSTANCES_FILE).open()]
    preds = tmp_path / "preds.jsonl"
    preds.write_text(
        "".join(
            json.dumps(
                {
                    "instance_id": r["instance_id"],
                    "model_name_or_path": "m",
                    "model_patch": r["patch"],
                }
            )
            + "\n"
            for r in rows
        )
    )
    result = CliRunner().invoke(
        app,
        [
            "evaluate",
            "--tasks",
            str(tasks),
            "-p",
            str(preds),
            "--run-id",
            "m",
            "--runs-dir",
            *[str(dated["runs"])],
        ],
    )
    assert result.exit_code == 0, result.output
    summary = json.loads((dated["runs"] / "m" / "report.json").read_text())["m"]
    assert summary["resolved_ids"] == ["acme__dated-1"]
    assert summary["task_error_ids"] == ["acme__dated-2"] and summary["total_instances"] == 1
    assert "gold check" not in result.output  # it was run: no warning


def test_predictions_on_an_unchecked_task_set_warn_once(
    dated: dict[str, Any], tmp_path: Path
) -> None:
    tasks = tmp_path / "copy"
    shutil.copytree(dated["tasks"], tasks)
    (tasks / GOLD_CHECK_FILE).unlink()
    preds = tmp_path / "empty.jsonl"
    preds.write_text(json.dumps({"instance_id": "acme__dated-1", "model_name_or_path": "m"}) + "\n")
    result = CliRunner().invoke(
        app,
        [
            "evaluate",
            "--tasks",
            str(tasks),
            "-p",
            str(preds),
            "--run-id",
            "w",
            "--runs-dir",
            *[str(tmp_path / "runs")],
        ],
    )
    assert result.output.count(f"evalkit tasks validate {tasks}") == 1, result.output


def test_a_python_that_cannot_be_had_is_refused_in_one_line(
    dated: dict[str, Any], tmp_path: Path
) -> None:
    tasks = tmp_path / "py399"
    shutil.copytree(dated["tasks"], tasks)
    (tasks / "evalkit.toml").write_text('[defaults]\npython = "3.99"\n')
    result = CliRunner().invoke(
        app,
        ["evaluate", "--tasks", str(tasks), "--gold", "--run-id", "x", "--runs-dir", str(tmp_path)],
    )
    assert result.exit_code == 2
    (line,) = [x for x in result.output.splitlines() if "error" in x]
    assert "Python 3.99 is not available" in line and "--substitute-python" in line


def test_substituting_python_is_recorded_on_every_result(
    dated: dict[str, Any], tmp_path: Path
) -> None:
    tasks = tmp_path / "py38"
    shutil.copytree(dated["tasks"], tasks)
    (tasks / "evalkit.toml").write_text('[defaults]\npython = "3.8"\n')
    args = ["evaluate", "--tasks", str(tasks), "--gold", "--run-id", "s", "--substitute-python"]
    result = CliRunner().invoke(app, [*args, "--runs-dir", str(tmp_path)])
    assert "substituting 3.9" in result.output
    lines = [json.loads(x) for x in (tmp_path / "s" / "results.jsonl").open()]
    latest = {v["instance_id"]: v for v in lines}
    assert {v["python_substituted"] for v in latest.values()} == {"3.8 -> 3.9"}


def test_regrading_keeps_the_task_errors(dated: dict[str, Any]) -> None:
    result = CliRunner().invoke(
        app,
        [
            "evaluate",
            "--tasks",
            str(dated["tasks"]),
            "--run-id",
            "m",
            "--regrade",
            "--runs-dir",
            str(dated["runs"]),
        ],
    )
    assert result.exit_code == 0, result.output
    summary = json.loads((dated["runs"] / "m" / "report.json").read_text())["m"]
    assert summary["task_error_ids"] == ["acme__dated-2"]
