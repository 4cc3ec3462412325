"""Untrusted patches are vetted before any container starts; test paths by component."""

from __future__ import annotations

import pytest

from evalkit.patch import PatchRejected, inspect_patch, is_test_infrastructure, is_test_path


def diff(path: str, body: str = "@@ -1 +1 @@\n-a\n+b\n") -> str:
    return f"diff --git a/{path} b/{path}\n--- a/{path}\n+++ b/{path}\n{body}"


def test_reports_paths_and_line_counts() -> None:
    info = inspect_patch(diff("src/x.py") + diff("README.md"))
    assert info.paths == ("src/x.py", "README.md")
    assert (info.lines_added, info.lines_removed) == (2, 2)


@pytest.mark.parametrize("path", ["../etc/passwd", "src/../../x.py", "/etc/passwd", ".git/config"])
def test_paths_leaving_the_repository_are_rejected(path: str) -> None:
    with pytest.raises(PatchRejected):
        inspect_patch(diff(path))


def test_binary_hunks_are_rejected() -> None:
    text = "diff --git a/x.bin b/x.bin\nindex 1..2 100644\nGIT binary patch\nliteral 3\nKc\n"
    with pytest.raises(PatchRejected, match="binary"):
        inspect_patch(text)


def test_huge_patches_are_rejected_without_parsing() -> None:
    with pytest.raises(PatchRejected, match="MB"):
        inspect_patch(diff("x.py", "@@ -1 +1 @@\n-a\n+" + "b" * (50 * 1024 * 1024) + "\n"))


def test_text_that_is_not_a_diff_is_rejected() -> None:
    with pytest.raises(PatchRejected):
        inspect_patch("I fixed it, trust me.\n")


@pytest.mark.parametrize(
    "path",
    [
        "tests/test_a.py",
        "pkg/tests/unit/x.py",
        "test_io.py",
        "pkg/io_test.py",
        "conftest.py",
        "e2e/flow.py",
        "testing/x.py",
    ],
)
def test_test_paths_are_recognised(path: str) -> None:
    assert is_test_path(path)


@pytest.mark.parametrize(
    "path",
    [
        "src/latest.py",
        "contest/x.py",
        "src/attestation.py",
        "testsuite_helpers.py",
        "docs/testing.md",
    ],
)
def test_substrings_of_test_are_not_tests(path: str) -> None:
    assert not is_test_path(path)


def test_extra_globs_extend_the_classifier() -> None:
    assert is_test_path("spec/x_spec.py", ("spec/*",))


def test_shared_config_files_count_as_test_infrastructure() -> None:
    assert is_test_infrastructure("pytest.ini") and is_test_infrastructure("pyproject.toml")
    assert not is_test_infrastructure("src/calc.py")
