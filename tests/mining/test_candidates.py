"""Pure candidate checks: which changes can become tasks, and why the others cannot."""

from __future__ import annotations

import pytest

from evalkit.mining import (
    REASONS,
    Change,
    Commit,
    Issue,
    IssueRef,
    MineOptions,
    check_change,
    check_issues,
    split_diff,
)
from evalkit.mining._candidates import instance_id_for, make_instance


def edit(path: str, lines: int = 1) -> str:
    minus = "".join(f"-a{i}\n" for i in range(lines))
    plus = "".join(f"+b{i}\n" for i in range(lines))
    head = f"diff --git a/{path} b/{path}\n--- a/{path}\n+++ b/{path}\n"
    return f"{head}@@ -1,{lines} +1,{lines} @@\n{minus}{plus}"


def binary(path: str) -> str:
    head = f"diff --git a/{path} b/{path}\nindex 1..2 100644\n"
    return f"{head}Binary files a/{path} and b/{path} differ\n"


def reason(diff: str, **options: int) -> str | None:
    rejection = check_change(split_diff(diff), MineOptions(**options))  # type: ignore[arg-type]
    return rejection.reason if rejection else None


def test_split_uses_path_components_not_substrings() -> None:
    change = split_diff(
        edit("src/latest.py") + edit("tests/test_latest.py") + edit("pkg/conftest.py")
    )
    assert "src/latest.py" in change.patch and "src/latest.py" not in change.test_patch
    assert change.test_files == ["tests/test_latest.py", "pkg/conftest.py"]
    assert (change.lines, change.files) == (6, 3)


def test_extra_test_globs_classify_more_paths_as_tests() -> None:
    change = split_diff(edit("spec/io_spec.py"), test_globs=("spec/*",))
    assert change.test_files == ["spec/io_spec.py"] and not change.patch


@pytest.mark.parametrize(
    "diff,options,expected",
    [
        (edit("src/a.py") + edit("tests/test_a.py"), {}, None),
        (binary("logo.png"), {}, "binary_only"),
        (edit("src/a.py") + edit("docs/a.md"), {}, "no_test_change"),
        (edit("tests/test_a.py"), {}, "no_source_change"),
        (edit("src/a.py", 30) + edit("tests/test_a.py", 30), {"max_lines": 100}, "too_large"),
        (
            edit("src/a.py") + edit("src/b.py") + edit("tests/test_a.py"),
            {"max_files": 2},
            "too_large",
        ),
        (edit("src/a.py") + edit("tests/conftest.py"), {}, "no_runnable_tests"),
        (edit("src/a.py") + edit("tests/data/case.json"), {}, "no_runnable_tests"),
        (edit(".git/hooks/pre-commit") + edit("tests/test_a.py"), {}, "unsafe_patch"),
    ],
)
def test_each_unusable_change_is_rejected_with_its_reason(
    diff: str, options: dict[str, int], expected: str | None
) -> None:
    assert reason(diff, **options) == expected
    assert expected is None or expected in REASONS


def test_a_binary_file_beside_text_changes_is_left_out_not_fatal() -> None:
    change = split_diff(edit("src/a.py") + binary("tests/data/x.bin") + edit("tests/test_a.py"))
    assert not change.only_binary and "x.bin" not in change.patch + change.test_patch


ISSUES = {
    "1": Issue("1", "Crash", "body", "closed", url="https://git.acme.internal/acme/api/issues/1"),
    "2": Issue("2", "Open", "body", "open"),
}


@pytest.mark.parametrize(
    "refs,expected",
    [
        ([IssueRef("1")], None),
        ([IssueRef("9")], "issue_not_found"),
        ([IssueRef("2")], "issue_not_closed"),
        ([IssueRef("2"), IssueRef("1")], None),
        # The same number on another tracker is another issue.
        ([IssueRef("1", "https://other.example/acme/api/issues/1")], "issue_not_found"),
        ([IssueRef("1", "http://GIT.acme.internal/acme/api/issues/1/")], None),
    ],
)
def test_a_linked_issue_must_exist_in_the_source_and_be_closed(
    refs: list[IssueRef], expected: str | None
) -> None:
    linked, rejection = check_issues(refs, ISSUES.get)
    assert (rejection.reason if rejection else None) == expected
    assert all(i.closed for i in linked)


def test_a_second_change_closing_the_same_issue_gets_a_distinct_id() -> None:
    taken = {"acme__api-7"}
    assert instance_id_for("acme/api", "7", "abcdef123456", taken) == "acme__api-7-abcdef1"
    assert instance_id_for("acme/api", "PROJ-3", "abcdef123456", taken) == "acme__api-PROJ-3"


def test_without_an_issue_the_commit_message_is_the_problem_statement() -> None:
    commit = Commit("f" * 40, ("e" * 40,), "", "2024-01-02T00:00:00Z", "Fix crash (fixes #3)\n")
    instance = make_instance(
        Change(commit),
        split_diff(edit("src/a.py") + edit("tests/test_a.py")),
        [],
        instance_id="acme__api-3",
        repo_name="acme/api",
        refs=[IssueRef("3")],
        source="commit",
        commit_text=commit.message,
        comments={},
    )
    extra = instance.model_extra or {}
    assert instance.problem_statement == "Fix crash (fixes #3)\n"
    assert extra["problem_statement_source"] == "commit"
    assert instance.base_commit == "e" * 40 and instance.created_at == "2024-01-02T00:00:00Z"
    assert extra["evalkit_fix_commit"] == "f" * 40
