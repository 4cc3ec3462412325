"""Sandbox step 1: commit the base tree, apply the model patch, undo test tampering, apply tests.

Run as ``python -I -S prepare.py`` with its instructions as one JSON line on stdin,
before any code from the patch executes, so what it prints is trustworthy: one JSON
object on the last line of stdout. With ``"tree": true`` the rest of stdin is the base
tree as a tar, unpacked into the (empty) workdir first: one exec instead of two.
Only git's own parser applies patches (no GNU patch: it reads formats the host's
vetting does not), git runs with no system, global or repository hooks, filters or
fsmonitor, and reverts write bytes taken from the base commit's objects rather than
asking git to check files out (a checkout would honour attributes the patch wrote).

Anything that goes wrong after the model patch is applied is reported as
``patch_error``: the patch caused it, so it is the agent's failure, never the
infrastructure's.
"""

from __future__ import annotations

import configparser
import json
import os
import shutil
import subprocess
import sys

try:
    import tomllib
except ImportError:  # Python < 3.11: compare whole files instead of test sections
    tomllib = None  # type: ignore[assignment]

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
    "core.fsmonitor=false",
    "-c",
    "core.attributesFile=/dev/null",
    "-c",
    "core.autocrlf=false",
    "-c",
    "advice.detachedHead=false",
]
GIT_ENV = {
    "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
    "HOME": "/nonexistent",
    "GIT_CONFIG_NOSYSTEM": "1",
    "GIT_CONFIG_GLOBAL": "/dev/null",
    "GIT_ATTR_NOSYSTEM": "1",
    "GIT_TERMINAL_PROMPT": "0",
    "LC_ALL": "C",
}


def run(args, data=None):  # type: ignore[no-untyped-def]
    return subprocess.run(list(args), input=data, capture_output=True, check=False, env=GIT_ENV)


def git(*args, data=None):  # type: ignore[no-untyped-def]
    return run([*GIT, *args], data)


def text(proc):  # type: ignore[no-untyped-def]
    return (proc.stderr or proc.stdout).decode("utf-8", "replace").strip()


def reset_tree() -> None:
    git("reset", "-q", "--hard", "HEAD")
    git("clean", "-qfdx")


APPLY_METHODS = {
    "git-apply": ["apply", "--verbose", "--whitespace=nowarn"],
    "git-apply-3way": ["apply", "--verbose", "--3way", "--whitespace=nowarn"],
    # Same parser as the vetting, so it writes only the vetted paths; tolerant of drifted
    # context and whitespace like SWE-bench's ``patch --fuzz`` fallback.
    "git-apply-fuzzy": [
        "apply",
        "--verbose",
        "--recount",
        "--ignore-whitespace",
        "-C1",
        "--whitespace=nowarn",
    ],
}


def apply_model_patch(patch):  # type: ignore[no-untyped-def]
    errors = []
    for name, args in APPLY_METHODS.items():
        proc = git(*args, "-", data=patch)
        if proc.returncode == 0:
            return name, ""
        tail = text(proc).splitlines()[-1:] or ["failed"]
        errors.append("%s: %s" % (name, tail[0]))
        reset_tree()
    return None, "; ".join(errors)


def changed_paths():  # type: ignore[no-untyped-def]
    proc = git("status", "--porcelain=v1", "-z", "--untracked-files=all", "--no-renames")
    paths = set()
    for entry in proc.stdout.split(b"\0"):
        if len(entry) > 3:
            paths.add(entry[3:].decode("utf-8", "surrogateescape"))
    return paths


def base_entry(path):  # type: ignore[no-untyped-def]
    """(mode, bytes) of ``path`` in the base commit, or None when it is not there."""
    proc = git("ls-tree", "-z", "HEAD", "--", path)
    entry = proc.stdout.split(b"\0")[0]
    if proc.returncode != 0 or b"\t" not in entry:
        return None
    mode, kind, _ = entry.split(b"\t", 1)[0].split(b" ")
    if kind != b"blob":
        return None
    blob = git("cat-file", "blob", "HEAD:" + path)
    return mode.decode(), blob.stdout


def _remove(path):  # type: ignore[no-untyped-def]
    if os.path.islink(path) or os.path.isfile(path):
        os.remove(path)
    elif os.path.isdir(path):
        shutil.rmtree(path)


def restore(path):  # type: ignore[no-untyped-def]
    entry = base_entry(path)
    _remove(path)
    if entry is None:
        return
    mode, data = entry
    parent = os.path.dirname(path)
    if parent:
        if os.path.islink(parent) or (os.path.exists(parent) and not os.path.isdir(parent)):
            _remove(parent)
        os.makedirs(parent, exist_ok=True)
    if mode == "120000":
        os.symlink(data.decode("utf-8", "surrogateescape"), path)
        return
    with open(path, "wb") as fh:
        fh.write(data)
    os.chmod(path, 0o755 if mode == "100755" else 0o644)


def read_current(path):  # type: ignore[no-untyped-def]
    if os.path.islink(path) or not os.path.isfile(path):
        return None if not os.path.lexists(path) else "not a regular file"
    with open(path, "rb") as fh:
        return fh.read().decode("utf-8", "replace")


def _toml_test_config(content):  # type: ignore[no-untyped-def]
    if tomllib is None:
        return content
    try:
        data = tomllib.loads(content or "")
    except tomllib.TOMLDecodeError:
        return "unparseable"
    return (
        data.get("tool", {}).get("pytest"),
        data.get("project", {}).get("entry-points", {}).get("pytest11"),
    )


def _ini_test_config(content, sections):  # type: ignore[no-untyped-def]
    parser = configparser.ConfigParser(interpolation=None, strict=False)
    try:
        parser.read_string(content or "")
    except configparser.Error:
        return "unparseable"
    return [dict(parser[s]) if parser.has_section(s) else None for s in sections]


def test_config_changed(path):  # type: ignore[no-untyped-def]
    """Whether a shared config file's *test* sections differ from base."""
    entry = base_entry(path)
    before = entry[1].decode("utf-8", "replace") if entry else None
    after = read_current(path)
    name = os.path.basename(path)
    if name == "pyproject.toml":
        return _toml_test_config(before) != _toml_test_config(after)
    if name == "setup.cfg":
        keys = ("tool:pytest", "options.entry_points")
        return _ini_test_config(before, keys) != _ini_test_config(after, keys)
    if name == "tox.ini":
        return _ini_test_config(before, ("pytest",)) != _ini_test_config(after, ("pytest",))
    if name == "package.json":
        return _json_test_config(before, _PACKAGE_KEYS) != _json_test_config(after, _PACKAGE_KEYS)
    if name.startswith("tsconfig") and name.endswith(".json"):
        old, new = _json_test_config(before, None), _json_test_config(after, None)
        return old != new or (old == "unparseable" and before != after)
    return before != after


# package.json keys that configure a runner; the rest (a dependency, a script) may change.
_PACKAGE_KEYS = ("jest", "mocha", "vitest", "c8", "nyc", "ava", "imports", "type")
# tsconfig options that change how test files resolve modules.
_TS_KEYS = ("paths", "baseUrl", "rootDirs", "types", "typeRoots", "moduleResolution", "module")


def _json_test_config(content, keys):  # type: ignore[no-untyped-def]
    if content is None:
        return None
    try:
        data = json.loads(content)
    except ValueError:
        return "unparseable"  # tsconfig allows comments: compared as whole text instead
    if not isinstance(data, dict):
        return "not an object"
    if keys is None:  # tsconfig
        options = data.get("compilerOptions") or {}
        picked = {k: options.get(k) for k in _TS_KEYS} if isinstance(options, dict) else options
        return picked, data.get("extends"), data.get("references"), data.get("include")
    return [data.get(k) for k in keys]


def unpack_tree(stream, result):  # type: ignore[no-untyped-def]
    """Unpack the tar on ``stream`` here, as the put step would (files owned by us)."""
    tar = subprocess.Popen(
        ["tar", "-x", "-C", ".", "--no-same-owner", "--no-same-permissions", "-f", "-"],
        stdin=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        env=GIT_ENV,
    )
    try:
        shutil.copyfileobj(stream, tar.stdin, 1 << 20)
        tar.stdin.close()
    except OSError:  # tar stopped reading: its exit status says why
        pass
    if tar.wait() != 0:
        result["infra_error"] = "unpacking the tree failed (tar exit %d)" % tar.returncode
        return False
    return True


def commit_base(result):  # type: ignore[no-untyped-def]
    generated = "/etc/evalkit/generated.tar"
    if os.path.exists(generated):
        # Files the environment's install wrote into the tree (e.g. a _version.py).
        run(["tar", "-xf", generated, "-C", ".", "--no-same-owner"])
    for step in (
        ("init", "-q"),
        ("add", "-A", "-f"),
        ("commit", "-q", "--no-verify", "-m", "base"),
    ):
        proc = git(*step)
        if proc.returncode != 0:
            result["infra_error"] = "git %s failed: %s" % (step[0], text(proc)[-300:])
            return False
    return True


def after_patch(config, result):  # type: ignore[no-untyped-def]
    vetted = set(config.get("vetted_paths", []))
    if config.get("model_patch") and vetted:
        wrote = sorted(changed_paths() - vetted)
        if wrote:
            result["patch_error"] = (
                "applying the patch wrote %s, which the patch does not name" % (wrote[0])
            )
            return
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
        data = config["test_patch"].encode("utf-8", "surrogateescape")
        proc = git("apply", "--verbose", "--whitespace=nowarn", "-", data=data)
        if proc.returncode != 0:
            result["test_patch_error"] = text(proc)[-500:]


def main() -> int:
    stdin = sys.stdin.buffer
    config = json.loads(stdin.readline().decode("utf-8"))
    os.chdir(config["workdir"])
    result = {"apply_method": None, "apply_error": None, "tampered_files": []}
    if config.get("tree") and not unpack_tree(stdin, result):
        print(json.dumps(result))
        return 0
    if not commit_base(result):
        print(json.dumps(result))
        return 0
    if config.get("model_patch"):
        patch = config["model_patch"].encode("utf-8", "surrogateescape")
        method, error = apply_model_patch(patch)
        result["apply_method"], result["apply_error"] = method, error or None
        if method is None:
            print(json.dumps(result))
            return 0
    try:
        after_patch(config, result)
    except Exception as exc:  # the patched tree broke a trusted step: the patch's doing
        result["patch_error"] = "%s: %s" % (type(exc).__name__, exc)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
