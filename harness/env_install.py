#!/usr/bin/env python3
"""evalkit-install: ``uv pip install`` as of the environment's date (image build only).

Runs on the base image's Python (3.7+). The date comes from /etc/evalkit/exclude-newer.
When a needed release was deleted from the index (e.g. old ``atomicwrites``), uv says
which package its date filter emptied; that package alone is then resolved without the
bound, and the exception is recorded in /etc/evalkit/exclude-newer-overrides.json.

``evalkit-install --test-extras [KNOWN...]`` reads the metadata the project's own build produced
(the distribution installed from /testbed) and installs the extras that name tests.
"""

import json
import os
import re
import subprocess
import sys

ETC = "/etc/evalkit"
OVERRIDES = os.path.join(ETC, "exclude-newer-overrides.json")
FAR = "2100-01-01"
BACKENDS = ("setuptools", "wheel", "setuptools-scm", "hatchling", "hatch-vcs", "flit-core",
            "poetry-core", "setuptools-rust", "cython", "pbr")
TEST_WORDS = ("test", "tests", "testing")
_FILTERED = re.compile(r"`([A-Za-z0-9_.\-]+)` was filtered by `exclude-newer`")


def _read(path, default):
    try:
        with open(path) as handle:
            return handle.read().strip()
    except OSError:
        return default


def _overrides():
    try:
        return list(json.loads(_read(OVERRIDES, "[]")))
    except ValueError:
        return []


def uv(args):
    """One ``uv pip install``; returns (exit code, combined output)."""
    date = _read(os.path.join(ETC, "exclude-newer"), "")
    cmd = ["uv", "pip", "install", "--python", "/opt/venv/bin/python"]
    if date:
        cmd += ["--exclude-newer", date]
        for name in list(BACKENDS) + _overrides():
            cmd += ["--exclude-newer-package", name + "=" + FAR]
    proc = subprocess.run(cmd + list(args), stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    out = proc.stdout.decode("utf-8", "replace")
    sys.stdout.write(out)
    sys.stdout.flush()
    return proc.returncode, out


def install(args):
    """Install, lifting the date bound package by package where the index lost releases."""
    for _ in range(8):
        code, out = uv(args)
        if code == 0:
            return 0
        lost = [n for n in _FILTERED.findall(out) if n not in _overrides()]
        if not lost:
            return code
        print("evalkit-install: %s has no release before the date left on the index; "
              "resolving it without the bound" % ", ".join(lost))
        with open(OVERRIDES, "w") as handle:
            json.dump(sorted(set(_overrides() + lost)), handle)
    return code


def split_requirement_files(args):
    files, rest, i = [], [], 0
    while i < len(args):
        if args[i] == "-r" and i + 1 < len(args):
            files.append(args[i + 1])
            i += 2
        else:
            rest.append(args[i])
            i += 1
    return files, rest


def main(argv):
    if argv[:1] == ["--test-extras"]:
        return test_extras(argv[1:])
    code = install(argv)
    if code == 0:
        return 0
    files, rest = split_requirement_files(argv)
    if not files:
        return code
    # One resolution failed: requirement files one by one (a docs file pinning what this
    # Python cannot install is no reason to lose the test dependencies), then the rest.
    print("evalkit-install: installing the requirement files one at a time")
    for name in files:
        if install(["-r", name]) != 0:
            print("evalkit-install: warning: %s did not install; continuing" % name)
    return install(rest) if rest else 0


def test_extras(known):
    """Install the test extras of the built metadata not in ``known`` (installed already)."""
    try:
        from importlib import metadata
    except ImportError:  # Python 3.7
        return 0
    chosen, installed = [], None
    for dist in metadata.distributions():
        url = dist.read_text("direct_url.json") or ""
        if '"file:///testbed"' not in url.replace(" ", ""):
            continue
        extras = dist.metadata.get_all("Provides-Extra") or []
        chosen = [e for e in extras if any(w in e.lower() for w in TEST_WORDS)]
        if not chosen and "dev" in extras:
            chosen = ["dev"]
        installed = dist.metadata["Name"]
    with open(os.path.join(ETC, "test-extras.json"), "w") as handle:
        json.dump({"distribution": installed, "extras": chosen}, handle)
    new = [e for e in chosen if e not in known]
    if not new:
        return 0
    print("evalkit-install: test extras from the built metadata: %s" % ", ".join(new))
    return install(["-e", ".[%s]" % ",".join(chosen), "-C", "editable_mode=compat"])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
