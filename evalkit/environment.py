"""Environment specs: how to build the image a repository's tests run in.

A task set may carry ``evalkit.toml``; otherwise the spec is inferred from the
repository's own packaging files. Everything here is pure: it takes file texts and
returns values. The spec's *build* part hashes to the environment image's tag, so
all tasks of a repo whose dependency files did not change share one image.
"""

from __future__ import annotations

import configparser
import hashlib
import json
import re
import shlex
import sys
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from evalkit.errors import UsageError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

BOOTSTRAP_IMAGE = "evalkit/base:bookworm"
"""Base image built from Debian packages with no registry (``evalkit images bootstrap``)."""

DEFAULT_PYTHON = "3.11"
DEFAULT_TIMEOUT_S = 1800.0
TEST_EXTRAS = ("test", "tests", "testing", "dev")

# Files whose content decides what the environment image contains.
DEPENDENCY_FILES = (
    "pyproject.toml",
    "setup.py",
    "setup.cfg",
    "tox.ini",
    "requirements.txt",
    "requirements-dev.txt",
    "requirements-test.txt",
    "requirements_test.txt",
    "requirements_dev.txt",
    "test-requirements.txt",
    "dev-requirements.txt",
    "requirements/test.txt",
    "requirements/tests.txt",
    "requirements/dev.txt",
)
_REQUIREMENT_FILES = tuple(p for p in DEPENDENCY_FILES if p.endswith(".txt"))

_SPEC_KEYS = {
    "base_image",
    "python",
    "pip_packages",
    "install",
    "pre_test",
    "pytest_args",
    "env",
    "timeout",
    "memory",
    "cpus",
    "pids",
    "runner",
    "node",
}


@dataclass(frozen=True)
class EnvSpec:
    """Resolved environment for one task: image build recipe plus test-time settings."""

    base_image: str = ""
    """Image to build on; empty means ``python:<python>-slim``, else the bootstrap base."""
    python: str = DEFAULT_PYTHON
    pip_packages: tuple[str, ...] = ("pytest",)
    install: tuple[str, ...] = ()
    """Shell commands run in the repo at ``environment_setup_commit`` while building."""
    pre_test: tuple[str, ...] = ()
    """Shell commands run in the sandbox before the tests (no network)."""
    pytest_args: tuple[str, ...] = ()
    env: tuple[tuple[str, str], ...] = ()
    timeout: float = DEFAULT_TIMEOUT_S
    memory: str = "4g"
    cpus: float = 1.0
    pids: int = 512
    runner: str = "pytest"
    """The test runner (see :mod:`evalkit.runners`): ``pytest``, ``vitest``, ``jest``, ``mocha``."""
    node: str = ""
    """The Node major for JavaScript runners (see :mod:`evalkit.node_env`); empty for Python."""
    inferred_from: tuple[str, ...] = field(default=(), compare=False)

    def build_key(self, dependency_files: dict[str, str]) -> str:
        """Content hash naming the environment image: same inputs, same image."""
        payload = {
            "recipe": 3,
            "base_image": self.base_image,
            "python": self.python,
            "pip_packages": self.pip_packages,
            "install": self.install,
            "files": sorted((k, _without_versions(v)) for k, v in dependency_files.items()),
        }
        if self.node:
            payload["node"] = self.node
        blob = json.dumps(payload, sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:16]

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


_VERSION_LINE = re.compile(
    r"""^\s*(version|__version__)\s*[=:]\s*['"]?[\w.+-]*['"]?\s*,?\s*$""",
    re.MULTILINE | re.IGNORECASE,
)


def _without_versions(text: str) -> str:
    # A release bump changes no dependency: commits that differ only in their own
    # version number share one environment image (the checkout is imported from
    # /testbed anyway).
    return _VERSION_LINE.sub("", text)


def image_tag(repo: str, key: str) -> str:
    """Environment image name for ``repo`` (``owner/name``) and its build key."""
    name = re.sub(r"[^a-z0-9_.-]", "-", repo.lower().replace("/", "__"))
    return f"evalkit-env/{name}:{key}"


# --- evalkit.toml -------------------------------------------------------------


@dataclass(frozen=True)
class SpecFile:
    """Parsed ``evalkit.toml``: layered overrides (defaults, per repo, per instance)."""

    defaults: dict[str, Any] = field(default_factory=dict)
    repos: dict[str, dict[str, Any]] = field(default_factory=dict)
    instances: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def empty(self) -> bool:
        return not (self.defaults or self.repos or self.instances)


def _check_keys(table: dict[str, Any], where: str, path: Path) -> dict[str, Any]:
    unknown = set(table) - _SPEC_KEYS
    if unknown:
        raise UsageError(
            f"unknown key(s) {sorted(unknown)} in {where}; known: {sorted(_SPEC_KEYS)}",
            path=str(path),
        )
    return table


def load_spec_file(path: Path) -> SpecFile:
    """Read ``evalkit.toml``; a missing file means "infer everything"."""
    if not path.exists():
        return SpecFile()
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise UsageError(f"invalid TOML: {exc}", path=str(path)) from None
    defaults = _check_keys(dict(data.get("defaults", {})), "[defaults]", path)
    repos = {
        k: _check_keys(dict(v), f"[repos.{k!r}]", path) for k, v in data.get("repos", {}).items()
    }
    instances = {
        k: _check_keys(dict(v), f"[instances.{k!r}]", path)
        for k, v in data.get("instances", {}).items()
    }
    return SpecFile(defaults=defaults, repos=repos, instances=instances)


def _apply_overrides(spec: EnvSpec, table: dict[str, Any]) -> EnvSpec:
    changes: dict[str, Any] = {}
    for key, value in table.items():
        if key in {"pip_packages", "install", "pre_test", "pytest_args"}:
            changes[key] = tuple(str(v) for v in (value if isinstance(value, list) else [value]))
        elif key == "env":
            changes["env"] = tuple(sorted((str(k), str(v)) for k, v in dict(value).items()))
        elif key in {"timeout", "cpus"}:
            changes[key] = float(value)
        elif key == "pids":
            changes[key] = int(value)
        else:
            changes[key] = str(value)
    return replace(spec, **changes)


def resolve_spec(
    spec_file: SpecFile,
    repo: str,
    instance_id: str,
    dependency_files: dict[str, str],
) -> EnvSpec:
    """Layer: inferred < ``[defaults]`` < ``[repos."owner/name"]`` < ``[instances."id"]``."""
    spec = infer_spec(dependency_files)
    if (node := _node_spec(dependency_files)) is not None:
        spec = node
    for table in (
        spec_file.defaults,
        spec_file.repos.get(repo, {}),
        spec_file.instances.get(instance_id, {}),
    ):
        spec = _apply_overrides(spec, table)
    return spec


# --- inference from packaging files ------------------------------------------


def _node_spec(files: dict[str, str]) -> EnvSpec | None:
    """A JavaScript / TypeScript repository's spec (see :mod:`evalkit.node_env`), or None."""
    from evalkit.node_env import infer_node_spec

    return infer_node_spec(files)


def _pyproject_extras(text: str) -> set[str]:
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError:
        return set()
    extras = data.get("project", {}).get("optional-dependencies", {}) or {}
    poetry_extras = data.get("tool", {}).get("poetry", {}).get("extras", {}) or {}
    return set(extras) | set(poetry_extras)


def _pyproject_builds(text: str) -> bool:
    """Whether pyproject.toml describes an installable project (not just tool config)."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError:
        return False
    return "project" in data or "build-system" in data or "poetry" in data.get("tool", {})


def _setup_cfg_extras(text: str) -> set[str]:
    parser = configparser.ConfigParser(interpolation=None)
    try:
        parser.read_string(text)
    except configparser.Error:
        return set()
    if parser.has_section("options.extras_require"):
        return set(parser.options("options.extras_require"))
    return set()


def _setup_py_extras(text: str) -> set[str]:
    # setup.py is code we must not run on the host; a textual look is enough to
    # pick an extra name, and pip reports a wrong guess loudly at build time.
    block = re.search(r"extras_require\s*=\s*(\{.*?\}|dict\(.*?\))", text, re.S)
    if not block:
        return set()
    return set(re.findall(r"['\"]?([A-Za-z0-9_.-]+)['\"]?\s*[:=]\s*\[", block.group(1)))


def _tox_deps(text: str) -> list[str]:
    parser = configparser.ConfigParser(interpolation=None, strict=False)
    try:
        parser.read_string(text)
    except configparser.Error:
        return []
    if not parser.has_option("testenv", "deps"):
        return []
    deps = []
    for line in parser.get("testenv", "deps").splitlines():
        line = line.split("#", 1)[0].strip()
        # Skip factor-conditional lines, substitutions and nested requirement files.
        if line and not line.startswith("-") and not re.search(r"[{}:]", line):
            deps.append(line)
    return deps


def infer_spec(files: dict[str, str]) -> EnvSpec:
    """Guess how to install a Python repo from its packaging files.

    Installs requirement files, then the package itself in editable *compat* mode
    (a path-based ``.pth``), so later checkouts of the same repo import from
    ``/testbed`` without reinstalling.
    """
    commands: list[str] = []
    used: list[str] = []
    for name in _REQUIREMENT_FILES:
        if name in files:
            commands.append(f"pip install -r {shlex.quote(name)}")
            used.append(name)
    if "tox.ini" in files and (deps := _tox_deps(files["tox.ini"])):
        commands.append("pip install " + " ".join(shlex.quote(d) for d in deps))
        used.append("tox.ini")
    packaged: list[str] = [n for n in ("setup.py", "setup.cfg") if n in files]
    if "pyproject.toml" in files and _pyproject_builds(files["pyproject.toml"]):
        packaged.insert(0, "pyproject.toml")
    if not packaged:
        # Not installable: import straight from the checkout.
        return EnvSpec(
            install=tuple(commands),
            env=(("PYTHONPATH", "/testbed/src:/testbed"),),
            inferred_from=tuple(used),
        )
    extras: set[str] = set()
    if "pyproject.toml" in files:
        extras |= _pyproject_extras(files["pyproject.toml"])
    if "setup.cfg" in files:
        extras |= _setup_cfg_extras(files["setup.cfg"])
    if "setup.py" in files:
        extras |= _setup_py_extras(files["setup.py"])
    # One test extra is enough; "dev" only when there is none (it often pulls docs tooling).
    chosen = [e for e in TEST_EXTRAS[:3] if e in extras][:1] or [e for e in ("dev",) if e in extras]
    target = f".[{chosen[0]}]" if chosen else "."
    commands.append(f"pip install -e {shlex.quote(target)} --config-settings editable_mode=compat")
    used.extend(packaged)
    return EnvSpec(install=tuple(commands), inferred_from=tuple(used))
