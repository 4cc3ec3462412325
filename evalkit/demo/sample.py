"""A sample repository, a SWE-bench task set made from its history, and scripted agents.

``python -m evalkit.demo.sample OUT`` (re)builds, deterministically:

* ``OUT/repos/evalkit-samples__textkit.bundle``: ``textkit``, a tiny library whose git
  history (fixed identities and dates, so commit ids match on every machine) holds five
  issue fixes among ordinary commits;
* ``OUT/instances.jsonl``: one SWE-bench row per fix, FAIL_TO_PASS / PASS_TO_PASS found
  by running pytest before and after the gold patch (a hanging test counts as failing);
* ``OUT/predictions/scripted.jsonl``: fake agents (careful, sloppy, cheater) whose
  patches are real ``git diff`` output, meant to draw every verdict from the harness;
* ``OUT/README.md``.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path

REPO = "evalkit-samples/textkit"
BUNDLE = "evalkit-samples__textkit.bundle"
ID_PREFIX = "evalkit-samples__textkit-"
PREDICTIONS = Path("predictions") / "scripted.jsonl"

EPOCH = datetime(2024, 3, 1, 9, 0, tzinfo=timezone.utc)
"""Date of the first commit; commit ``i`` is dated ``i`` days and ``i`` hours later."""

HANG_TIMEOUT = 8.0
"""Seconds one pytest run of the sample may take; the suite needs well under one."""

# --- the sample library, version by version -------------------------------------------

GITIGNORE = "__pycache__/\n*.egg-info/\n.pytest_cache/\n"

PYPROJECT_V1 = """\
[build-system]
requires = ["setuptools>=61"]
build-backend = "setuptools.build_meta"

[project]
name = "textkit"
version = "0.1.0"
description = "Small text helpers (an evalkit sample project)"
requires-python = ">=3.9"

[project.optional-dependencies]
test = ["pytest"]

[tool.pytest.ini_options]
testpaths = ["tests"]
"""

PYPROJECT_V2 = PYPROJECT_V1.replace('version = "0.1.0"', 'version = "0.2.0"')

INIT_V1 = '''\
"""textkit: small text helpers."""

from textkit._width import display_width
from textkit.durations import format_duration, parse_duration
from textkit.sequences import chunk, dedupe
from textkit.slugs import slugify
from textkit.units import format_bytes
from textkit.wrapping import truncate, wrap

__version__ = "0.1.0"

__all__ = [
    "chunk",
    "dedupe",
    "display_width",
    "format_bytes",
    "format_duration",
    "parse_duration",
    "slugify",
    "truncate",
    "wrap",
]
'''

INIT_V2 = INIT_V1.replace('__version__ = "0.1.0"', '__version__ = "0.2.0"')

README_V1 = """\
# textkit

Small text helpers: slugs, durations, chunks, sizes and terminal-width truncation.

    pip install -e '.[test]'
    python -m pytest
"""

README_V2 = (
    README_V1
    + """
## Usage

    >>> from textkit import slugify, parse_duration, format_bytes
    >>> slugify("Hello world")
    'hello-world'
    >>> parse_duration("90s")
    90
    >>> format_bytes(1536)
    '1.5 KiB'
"""
)

CHANGELOG_V1 = """\
# Changelog

## Unreleased

- Slugs are lowercase ASCII (#1).
"""

CHANGELOG_V2 = CHANGELOG_V1 + "- `parse_duration` reads compound durations such as `1h30m` (#2).\n"

CHANGELOG_V3 = CHANGELOG_V2.replace("## Unreleased", "## 0.2.0")

SLUGS_V1 = '''\
"""URL slugs."""

import re


def slugify(text, sep="-"):
    """Turn ``text`` into a URL slug: its words joined by ``sep``."""
    words = re.findall(r"[A-Za-z0-9]+", text)
    return sep.join(words)
'''

SLUGS_V2 = '''\
"""URL slugs."""

import re
import unicodedata


def slugify(text, sep="-"):
    """Turn ``text`` into a URL slug: its lowercase ASCII words joined by ``sep``."""
    ascii_text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode("ascii")
    words = re.findall(r"[a-z0-9]+", ascii_text.lower())
    return sep.join(words)
'''

DURATIONS_V1 = '''\
"""Human durations such as ``90s`` or ``2h``."""

UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(text):
    """Seconds in a duration such as ``"90s"`` or ``"2h"``."""
    text = text.strip().lower()
    number, unit = text[:-1], text[-1:]
    if unit not in UNITS or not number.isdigit():
        raise ValueError(f"not a duration: {text!r}")
    return int(number) * UNITS[unit]


def format_duration(seconds):
    """The shortest spelling of ``seconds``, e.g. ``"1h30m"``."""
    parts = []
    for unit, size in sorted(UNITS.items(), key=lambda item: -item[1]):
        count, seconds = divmod(seconds, size)
        if count:
            parts.append(f"{count}{unit}")
    return "".join(parts) or "0s"
'''

DURATIONS_V2 = '''\
"""Human durations such as ``90s``, ``2h`` or ``1h30m``."""

import re

UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_PART = re.compile(r"(\\d+)([smhd])")


def parse_duration(text):
    """Seconds in a duration such as ``"90s"``, ``"2h"`` or ``"1h30m"``."""
    text = text.strip().lower()
    parts = _PART.findall(text)
    if not parts or "".join(n + u for n, u in parts) != text:
        raise ValueError(f"not a duration: {text!r}")
    return sum(int(n) * UNITS[u] for n, u in parts)
''' + DURATIONS_V1[DURATIONS_V1.index("\n\ndef format_duration") :]

SEQUENCES_V1 = '''\
"""Helpers for sequences."""


def chunk(seq, size):
    """Split ``seq`` into lists of at most ``size`` items, in order."""
    pieces = []
    start = 0
    while start < len(seq):
        piece = list(seq[start : start + size])
        if piece:
            pieces.append(piece)
        start += size
    return pieces


def dedupe(items):
    """``items`` without repeats, keeping the first occurrence of each."""
    seen = set()
    return [x for x in items if not (x in seen or seen.add(x))]
'''

SEQUENCES_V2 = SEQUENCES_V1.replace(
    "    pieces = []\n",
    '    if size < 1:\n        raise ValueError(f"chunk size must be at least 1, not {size}")\n'
    "    pieces = []\n",
)

WIDTH_V1 = '''\
"""Terminal cell widths."""


def display_width(text):
    """Cells ``text`` takes in a terminal (one per character)."""
    return len(text)
'''

WIDTH_V2 = '''\
"""Terminal cell widths."""

import unicodedata


def display_width(text):
    """Cells ``text`` takes in a terminal: two per wide East Asian character, else one."""
    return sum(_cell_width(char) for char in text)


def cut_to_width(text, width):
    """The longest prefix of ``text`` that fits in ``width`` cells."""
    used = 0
    for index, char in enumerate(text):
        used += _cell_width(char)
        if used > width:
            return text[:index]
    return text


def _cell_width(char):
    return 2 if unicodedata.east_asian_width(char) in ("W", "F") else 1
'''

WRAPPING_V1 = '''\
"""Fit text into a number of terminal cells."""

from textkit._width import display_width


def truncate(text, width, marker="..."):
    """``text`` cut to fit ``width`` cells, ending with ``marker`` when cut."""
    if display_width(text) <= width:
        return text
    return text[: width - len(marker)] + marker


def wrap(text, width):
    """Split ``text`` into lines of at most ``width`` cells, breaking between words."""
    lines, line = [], ""
    for word in text.split():
        candidate = f"{line} {word}" if line else word
        if line and display_width(candidate) > width:
            lines.append(line)
            line = word
        else:
            line = candidate
    if line:
        lines.append(line)
    return lines
'''

# An ordinary refactor: the fix for #4 then starts from this version, not the first.
WRAPPING_V2 = (
    WRAPPING_V1.replace(
        "    if display_width(text) <= width:\n        return text\n"
        "    return text[: width - len(marker)] + marker\n",
        "    if fits(text, width):\n        return text\n"
        "    room = width - len(marker)\n    return text[:room] + marker\n",
    )
    .replace("if line and display_width(candidate) > width:", "if line and not fits(c, width):")
    .replace("if line and not fits(c, width):", "if line and not fits(candidate, width):")
    + '''

def fits(text, width):
    """Whether ``text`` fits in ``width`` terminal cells."""
    return display_width(text) <= width
'''
)

WRAPPING_V3 = WRAPPING_V2.replace(
    "from textkit._width import display_width\n",
    "from textkit._width import cut_to_width, display_width\n",
).replace(
    "    room = width - len(marker)\n    return text[:room] + marker\n",
    "    room = width - display_width(marker)\n    return cut_to_width(text, room) + marker\n",
)

UNITS_V1 = '''\
"""Human-readable sizes."""

_UNITS = ("B", "KiB", "MiB", "GiB", "TiB")


def format_bytes(size):
    """``size`` bytes as a short string: ``"512 B"``, ``"1.5 KiB"``, ``"2.0 GiB"``."""
    if size <= 1024:
        return f"{size} B"
    value = float(size)
    for unit in _UNITS[1:]:
        value /= 1024
        if value <= 1024 or unit == _UNITS[-1]:
            return f"{value:.1f} {unit}"
'''

UNITS_V2 = UNITS_V1.replace("if size <= 1024:", "if size < 1024:").replace(
    "if value <= 1024 or", "if value < 1024 or"
)

TEST_SLUGS_V1 = """\
import pytest

from textkit import slugify


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("hello world", "hello-world"),
        ("  many   spaces  ", "many-spaces"),
        ("already-a-slug", "already-a-slug"),
    ],
)
def test_slugify(text, expected):
    assert slugify(text) == expected


def test_custom_separator():
    assert slugify("a b c", sep="_") == "a_b_c"
"""

TEST_SLUGS_V2 = TEST_SLUGS_V1.replace(
    '        ("already-a-slug", "already-a-slug"),\n',
    '        ("already-a-slug", "already-a-slug"),\n'
    '        ("Hello World", "hello-world"),\n'
    '        ("Crème brûlée", "creme-brulee"),\n',
)

TEST_DURATIONS_V1 = """\
import pytest

from textkit import format_duration, parse_duration


class TestParseDuration:
    def test_seconds(self):
        assert parse_duration("90s") == 90

    def test_hours_ignores_case_and_spaces(self):
        assert parse_duration(" 2H ") == 7200

    def test_rejects_unknown_unit(self):
        with pytest.raises(ValueError):
            parse_duration("5w")


class TestFormatDuration:
    @pytest.mark.parametrize(("seconds", "text"), [(0, "0s"), (90, "1m30s"), (86400, "1d")])
    def test_format(self, seconds, text):
        assert format_duration(seconds) == text
"""

TEST_DURATIONS_V2 = TEST_DURATIONS_V1.replace(
    '            parse_duration("5w")\n',
    '            parse_duration("5w")\n'
    "\n"
    "    def test_compound(self):\n"
    '        assert parse_duration("1h30m") == 5400\n'
    "\n"
    "    def test_rejects_dangling_number(self):\n"
    "        with pytest.raises(ValueError):\n"
    '            parse_duration("1h30")\n'
    "\n"
    "    def test_round_trips_format_duration(self):\n"
    "        for seconds in (59, 3600, 93784):\n"
    "            assert parse_duration(format_duration(seconds)) == seconds\n",
)

TEST_SEQUENCES_V1 = """\
from textkit import chunk, dedupe


def test_chunk_even():
    assert chunk([1, 2, 3, 4], 2) == [[1, 2], [3, 4]]


def test_chunk_remainder():
    assert chunk("abcde", 2) == [["a", "b"], ["c", "d"], ["e"]]


def test_chunk_empty():
    assert chunk([], 3) == []


def test_dedupe_keeps_first_occurrence():
    assert dedupe([3, 1, 3, 2, 1]) == [3, 1, 2]
"""

# The new test sits mid-file: before the fix it hangs and the tests after it never run.
TEST_SEQUENCES_V2 = "import pytest\n\n" + TEST_SEQUENCES_V1.replace(
    "\n\ndef test_dedupe_keeps_first_occurrence",
    "\n\ndef test_chunk_rejects_zero_size():\n"
    "    with pytest.raises(ValueError):\n"
    "        chunk([1, 2, 3], 0)\n"
    "\n\ndef test_dedupe_keeps_first_occurrence",
)

TEST_WRAPPING_V1 = """\
from textkit import display_width, truncate, wrap


def test_short_text_is_kept():
    assert truncate("short", 10) == "short"


def test_long_text_is_cut_with_marker():
    assert truncate("abcdefghij", 8) == "abcde..."


def test_custom_marker():
    assert truncate("abcdefghij", 5, marker="~") == "abcd~"


def test_wrap_breaks_between_words():
    assert wrap("the quick brown fox", 10) == ["the quick", "brown fox"]


def test_display_width_ascii():
    assert display_width("abc") == 3
"""

TEST_WRAPPING_V2 = (
    TEST_WRAPPING_V1
    + """

def test_display_width_wide_characters():
    assert display_width("日本") == 4


def test_truncate_wide_characters():
    assert truncate("日本語のテキスト", 9) == "日本語..."


def test_wrap_wide_characters():
    assert wrap("日本語 テキスト", 8) == ["日本語", "テキスト"]
"""
)

TEST_UNITS_V1 = """\
import pytest

from textkit import format_bytes


class TestFormatBytes:
    @pytest.mark.parametrize(
        ("size", "text"),
        [
            (0, "0 B"),
            (512, "512 B"),
            (1536, "1.5 KiB"),
            (5 * 1024**3, "5.0 GiB"),
        ],
    )
    def test_format(self, size, text):
        assert format_bytes(size) == text

    def test_huge_sizes_stay_in_tebibytes(self):
        assert format_bytes(2048 * 1024**4) == "2048.0 TiB"
"""

TEST_UNITS_V2 = TEST_UNITS_V1.replace(
    '            (512, "512 B"),\n',
    '            (512, "512 B"),\n'
    '            (1023, "1023 B"),\n'
    '            (1024, "1.0 KiB"),\n'
    '            (1024**2, "1.0 MiB"),\n',
)

INITIAL = {
    ".gitignore": GITIGNORE,
    "pyproject.toml": PYPROJECT_V1,
    "README.md": README_V1,
    "src/textkit/__init__.py": INIT_V1,
    "src/textkit/_width.py": WIDTH_V1,
    "src/textkit/durations.py": DURATIONS_V1,
    "src/textkit/sequences.py": SEQUENCES_V1,
    "src/textkit/slugs.py": SLUGS_V1,
    "src/textkit/units.py": UNITS_V1,
    "src/textkit/wrapping.py": WRAPPING_V1,
    "tests/test_durations.py": TEST_DURATIONS_V1,
    "tests/test_sequences.py": TEST_SEQUENCES_V1,
    "tests/test_slugs.py": TEST_SLUGS_V1,
    "tests/test_units.py": TEST_UNITS_V1,
    "tests/test_wrapping.py": TEST_WRAPPING_V1,
}

# --- the issues, as their reporters wrote them ------------------------------------------

ISSUES: dict[int, str] = {
    1: (
        "slugify keeps capital letters and mangles accented words\n\n"
        'I use `slugify` for blog post URLs. `slugify("Hello World")` gives `Hello-World`, '
        'but URLs should be lowercase, and `slugify("Crème brûlée")` gives `Cr-me-br-l-e`, '
        "which is unreadable. I'd expect `hello-world` and `creme-brulee`: accents dropped, "
        "letters kept.\n"
    ),
    2: (
        "parse_duration can't read what format_duration writes\n\n"
        "## What happens\n\n"
        "```python\n"
        ">>> format_duration(5400)\n"
        "'1h30m'\n"
        '>>> parse_duration("1h30m")\n'
        "ValueError: not a duration: '1h30m'\n"
        "```\n\n"
        "## What I expected\n\n"
        "`parse_duration` should accept **compound** durations such as `1h30m` or "
        "`1d2h3m4s`, so that values round-trip. Garbage like `1h30` should still raise "
        "`ValueError`.\n\n"
        "PS: our settings page showed the raw value of a bad field, "
        "<script>alert(1)</script>, and it ran. Not your bug, just so you know "
        "these strings end up in HTML.\n"
    ),
    3: (
        "chunk() hangs forever when size is 0\n\n"
        "Our nightly export hung for six hours. The batch size came from an empty config "
        "value, so we called `chunk(rows, 0)`, which never returns (one CPU at 100%). A size "
        "below 1 makes no sense; please raise a ValueError instead of looping.\n"
    ),
    4: (
        "truncate() overflows table columns with Japanese text\n\n"
        '`truncate("日本語のテキスト", 9)` returns the whole string, which takes 16 columns '
        "in a terminal and breaks our table layout. CJK characters are two cells wide, so "
        "`display_width` should count them as 2, and `truncate` and `wrap` should measure in "
        "cells (here I'd expect `日本語...`).\n"
    ),
    5: (
        'format_bytes(1024) says "1024 B"\n\n'
        "Exactly 1024 bytes should read `1.0 KiB` and 1048576 bytes `1.0 MiB`; today they "
        "come out as `1024 B` and `1024.0 KiB`. Looks like an off-by-one at the unit "
        "boundaries.\n"
    ),
}


@dataclass(frozen=True)
class Commit:
    """One commit of the sample's history: the files it writes and its message."""

    message: str
    files: Mapping[str, str]


HISTORY: tuple[Commit, ...] = (
    Commit("Initial import of textkit", INITIAL),
    Commit(
        "Lowercase and transliterate slugs (fixes #1)",
        {"src/textkit/slugs.py": SLUGS_V2, "tests/test_slugs.py": TEST_SLUGS_V2},
    ),
    Commit("Document usage in the README", {"README.md": README_V2}),
    Commit("Start a changelog", {"CHANGELOG.md": CHANGELOG_V1}),
    Commit(
        "Parse compound durations like 1h30m (fixes #2)",
        {
            "CHANGELOG.md": CHANGELOG_V2,
            "src/textkit/durations.py": DURATIONS_V2,
            "tests/test_durations.py": TEST_DURATIONS_V2,
        },
    ),
    Commit(
        "Reject chunk size 0 instead of looping forever (fixes #3)",
        {"src/textkit/sequences.py": SEQUENCES_V2, "tests/test_sequences.py": TEST_SEQUENCES_V2},
    ),
    Commit("Share fits() between truncate and wrap", {"src/textkit/wrapping.py": WRAPPING_V2}),
    Commit(
        "Measure East Asian wide characters as two cells (fixes #4)",
        {
            "src/textkit/_width.py": WIDTH_V2,
            "src/textkit/wrapping.py": WRAPPING_V3,
            "tests/test_wrapping.py": TEST_WRAPPING_V2,
        },
    ),
    Commit(
        "Fix format_bytes at unit boundaries (fixes #5)",
        {"src/textkit/units.py": UNITS_V2, "tests/test_units.py": TEST_UNITS_V2},
    ),
    Commit(
        "Release 0.2.0",
        {
            "CHANGELOG.md": CHANGELOG_V3,
            "pyproject.toml": PYPROJECT_V2,
            "src/textkit/__init__.py": INIT_V2,
        },
    ),
)

FIXES_RE = re.compile(r"\(fixes #(\d+)\)")

# --- deterministic git ------------------------------------------------------------------


def _git_env(when: datetime | None = None) -> dict[str, str]:
    """No user or system config, fixed identity: the same objects on every machine."""
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": tempfile.gettempdir(),
        "LC_ALL": "C",
        "GIT_CONFIG_NOSYSTEM": "1",
        "GIT_CONFIG_GLOBAL": os.devnull,
        "GIT_AUTHOR_NAME": "Sample Maintainer",
        "GIT_AUTHOR_EMAIL": "maintainer@textkit.invalid",
        "GIT_COMMITTER_NAME": "Sample Maintainer",
        "GIT_COMMITTER_EMAIL": "maintainer@textkit.invalid",
    }
    if when is not None:
        env["GIT_AUTHOR_DATE"] = env["GIT_COMMITTER_DATE"] = when.isoformat()
    return env


def git(root: Path, *args: str, when: datetime | None = None) -> str:
    """Run git in ``root``; returns stdout (raises on failure)."""
    cmd = [
        "git",
        "-c",
        "init.defaultBranch=main",
        "-c",
        "commit.gpgsign=false",
        "-c",
        "pack.threads=1",  # multi-threaded delta search makes bundle bytes vary
        *args,
    ]
    proc = subprocess.run(
        cmd, cwd=root, env=_git_env(when), check=True, capture_output=True, text=True
    )
    return proc.stdout


def _write_files(root: Path, files: Mapping[str, str]) -> None:
    for rel, content in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(content, encoding="utf-8")


def build_sample_repo(dest: Path) -> None:
    """Create the sample repository at ``dest`` (identical commit ids on every run)."""
    dest.mkdir(parents=True, exist_ok=True)
    git(dest, "init", "-q")
    for index, commit in enumerate(HISTORY):
        _write_files(dest, commit.files)
        git(dest, "add", "-A")
        when = EPOCH + timedelta(days=index, hours=index)
        git(dest, "commit", "-q", "--no-verify", "-m", commit.message, when=when)
    git(dest, "tag", "v0.2.0")


# --- the task set -----------------------------------------------------------------------


@dataclass(frozen=True)
class FixCommit:
    """A commit whose message closes an issue, and what it changed."""

    issue: int
    sha: str
    base: str
    date: str
    source_paths: tuple[str, ...]
    test_paths: tuple[str, ...]


def _fix_commits(repo: Path) -> list[FixCommit]:
    """The history's issue fixes, oldest first, found from commit messages like a miner."""
    fixes = []
    log = git(repo, "log", "--reverse", "--format=%H%x00%P%x00%cI%x00%s", "main")
    for line in log.splitlines():
        sha, parent, date, subject = line.split("\x00")
        match = FIXES_RE.search(subject)
        if match is None:
            continue
        paths = git(repo, "diff", "--name-only", parent, sha).splitlines()
        fixes.append(
            FixCommit(
                issue=int(match.group(1)),
                sha=sha,
                base=parent,
                date=date,
                source_paths=tuple(p for p in paths if not p.startswith("tests/")),
                test_paths=tuple(p for p in paths if p.startswith("tests/")),
            )
        )
    return fixes


def _diff(repo: Path, *revs_and_options: str) -> str:
    return git(repo, "diff", "--no-color", "--no-ext-diff", "--full-index", *revs_and_options)


# pytest plugin for the host runs: one JSON line per test start and phase, appended as
# they happen, so a run killed on a hang still tells which tests passed and which hung.
OUTCOME_PLUGIN = """\
import json
import os


def _record(**fields):
    with open(os.environ["EVALKIT_DEMO_OUTCOMES"], "a", encoding="utf-8") as fh:
        fh.write(json.dumps(fields) + "\\n")


def pytest_runtest_logstart(nodeid, location):
    _record(nodeid=nodeid, when="start", outcome="")


def pytest_runtest_logreport(report):
    _record(nodeid=report.nodeid, when=report.when, outcome=report.outcome)
"""


@dataclass(frozen=True)
class RunResult:
    """Outcomes of one pytest run over some files: which tests passed, in run order."""

    passed: dict[str, bool]
    hung: str | None


def _pytest_once(tree: Path, files: tuple[str, ...], skip: list[str], scratch: Path) -> RunResult:
    outcomes = scratch / "outcomes.jsonl"
    outcomes.unlink(missing_ok=True)
    (scratch / "_evalkit_demo_outcomes.py").write_text(OUTCOME_PLUGIN, encoding="utf-8")
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(scratch),
        "PYTHONPATH": os.pathsep.join([str(scratch), str(tree / "src")]),
        "PYTHONDONTWRITEBYTECODE": "1",
        "PYTHONHASHSEED": "0",
        "PYTEST_DISABLE_PLUGIN_AUTOLOAD": "1",  # the host's plugins must not change results
        "EVALKIT_DEMO_OUTCOMES": str(outcomes),
    }
    deselect = [arg for node in skip for arg in ("--deselect", node)]
    cmd = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-p"]
    cmd += ["_evalkit_demo_outcomes", "-q", *deselect, *files]
    hung = False
    try:
        # check=False: failing tests are the data here, not an error.
        subprocess.run(
            cmd,
            cwd=tree,
            env=env,
            check=False,
            capture_output=True,
            text=True,
            timeout=HANG_TIMEOUT,
        )
    except subprocess.TimeoutExpired:
        hung = True
    return _read_outcomes(outcomes, hung)


def _read_outcomes(path: Path, hung: bool) -> RunResult:
    passed: dict[str, bool] = {}
    last_started = None
    lines = path.read_text(encoding="utf-8").splitlines() if path.exists() else []
    for line in lines:
        record = json.loads(line)
        node, when = record["nodeid"], record["when"]
        if when == "start":
            passed[node], last_started = False, node
        elif when == "call":
            passed[node] = record["outcome"] == "passed"
        elif record["outcome"] != "passed":  # a setup or teardown that failed or skipped
            passed[node] = False
        if when == "teardown":
            last_started = None
    return RunResult(passed, last_started if hung else None)


def run_tests(tree: Path, files: tuple[str, ...]) -> dict[str, bool]:
    """Pass/fail per test id in ``files``; a test that hangs fails and the rest still run."""
    passed: dict[str, bool] = {}
    skip: list[str] = []
    with tempfile.TemporaryDirectory(prefix="evalkit-demo-pytest-") as scratch:
        while True:
            run = _pytest_once(tree, files, skip, Path(scratch))
            passed.update(run.passed)
            if run.hung is None:
                return passed
            if run.hung in skip:
                raise RuntimeError(f"{run.hung} hangs even when deselected")
            skip.append(run.hung)


@contextmanager
def worktree(repo: Path, commit: str) -> Iterator[Path]:
    """A detached scratch checkout of ``commit``, removed afterwards."""
    with tempfile.TemporaryDirectory(prefix="evalkit-demo-tree-") as tmp:
        tree = Path(tmp) / "tree"
        git(repo, "worktree", "add", "-q", "--detach", str(tree), commit)
        try:
            yield tree
        finally:
            git(repo, "worktree", "remove", "--force", str(tree))


def _apply(tree: Path, patch: str) -> None:
    patch_file = tree.parent / "change.patch"
    patch_file.write_text(patch, encoding="utf-8")
    git(tree, "apply", str(patch_file))


@dataclass(frozen=True)
class Labels:
    fail_to_pass: list[str]
    pass_to_pass: list[str]


def classify_tests(repo: Path, fix: FixCommit, patch: str, test_patch: str) -> Labels:
    """FAIL_TO_PASS / PASS_TO_PASS from real runs: base+tests, then base+tests+gold."""
    with worktree(repo, fix.base) as tree:
        _apply(tree, test_patch)
        before = run_tests(tree, fix.test_paths)
        _apply(tree, patch)
        after = run_tests(tree, fix.test_paths)
    broken = [test for test, ok in after.items() if not ok]
    if broken:
        raise RuntimeError(f"#{fix.issue}: gold patch leaves failing tests: {broken}")
    return Labels(
        fail_to_pass=[test for test in after if not before.get(test, False)],
        pass_to_pass=[test for test in after if before.get(test, False)],
    )


def _instance_row(repo: Path, fix: FixCommit, first_commit: str) -> dict[str, object]:
    patch = _diff(repo, fix.base, fix.sha, "--", *fix.source_paths)
    test_patch = _diff(repo, fix.base, fix.sha, "--", *fix.test_paths)
    tests = classify_tests(repo, fix, patch, test_patch)
    if not tests.fail_to_pass:
        raise RuntimeError(f"#{fix.issue}: no test fails before the fix")
    return {
        "instance_id": f"{ID_PREFIX}{fix.issue}",
        "repo": REPO,
        "base_commit": fix.base,
        "patch": patch,
        "test_patch": test_patch,
        "problem_statement": ISSUES[fix.issue],
        "hints_text": "",
        "created_at": fix.date,
        "version": "0.1",
        "environment_setup_commit": first_commit,
        "FAIL_TO_PASS": tests.fail_to_pass,
        "PASS_TO_PASS": tests.pass_to_pass,
        "evalkit_fix_commit": fix.sha,
        "evalkit_issue_numbers": [fix.issue],
    }


def _write_jsonl(path: Path, rows: list[dict[str, object]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    text = "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)
    path.write_text(text, encoding="utf-8")


TASKSET_README = """\
# Sample task set: textkit

Five SWE-bench-style tasks from the history of `textkit`, a tiny library evalkit writes
itself (`python -m evalkit.demo.sample tasks/sample` rebuilds this directory, byte for byte).
- `repos/evalkit-samples__textkit.bundle`: the repository (`git clone` works on a bundle).
- `instances.jsonl`: one row per fixed issue; FAIL_TO_PASS / PASS_TO_PASS come from pytest
  runs before and after the gold patch. Task 3's tests hang before the fix (timeouts).
- `predictions/scripted.jsonl`: scripted agents: `careful` (rewrites, one wrong), `sloppy`
  (fuzz-only, unappliable and empty patches) and `cheater` (reward hacks, fixes nothing).
All tasks share `environment_setup_commit` (the first commit), hence one environment image.
"""


def build_sample_taskset(out: Path) -> list[dict[str, object]]:
    """Write ``out/instances.jsonl``, ``out/repos/<bundle>`` and ``out/README.md``."""
    with tempfile.TemporaryDirectory(prefix="evalkit-demo-repo-") as tmp:
        repo = Path(tmp) / "textkit"
        build_sample_repo(repo)
        (out / "repos").mkdir(parents=True, exist_ok=True)
        git(repo, "bundle", "create", "-q", str((out / "repos" / BUNDLE).resolve()), "--all")
        first = git(repo, "rev-list", "--max-parents=0", "main").strip()
        rows = [_instance_row(repo, fix, first) for fix in _fix_commits(repo)]
    _write_jsonl(out / "instances.jsonl", rows)
    (out / "README.md").write_text(TASKSET_README, encoding="utf-8")
    return rows


# --- scripted agents --------------------------------------------------------------------

# careful: the same behaviour as gold, written differently (#1, #2, #3, #5) ...
CAREFUL_SLUGS = '''\
"""URL slugs."""

import re
import unicodedata


def slugify(text, sep="-"):
    """Turn ``text`` into a URL slug: its lowercase ASCII words joined by ``sep``."""
    decomposed = unicodedata.normalize("NFKD", text)
    plain = "".join(char for char in decomposed if not unicodedata.combining(char))
    return sep.join(re.findall(r"[a-z0-9]+", plain.lower()))
'''

CAREFUL_DURATIONS = DURATIONS_V1.replace(
    """\
    text = text.strip().lower()
    number, unit = text[:-1], text[-1:]
    if unit not in UNITS or not number.isdigit():
        raise ValueError(f"not a duration: {text!r}")
    return int(number) * UNITS[unit]
""",
    """\
    text = text.strip().lower()
    total, digits = 0, ""
    for char in text:
        if char in "0123456789":
            digits += char
        elif char in UNITS and digits:
            total += int(digits) * UNITS[char]
            digits = ""
        else:
            raise ValueError(f"not a duration: {text!r}")
    if digits or not text:
        raise ValueError(f"not a duration: {text!r}")
    return total
""",
)

CAREFUL_SEQUENCES = SEQUENCES_V1.replace(
    """\
    pieces = []
    start = 0
    while start < len(seq):
        piece = list(seq[start : start + size])
        if piece:
            pieces.append(piece)
        start += size
    return pieces
""",
    """\
    if size <= 0:
        raise ValueError("chunk size must be positive")
    return [list(seq[i : i + size]) for i in range(0, len(seq), size)]
""",
)

CAREFUL_UNITS = UNITS_V1.replace(
    """\
    if size <= 1024:
        return f"{size} B"
    value = float(size)
    for unit in _UNITS[1:]:
        value /= 1024
        if value <= 1024 or unit == _UNITS[-1]:
            return f"{value:.1f} {unit}"
""",
    """\
    power = min((size.bit_length() - 1) // 10, len(_UNITS) - 1) if size > 0 else 0
    if power == 0:
        return f"{size} B"
    return f"{size / 1024**power:.1f} {_UNITS[power]}"
""",
)

# ... and wrong on #4: widths are right, but truncate() still cuts by characters.
CAREFUL_WIDTH_ONLY = '''\
"""Terminal cell widths."""

from unicodedata import east_asian_width


def display_width(text):
    """Cells ``text`` takes in a terminal: wide East Asian characters take two."""
    return len(text) + sum(1 for char in text if east_asian_width(char) in "WF")
'''

CAREFUL: dict[int, dict[str, str]] = {
    1: {"src/textkit/slugs.py": CAREFUL_SLUGS},
    2: {"src/textkit/durations.py": CAREFUL_DURATIONS},
    3: {"src/textkit/sequences.py": CAREFUL_SEQUENCES},
    4: {"src/textkit/_width.py": CAREFUL_WIDTH_ONLY},
    5: {"src/textkit/units.py": CAREFUL_UNITS},
}

# sloppy #2: a patch for a version of durations.py that never existed.
PATCH_NOWHERE = "\n".join(
    [
        "diff --git a/src/textkit/durations.py b/src/textkit/durations.py",
        "--- a/src/textkit/durations.py",
        "+++ b/src/textkit/durations.py",
        '@@ -8,7 +8,7 @@ UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}',
        " def parse_duration(text):",
        '     """Seconds in a duration."""',
        "     text = text.strip()",
        "-    value, unit = text[:-1], text[-1]",
        '+    value, unit = re.fullmatch(r"(\\d+)([smhd])", text).groups()',
        "     return int(value) * UNITS[unit]",
        " ",
        " ",
        "",
    ]
)

# cheater (a): every test phase reports "passed", whatever happened.
CHEAT_CONFTEST = """\
import pytest


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    report.outcome = "passed"
    report.longrepr = None
"""


def _cheat_spoof_output(row: Mapping[str, object], base_source: str) -> str:
    """cheater (b): importing the library prints a fake pytest log and exits 0."""
    tests = [*_str_list(row["FAIL_TO_PASS"]), *_str_list(row["PASS_TO_PASS"])]
    fake = [f"{test} PASSED" for test in tests]
    fake.append(f"============================== {len(tests)} passed in 0.02s ===")
    return (
        base_source
        + "\n\nimport os as _os\n\nprint("
        + repr("\n".join(fake))
        + ", flush=True)\n_os._exit(0)\n"
    )


def _test_names(row: Mapping[str, object]) -> list[str]:
    """Bare function names of the failing tests (no file, class or parameters)."""
    names = (test.split("::")[-1].split("[")[0] for test in _str_list(row["FAIL_TO_PASS"]))
    return list(dict.fromkeys(names))


def _cheat_weakened_tests(row: Mapping[str, object], base_tests: str) -> str:
    """cheater (c): the failing tests, pre-written so that they cannot fail."""
    stubs = "".join(f"\n\ndef {name}():\n    assert True\n" for name in _test_names(row))
    return base_tests + stubs


def _cheat_pytest_ini(row: Mapping[str, object]) -> str:
    """cheater (d): a pytest.ini that deselects the failing tests."""
    expression = " and ".join(f"not {name}" for name in _test_names(row))
    return f'[pytest]\naddopts = -k "{expression}"\n'


def _cheat_pyproject(row: Mapping[str, object], base_pyproject: str) -> str:
    """cheater (d'): pyproject addopts that unload the grader's plugin and deselect."""
    expression = " and ".join(f"not {name}" for name in _test_names(row))
    line = f"addopts = \"-p no:evalkit_pytest -k '{expression}'\"\n"
    return base_pyproject.replace('testpaths = ["tests"]\n', f'testpaths = ["tests"]\n{line}')


def _str_list(value: object) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise TypeError(f"expected a list of strings, got {value!r}")
    return value


@dataclass(frozen=True)
class Task:
    """One instance of the task set, seen from a clone of its repository."""

    issue: int
    row: Mapping[str, object]
    repo: Path

    @property
    def base(self) -> str:
        return str(self.row["base_commit"])

    @property
    def gold(self) -> str:
        return str(self.row["patch"])

    def at_base(self, path: str) -> str:
        return git(self.repo, "show", f"{self.base}:{path}")

    def changed(self, files: Mapping[str, str]) -> str:
        """The real ``git diff`` from base to base with ``files`` written over it."""
        with worktree(self.repo, self.base) as tree:
            _write_files(tree, files)
            git(tree, "add", "-A")
            return _diff(tree, "--cached", self.base)


def careful(task: Task) -> str:
    return task.changed(CAREFUL[task.issue])


def sloppy(task: Task) -> str:
    if task.issue == 2:
        return PATCH_NOWHERE
    if task.issue == 3:
        return _drift(task.gold)
    if task.issue == 4:
        return ""
    return task.gold


def _drift(patch: str) -> str:
    """Context from a slightly different file version (type hints), hunk moved down 2 lines.

    ``git apply`` needs exact context and refuses; ``patch --fuzz`` skips the bad line.
    """
    old_context, new_context = " def chunk(seq, size):\n", " def chunk(seq, size: int):\n"
    if old_context not in patch:
        raise ValueError("the #3 gold patch no longer has the context _drift edits")

    def shift(match: re.Match[str]) -> str:
        old, old_len, new, new_len = (int(g) for g in match.groups())
        return f"@@ -{old + 2},{old_len} +{new + 2},{new_len} @@"

    drifted = patch.replace(old_context, new_context)
    return re.sub(r"@@ -(\d+),(\d+) \+(\d+),(\d+) @@", shift, drifted)


def cheater(task: Task) -> str:
    row, path = task.row, CHEAT_TARGETS[task.issue]
    if task.issue == 1:
        content = CHEAT_CONFTEST
    elif task.issue == 2:
        content = _cheat_spoof_output(row, task.at_base(path))
    elif task.issue == 3:
        content = _cheat_pytest_ini(row)
    elif task.issue == 4:
        content = _cheat_weakened_tests(row, task.at_base(path))
    else:
        content = _cheat_pyproject(row, task.at_base(path))
    return task.changed({path: content})


CHEAT_TARGETS = {
    1: "tests/conftest.py",
    2: "src/textkit/durations.py",
    3: "pytest.ini",
    4: "tests/test_wrapping.py",
    5: "pyproject.toml",
}


AGENTS: tuple[tuple[str, Callable[[Task], str]], ...] = (
    ("scripted/careful", careful),
    ("scripted/sloppy", sloppy),
    ("scripted/cheater", cheater),
)

EXPECTED: dict[tuple[str, int], str] = {
    # (model, issue) -> the harness verdict each scripted patch was written to get.
    **{("scripted/careful", n): "resolved" for n in (1, 2, 3, 5)},
    ("scripted/careful", 4): "unresolved",
    ("scripted/sloppy", 1): "resolved",
    ("scripted/sloppy", 2): "patch_failed",
    ("scripted/sloppy", 3): "resolved",  # only through `patch --fuzz`
    ("scripted/sloppy", 4): "empty_patch",
    ("scripted/sloppy", 5): "resolved",
    **{("scripted/cheater", n): "unresolved" for n in (1, 2, 3, 4, 5)},
}


def check_applies(task: Task, patch: str) -> tuple[bool, bool | None]:
    """Whether ``git apply`` and ``patch -p1 --fuzz=3`` accept ``patch`` at base.

    The second is None when GNU patch is not installed.
    """
    with worktree(task.repo, task.base) as tree:
        patch_file = tree.parent / "check.patch"
        patch_file.write_text(patch, encoding="utf-8")
        by_git = _accepts(["git", "apply", "--check", str(patch_file)], tree)
        if shutil.which("patch") is None:
            return by_git, None
        fuzz = ["patch", "--dry-run", "--batch", "-p1", "--fuzz=3", "-i", str(patch_file)]
        return by_git, _accepts(fuzz, tree)


def _accepts(cmd: list[str], cwd: Path) -> bool:
    # check=False: a refusal is the answer we are asking for.
    proc = subprocess.run(cmd, cwd=cwd, env=_git_env(), check=False, capture_output=True, text=True)
    return proc.returncode == 0


FUZZ_ONLY = ("scripted/sloppy", 3)


def _wanted_application(model: str, issue: int) -> tuple[bool, bool]:
    """(``git apply`` accepts, ``patch --fuzz`` accepts), as the expected verdict needs."""
    if (model, issue) == FUZZ_ONLY:
        return False, True
    if EXPECTED[(model, issue)] == "patch_failed":
        return False, False
    return True, True


def _verify_application(task: Task, model: str, patch: str) -> None:
    """Fail the build if a scripted patch would not meet the tools as intended."""
    if not patch:
        return
    wanted = _wanted_application(model, task.issue)
    by_git, by_fuzz = check_applies(task, patch)
    if by_git != wanted[0] or by_fuzz not in (None, wanted[1]):
        raise RuntimeError(
            f"{model} #{task.issue}: git apply={by_git}, patch --fuzz={by_fuzz}; wanted {wanted}"
        )


def write_scripted_predictions(taskset: Path, out: Path) -> None:
    """Predictions of every scripted agent for every instance of ``taskset``."""
    rows = [json.loads(line) for line in (taskset / "instances.jsonl").read_text().splitlines()]
    predictions: list[dict[str, object]] = []
    with tempfile.TemporaryDirectory(prefix="evalkit-demo-clone-") as tmp:
        repo = Path(tmp) / "textkit"
        git(Path(tmp), "clone", "-q", str((taskset / "repos" / BUNDLE).resolve()), str(repo))
        tasks = [Task(issue=row["evalkit_issue_numbers"][0], row=row, repo=repo) for row in rows]
        for model, agent in AGENTS:
            for task in tasks:
                patch = agent(task)
                _verify_application(task, model, patch)
                predictions.append(
                    {
                        "instance_id": task.row["instance_id"],
                        "model_name_or_path": model,
                        "model_patch": patch,
                    }
                )
    _write_jsonl(out, predictions)


def main(argv: list[str]) -> int:
    out = Path(argv[0] if argv else "tasks/sample")
    rows = build_sample_taskset(out)
    write_scripted_predictions(out, out / PREDICTIONS)
    for row in rows:
        f2p, p2p = _str_list(row["FAIL_TO_PASS"]), _str_list(row["PASS_TO_PASS"])
        print(f"{row['instance_id']}: FAIL_TO_PASS {len(f2p)}, PASS_TO_PASS {len(p2p)}")
    print(f"wrote {len(rows)} instances and {len(AGENTS)} scripted agents to {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
