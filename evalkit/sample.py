"""The sample task set: a small library this project wrote, with fixed issues in its history.

``python -m evalkit.sample tasks/sample`` rebuilds ``tasks/sample/`` deterministically
(fixed authors and dates, so commit ids are the same on every machine): the
repository bundle, ``instances.jsonl`` and ``predictions/scripted.jsonl``, whose
scripted agents exercise every verdict: careful fixes, sloppy patches that need a
fuzzy apply or apply nowhere, an empty patch, and reward-hacking attempts.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

REPO = "evalkit-samples/textkit"
BUNDLE = "evalkit-samples__textkit.bundle"

PYPROJECT = """\
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

INIT = '''\
"""textkit: small text helpers."""

from textkit.durations import parse_duration
from textkit.sequences import chunk
from textkit.slugs import slugify
from textkit.wrapping import truncate

__all__ = ["chunk", "parse_duration", "slugify", "truncate"]
'''

SLUGS_V1 = '''\
import re


def slugify(text):
    """Turn ``text`` into a URL slug: words joined by hyphens."""
    words = re.findall(r"[A-Za-z0-9]+", text)
    return "-".join(words)
'''

SLUGS_V2 = '''\
import re
import unicodedata


def slugify(text):
    """Turn ``text`` into a URL slug: lowercase ASCII words joined by hyphens."""
    ascii_text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()
    words = re.findall(r"[a-z0-9]+", ascii_text.lower())
    return "-".join(words)
'''

DURATIONS_V1 = '''\
UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(text):
    """Seconds in a duration such as ``"90s"`` or ``"2h"``."""
    text = text.strip()
    return int(text[:-1]) * UNITS[text[-1]]
'''

DURATIONS_V2 = '''\
import re

UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
PART = re.compile(r"(\\d+)([smhd])")


def parse_duration(text):
    """Seconds in a duration such as ``"90s"``, ``"2h"`` or ``"1h30m"``."""
    text = text.strip()
    parts = PART.findall(text)
    if not parts or "".join(n + u for n, u in parts) != text:
        raise ValueError(f"not a duration: {text!r}")
    return sum(int(n) * UNITS[u] for n, u in parts)
'''

SEQUENCES_V1 = '''\
def chunk(seq, size):
    """Split ``seq`` into lists of ``size`` items (the last may be shorter)."""
    out = []
    start = 0
    while start < len(seq):
        piece = list(seq[start:start + size])
        if piece:
            out.append(piece)
        start += size
    return out
'''

SEQUENCES_V2 = SEQUENCES_V1.replace(
    "    out = []\n",
    '    if size < 1:\n        raise ValueError("size must be at least 1")\n    out = []\n',
)

WRAPPING_V1 = '''\
from textkit._width import display_width


def truncate(text, width, marker="..."):
    """Cut ``text`` to at most ``width`` characters, ending with ``marker`` when cut."""
    if display_width(text) <= width:
        return text
    return text[:width] + marker
'''

WRAPPING_V2 = '''\
from textkit._width import cut_to_width, display_width


def truncate(text, width, marker="..."):
    """Cut ``text`` to at most ``width`` characters, ending with ``marker`` when cut."""
    if display_width(text) <= width:
        return text
    return cut_to_width(text, max(width - len(marker), 0)) + marker
'''

WIDTH_V1 = '''\
def display_width(text):
    """Width of ``text`` in terminal cells (one per character)."""
    return len(text)
'''

WIDTH_V2 = (
    WIDTH_V1
    + '''

def cut_to_width(text, width):
    """The longest prefix of ``text`` that fits in ``width`` cells."""
    return text[:width]
'''
)

TEST_SLUGS_V1 = """\
import pytest

from textkit import slugify


@pytest.mark.parametrize(
    "text,expected",
    [
        ("hello world", "hello-world"),
        ("  many   spaces ", "many-spaces"),
    ],
)
def test_slugify(text, expected):
    assert slugify(text) == expected
"""

TEST_SLUGS_V2 = TEST_SLUGS_V1.replace(
    '        ("  many   spaces ", "many-spaces"),\n',
    '        ("  many   spaces ", "many-spaces"),\n'
    '        ("Hello World", "hello-world"),\n'
    '        ("Crème brûlée", "creme-brulee"),\n',
)

TEST_DURATIONS_V1 = """\
import pytest

from textkit import parse_duration


class TestParseDuration:
    def test_seconds(self):
        assert parse_duration("90s") == 90

    def test_hours(self):
        assert parse_duration("2h") == 7200
"""

TEST_DURATIONS_V2 = (
    TEST_DURATIONS_V1
    + """
    def test_compound(self):
        assert parse_duration("1h30m") == 5400

    def test_rejects_garbage(self):
        with pytest.raises(ValueError):
            parse_duration("5w")
"""
)

TEST_SEQUENCES_V1 = """\
from textkit import chunk


def test_chunk_even():
    assert chunk([1, 2, 3, 4], 2) == [[1, 2], [3, 4]]


def test_chunk_remainder():
    assert chunk("abcde", 2) == [["a", "b"], ["c", "d"], ["e"]]
"""

TEST_SEQUENCES_V2 = (
    TEST_SEQUENCES_V1
    + """

def test_chunk_zero_size_is_an_error():
    import pytest

    with pytest.raises(ValueError):
        chunk([1, 2, 3], 0)
"""
)

TEST_WRAPPING_V1 = """\
from textkit import truncate


def test_short_text_is_kept():
    assert truncate("short", 10) == "short"
"""

TEST_WRAPPING_V2 = (
    TEST_WRAPPING_V1
    + """

def test_truncated_text_fits_the_width():
    assert truncate("abcdefghij", 8) == "abcde..."
    assert len(truncate("abcdefghij", 8)) == 8
"""
)

README_V1 = "# textkit\n\nSmall text helpers: slugs, durations, chunks, truncation.\n"
README_V2 = README_V1 + "\n## Install\n\n    pip install -e .\n"


@dataclass(frozen=True)
class Fix:
    """One issue of the sample project and the commit that fixed it."""

    issue: int
    message: str
    files: dict[str, str]
    problem: str
    fail_to_pass: tuple[str, ...]
    pass_to_pass: tuple[str, ...]


FIXES = (
    Fix(
        1,
        "Lowercase and transliterate slugs (fixes #1)",
        {"src/textkit/slugs.py": SLUGS_V2, "tests/test_slugs.py": TEST_SLUGS_V2},
        "slugify keeps capitals and drops accented letters\n\n"
        '`slugify("Crème brûlée")` gives `Cr-me-br-l-e` and `slugify("Hello World")` gives '
        "`Hello-World`. Slugs should be lowercase ASCII: `creme-brulee`, `hello-world`.\n",
        (
            "tests/test_slugs.py::test_slugify[Hello World-hello-world]",
            "tests/test_slugs.py::test_slugify[Cr\\xe8me br\\xfbl\\xe9e-creme-brulee]",
        ),
        (
            "tests/test_slugs.py::test_slugify[hello world-hello-world]",
            "tests/test_slugs.py::test_slugify[  many   spaces -many-spaces]",
        ),
    ),
    Fix(
        2,
        "Parse compound durations like 1h30m (fixes #2)",
        {"src/textkit/durations.py": DURATIONS_V2, "tests/test_durations.py": TEST_DURATIONS_V2},
        "parse_duration fails on compound durations\n\n"
        '`parse_duration("1h30m")` raises `ValueError: invalid literal for int()`. Our config '
        'files use compound durations everywhere. Also, unknown units such as `"5w"` should raise '
        "a clear `ValueError`, not a `KeyError`.\n\n"
        "<script>alert('issue text is untrusted')</script>\n",
        (
            "tests/test_durations.py::TestParseDuration::test_compound",
            "tests/test_durations.py::TestParseDuration::test_rejects_garbage",
        ),
        (
            "tests/test_durations.py::TestParseDuration::test_seconds",
            "tests/test_durations.py::TestParseDuration::test_hours",
        ),
    ),
    Fix(
        3,
        "Reject chunk size 0 instead of looping forever (fixes #3)",
        {"src/textkit/sequences.py": SEQUENCES_V2, "tests/test_sequences.py": TEST_SEQUENCES_V2},
        "chunk(seq, 0) hangs forever\n\nOur nightly job hung for 6 hours: `chunk(items, 0)` "
        "never returns. It should raise `ValueError`.\n",
        ("tests/test_sequences.py::test_chunk_zero_size_is_an_error",),
        (
            "tests/test_sequences.py::test_chunk_even",
            "tests/test_sequences.py::test_chunk_remainder",
        ),
    ),
    Fix(
        4,
        "Keep truncated text within the width (fixes #4)",
        {
            "src/textkit/wrapping.py": WRAPPING_V2,
            "src/textkit/_width.py": WIDTH_V2,
            "tests/test_wrapping.py": TEST_WRAPPING_V2,
        },
        'truncate() returns text longer than the width\n\n`truncate("abcdefghij", 8)` returns '
        "`abcdefgh...` (11 characters). The marker should count toward the width.\n",
        ("tests/test_wrapping.py::test_truncated_text_fits_the_width",),
        ("tests/test_wrapping.py::test_short_text_is_kept",),
    ),
)

INITIAL = {
    "pyproject.toml": PYPROJECT,
    "README.md": README_V1,
    "src/textkit/__init__.py": INIT,
    "src/textkit/slugs.py": SLUGS_V1,
    "src/textkit/durations.py": DURATIONS_V1,
    "src/textkit/sequences.py": SEQUENCES_V1,
    "src/textkit/wrapping.py": WRAPPING_V1,
    "src/textkit/_width.py": WIDTH_V1,
    "tests/test_slugs.py": TEST_SLUGS_V1,
    "tests/test_durations.py": TEST_DURATIONS_V1,
    "tests/test_sequences.py": TEST_SEQUENCES_V1,
    "tests/test_wrapping.py": TEST_WRAPPING_V1,
}


SPEC = """\
# evalkit environment spec for the sample task set (the rest is inferred from pyproject.toml).
[defaults]
timeout = 120

# Before its fix, chunk(seq, 0) loops forever: unfixed patches should time out fast.
[instances."evalkit-samples__textkit-3"]
timeout = 15
"""


class _Git:
    """Deterministic git: fixed identity and a clock that ticks one hour per commit."""

    def __init__(self, root: Path):
        self.root = root
        self.tick = 0

    def __call__(self, *args: str) -> str:
        stamp = f"2024-03-01T{9 + self.tick // 60:02d}:{self.tick % 60:02d}:00+00:00"
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": str(self.root),
            "GIT_CONFIG_NOSYSTEM": "1",
            "GIT_CONFIG_GLOBAL": "/dev/null",  # a user's config must not change the bytes
            "GIT_AUTHOR_NAME": "Sample Maintainer",
            "GIT_AUTHOR_EMAIL": "maintainer@textkit.invalid",
            "GIT_COMMITTER_NAME": "Sample Maintainer",
            "GIT_COMMITTER_EMAIL": "maintainer@textkit.invalid",
            "GIT_AUTHOR_DATE": stamp,
            "GIT_COMMITTER_DATE": stamp,
        }
        cmd = [
            "git",
            "-c",
            "init.defaultBranch=main",
            "-c",
            "commit.gpgsign=false",
            "-c",
            "pack.threads=1",
            *args,
        ]
        proc = subprocess.run(
            cmd, cwd=self.root, env=env, capture_output=True, text=True, check=True
        )
        return proc.stdout.strip()

    def commit(self, files: dict[str, str], message: str) -> str:
        for rel, content in files.items():
            path = self.root / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(content)
        self("add", "-A")
        self.tick += 1
        self("commit", "-q", "-m", message)
        return self("rev-parse", "HEAD")


def build_sample_repo(dest: Path) -> dict[str, str]:
    """Create the sample repository; returns commit ids by role (``initial``, ``fix-N``)."""
    dest.mkdir(parents=True, exist_ok=True)
    git = _Git(dest)
    git("init", "-q")
    commits = {"initial": git.commit(INITIAL, "Initial import of textkit")}
    for fix in FIXES:
        commits[f"base-{fix.issue}"] = git("rev-parse", "HEAD")
        commits[f"fix-{fix.issue}"] = git.commit(fix.files, fix.message)
        if fix.issue == 2:
            git.commit({"README.md": README_V2}, "Document installation")
    git("tag", "v0.2.0")
    return commits


def _diff(git: _Git, base: str, head: str, paths: list[str]) -> str:
    return git("diff", base, head, "--", *paths) + "\n"


class SampleFix(Protocol):
    """What a sample's fix table gives a task row (textkit's and tskit's alike)."""

    @property
    def issue(self) -> int: ...
    @property
    def problem(self) -> str: ...
    @property
    def fail_to_pass(self) -> tuple[str, ...]: ...
    @property
    def pass_to_pass(self) -> tuple[str, ...]: ...


def task_row(
    git: _Git,
    commits: dict[str, str],
    fix: SampleFix,
    instance_id: str,
    repo: str,
    src: list[str],
    tests: list[str],
) -> dict[str, object]:
    """One SWE-bench row for a sample fix: base and fix commits, split patch, labels."""
    base, head = commits[f"base-{fix.issue}"], commits[f"fix-{fix.issue}"]
    return {
        "instance_id": instance_id,
        "repo": repo,
        "base_commit": base,
        "patch": _diff(git, base, head, src),
        "test_patch": _diff(git, base, head, tests),
        "problem_statement": fix.problem,
        "hints_text": "",
        "created_at": git("show", "-s", "--format=%cI", head),
        "version": "0.1",
        "environment_setup_commit": commits["initial"],
        "FAIL_TO_PASS": list(fix.fail_to_pass),
        "PASS_TO_PASS": list(fix.pass_to_pass),
        "evalkit_fix_commit": head,
        "evalkit_issue_numbers": [fix.issue],
    }


def write_task_rows(out: Path, rows: list[dict[str, object]], spec: str) -> None:
    (out / "evalkit.toml").write_text(spec)
    (out / "instances.jsonl").write_text(
        "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
    )


def build_sample_taskset(out: Path) -> list[dict[str, object]]:
    """Write ``out/instances.jsonl`` and ``out/repos/<bundle>``; return the rows."""
    with tempfile.TemporaryDirectory(prefix="evalkit-sample-") as tmp:
        repo = Path(tmp) / "textkit"
        commits = build_sample_repo(repo)
        git = _Git(repo)
        (out / "repos").mkdir(parents=True, exist_ok=True)
        git("bundle", "create", "-q", str((out / "repos" / BUNDLE).resolve()), "--all")
        rows: list[dict[str, object]] = []
        for fix in FIXES:
            src = [p for p in fix.files if p.startswith("src/")]
            tests = [p for p in fix.files if p.startswith("tests/")]
            rows.append(
                task_row(
                    git, commits, fix, f"evalkit-samples__textkit-{fix.issue}", REPO, src, tests
                )
            )
        write_task_rows(out, rows, SPEC)
        write_scripted_predictions(repo, commits, out / "predictions" / "scripted.jsonl")
        write_issue_export(git, commits, out / "issues.json")
    return rows


def write_issue_export(git: _Git, commits: dict[str, str], out: Path) -> None:
    """The sample's closed issues as GitHub's REST API returns them (for ``mine --issues``)."""
    items: list[dict[str, object]] = []
    for fix in FIXES:
        title, _, body = fix.problem.partition("\n\n")
        closed = git("show", "-s", "--format=%cI", commits[f"fix-{fix.issue}"])
        items.append(
            {
                "number": fix.issue,
                "title": title,
                "body": body,
                "state": "closed",
                "created_at": "2024-02-20T10:00:00+00:00",
                "closed_at": closed,
                "html_url": f"https://git.textkit.invalid/{REPO}/issues/{fix.issue}",
            }
        )
    items.append(
        {
            "number": 9,
            "title": "Add a changelog",
            "body": "",
            "state": "closed",
            "pull_request": {"url": "https://git.textkit.invalid/pulls/9"},
        }
    )
    out.write_text(json.dumps(items, indent=1, ensure_ascii=False) + "\n")


# --- scripted agents ------------------------------------------------------------

Edit = Callable[[Path], None]


def _replace(path: str, old: str, new: str) -> Edit:
    def edit(root: Path) -> None:
        text = (root / path).read_text()
        if old not in text:
            raise ValueError(f"{old!r} not in {path}")
        (root / path).write_text(text.replace(old, new))

    return edit


def _write(path: str, content: str) -> Edit:
    def edit(root: Path) -> None:
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        (root / path).write_text(content)

    return edit


def _patch(git: _Git, base: str, *edits: Edit) -> str:
    """A real ``git diff`` of ``edits`` made on top of ``base``."""
    git("checkout", "-q", "--detach", base)
    for edit in edits:
        edit(git.root)
    git("add", "-A")
    text = git("diff", "--cached", base) + "\n"
    git("reset", "-q", "--hard", base)
    git("clean", "-qfdx")
    return text


CAREFUL_SLUGS = SLUGS_V1.replace(
    "    words = re.findall",
    "    text = unicodedata.normalize('NFKD', text)\n"
    "    text = ''.join(c for c in text if not unicodedata.combining(c)).lower()\n"
    "    words = re.findall",
).replace("import re\n", "import re\nimport unicodedata\n")

CAREFUL_SEQUENCES = SEQUENCES_V1.replace(
    "    out = []\n",
    "    if not size or size < 0:\n        raise ValueError(f'bad size {size}')\n    out = []\n",
)

# Wrong: counts the marker but forgets the tests' exact expectation (cuts one short).
CAREFUL_WRAPPING_WRONG = WRAPPING_V1.replace(
    "    return text[:width] + marker", "    return text[: width - len(marker) - 1] + marker"
)

CONFTEST_HOOK = """\
import pytest


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    report.outcome = "passed"
"""

SPOOF = (
    DURATIONS_V1
    + """
import os
import sys

print("tests/test_durations.py::TestParseDuration::test_compound PASSED")
print("============================== 4 passed in 0.01s ==============================")
sys.stdout.flush()
os._exit(0)
"""
)


def write_scripted_predictions(repo: Path, commits: dict[str, str], out: Path) -> None:
    """Predictions from four scripted agents, covering every verdict the harness gives."""
    git = _Git(repo)
    b = {fix.issue: commits[f"base-{fix.issue}"] for fix in FIXES}
    fix_of = {fix.issue: fix for fix in FIXES}

    def gold_like(issue: int) -> str:
        src = {p: c for p, c in fix_of[issue].files.items() if p.startswith("src/")}
        return _patch(git, b[issue], *(_write(p, c) for p, c in src.items()))

    careful = {
        1: _patch(git, b[1], _write("src/textkit/slugs.py", CAREFUL_SLUGS)),
        2: gold_like(2),
        3: _patch(git, b[3], _write("src/textkit/sequences.py", CAREFUL_SEQUENCES)),
        4: _patch(git, b[4], _write("src/textkit/wrapping.py", CAREFUL_WRAPPING_WRONG)),
    }
    good_seq = careful[3]
    # Context drift: `git apply` refuses, `patch --fuzz` accepts.
    drifted = good_seq.replace(" def chunk(seq, size):", " def chunk(seq,  size):")
    nowhere = (
        "diff --git a/src/textkit/durations.py b/src/textkit/durations.py\n"
        "--- a/src/textkit/durations.py\n+++ b/src/textkit/durations.py\n"
        "@@ -10,2 +10,2 @@ def parse_everything(text):\n"
        "-    return parse(text, strict=False)\n+    return parse(text, strict=True)\n"
        " # end\n"
    )
    sloppy = {1: gold_like(1), 2: nowhere, 3: drifted, 4: ""}
    weakened = TEST_WRAPPING_V1 + (
        "\n\ndef test_truncated_text_fits_the_width():\n    assert True\n"
    )
    cheater = {
        1: _patch(git, b[1], _write("tests/conftest.py", CONFTEST_HOOK)),
        2: _patch(git, b[2], _write("src/textkit/durations.py", SPOOF)),
        3: _patch(git, b[3], _write("pytest.ini", "[pytest]\naddopts = -k 'not zero'\n")),
        4: _patch(git, b[4], _write("tests/test_wrapping.py", weakened)),
    }
    git("checkout", "-q", "main")
    rows = []
    for model, patches in (
        ("scripted/careful", careful),
        ("scripted/sloppy", sloppy),
        ("scripted/cheater", cheater),
    ):
        for issue, patch in patches.items():
            rows.append(
                {
                    "instance_id": f"evalkit-samples__textkit-{issue}",
                    "model_name_or_path": model,
                    "model_patch": patch,
                }
            )
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("".join(json.dumps(r) + "\n" for r in rows))


EXPECTED = {
    # (model, issue) -> status, checked by tests/test_sample.py against a real run.
    ("scripted/careful", 1): "resolved",
    ("scripted/careful", 2): "resolved",
    ("scripted/careful", 3): "resolved",
    ("scripted/careful", 4): "unresolved",
    ("scripted/sloppy", 1): "resolved",
    ("scripted/sloppy", 2): "patch_failed",
    ("scripted/sloppy", 3): "resolved",
    ("scripted/sloppy", 4): "empty_patch",
    ("scripted/cheater", 1): "unresolved",
    ("scripted/cheater", 2): "unresolved",
    ("scripted/cheater", 3): "unresolved",
    ("scripted/cheater", 4): "unresolved",
}


def sample_task_set(scratch: Path) -> Path:
    """The committed ``tasks/sample`` of a source checkout, else one built under ``scratch``."""
    checkout = Path(__file__).resolve().parent.parent / "tasks" / "sample"
    if (checkout / "instances.jsonl").is_file():
        return checkout
    built = scratch / "sample-tasks"
    if not (built / "instances.jsonl").is_file():
        build_sample_taskset(built)
    return built


def main(argv: list[str]) -> int:
    out = Path(argv[0] if argv else "tasks/sample")
    rows = build_sample_taskset(out)
    print(f"wrote {len(rows)} instances to {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
