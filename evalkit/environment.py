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
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field, replace
from datetime import date, datetime, timedelta
from pathlib import Path, PurePosixPath
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

DEBIAN_PYTHONS = {"3.9": "bullseye", "3.11": "bookworm", "3.13": "trixie"}
"""The Python each Debian release ships: the versions evalkit can provide with no registry."""
PROVIDED_PYTHONS = tuple(DEBIAN_PYTHONS)
"""Inference picks among these, so an inferred spec (and its image key) is the same on
every machine, with or without a registry; ``python = "3.X"`` may name any version."""
PYTHON_RELEASES = {
    "3.6": date(2016, 12, 23),
    "3.7": date(2018, 6, 27),
    "3.8": date(2019, 10, 14),
    "3.9": date(2020, 10, 5),
    "3.10": date(2021, 10, 4),
    "3.11": date(2022, 10, 24),
    "3.12": date(2023, 10, 2),
    "3.13": date(2024, 10, 7),
    "3.14": date(2025, 10, 7),
}
UV_VERSION = "0.13.9"
"""uv, pinned: the resolver decides what an environment contains."""
BUILD_BACKENDS = ("setuptools", "wheel", "setuptools-scm", "hatchling", "flit-core", "poetry-core")
"""Build backends are resolved as of today: an old ``setuptools`` cannot do PEP 660
editable installs, and the backend does not end up in the test environment."""

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
    "exclude_newer",
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
    exclude_newer: str = ""
    """Resolve dependencies as of this date (``YYYY-MM-DD``); empty: no bound."""
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
    python_source: str = field(default="default", compare=False)
    """Where ``python`` came from: ``spec``, ``inferred (...)`` or ``default``."""

    def build_key(self, dependency_files: dict[str, str]) -> str:
        """Content hash naming the environment image: same inputs, same image."""
        payload = {
            "recipe": 5,
            "base_image": self.base_image,
            "python": self.python,
            "exclude_newer": self.exclude_newer,
            "pip_packages": self.pip_packages,
            "install": self.install,
            "files": sorted((k, _without_versions(v)) for k, v in dependency_files.items()),
        }
        if self.node:
            payload["node"] = self.node
            payload["node_layout"] = 2  # workspaces' node_modules kept (env_node_layout.py)
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
    for key, value in table.items():
        problem = _type_problem(key, value)
        if problem:
            raise UsageError(f"{where} {key}: {problem}", path=str(path))
    return table


_LIST_KEYS = {"pip_packages", "install", "pre_test", "pytest_args"}
_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}([T ][0-9:.]+(Z|[+-]\d{2}:?\d{2})?)?$")


def _type_problem(key: str, value: Any) -> str | None:
    """Why ``value`` cannot be ``key``'s value (None: it can)."""
    if key in _LIST_KEYS:
        items = value if isinstance(value, list) else [value]
        if not all(isinstance(v, str) for v in items):
            return f"expected a string or a list of strings, got {value!r}"[:200]
    elif key == "env":
        if not isinstance(value, dict) or not all(
            isinstance(v, (str, int, float)) and not isinstance(v, bool) for v in value.values()
        ):
            return f"expected a table of strings, got {value!r}"[:200]
    elif key in {"timeout", "cpus"}:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
            return f"expected a positive number, got {value!r}"[:200]
    elif key == "pids":
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            return f"expected a positive integer, got {value!r}"[:200]
    elif key == "python":
        if not isinstance(value, str) or not re.fullmatch(r"3\.\d+", value):
            return f'expected a version string such as "3.9", got {value!r}'[:200]
    elif key == "exclude_newer":
        if not isinstance(value, str) or not (value == "none" or _DATE.match(value)):
            return f'expected a date ("2021-06-30") or "none", got {value!r}'[:200]
    elif not isinstance(value, str):
        return f"expected a string, got {value!r}"[:200]
    return None


def load_spec_file(path: Path) -> SpecFile:
    """Read ``evalkit.toml``; a missing file means "infer everything"."""
    if not path.exists():
        return SpecFile()
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise UsageError(f"invalid TOML: {exc}", path=str(path)) from None
    for section in ("defaults", "repos", "instances"):
        if not isinstance(data.get(section, {}), dict):
            raise UsageError(f"[{section}] must be a table", path=str(path))
    defaults = _check_keys(dict(data.get("defaults", {})), "[defaults]", path)
    repos: dict[str, dict[str, Any]] = {}
    instances: dict[str, dict[str, Any]] = {}
    for kind, target in (("repos", repos), ("instances", instances)):
        for k, v in data.get(kind, {}).items():
            if not isinstance(v, dict):
                raise UsageError(f"[{kind}.{k!r}] must be a table", path=str(path))
            target[k] = _check_keys(dict(v), f"[{kind}.{k!r}]", path)
    return SpecFile(defaults=defaults, repos=repos, instances=instances)


def _apply_overrides(spec: EnvSpec, table: dict[str, Any]) -> EnvSpec:
    changes: dict[str, Any] = {}
    for key, value in table.items():
        if key in _LIST_KEYS:
            changes[key] = tuple(str(v) for v in (value if isinstance(value, list) else [value]))
        elif key == "env":
            changes["env"] = tuple(sorted((str(k), str(v)) for k, v in dict(value).items()))
        elif key in {"timeout", "cpus"}:
            changes[key] = float(value)
        elif key == "pids":
            changes[key] = int(value)
        elif key == "exclude_newer":
            changes[key] = "" if value == "none" else str(value)
        elif key == "python":
            changes[key] = str(value)
            changes["python_source"] = "spec"
        else:
            changes[key] = str(value)
    return replace(spec, **changes)


def resolve_spec(
    spec_file: SpecFile,
    repo: str,
    instance_id: str,
    dependency_files: dict[str, str],
    commit_date: datetime | None = None,
) -> EnvSpec:
    """Layer: inferred < ``[defaults]`` < ``[repos."owner/name"]`` < ``[instances."id"]``."""
    spec = infer_spec(dependency_files, commit_date)
    if (node := _node_spec(dependency_files, commit_date)) is not None:
        spec = node
    for table in (
        spec_file.defaults,
        spec_file.repos.get(repo, {}),
        spec_file.instances.get(instance_id, {}),
    ):
        spec = _apply_overrides(spec, table)
    return spec


def exclude_newer_for(commit_date: datetime) -> str:
    """The resolution date for a commit: the first day of the month after it.

    Dependencies are those published before that day. Monthly steps let the commits
    of one month share an image; a fix never depends on a release made after it
    landed, and the month's slack is small next to the years of drift it removes.
    """
    day = commit_date.date()
    first = (day.replace(day=1) + timedelta(days=32)).replace(day=1)
    return first.isoformat()


# --- inference from packaging files ------------------------------------------

INSTALLER = "evalkit-install"
"""The image's installer (``harness/env_install.py``): ``uv pip install`` bounded by the
spec's date, retried with a per-package exception when a needed old release was deleted
from the index; ``--test-extras`` installs the test extras the built metadata declares."""

CI_FILES = (
    "noxfile.py",
    ".travis.yml",
    ".circleci/config.yml",
    "azure-pipelines.yml",
    ".github/workflows/tests.yml",
    ".github/workflows/test.yml",
    ".github/workflows/ci.yml",
    ".github/workflows/main.yml",
    ".github/workflows/python-package.yml",
    ".github/workflows/tox.yml",
)
"""Files that may name requirement files (``-r requirements/tests.txt``)."""


def _toml(text: str) -> dict[str, Any]:
    try:
        data: dict[str, Any] = tomllib.loads(text)
    except tomllib.TOMLDecodeError:
        return {}
    return data


def _node_spec(files: dict[str, str], commit_date: datetime | None) -> EnvSpec | None:
    """A JavaScript / TypeScript repository's spec (see :mod:`evalkit.node_env`), or None;
    the commit's date picks the Node when the repository names none."""
    from evalkit.node_env import infer_node_spec

    return infer_node_spec(files, commit_date)


def _pyproject_extras(text: str) -> set[str]:
    data = _toml(text)
    extras = data.get("project", {}).get("optional-dependencies", {}) or {}
    poetry_extras = data.get("tool", {}).get("poetry", {}).get("extras", {}) or {}
    return set(extras) | set(poetry_extras)


def _pyproject_builds(text: str) -> bool:
    """Whether pyproject.toml describes an installable project (not just tool config)."""
    data = _toml(text)
    return "project" in data or "build-system" in data or "poetry" in data.get("tool", {})


def _setup_cfg(text: str) -> configparser.ConfigParser | None:
    parser = configparser.ConfigParser(interpolation=None, strict=False)
    try:
        parser.read_string(text)
    except configparser.Error:
        return None
    return parser


def _setup_cfg_extras(text: str) -> set[str]:
    parser = _setup_cfg(text)
    if parser is not None and parser.has_section("options.extras_require"):
        return set(parser.options("options.extras_require"))
    return set()


def _literal_strings(node: Any) -> list[str]:
    import ast

    if isinstance(node, (ast.List, ast.Tuple, ast.Set)):
        return [
            e.value for e in node.elts if isinstance(e, ast.Constant) and isinstance(e.value, str)
        ]
    return []


def _setup_py_facts(text: str) -> tuple[set[str], list[str], str]:
    """Extras, ``tests_require`` and ``python_requires`` from setup.py, read with ``ast``
    (never run: it is the repository's code). Names bound to literals are followed, so
    ``extras_require=EXTRAS`` counts; anything computed is left to the in-image step,
    which reads the metadata the build produced."""
    import ast

    try:
        tree = ast.parse(text)
    except (SyntaxError, ValueError):
        return set(), [], ""
    names: dict[str, Any] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign):
            for target in node.targets:
                if isinstance(target, ast.Name):
                    names[target.id] = node.value
    extras: set[str] = set()
    tests: list[str] = []
    requires = ""
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        for kw in node.keywords:
            value = names.get(kw.value.id, kw.value) if isinstance(kw.value, ast.Name) else kw.value
            if kw.arg == "extras_require" and isinstance(value, ast.Dict):
                extras |= {
                    k.value
                    for k in value.keys
                    if isinstance(k, ast.Constant) and isinstance(k.value, str)
                }
            elif kw.arg == "tests_require":
                tests += _literal_strings(value)
            elif kw.arg == "python_requires" and isinstance(value, ast.Constant):
                requires = str(value.value)
    return extras, tests, requires


def _tox(text: str) -> configparser.ConfigParser | None:
    return _setup_cfg(text)


def _tox_deps(text: str) -> tuple[list[str], list[str], list[str]]:
    """``[testenv]`` deps, requirement files it names (``-r``) and its ``extras``."""
    parser = _tox(text)
    if parser is None or not parser.has_section("testenv"):
        return [], [], []
    deps: list[str] = []
    files: list[str] = []
    raw = parser.get("testenv", "deps", fallback="")
    for line in raw.splitlines():
        line = line.split("#", 1)[0].strip().replace("{toxinidir}/", "")
        if re.match(r"^-r\s*\S", line):
            name = line[2:].strip()
            if not re.search(r"[{}]", name):
                files.append(name)
            continue
        # Skip factor-conditional lines, substitutions and other options.
        if line and not line.startswith("-") and not re.search(r"[{}]|^[\w,-]+:\s", line):
            deps.append(line)
    extras = re.split(r"[\s,]+", parser.get("testenv", "extras", fallback="").strip())
    return deps, files, [e for e in extras if re.fullmatch(r"[A-Za-z0-9_.-]+", e)]


_REQ_FILE = re.compile(r"""(?:-r|--requirement)\s*['"]?,?\s*['"]?([\w./-]+\.(?:txt|in))""")


def referenced_requirement_files(files: dict[str, str]) -> list[str]:
    """Requirement files named by tox, nox or CI configuration, in order."""
    found: dict[str, None] = {}
    if "tox.ini" in files:
        for name in _tox_deps(files["tox.ini"])[1]:
            found.setdefault(name, None)
    for ci in CI_FILES:
        for name in _REQ_FILE.findall(files.get(ci, "")):
            found.setdefault(name.removeprefix("./"), None)
    return [n for n in found if ".." not in PurePosixPath(n).parts and not n.startswith("/")]


def read_dependency_files(read: Callable[[tuple[str, ...]], dict[str, str]]) -> dict[str, str]:
    """The files that decide an environment: the usual names, then the requirement
    files that tox, nox or CI configuration name (a second read)."""
    files = read(DEPENDENCY_FILES + CI_FILES)
    extra = tuple(n for n in referenced_requirement_files(files) if n not in files)
    if extra:
        files.update(read(extra))
    return files


def _dependency_groups(text: str) -> list[str]:
    groups = _toml(text).get("dependency-groups", {}) or {}
    return [g for g in ("test", "tests", "testing", "dev") if g in groups]


# --- Python version -------------------------------------------------------------


def _requires_python(files: dict[str, str]) -> str:
    if "pyproject.toml" in files:
        value = _toml(files["pyproject.toml"]).get("project", {}).get("requires-python")
        if isinstance(value, str):
            return value
    if "setup.cfg" in files:
        parser = _setup_cfg(files["setup.cfg"])
        if parser is not None and parser.has_option("options", "python_requires"):
            return parser.get("options", "python_requires")
    if "setup.py" in files:
        return _setup_py_facts(files["setup.py"])[2]
    return ""


def _classifier_pythons(files: dict[str, str]) -> set[str]:
    text = "\n".join(files.get(n, "") for n in ("pyproject.toml", "setup.cfg", "setup.py"))
    return set(re.findall(r"Programming Language :: Python :: (3\.\d+)\b", text))


def _vkey(version: str) -> tuple[int, ...]:
    return tuple(int(p) for p in version.split("."))


def _allowed(requires: str, versions: Iterable[str]) -> list[str]:
    if not requires.strip():
        return list(versions)
    try:
        from packaging.specifiers import InvalidSpecifier, SpecifierSet
    except ImportError:  # pragma: no cover - packaging comes with pip and datasets
        return list(versions)
    try:
        spec = SpecifierSet(requires.replace(" ", ""))
    except InvalidSpecifier:
        return list(versions)
    return [v for v in versions if spec.contains(f"{v}.0", prereleases=True)]


def infer_python(files: dict[str, str], commit_date: datetime | None) -> tuple[str, str]:
    """The Python a commit's tests were meant for, and why.

    Among the versions evalkit provides (:data:`PROVIDED_PYTHONS`) that the project's
    ``requires-python`` / ``python_requires`` allows: the newest one released by the
    commit's date and not newer than its newest classifier; else the oldest allowed
    (a commit older than every provided version). When none is allowed, the newest
    version the metadata allows at all: building it then needs a registry (or
    ``--substitute-python``), and that is said, not papered over.
    """
    requires = _requires_python(files)
    classifiers = _classifier_pythons(files)
    allowed = _allowed(requires, PROVIDED_PYTHONS)
    reasons = [f"requires-python {requires!r}"] if requires else []
    if not allowed:
        every = _allowed(requires, PYTHON_RELEASES)
        if every:
            return max(every, key=_vkey), ", ".join(reasons) + "; no provided Python allowed"
        return DEFAULT_PYTHON, f"requires-python {requires!r} allows no known Python"
    fits = allowed
    if commit_date is not None:
        fits = [v for v in fits if PYTHON_RELEASES[v] <= commit_date.date()]
        reasons.append(f"commit of {commit_date.date().isoformat()}")
    if classifiers:
        newest = max(classifiers, key=_vkey)
        capped = [v for v in fits if _vkey(v) <= _vkey(newest)]
        fits = capped or fits
        reasons.append(f"classifiers up to {newest}")
    chosen = max(fits, key=_vkey) if fits else min(allowed, key=_vkey)
    return chosen, ", ".join(reasons) or "default"


def infer_spec(files: dict[str, str], commit_date: datetime | None = None) -> EnvSpec:
    """Guess how to install a Python repo from its packaging files.

    Everything goes through :data:`INSTALLER` (uv, as of the commit's month): the
    requirement files the repo and its tox/nox/CI configuration name, tox ``deps``,
    PEP 735 dependency groups, ``tests_require``, then the package itself in editable
    *compat* mode (a path-based ``.pth``, so later checkouts of the same repo import
    from ``/testbed`` without reinstalling) with its test extras. A last step reads
    the extras from the metadata the build produced, so extras computed in
    ``setup.py`` are found too.
    """
    python, why = infer_python(files, commit_date)
    base = EnvSpec(
        python=python,
        python_source=f"inferred ({why})",
        exclude_newer=exclude_newer_for(commit_date) if commit_date is not None else "",
    )
    args: list[str] = []
    used: list[str] = []
    for name in (*_REQUIREMENT_FILES, *referenced_requirement_files(files)):
        if name in files and name not in used:
            args += ["-r", name]
            used.append(name)
    tox_deps, _, tox_extras = _tox_deps(files["tox.ini"]) if "tox.ini" in files else ([], [], [])
    if tox_deps or tox_extras:
        args += tox_deps
        used.append("tox.ini")
    packaged: list[str] = [n for n in ("setup.py", "setup.cfg") if n in files]
    if "pyproject.toml" in files and _pyproject_builds(files["pyproject.toml"]):
        packaged.insert(0, "pyproject.toml")
        for group in _dependency_groups(files["pyproject.toml"]):
            args += ["--group", group]
    extras: set[str] = set()
    tests_require: list[str] = []
    if "pyproject.toml" in files:
        extras |= _pyproject_extras(files["pyproject.toml"])
    if "setup.cfg" in files:
        extras |= _setup_cfg_extras(files["setup.cfg"])
        parser = _setup_cfg(files["setup.cfg"])
        if parser is not None and parser.has_option("options", "tests_require"):
            tests_require += [
                r.strip() for r in parser.get("options", "tests_require").splitlines() if r.strip()
            ]
    if "setup.py" in files:
        found, tests, _ = _setup_py_facts(files["setup.py"])
        extras |= found
        tests_require += tests
    args += tests_require
    if not packaged:
        # Not installable: import straight from the checkout.
        commands = [shlex.join([INSTALLER, *args])] if args else []
        return replace(
            base,
            install=tuple(commands),
            env=(("PYTHONPATH", "/testbed/src:/testbed"),),
            inferred_from=tuple(used),
        )
    # tox's extras are the project's own word on what its tests need, declared or not.
    chosen = sorted({e for e in extras if e in TEST_EXTRAS[:3]} | set(tox_extras))
    if not chosen and "dev" in extras:  # "dev" only when there is none: it often pulls docs tooling
        chosen = ["dev"]
    target = f".[{','.join(chosen)}]" if chosen else "."
    args += ["-e", target, "-C", "editable_mode=compat"]
    used.extend(packaged)
    commands = [shlex.join([INSTALLER, *args]), shlex.join([INSTALLER, "--test-extras", *chosen])]
    return replace(base, install=tuple(commands), inferred_from=tuple(used))
