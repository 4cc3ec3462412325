"""History comes from one git log pass; changes split into source and tests by component."""

from __future__ import annotations

from pathlib import Path

from evalkit.mining import scan_history, split_diff
from tests.conftest import git, write_tree


def test_one_pass_scan_keeps_messages_parents_and_merges(tmp_path: Path) -> None:
    git(tmp_path, "init", "-q")
    write_tree(tmp_path, {"a.py": "x = 1\n"})
    git(tmp_path, "add", "-A")
    git(tmp_path, "commit", "-qm", "first\n\nbody with\x1fodd bytes")
    git(tmp_path, "checkout", "-qb", "topic")
    write_tree(tmp_path, {"a.py": "x = 2\n"})
    git(tmp_path, "commit", "-qam", "change")
    git(tmp_path, "checkout", "-q", "main")
    git(tmp_path, "merge", "-q", "--no-ff", "topic", "-m", "Merge pull request #5\n\nFixes #4")
    commits = scan_history(tmp_path)
    by_title = {c.title: c for c in commits}
    assert set(by_title) == {"Merge pull request #5", "change", "first"}
    assert len(by_title["Merge pull request #5"].parents) == 2
    assert "Fixes #4" in by_title["Merge pull request #5"].message
    assert "odd bytes" in by_title["first"].message


def test_split_uses_path_components_not_substrings() -> None:
    diff = "".join(
        f"diff --git a/{p} b/{p}\n--- a/{p}\n+++ b/{p}\n@@ -1 +1 @@\n-a\n+b\n"
        for p in ("src/latest.py", "tests/test_latest.py", "pkg/conftest.py")
    )
    change = split_diff(diff)
    assert (
        "src/latest.py" in change.patch and "latest.py" not in change.test_patch.split("tests/")[0]
    )
    assert change.test_files == ["tests/test_latest.py", "pkg/conftest.py"]
    assert (change.lines, change.files) == (6, 3)
