"""History comes from one git log pass, merges group their branch commits, and diffs for
all candidates come from one git call."""

from __future__ import annotations

import subprocess
from pathlib import Path

from evalkit.mining import (
    Commit,
    first_parent_diffs,
    mainline_changes,
    parse_diff_tree,
    scan_history,
)
from evalkit.mining._mine import prepare_repo
from tests.conftest import git, write_tree


def commit(repo: Path, files: dict[str, str | None], message: str) -> str:
    write_tree(repo, files)
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", message)
    return git(repo, "rev-parse", "HEAD")


def merged_repo(root: Path) -> Path:
    """main: first, (merge of topic: change + "Fixes #4"), after."""
    git(root, "init", "-q")
    commit(root, {"a.py": "x = 1\n"}, "first\n\nbody with\x1fodd bytes")
    git(root, "checkout", "-qb", "topic")
    commit(root, {"a.py": "x = 2\n"}, "change")
    commit(root, {"tests/test_a.py": "def test_a():\n    pass\n"}, "Add test, fixes #4")
    git(root, "checkout", "-q", "main")
    git(root, "merge", "-q", "--no-ff", "topic", "-m", "Merge pull request #5 from me/topic")
    commit(root, {"b.py": "y = 1\n"}, "after")
    return root


def test_one_pass_scan_keeps_messages_parents_and_merges(tmp_path: Path) -> None:
    commits = scan_history(merged_repo(tmp_path))
    by_title = {c.title: c for c in commits}
    assert commits[0].title == "after"  # HEAD first: the mainline starts there
    assert len(by_title["Merge pull request #5 from me/topic"].parents) == 2
    assert "odd bytes" in by_title["first"].message


def test_a_merge_is_one_candidate_carrying_its_branch_commits(tmp_path: Path) -> None:
    changes = mainline_changes(scan_history(merged_repo(tmp_path)))
    assert [c.commit.title for c in changes] == [
        "after",
        "Merge pull request #5 from me/topic",
        "first",
    ]
    merge = changes[1]
    assert sorted(c.title for c in merge.merged) == ["Add test, fixes #4", "change"]
    assert "fixes #4" in merge.messages


def test_each_branch_commit_belongs_to_the_oldest_merge_that_brought_it() -> None:
    def c(sha: str, *parents: str) -> Commit:
        return Commit(sha, parents, "", "", sha)

    # b1 merged by m1; later m2 merges a branch that also contains b1 (and b2).
    history = [c("m2", "m1", "b2"), c("b2", "b1"), c("m1", "r", "b1"), c("b1", "r"), c("r")]
    merged = {ch.commit.sha: [m.sha for m in ch.merged] for ch in mainline_changes(history)}
    assert merged == {"m2": ["b2"], "m1": ["b1"], "r": []}


def test_diffs_for_all_candidates_come_from_one_call_and_match_git_diff(tmp_path: Path) -> None:
    repo = merged_repo(tmp_path)
    commits = [c for c in scan_history(repo) if c.parents]
    diffs = first_parent_diffs(repo, commits)
    for c in commits:
        expected = subprocess.run(
            ["git", "diff", "--no-renames", c.parents[0], c.sha],
            cwd=repo,
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        assert diffs[c.sha] == expected


def test_diff_tree_output_splits_on_its_nul_markers() -> None:
    text = "\x00aaa\ndiff --git a/x b/x\n+1\n\x00bbb\ndiff --git a/y b/y\n-2\n"
    assert parse_diff_tree(text) == {
        "aaa": "diff --git a/x b/x\n+1\n",
        "bbb": "diff --git a/y b/y\n-2\n",
    }


def test_a_clone_url_is_mirrored_once_then_fetched(tmp_path: Path) -> None:
    (tmp_path / "origin").mkdir()
    repo = merged_repo(tmp_path / "origin")
    mirror = prepare_repo(f"file://{repo}", tmp_path / "cache")
    assert mirror != repo and len(scan_history(mirror)) == 5
    commit(repo, {"c.py": "z = 1\n"}, "later")
    assert prepare_repo(f"file://{repo}", tmp_path / "cache") == mirror
    assert scan_history(mirror)[0].title == "later"
    assert prepare_repo(str(repo), tmp_path / "cache") == repo  # a path is used in place


def test_a_maintenance_branch_is_mined_too(tmp_path: Path) -> None:
    """``--branch 1.x``: a fix that landed only on a maintenance branch is a candidate,
    a commit both lines share is one candidate, and HEAD alone does not see it."""
    from evalkit.mining._mine import all_changes

    repo = tmp_path / "r"
    repo.mkdir()
    git(repo, "init", "-q")
    shared = commit(repo, {"a.py": "1\n"}, "shared")
    git(repo, "branch", "1.x")
    main_fix = commit(repo, {"a.py": "2\n"}, "main fix (fixes #1)")
    git(repo, "checkout", "-q", "1.x")
    backport = commit(repo, {"b.py": "1\n"}, "only on 1.x (fixes #2)")
    git(repo, "checkout", "-q", "main")
    head_only, _ = all_changes(repo, (), since=None, until=None)
    assert backport not in {c.commit.sha for c in head_only}
    both, scanned = all_changes(repo, ("1.x",), since=None, until=None)
    shas = [c.commit.sha for c in both]
    assert sorted(shas) == sorted([shared, main_fix, backport]) and scanned == 4
