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
"""Node major each Debian suite ships (``apt-cache policy nodejs``)."""
DEFAULT_NODE = 18
NODE_BASE = "evalkit/node-base:{suite}"
# Commit dates after which the next Debian Node is the better default guess.
_NODE_BY_YEAR = ((2024, 20),)


def _package_json(files: Mapping[str, str]) -> dict[str, object]:
    try:
        data = json.loads(files.get("package.json", "") or "{}")
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}


def node_major(files: Mapping[str, str], commit_year: int | None = None) -> int:
    """The Node major the repository asks for: ``.nvmrc`` / ``.node-version``, then the
    lowest major ``engines.node`` allows, then one by commit date, else 18."""
    for name in (".nvmrc", ".node-version"):
        match = re.search(r"(\d+)", files.get(name, "").strip().lstrip("v"))
        if match and files.get(name, "").strip()[:1] in "v0123456789":
            return int(match.group(1))
    engines = _package_json(files).get("engines")
    if isinstance(engines, dict) and isinstance(engines.get("node"), str):
        found = [int(m) for m in re.findall(r"(?<![\d.])(\d+)(?:\.[\dx*]+)*", engines["node"])]
        # ">=16" means 16 will do; the Debian Node at or above it is the one to use.
        if found:
            wanted = min(found)
            return next((v for v in sorted(DEBIAN_NODE.values()) if v >= wanted), wanted)
    if commit_year is not None:
        for year, major in _NODE_BY_YEAR:
            if commit_year >= year:
                return major
    return DEFAULT_NODE


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


def infer_node_spec(files: Mapping[str, str], commit_year: int | None = None) -> EnvSpec | None:
    """The spec for a JavaScript / TypeScript repository whose ``package.json`` names a
    supported runner (and which is not a Python package); None otherwise."""
    from evalkit.runners import detect_runner

    if "package.json" not in files or any(n in files for n in _PYTHON_PACKAGING):
        return None
    runner = detect_runner(files)
    if runner.ecosystem != "node":
        return None
    major = node_major(files, commit_year)
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
