"""Environment build benchmark: image build time with pip (before) and uv (after), per step.

    python bench/env_bench.py REPO COMMIT [--repo-name owner/name]

REPO is a git clone or bare mirror; COMMIT the environment commit. Each variant is built
from scratch (no layer cache, base image present) with the same inferred recipe; only
the installer differs: *before* installs the spec's packages and the project with pip
and no date bound (evalkit's recipe until issue 11), *after* with ``evalkit-install`` (uv,
dependencies as of the commit's month). Prints one table; figures go in docs/environments.md.
"""

from __future__ import annotations

import argparse
import re
import shlex
import time
from dataclasses import replace
from pathlib import Path

from evalkit.environment import (
    DEFAULT_PYTHON,
    INSTALLER,
    SpecFile,
    image_tag,
    read_dependency_files,
    resolve_spec,
)
from evalkit.images import _context, render_dockerfile, resolve_base_image, resolve_ca_bundle
from evalkit.repo import _git
from evalkit.sandbox import docker_client


def tree_tar(repo: Path, commit: str) -> bytes:
    return _git("archive", "--format=tar", commit, cwd=repo)


def read(repo: Path, commit: str, paths: tuple[str, ...]) -> dict[str, str]:
    found = {}
    for path in paths:
        try:
            found[path] = _git("show", f"{commit}:{path}", cwd=repo).decode("utf-8", "replace")
        except Exception:
            continue
    return found


def pip_variant(spec):  # type: ignore[no-untyped-def]
    """The same recipe with pip, no date bound and the old default Python (3.11, whatever
    the project): how images were built before (bullseye's pip 20.3 has no
    ``--config-settings``, so the old recipe could not even run on 3.9)."""

    def to_pip(cmd: str) -> str:
        if cmd.startswith(f"{INSTALLER} --test-extras"):
            return "true"
        return re.sub(rf"^{INSTALLER}\b", "pip install --no-cache-dir", cmd).replace(
            " -C editable_mode=compat", " --config-settings editable_mode=compat"
        )

    packages = " ".join(shlex.quote(p) for p in spec.pip_packages)
    return replace(
        spec,
        python=DEFAULT_PYTHON,
        exclude_newer="",
        pip_packages=(),
        install=(f"pip install --no-cache-dir {packages}", *(to_pip(c) for c in spec.install)),
    )


def build(client, dockerfile: str, src: bytes, ca: Path | None, tag: str) -> dict[str, float]:  # type: ignore[no-untyped-def]
    """Build with no cache; seconds per Dockerfile step (by its first words)."""
    steps: dict[str, float] = {}
    current, started = "", time.monotonic()
    t0 = started
    stream = client.api.build(
        fileobj=_context(dockerfile, src, ca),
        custom_context=True,
        tag=tag,
        rm=True,
        forcerm=True,
        decode=True,
        nocache=True,
    )
    tail: list[str] = []
    for chunk in stream:
        line = str(chunk.get("stream", ""))
        tail = [*tail[-40:], *line.splitlines()]
        match = re.match(r"Step \d+/\d+ : (.*)", line)
        if match:
            now = time.monotonic()
            if current:
                steps[current] = steps.get(current, 0.0) + now - started
            current, started = match.group(1)[:60], now
        if "error" in chunk:
            # A recipe that cannot build is a result too: say why, in one line.
            errors = [t for t in tail if re.search(r"error|Error|ERROR", t)] or tail
            return {"total": time.monotonic() - t0, "failed": errors[-1][:200]}  # type: ignore[dict-item]
    if current:
        steps[current] = steps.get(current, 0.0) + time.monotonic() - started
    steps["total"] = time.monotonic() - t0
    return steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("repo", type=Path)
    parser.add_argument("commit")
    parser.add_argument("--repo-name", default="bench/env")
    args = parser.parse_args()
    client = docker_client()
    files = read_dependency_files(lambda paths: read(args.repo, args.commit, paths))
    from datetime import datetime

    date = datetime.fromisoformat(
        _git("log", "-1", "--format=%cI", args.commit, cwd=args.repo).decode().strip()
    )
    after = resolve_spec(SpecFile(), args.repo_name, "bench", files, date)
    before = pip_variant(after)
    ca = resolve_ca_bundle(None)
    src = tree_tar(args.repo, args.commit)
    rows = []
    for name, spec in (
        (f"before (pip, no date, Python {before.python})", before),
        (f"after (uv, dated, Python {after.python})", after),
    ):
        base = resolve_base_image(client, spec)
        dockerfile = render_dockerfile(
            spec, repo=args.repo_name, key="bench", base_image=base.image, ca=ca is not None
        )
        tag = image_tag(args.repo_name, f"bench-{name.split()[0]}")
        steps = build(client, dockerfile, src, ca, tag)
        rows.append((name, steps))
        if "failed" not in steps:
            client.images.remove(tag, force=True)
    print(
        f"{args.repo_name} @ {args.commit[:10]} (Python {after.python}, resolved as of "
        f"{after.exclude_newer or 'today'})"
    )
    for name, steps in rows:
        if "failed" in steps:
            print(f"  {name}: FAILED after {steps['total']:.1f} s: {steps['failed']}")
            continue
        print(f"  {name}: total {steps['total']:.1f} s")
        for step, seconds in steps.items():
            if step != "total" and seconds >= 0.5:
                print(f"      {seconds:6.1f} s  {step}")


if __name__ == "__main__":
    main()
