"""Sandbox step 1: commit the base tree, apply the model patch, undo test tampering, apply tests.

Run as ``python -I -S prepare.py CONFIG`` before any code from the patch executes, so
what it prints is trustworthy: one JSON object on the last line of stdout.
"""

from __future__ import annotations

import configparser
import json
import os
import subprocess
import sys

import tomllib

GIT = [
    "git",
    "-c",
    "user.name=evalkit",
    "-c",
    "user.email=evalkit@localhost",
    "-c",
    "commit.gpgsign=false",
    "-c",
    "core.hooksPath=/dev/null",
    "-c",
    "advice.detachedHead=false",
]


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(args), capture_output=True, text=True, check=False)


def git(*args: str) -> subprocess.CompletedProcess[str]:
    return run(*GIT, *args)


def reset_tree() -> None:
    git("reset", "-q", "--hard", "HEAD")
    git("clean", "-qfdx")


APPLY_METHODS = {
    "git-apply": ["git", "apply", "--verbose", "--whitespace=nowarn"],
    "git-apply-3way": ["git", "apply", "--verbose", "--3way", "--whitespace=nowarn"],
    "patch-fuzz": [
        "patch",
        "--batch",
        "--forward",
        "-p1",
        "--fuzz=3",
        "--no-backup-if-mismatch",
        "--reject-file=-",
    ],
}


def apply_model_patch(path: str) -> tuple[str | None, str]:
    errors = []
    for name, cmd in APPLY_METHODS.items():
        proc = run(*cmd, "-i", path) if name == "patch-fuzz" else run(*cmd, path)
        if proc.returncode == 0:
            return name, ""
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["failed"]
        errors.append(f"{name}: {tail[0]}")
        reset_tree()
    return None, "; ".join(errors)


def at_base(path: str) -> str | None:
    proc = subprocess.run([*GIT, "show", f"HEAD:{path}"], capture_output=True, check=False)
    return proc.stdout.decode("utf-8", "replace") if proc.returncode == 0 else None


def restore(path: str) -> None:
    if at_base(path) is not None:
        git("checkout", "-q", "HEAD", "--", path)
    elif os.path.lexists(path):
        os.remove(path)


def _toml_test_config(text: str | None) -> object:
    try:
        data = tomllib.loads(text or "")
    except tomllib.TOMLDecodeError:
        return "unparseable"
    return (
        data.get("tool", {}).get("pytest"),
        data.get("project", {}).get("entry-points", {}).get("pytest11"),
    )


def _ini_test_config(text: str | None, sections: tuple[str, ...]) -> object:
    parser = configparser.ConfigParser(interpolation=None, strict=False)
    try:
        parser.read_string(text or "")
    except configparser.Error:
        return "unparseable"
    return [dict(parser[s]) if parser.has_section(s) else None for s in sections]


def test_config_changed(path: str) -> bool:
    """Whether a shared config file's *test* sections differ from base."""
    before = at_base(path)
    after = open(path, encoding="utf-8", errors="replace").read() if os.path.exists(path) else None
    name = os.path.basename(path)
    if name == "pyproject.toml":
        return _toml_test_config(before) != _toml_test_config(after)
    if name == "setup.cfg":
        keys = ("tool:pytest", "options.entry_points")
        return _ini_test_config(before, keys) != _ini_test_config(after, keys)
    if name == "tox.ini":
        return _ini_test_config(before, ("pytest",)) != _ini_test_config(after, ("pytest",))
    return before != after


def main() -> int:
    config = json.load(open(sys.argv[1], encoding="utf-8"))
    os.chdir(config["workdir"])
    result: dict[str, object] = {"apply_method": None, "apply_error": None, "tampered_files": []}
    generated = "/etc/evalkit/generated.tar"
    if os.path.exists(generated):
        # Files the environment's install wrote into the tree (e.g. a _version.py).
        run("tar", "-xf", generated, "-C", config["workdir"], "--no-same-owner")
    for step in (
        ("init", "-q"),
        ("add", "-A", "-f"),
        ("commit", "-q", "--no-verify", "-m", "base"),
    ):
        proc = git(*step)
        if proc.returncode != 0:
            result["infra_error"] = f"git {step[0]} failed: {proc.stderr.strip()[-300:]}"
            print(json.dumps(result))
            return 0
    if config.get("model_patch"):
        method, error = apply_model_patch(config["model_patch"])
        result["apply_method"], result["apply_error"] = method, error or None
        if method is None:
            print(json.dumps(result))
            return 0
    tampered = []
    for path in config["revert_always"]:
        restore(path)
        tampered.append(path)
    for path in config["revert_if_test_config_changed"]:
        if test_config_changed(path):
            restore(path)
            tampered.append(path)
    for path in config["test_patch_paths"]:
        restore(path)  # the test patch must apply to pristine files (SWE-bench #631)
    result["tampered_files"] = sorted(set(tampered))
    if config.get("test_patch"):
        proc = run("git", "apply", "--verbose", "--whitespace=nowarn", config["test_patch"])
        if proc.returncode != 0:
            result["test_patch_error"] = (proc.stderr or proc.stdout).strip()[-500:]
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
