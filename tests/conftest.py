"""Shared fixtures: a real Docker engine (required under CI=true) and a tiny task set."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from evalkit.records import INSTANCES_FILE, REPOS_DIR

IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}


@pytest.fixture(scope="session")
def docker_engine() -> Iterator[Any]:
    """A live Docker client. Skips locally without an engine; fails under CI=true."""
    from evalkit.errors import InfraError
    from evalkit.sandbox import docker_client

    try:
        client = docker_client()
    except InfraError as exc:
        if IN_CI:
            pytest.fail(f"CI=true but no Docker engine answers: {exc}")
        pytest.skip(f"no Docker engine: {exc}")
    yield client


GIT_ENV = {
    "GIT_AUTHOR_NAME": "Test",
    "GIT_AUTHOR_EMAIL": "test@example.invalid",
    "GIT_COMMITTER_NAME": "Test",
    "GIT_COMMITTER_EMAIL": "test@example.invalid",
    "GIT_AUTHOR_DATE": "2024-01-01T00:00:00Z",
    "GIT_COMMITTER_DATE": "2024-01-01T00:00:00Z",
    "PATH": os.environ["PATH"],
    "HOME": "/tmp",
}


def git(cwd: Path, *args: str) -> str:
    proc = subprocess.run(
        ["git", "-c", "init.defaultBranch=main", "-c", "commit.gpgsign=false", *args],
        cwd=cwd,
        env=GIT_ENV,
        capture_output=True,
        text=True,
        check=True,
    )
    return proc.stdout.strip()


def write_tree(root: Path, files: dict[str, str | None]) -> None:
    for rel, content in files.items():
        path = root / rel
        if content is None:
            path.unlink(missing_ok=True)
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(content)


PYPROJECT = """\
[build-system]
requires = ["setuptools>=61"]
build-backend = "setuptools.build_meta"

[project]
name = "calc"
version = "0.1"

[project.optional-dependencies]
test = ["pytest"]

[tool.pytest.ini_options]
testpaths = ["tests"]
"""

BUGGY = """\
def add(a, b):
    return a - b


def countdown(n):
    out = []
    while n != 0:
        out.append(n)
        n -= 1
    return out
"""

FIXED_ADD = BUGGY.replace("return a - b", "return a + b")
FIXED_BOTH = FIXED_ADD.replace("while n != 0:", "while n > 0:")

TESTS_BASE = """\
from calc import add, countdown


def test_zero():
    assert add(0, 0) == 0


def test_countdown():
    assert countdown(3) == [3, 2, 1]
"""

TESTS_ADD = (
    TESTS_BASE
    + """

import pytest


@pytest.mark.parametrize("a,b,expected", [(1, 2, 3), (2, 2, 4)])
def test_add(a, b, expected):
    assert add(a, b) == expected


class TestAdd:
    def test_negative(self):
        assert add(-1, -1) == -2
"""
)

TESTS_LOOP = (
    TESTS_ADD
    + """

def test_countdown_negative():
    assert countdown(-2) == []
"""
)


@dataclass
class MiniTasks:
    """A task set built from a real git history, with a helper to write model patches."""

    root: Path
    repo: Path
    commits: dict[str, str]

    def instance(self, instance_id: str) -> dict[str, Any]:
        for line in (self.root / INSTANCES_FILE).read_text().splitlines():
            row = json.loads(line)
            if row["instance_id"] == instance_id:
                return dict(row)
        raise KeyError(instance_id)

    def diff(self, base: str, files: dict[str, str | None]) -> str:
        """A real ``git diff`` for ``files`` edited on top of ``base``."""
        git(self.repo, "checkout", "-q", "--detach", base)
        write_tree(self.repo, files)
        git(self.repo, "add", "-A")
        out = subprocess.run(
            ["git", "diff", "--cached", base],
            cwd=self.repo,
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        git(self.repo, "reset", "-q", "--hard", base)
        git(self.repo, "clean", "-qfdx")
        git(self.repo, "checkout", "-q", "main")
        return out

    def predictions(self, path: Path, rows: list[dict[str, str]]) -> Path:
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
        return path


def build_mini_tasks(root: Path) -> MiniTasks:
    repo = root / "src-repo"
    repo.mkdir(parents=True)
    git(repo, "init", "-q")
    write_tree(
        repo,
        {
            "pyproject.toml": PYPROJECT,
            "src/calc/__init__.py": BUGGY,
            "tests/test_calc.py": TESTS_BASE,
            "README.md": "calc\n",
        },
    )
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", "initial")
    base = git(repo, "rev-parse", "HEAD")
    write_tree(repo, {"src/calc/__init__.py": FIXED_ADD, "tests/test_calc.py": TESTS_ADD})
    git(repo, "commit", "-qam", "Fix add (fixes #1)")
    fix1 = git(repo, "rev-parse", "HEAD")
    write_tree(repo, {"src/calc/__init__.py": FIXED_BOTH, "tests/test_calc.py": TESTS_LOOP})
    git(repo, "commit", "-qam", "Fix countdown loop on negatives (fixes #2)")
    fix2 = git(repo, "rev-parse", "HEAD")
    git(repo, "tag", "v0.2")

    tasks = root / "tasks"
    (tasks / REPOS_DIR).mkdir(parents=True)
    git(repo, "bundle", "create", "-q", str(tasks / REPOS_DIR / "acme__calc.bundle"), "--all")

    def diff(a: str, b: str, *paths: str) -> str:
        return subprocess.run(
            ["git", "diff", a, b, "--", *paths],
            cwd=repo,
            capture_output=True,
            text=True,
            check=True,
        ).stdout

    rows = [
        {
            "instance_id": "acme__calc-1",
            "repo": "acme/calc",
            "base_commit": base,
            "patch": diff(base, fix1, "src"),
            "test_patch": diff(base, fix1, "tests"),
            "problem_statement": "add() subtracts",
            "hints_text": "",
            "created_at": "2024-01-01",
            "version": "0.1",
            "environment_setup_commit": base,
            # SWE-bench's quirk: lists as JSON strings.
            "FAIL_TO_PASS": json.dumps(
                [
                    "tests/test_calc.py::test_add[1-2-3]",
                    "tests/test_calc.py::test_add[2-2-4]",
                    "tests/test_calc.py::TestAdd::test_negative",
                ]
            ),
            "PASS_TO_PASS": json.dumps(
                ["tests/test_calc.py::test_zero", "tests/test_calc.py::test_countdown"]
            ),
        },
        {
            "instance_id": "acme__calc-2",
            "repo": "acme/calc",
            "base_commit": fix1,
            "patch": diff(fix1, fix2, "src"),
            "test_patch": diff(fix1, fix2, "tests"),
            "problem_statement": "countdown(-2) never returns",
            "hints_text": "",
            "created_at": "2024-01-02",
            "version": "0.1",
            "environment_setup_commit": base,
            "FAIL_TO_PASS": ["tests/test_calc.py::test_countdown_negative"],
            "PASS_TO_PASS": [
                "tests/test_calc.py::test_zero",
                "tests/test_calc.py::test_countdown",
                "tests/test_calc.py::test_add[1-2-3]",
            ],
        },
    ]
    (tasks / INSTANCES_FILE).write_text("".join(json.dumps(r) + "\n" for r in rows))
    return MiniTasks(root=tasks, repo=repo, commits={"base": base, "fix1": fix1, "fix2": fix2})


@pytest.fixture(scope="session")
def mini_tasks(tmp_path_factory: pytest.TempPathFactory) -> MiniTasks:
    return build_mini_tasks(tmp_path_factory.mktemp("mini"))
