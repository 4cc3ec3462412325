"""Mining benchmark: history scan speed on a large synthetic history.

    python bench/mining_bench.py [--commits 100000]

Builds a repository with N commits via ``git fast-import`` (seconds), every tenth
commit message closing an issue, then times ``scan_history`` + linking. Validated
tasks per hour are measured on real runs and reported in docs/mining.md.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from evalkit.mining import find_links, scan_history


def synthesize(repo: Path, commits: int) -> None:
    subprocess.run(["git", "init", "-q", "-b", "main", str(repo)], check=True)
    lines = []
    for i in range(1, commits + 1):
        message = f"Change {i}\n\nSome body text for commit {i}.\n"
        if i % 10 == 0:
            message = f"Fix bug in module {i % 97} (fixes #{i // 10})\n\nDetails.\n"
        data = message.encode()
        content = f"value = {i}\n".encode()
        lines.append(b"commit refs/heads/main\n")
        lines.append(f"committer Bench <b@x> {1_600_000_000 + i} +0000\n".encode())
        lines.append(f"data {len(data)}\n".encode() + data)
        lines.append(f"M 644 inline m{i % 97}.py\ndata {len(content)}\n".encode() + content + b"\n")
    subprocess.run(["git", "fast-import", "--quiet"], cwd=repo, input=b"".join(lines), check=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--commits", type=int, default=100_000)
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="evalkit-mine-bench-"))
    try:
        started = time.perf_counter()
        synthesize(root / "repo", args.commits)
        built = time.perf_counter() - started
        started = time.perf_counter()
        commits = scan_history(root / "repo")
        linked = sum(1 for c in commits if find_links(c.message))
        elapsed = time.perf_counter() - started
        print(f"history built       {args.commits:,} commits in {built:.1f} s")
        print(f"scan + link         {elapsed:.2f} s ({len(commits) / elapsed:,.0f} commits/s)")
        print(f"candidates linked   {linked:,}")
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
