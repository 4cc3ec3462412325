"""Test-runner adapters: what evalkit needs to know about pytest, vitest, jest or mocha.

A :class:`TestRunner` says how it is detected in a repository, what its test ids look
like (and how SWE-bench-style ids map onto them), how exactly the listed tests are
selected, which command runs them with evalkit's own reporter (which streams per-test
events to the collector socket, proving itself with the nonce it reads on stdin, so the
code under test cannot rewrite the evidence), which files are its configuration (for
the tamper guard and pinning) and which files are test files (for splitting a fix
into ``patch`` and ``test_patch``).

Test ids: pytest node ids (``tests/test_x.py::TestA::test_b[1]``); for the JavaScript
runners ``path/to/file.test.ts > describe > test name`` (the file relative to the
repository root, then each enclosing ``describe`` and the test's own name, joined by
``" > "``, the way vitest prints them).

Everything here is pure: file texts in, values out.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from evalkit.grading import TestReport

__all__ = [
    "DETECTION_FILES",
    "TestRunner",
    "detect_runner",
    "get_runner",
    "is_test_config",
    "is_test_path",
    "runner_names",
    "shared_config",
]

DETECTION_FILES = ("package.json",)
"""Files :func:`detect_runner` reads at a commit (besides the Python packaging files)."""


class TestRunner(Protocol):
    """One test runner, as the harness, the grader, the tamper guard and the miner see it."""

    __test__: bool

    name: str
    """``pytest``, ``vitest``, ``jest`` or ``mocha``: recorded in the evidence."""
    ecosystem: str
    """``python`` or ``node``: which environment image the tests need."""
    phased: bool
    """Whether each test reports setup / call / teardown phases (pytest) or one result."""
    starts_ahead: bool
    """Whether the test command may start before its turn: it loads only the runner's own
    modules (from the image) until its instructions arrive, and keeps its timeout from
    then (the JavaScript launchers)."""

    def detect(self, files: Mapping[str, str]) -> bool:
        """Whether this runner runs the repository's tests (files: path -> text at a commit)."""
        ...

    def test_files(self, test_ids: Iterable[str]) -> list[str]:
        """The files that hold these test ids, deduplicated, in order."""
        ...

    def from_swebench_id(self, test_id: str) -> str:
        """A SWE-bench-style id (as Multilingual / Pro publish them) in this runner's form."""
        ...

    def is_test_path(self, path: str) -> bool:
        """Whether ``path`` is test code by this runner's conventions."""
        ...

    def is_config_path(self, path: str) -> bool:
        """Whether ``path`` is this runner's configuration (reverted whenever a patch edits it)."""
        ...

    def config_candidates(self, test_files: Iterable[str]) -> tuple[str, ...]:
        """Every path the runner could read its configuration from for these test files."""
        ...

    def pinned_config(self, files: Mapping[str, str], test_files: Iterable[str]) -> str:
        """The configuration the runner would pick at base, as a sandbox path (or evalkit's
        own empty one): passed explicitly, so config a patch adds is never read."""
        ...

    def test_command(
        self, *, config: str, test_files: list[str], extra_args: list[str], timeout: int
    ) -> str:
        """The shell command of the eval script's test step (every value shell-quoted)."""
        ...

    def summary_problem(self, report: TestReport, output: str) -> str | None:
        """Whether the runner's own terminal summary contradicts the structured report."""
        ...


def _all() -> dict[str, TestRunner]:
    from evalkit.runners.node import JEST, MOCHA, VITEST
    from evalkit.runners.python import PYTEST

    # Detection order: the JavaScript runners first (a package.json names them), pytest last.
    return {r.name: r for r in (VITEST, JEST, MOCHA, PYTEST)}


def runner_names() -> tuple[str, ...]:
    return tuple(_all())


def get_runner(name: str | None) -> TestRunner:
    """The runner called ``name``; pytest for runs recorded before runners had names."""
    runners = _all()
    return runners.get(name or "pytest", runners["pytest"])


def detect_runner(files: Mapping[str, str]) -> TestRunner:
    """The runner a repository's files name (``package.json`` dependencies); else pytest."""
    for runner in _all().values():
        if runner.detect(files):
            return runner
    return _all()["pytest"]


def is_test_path(path: str) -> bool:
    """Test code by any runner's conventions (a ``*.test.ts`` in a Python repo is a test too)."""
    return any(r.is_test_path(path) for r in _all().values())


def is_test_config(path: str) -> bool:
    """Configuration of any runner: a patch that edits it is reverted."""
    return any(r.is_config_path(path) for r in _all().values())


def shared_config(path: str) -> bool:
    """Files that hold test configuration beside other things (``pyproject.toml``,
    ``package.json``, ``tsconfig*.json``): reverted only when their test parts change."""
    from evalkit.runners.node import is_shared_node_config
    from evalkit.runners.python import SHARED_CONFIG

    name = path.rsplit("/", 1)[-1]
    return name in SHARED_CONFIG or is_shared_node_config(path)
