"""pytest as a :class:`~evalkit.runners.TestRunner`: node ids, ``-c`` pinning, phased reports."""

from __future__ import annotations

import fnmatch
import re
import shlex
from collections import Counter
from collections.abc import Iterable, Mapping
from pathlib import PurePosixPath
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from evalkit.grading import TestReport

TEST_DIRS = frozenset({"test", "tests", "testing", "e2e"})

# Files whose edits change how tests are collected or reported. A model patch that
# touches them is reverted before grading (SWE-bench #631: conftest-only "fixes").
CONFIG_NAMES = frozenset(
    {
        "conftest.py",
        "pytest.ini",
        "tox.ini",
        "setup.cfg",
        "pyproject.toml",
        ".pytest.ini",
        "noxfile.py",
        "pytest.toml",
        ".pytest.toml",
        ".coveragerc",
    }
)
SHARED_CONFIG = frozenset({"pyproject.toml", "setup.cfg", "tox.ini"})
"""Config files with non-test sections: reverted only when their test sections change."""

# pytest's own search order within one directory (pytest 9 added the toml names).
CONFIG_SEARCH = (
    "pytest.ini",
    ".pytest.ini",
    "pytest.toml",
    ".pytest.toml",
    "pyproject.toml",
    "tox.ini",
    "setup.cfg",
)
EMPTY_CONFIG = "/evalkit/pytest.ini"


def is_pytest_test_path(path: str) -> bool:
    """``tests/unit/x.py``, ``pkg/test_io.py``, ``io_test.py`` and ``conftest.py`` are tests;
    ``src/latest.py`` and ``contest/x.py`` are not (components, not substrings)."""
    pure = PurePosixPath(path)
    if any(part.lower() in TEST_DIRS for part in pure.parts[:-1]):
        return True
    name = pure.name
    if name == "conftest.py" or (name.startswith("test_") and name.endswith(".py")):
        return True
    return name.endswith("_test.py") or name == "tests.py"


def config_candidates(test_files: Iterable[str]) -> tuple[str, ...]:
    """Every path pytest could read its configuration from for these test files."""
    dirs: dict[str, None] = {}
    for path in test_files:
        parts = PurePosixPath(path).parts[:-1]
        for depth in range(len(parts), -1, -1):
            dirs.setdefault("/".join(parts[:depth]), None)
    if not dirs:
        dirs[""] = None
    return tuple(f"{d}/{name}" if d else name for d in dirs for name in CONFIG_SEARCH)


def pinned_config(files: Mapping[str, str], test_files: Iterable[str]) -> str:
    """The config file pytest would pick at base, as a path in the sandbox.

    Passed as ``-c`` with ``--rootdir``, so any config file the patch adds anywhere
    (even one pytest would read first, such as ``.pytest.toml``) is ignored. Without a
    config at base an empty one is pinned, so none can be added.
    """
    for path in config_candidates(test_files):
        if path not in files:
            continue
        name = PurePosixPath(path).name
        text = files[path]
        if name == "pyproject.toml" and "[tool.pytest" not in text:
            continue
        if name == "tox.ini" and "[pytest]" not in text:
            continue
        if name == "setup.cfg" and "[tool:pytest]" not in text:
            continue
        return f"/testbed/{path}"
    return EMPTY_CONFIG


_SUMMARY = re.compile(r"^=+ (?P<body>.*?) in [\d.]+s(?: \([^)]*\))? =+$", re.MULTILINE)
_COUNT = re.compile(r"(\d+) (passed|failed|errors?|skipped|xfailed|xpassed|deselected|warnings?)")


def terminal_summaries(output: str) -> list[Counter[str]]:
    """Every final summary line pytest (or anything imitating it) printed."""
    found = []
    for match in _SUMMARY.finditer(output):
        counts: Counter[str] = Counter()
        for number, word in _COUNT.findall(match.group("body")):
            counts["error" if word.startswith("error") else word] += int(number)
        found.append(counts)
    return found


def compare_summaries(
    summaries: list[Counter[str]], report: TestReport, runner: str, keys: tuple[str, ...]
) -> str | None:
    """The one check every runner shares: one summary (or identical ones), same counts."""
    if not summaries:
        return f"{runner} printed no final summary"
    if any(s != summaries[0] for s in summaries[1:]):
        return f"{runner}'s final summary was printed more than once, with different counts"
    for key in keys:
        if summaries[0][key] != report.counts[key]:
            return (
                f"the terminal summary says {summaries[0][key]} {key} but the report has "
                f"{report.counts[key]}"
            )
    return None


class PytestRunner:
    name = "pytest"
    ecosystem = "python"
    phased = True
    starts_ahead = False
    __test__ = False

    def detect(self, files: Mapping[str, str]) -> bool:
        return True  # the default: every Python task set so far

    def test_files(self, test_ids: Iterable[str]) -> list[str]:
        """The path part of each node id, deduplicated, in order."""
        files: dict[str, None] = {}
        for test_id in test_ids:
            path = test_id.split("::", 1)[0]
            if "::" in test_id or path.endswith(".py"):
                files.setdefault(path, None)
        return list(files)

    def from_swebench_id(self, test_id: str) -> str:
        return test_id  # SWE-bench publishes pytest node ids (cut at a space: prefix-matched)

    def is_test_path(self, path: str) -> bool:
        return is_pytest_test_path(path)

    def is_config_path(self, path: str) -> bool:
        return PurePosixPath(path).name in CONFIG_NAMES

    def config_candidates(self, test_files: Iterable[str]) -> tuple[str, ...]:
        return config_candidates(test_files)

    def pinned_config(self, files: Mapping[str, str], test_files: Iterable[str]) -> str:
        return pinned_config(files, test_files)

    def test_command(
        self, *, config: str, test_files: list[str], extra_args: list[str], timeout: int
    ) -> str:
        args = "".join(shlex.quote(a) + " " for a in extra_args)
        files = " ".join(shlex.quote(f) for f in test_files) or "--collect-only"
        return (
            f"timeout --signal=KILL {timeout} /opt/venv/bin/python /evalkit/lib/run_pytest.py \\\n"
            f"      -c {shlex.quote(config)} --rootdir /testbed -p no:cacheprovider --color=no "
            f"-rfE {args}{files}"
        )

    def summary_problem(self, report: TestReport, output: str) -> str | None:
        return compare_summaries(
            terminal_summaries(output), report, "pytest", ("passed", "failed", "error")
        )


def matches_globs(path: str, globs: Iterable[str]) -> bool:
    return any(fnmatch.fnmatch(path, pattern) for pattern in globs)


PYTEST = PytestRunner()
