"""Mining benchmark: history scan speed on a large synthetic history, and validated tasks
per hour on the sample repository.

    python bench/mining_bench.py [--commits 100000] [--validate] [--workers 2]

Builds a repository with N commits via ``git fast-import`` (seconds); every tenth
commit closes an issue and edits a source file and its test, every fiftieth is a
merge of a one-commit branch. Times the one ``git log`` pass, the grouping into
mainline changes, the linking, and the diffs of every linked change (one
``git diff-tree --stdin`` call) split into patch and test patch, against one
``git diff`` per commit on a sample. ``--validate`` also mines the sample repository
in Docker (3 runs per state) and reports validated tasks per hour.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from evalkit.mining import (
    MineOptions,
    check_change,
    find_links,
    first_parent_diffs,
    mainline_changes,
    mine,
    scan_history,
    split_diff,
)


def synthesize(repo: Path, commits: int) -> None:
    subprocess.run(["git", "init", "-q", "-b", "main", str(repo)], check=True)
    out: list[bytes] = []

    def blob(path: str, text: str) -> None:
        data = text.encode()
        out.append(f"M 644 inline {path}\ndata {len(data)}\n".encode() + data + b"\n")

    def header(ref: str, mark: int, when: int, message: str) -> None:
        data = message.encode()
        out.append(f"commit {ref}\nmark :{mark}\n".encode())
        out.append(f"committer Bench <b@x> {1_600_000_000 + when} +0000\n".encode())
        out.append(f"data {len(data)}\n".encode() + data)

    for i in range(1, commits + 1):
        module = i % 97
        if i % 50 == 0 and i > 1:
            # A one-commit branch from the previous mainline commit, merged back.
            header("refs/heads/topic", 1_000_000 + i, i, f"Topic work {i}\n")
            out.append(f"from :{i - 1}\n".encode())
            blob(f"topic{module}.py", f"t = {i}\n")
            header("refs/heads/main", i, i, f"Merge pull request #{i} from me/topic\n")
            out.append(f"from :{i - 1}\nmerge :{1_000_000 + i}\n".encode())
            continue
        fix = i % 10 == 0
        message = (
            f"Fix bug in module {module} (fixes #{i // 10})\n\nDetails.\n"
            if fix
            else f"Change {i}\n\nSome body text for commit {i}.\n"
        )
        header("refs/heads/main", i, i, message)
        if i > 1:
            out.append(f"from :{i - 1}\n".encode())
        blob(f"src/m{module}.py", f"value = {i}\n")
        if fix:
            blob(f"tests/test_m{module}.py", f"def test_value():\n    assert {i}\n")
    subprocess.run(["git", "fast-import", "--quiet"], cwd=repo, input=b"".join(out), check=True)


def scan(repo: Path, sample: int) -> None:
    started = time.perf_counter()
    commits = scan_history(repo)
    scanned = time.perf_counter() - started
    changes = mainline_changes(commits)
    linked = [c for c in changes if c.commit.parents and find_links(c.messages)]
    grouped = time.perf_counter() - started
    diffs = first_parent_diffs(repo, [c.commit for c in linked])
    usable = sum(
        check_change(split_diff(diffs[c.commit.sha]), MineOptions()) is None for c in linked
    )
    total = time.perf_counter() - started
    print(f"git log pass + parse    {len(commits):,} commits in {scanned:.2f} s")
    print(
        f"+ mainline + links      {len(changes):,} changes, {len(linked):,} linked: "
        f"{grouped:.2f} s ({len(commits) / grouped:,.0f} commits/s)"
    )
    print(
        f"+ diffs (1 call), split {len(linked):,} diffs, {usable:,} usable: {total:.2f} s "
        f"({len(linked) / (total - grouped):,.0f} candidates/s)"
    )
    started = time.perf_counter()
    for change in linked[:sample]:
        subprocess.run(
            ["git", "diff", change.commit.parents[0], change.commit.sha],
            cwd=repo,
            capture_output=True,
            check=True,
        )
    per_commit = (time.perf_counter() - started) / min(sample, len(linked))
    print(
        f"one git diff per commit {per_commit * 1000:.1f} ms each: "
        f"{per_commit * len(linked):.1f} s for all {len(linked):,}"
    )


def validate(root: Path, workers: int) -> None:
    from evalkit.sample import build_sample_repo

    repo = root / "textkit"
    build_sample_repo(repo)
    options = MineOptions(runs=3, timeout=10, workers=workers)
    summary = mine(
        str(repo),
        root / "tasks",
        repo_name="evalkit-samples/textkit",
        issues=None,
        source="commit",
        options=options,
        log=lambda _: None,
        progress=False,
    )
    per_hour = summary.validated / summary.seconds * 3600
    print(
        f"sample repo             {summary.validated} validated ({summary.accepted} accepted), "
        f"3 runs, {workers} workers: {summary.seconds:.1f} s, {per_hour:,.0f} validated tasks/h"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--commits", type=int, default=100_000)
    parser.add_argument("--sample", type=int, default=200, help="commits diffed one by one")
    parser.add_argument("--validate", action="store_true", help="also mine the sample (Docker)")
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="evalkit-mine-bench-"))
    try:
        started = time.perf_counter()
        synthesize(root / "repo", args.commits)
        built = time.perf_counter() - started
        print(f"history built           {args.commits:,} commits in {built:.1f} s")
        scan(root / "repo", args.sample)
        if args.validate:
            validate(root, args.workers)
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
