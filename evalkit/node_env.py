"""Node environments: which Node, which package manager, and the image recipe.

Pure inference from file texts (``package.json``, the lockfile, ``.nvmrc`` /
``.node-version``), plus the image step :func:`ensure_node_base`. Node comes from
Debian's packages (bookworm ships 18, trixie 20), so no registry is needed; a major
neither ships is taken from the ``node:<major>-bookworm-slim`` registry image when it
can be pulled, else the nearest Debian one with a warning. Dependencies are installed
from the lockfile (``npm ci``; pnpm / yarn through corepack, or ``npm i -g`` where
Debian's Node has no corepack) into a root-owned ``/node_modules``: Node's resolution
walks up from ``/testbed`` to it, the read-only root filesystem keeps the code under
test from changing it, and every checkout of the repository reuses the image.
"""

from __future__ import annotations

import json
import os
import re
import shlex
from collections.abc import Callable, Mapping
from datetime import date, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from evalkit.environment import BOOTSTRAP_IMAGE, EnvSpec

if TYPE_CHECKING:
    import docker

Log = Callable[[str], None]

LOCKFILES = ("package-lock.json", "npm-shrinkwrap.json", "pnpm-lock.yaml", "yarn.lock")
NODE_FILES = ("package.json", *LOCKFILES, ".nvmrc", ".node-version")
"""Files read at ``environment_setup_commit`` to infer a Node environment."""
_PYTHON_PACKAGING = ("pyproject.toml", "setup.py", "setup.cfg")

DEBIAN_NODE = {"bookworm": 18, "trixie": 20}
"""Node major each Debian suite ships (``apt-cache policy nodejs``). Not bullseye: its
Node 12 cannot load evalkit's launchers (ES modules with top-level ``await``, Node 14.8+)."""
DEBIAN_NODE_VERSIONS = {"bookworm": (18, 20, 4), "trixie": (20, 19, 2)}
"""The versions themselves, for checking an ``engines.node`` range."""
DEFAULT_NODE = 18
NODE_BASE = "evalkit/node-base:{suite}"
NODE_LTS = {
    10: date(2018, 10, 30),
    12: date(2019, 10, 21),
    14: date(2020, 10, 27),
    16: date(2021, 10, 26),
    18: date(2022, 10, 25),
    20: date(2023, 10, 24),
    22: date(2024, 10, 29),
    24: date(2025, 10, 28),
}
"""When each Node major became the active LTS: the Node of a commit's time."""


def _package_json(files: Mapping[str, str]) -> dict[str, object]:
    try:
        data = json.loads(files.get("package.json", "") or "{}")
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}


def _debian_at_or_above(major: int) -> int:
    """The oldest Debian Node at or above ``major``; the newest when none is."""
    shipped = sorted(DEBIAN_NODE.values())
    return next((v for v in shipped if v >= major), shipped[-1])


def dated_node(commit_date: date) -> int:
    """The Node of a commit's time: the LTS active at its date, as the Debian Node at or
    above it (bookworm's 18 up to Node 20's LTS in October 2023, then trixie's 20)."""
    day = commit_date.date() if isinstance(commit_date, datetime) else commit_date
    active = [major for major, since in NODE_LTS.items() if since <= day]
    return _debian_at_or_above(max(active) if active else min(NODE_LTS))


# --- engines.node: npm's semver ranges, as far as a Node version needs them ------

Version = tuple[int, int, int]
_PARTIAL = re.compile(r"^v?(\d+|[xX*])?(?:\.(\d+|[xX*]))?(?:\.(\d+|[xX*]))?(?:[-+][\w.-]*)?$")


def _partial(text: str) -> list[int] | None:
    """``18.2`` -> [18, 2]; wildcards end it (``18.x`` -> [18], ``*`` -> [])."""
    match = _PARTIAL.match(text)
    if match is None:
        return None
    parts: list[int] = []
    for group in match.groups():
        if group is None or not group.isdigit():
            break
        parts.append(int(group))
    return parts


def _full(parts: list[int]) -> Version:
    padded = [*parts, 0, 0, 0]
    return padded[0], padded[1], padded[2]


def _next(parts: list[int]) -> Version:
    """The first version past everything ``parts`` covers (``18.2`` -> 18.3.0)."""
    return _full([*parts[:-1], parts[-1] + 1])


def _comparator(op: str, parts: list[int], v: Version) -> bool:
    if not parts:  # "*", "x", ">=*": anything
        return op not in ("<", ">")
    low = _full(parts)
    if op in ("", "="):
        return low <= v < _next(parts)
    if op == "^":
        head = next((i for i, p in enumerate(parts) if p), len(parts) - 1)
        return low <= v < _next(parts[: head + 1])
    if op in ("~", "~>"):
        return low <= v < _next(parts[:2] if len(parts) > 1 else parts)
    if op == ">=":
        return v >= low
    if op == ">":
        return v >= _next(parts)
    if op == "<":
        return v < low
    if op == "<=":
        return v < _next(parts)
    return False


def satisfies(version: Version, text: str) -> bool | None:
    """Whether ``version`` is in an npm semver range; None when the range does not parse."""
    for alternative in text.split("||"):
        alternative = re.sub(r"(<=|>=|~>|[<>=~^])\s+", r"\1", alternative.strip())
        hyphen = re.fullmatch(r"(\S+)\s+-\s+(\S+)", alternative)
        if hyphen:
            low, high = _partial(hyphen.group(1)), _partial(hyphen.group(2))
            if low is None or high is None:
                return None
            ok = _comparator(">=", low, version) and (not high or _comparator("<=", high, version))
        else:
            ok = True
            for token in alternative.split() or ["*"]:
                match = re.fullmatch(r"(<=|>=|~>|[<>=~^]?)(.*)", token)
                parts = _partial(match.group(2)) if match else None
                if match is None or parts is None:
                    return None
                ok = ok and _comparator(match.group(1), parts, version)
        if ok:
            return True
    return False


def node_major(files: Mapping[str, str], commit_date: date | None = None) -> int:
    """The Node major a repository's tests were meant for.

    ``.nvmrc`` / ``.node-version`` name it; else the Node of the commit's time
    (:func:`dated_node`; 18 without a date) among the Debian Nodes ``engines.node``
    allows, the next allowed one above it, or the newest allowed one; a range no
    Debian Node satisfies gives its lowest major (a registry image, or the nearest
    Debian Node with a warning, at build time).
    """
    for name in (".nvmrc", ".node-version"):
        match = re.search(r"(\d+)", files.get(name, "").strip().lstrip("v"))
        if match and files.get(name, "").strip()[:1] in "v0123456789":
            return int(match.group(1))
    wanted = dated_node(commit_date) if commit_date is not None else DEFAULT_NODE
    engines = _package_json(files).get("engines")
    if isinstance(engines, dict) and isinstance(engines.get("node"), str):
        text = engines["node"]
        verdicts = {v[0]: satisfies(v, text) for v in DEBIAN_NODE_VERSIONS.values()}
        if None not in verdicts.values():
            allowed = sorted(m for m, ok in verdicts.items() if ok)
            if allowed:
                return next((m for m in allowed if m >= wanted), allowed[-1])
        found = [int(m) for m in re.findall(r"(?<![\d.])(\d+)(?:\.[\dx*]+)*", text)]
        if found:  # no Debian Node fits (or the range is beyond this parser): its lowest major
            return min(found)
    return wanted


def debian_suite(major: int) -> str | None:
    """The Debian suite whose ``nodejs`` is this major, if any."""
    return next((suite for suite, v in DEBIAN_NODE.items() if v == major), None)


def package_manager(files: Mapping[str, str]) -> tuple[str, str]:
    """(manager, install command) from the lockfile; ``packageManager`` pins the version."""
    pinned = str(_package_json(files).get("packageManager", "") or "")
    version = pinned.split("@", 1)[1].split("+", 1)[0] if "@" in pinned else ""

    def tool(name: str) -> str:
        spec = f"{name}@{version}" if version and pinned.startswith(name + "@") else name
        # corepack where Node ships it; Debian's Node does not, so npm installs the tool.
        return (
            f"(corepack enable {name} 2>/dev/null && corepack prepare {shlex.quote(spec)} "
            f"--activate) || npm install -g {shlex.quote(spec)}"
        )

    if "pnpm-lock.yaml" in files:
        return "pnpm", f"{tool('pnpm')}; pnpm install --frozen-lockfile --shamefully-hoist"
    if "yarn.lock" in files:
        berry = "__metadata:" in files["yarn.lock"]
        flag = "--immutable" if berry else "--frozen-lockfile"
        return "yarn", f"{tool('yarn')}; yarn install {flag}"
    if "package-lock.json" in files or "npm-shrinkwrap.json" in files:
        return "npm", "npm ci --no-audit --no-fund"
    return "npm", "npm install --no-audit --no-fund"


def workspace_dependencies(files: Mapping[str, str]) -> set[str]:
    """Packages a workspace of a monorepo depends on, from the root lockfile (whose
    importers are the root and every workspace): a monorepo's runner is often named
    only in ``packages/*/package.json``, which the root files do not include."""
    names: set[str] = set()
    if lock := files.get("package-lock.json") or files.get("npm-shrinkwrap.json"):
        try:
            packages = json.loads(lock).get("packages", {})
        except (ValueError, AttributeError):
            packages = {}
        for path, entry in packages.items() if isinstance(packages, dict) else ():
            if "node_modules/" in f"{path}/" or not isinstance(entry, dict):
                continue  # an installed package, not a workspace
            for key in ("devDependencies", "dependencies"):
                if isinstance(entry.get(key), dict):
                    names.update(entry[key])
    if lock := files.get("pnpm-lock.yaml"):
        importers = re.search(r"^importers:\n(.*?)(?=^\S|\Z)", lock, re.MULTILINE | re.DOTALL)
        body = importers.group(1) if importers else lock
        names.update(re.findall(r"^ {6}'?((?:@[\w.-]+/)?[\w.-]+)'?:", body, re.MULTILINE))
    if lock := files.get("yarn.lock"):
        names.update(re.findall(r'^"?((?:@[\w.-]+/)?[\w.-]+)@', lock, re.MULTILINE))
    return names


def infer_node_spec(files: Mapping[str, str], commit_date: date | None = None) -> EnvSpec | None:
    """The spec for a JavaScript / TypeScript repository whose ``package.json`` names a
    supported runner, or (a monorepo) whose lockfile has a workspace that does; None for
    a Python package or a repository with no runner evalkit knows."""
    from evalkit.runners import detect_runner, get_runner

    if "package.json" not in files or any(n in files for n in _PYTHON_PACKAGING):
        return None
    runner = detect_runner(files)
    if runner.ecosystem != "node":
        in_workspaces = workspace_dependencies(files)
        found = [n for n in ("vitest", "jest", "mocha") if n in in_workspaces]
        if not found:
            return None
        runner = get_runner(found[0])
    major = node_major(files, commit_date)
    _, install = package_manager(files)
    used = [n for n in NODE_FILES if n in files]
    return EnvSpec(
        base_image="",
        node=str(major),
        pip_packages=(),
        install=(install,),
        runner=runner.name,
        inferred_from=tuple(used),
    )


def _lock_without_own_version(name: str, text: str) -> str:
    if name not in ("package-lock.json", "npm-shrinkwrap.json"):
        return text
    try:
        data = json.loads(text)
    except ValueError:
        return text
    if isinstance(data, dict):
        data.pop("version", None)
        root = data.get("packages", {}).get("") if isinstance(data.get("packages"), dict) else None
        if isinstance(root, dict):
            root.pop("version", None)
    return json.dumps(data, sort_keys=True)


def build_files(files: Mapping[str, str]) -> dict[str, str]:
    """What names a Node environment image: the lockfile (without the project's own
    version) and the Node version files, so a release bump reuses the image."""
    lock = next((n for n in LOCKFILES if n in files), None)
    chosen = {lock: _lock_without_own_version(lock, files[lock])} if lock else {}
    if lock is None and "package.json" in files:
        chosen["package.json"] = files["package.json"]
    engines = _package_json(files).get("engines")
    chosen["engines"] = json.dumps(engines, sort_keys=True)
    chosen.update({n: files[n] for n in (".nvmrc", ".node-version") if n in files})
    return chosen


def node_ca_bundle(explicit: Path | None) -> Path | None:
    """The CA bundle for npm: evalkit's own choice, else NODE_EXTRA_CA_CERTS, else the host's."""
    if explicit is not None:
        return explicit
    for candidate in (os.environ.get("NODE_EXTRA_CA_CERTS"), "/etc/ssl/certs/ca-certificates.crt"):
        if candidate and Path(candidate).is_file():
            return Path(candidate)
    return None


def spec_major(spec: EnvSpec) -> int:
    return int(spec.node) if spec.node.isdigit() else DEFAULT_NODE


def render_node_dockerfile(spec: EnvSpec, *, repo: str, key: str, base_image: str, ca: bool) -> str:
    from evalkit.images import harness_templates

    return (
        harness_templates()
        .get_template("env-node.Dockerfile.j2")
        .render(
            repo=repo,
            key=key,
            base_image=base_image,
            ca_bundle=ca,
            uid=1000,
            install=list(spec.install),
        )
    )


def ensure_node_base(client: docker.DockerClient, spec: EnvSpec, *, log: Log = print) -> str:
    """The image with Node, npm, git and a Python for evalkit's own sandbox scripts.

    ``spec.base_image`` wins (it must have node, npm, git and python3); else Debian's
    Node for the wanted major, built once per suite on the registry-free base.
    """
    import io

    from evalkit.errors import InfraError
    from evalkit.images import bootstrap_base, image_exists, resolve_base_image

    if spec.base_image:
        return resolve_base_image(client, spec, log=log).image
    major = spec_major(spec)
    suite = debian_suite(major)
    if suite is None:
        nearest = max(v for v in DEBIAN_NODE.values() if v <= max(major, DEFAULT_NODE))
        log(
            f"Node {major} is not in Debian's packages; using Node {nearest} "
            f"(set base_image in evalkit.toml to a node:{major} image to override)"
        )
        suite = debian_suite(nearest) or "bookworm"
    tag = NODE_BASE.format(suite=suite)
    if image_exists(client, tag):
        return tag
    debian = BOOTSTRAP_IMAGE if suite == "bookworm" else f"evalkit/base:{suite}"
    if not image_exists(client, debian):
        bootstrap_base(client, name=debian, suite=suite, log=log)
    dockerfile = (
        f"FROM {debian}\n"
        "USER root\n"
        "RUN set -eu; apt-get update; apt-get install -y --no-install-recommends "
        "nodejs npm git ca-certificates python3 python3-venv; rm -rf /var/lib/apt/lists/*; "
        "python3 -m venv --without-pip /opt/venv\n"
        f'LABEL evalkit.node-base="{suite}"\n'
    )
    log(f"building Node base image {tag} (Debian {suite}'s nodejs)...")
    try:
        client.images.build(fileobj=io.BytesIO(dockerfile.encode()), tag=tag, rm=True)
    except Exception as exc:
        raise InfraError(f"building {tag} failed: {str(exc)[:400]}") from None
    return tag
