"""Agent packs: each (agent package, version) installed once into a read-only host directory.

A pack is mounted read-only at :data:`PACK_MOUNT` in an agent's sandbox, so nothing is ever
installed over the network during an attempt. Layout of a pack directory::

    bin/<name>          relative symlinks to the pack's executables (what adapters run)
    node_modules/...    npm packs: the package and its platform-specific optional dependency
    venv/...            PyPI packs: a venv made by /usr/bin/python3 of the base image
    evalkit-pack.json   the manifest: spec, key, resolved versions (PackManifest)

npm packs are installed on the host with ``--ignore-scripts`` (no package code runs on the
host); their native binaries (Claude Code's glibc ELF, Codex's static musl ELF) run directly,
so the sandbox needs no node. PyPI packs are built inside a throwaway container of the base
image with the pack directory mounted at :data:`PACK_MOUNT`, so the venv's interpreter path
and every script's shebang are the ones the sandbox sees; that build container is the only one
with a network (bridge), and gets the host CA bundle when there is one.

The key hashes the spec, the platform and, for PyPI packs, the base image id, so a rebuilt base
image gets a new pack. Builds take a per-key file lock, happen in a temp directory that is
renamed into place, and end with every write bit removed; a second :func:`ensure_pack` finds
the manifest and returns at once.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import platform
import re
import shlex
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, NamedTuple

from pydantic import BaseModel, ConfigDict

from evalkit.errors import InfraError, UsageError

if TYPE_CHECKING:
    import docker

PACK_MOUNT = "/evalkit/agent"
MANIFEST_FILE = "evalkit-pack.json"
PACK_SCHEMA_VERSION = 1
DEFAULT_BASE_IMAGE = "evalkit/base:bookworm"
CACHE_ENV = "EVALKIT_CACHE"
PIP_CACHE_DIR = ".pip-cache"
BUILD_TIMEOUT_S = 1800

Log = Callable[[str], None]


class PackSpec(NamedTuple):
    """What to install. ``bins`` maps a command name to a glob relative to the pack root."""

    ecosystem: Literal["npm", "pypi"]
    package: str
    version: str
    bins: tuple[tuple[str, str], ...] = ()
    extra: tuple[str, ...] = ()
    """More requirements installed alongside (pinned specifiers), e.g. a plugin."""
    base_image: str = DEFAULT_BASE_IMAGE
    """PyPI packs only: the image whose /usr/bin/python3 the venv is built from."""


class Pack(NamedTuple):
    key: str
    path: Path

    def manifest(self) -> PackManifest:
        return read_manifest(self.path)


class PackManifest(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    schema_version: int
    key: str
    ecosystem: Literal["npm", "pypi"]
    package: str
    version: str
    platform: str
    base_image: str | None
    base_image_id: str | None
    bins: dict[str, str]
    """Command name -> path inside the pack the ``bin/`` link points at."""
    resolved: dict[str, str]
    """Every installed package -> the version that got installed."""
    built_at: float
    build_seconds: float


def default_cache_dir() -> Path:
    env = os.environ.get(CACHE_ENV)
    base = Path(env) if env else Path.home() / ".cache" / "evalkit"
    return base / "packs"


def npm_platform() -> tuple[str, str]:
    """(npm cpu, Rust-style arch) of this machine; the sandbox runs on the same kernel."""
    machine = platform.machine().lower()
    if machine in ("x86_64", "amd64"):
        return "x64", "x86_64"
    if machine in ("aarch64", "arm64"):
        return "arm64", "aarch64"
    raise InfraError(f"agent packs are not supported on {machine}")


def pack_key(spec: PackSpec, base_image_id: str | None) -> str:
    doc = {
        "schema": PACK_SCHEMA_VERSION,
        "ecosystem": spec.ecosystem,
        "package": spec.package,
        "version": spec.version,
        "extra": sorted(spec.extra),
        "bins": sorted(spec.bins),
        "platform": f"linux-{npm_platform()[0]}",
        "base_image_id": base_image_id if spec.ecosystem == "pypi" else None,
    }
    return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()[:24]


def _dir_name(spec: PackSpec, key: str) -> str:
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in spec.package.lstrip("@"))
    return f"{safe}-{spec.version}-{key}"


def read_manifest(path: Path) -> PackManifest:
    file = path / MANIFEST_FILE
    try:
        manifest = PackManifest.model_validate_json(file.read_bytes())
    except (OSError, ValueError) as exc:
        raise InfraError(f"{file}: unreadable pack manifest ({type(exc).__name__})") from None
    if manifest.schema_version != PACK_SCHEMA_VERSION:
        raise InfraError(f"{file}: pack schema_version {manifest.schema_version} is not supported")
    return manifest


def ensure_pack(
    spec: PackSpec,
    *,
    cache_dir: Path | None = None,
    log: Log = print,
    client: docker.DockerClient | None = None,
) -> Pack:
    """The pack for ``spec``, built now if this machine does not have it yet."""
    _check_spec(spec)
    root = cache_dir or default_cache_dir()
    root.mkdir(parents=True, exist_ok=True)
    base_id = _image_id(spec.base_image, client) if spec.ecosystem == "pypi" else None
    key = pack_key(spec, base_id)
    final = root / _dir_name(spec, key)
    if (final / MANIFEST_FILE).is_file():
        return Pack(key, final)
    with _locked(root / f".{key}.lock"):
        if (final / MANIFEST_FILE).is_file():  # another process built it while we waited
            return Pack(key, final)
        for stale in root.glob(f".build-{key}-*"):  # left by a build killed mid-way
            _remove_tree(stale)
        tmp = Path(tempfile.mkdtemp(prefix=f".build-{key}-", dir=root))
        try:
            start = time.monotonic()
            log(f"installing {spec.package}@{spec.version} ({spec.ecosystem}) into the pack cache")
            if spec.ecosystem == "npm":
                resolved = _build_npm(spec, tmp)
            else:
                resolved = _build_pypi(spec, tmp, client, pip_cache=root / PIP_CACHE_DIR)
            bins = _link_bins(spec, tmp)
            elapsed = time.monotonic() - start
            manifest = PackManifest(
                schema_version=PACK_SCHEMA_VERSION,
                key=key,
                ecosystem=spec.ecosystem,
                package=spec.package,
                version=spec.version,
                platform=f"linux-{npm_platform()[0]}",
                base_image=spec.base_image if base_id else None,
                base_image_id=base_id,
                bins=bins,
                resolved=resolved,
                built_at=time.time(),
                build_seconds=elapsed,
            )
            (tmp / MANIFEST_FILE).write_text(manifest.model_dump_json(indent=2) + "\n")
            _make_read_only(tmp)
            tmp.rename(final)
            log(f"pack {final.name} ready in {elapsed:.0f}s")
        except BaseException:
            _remove_tree(tmp)
            raise
    return Pack(key, final)


_NAME_RE = {
    "npm": re.compile(r"^(@[a-z0-9][a-z0-9._~-]*/)?[a-z0-9][a-z0-9._~-]*$"),
    "pypi": re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$"),
}
_VERSION_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9.+_-]*$")
_EXTRA_RE = re.compile(r"^[A-Za-z0-9@][A-Za-z0-9@/._\[\],=<>!~-]*$")


def _check_spec(spec: PackSpec) -> None:
    # These strings reach npm/pip argv: refuse anything that could read as an option, a path
    # or a URL (a pack must come from the registry, by name and exact version).
    if not _NAME_RE[spec.ecosystem].match(spec.package):
        raise UsageError(f"agent package {spec.package!r} is not a plain {spec.ecosystem} name")
    if not _VERSION_RE.match(spec.version):
        raise UsageError(f"agent version {spec.version!r} is not an exact version")
    for extra in spec.extra:
        if not _EXTRA_RE.match(extra):
            raise UsageError(f"extra requirement {extra!r} is not a plain requirement")


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    with path.open("a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _image_id(image: str, client: docker.DockerClient | None) -> str:
    from docker.errors import DockerException, ImageNotFound

    from evalkit.sandbox import docker_client

    try:
        return str((client or docker_client()).images.get(image).id)
    except ImageNotFound:
        raise InfraError(f"base image {image} not found (run scripts/setup.sh?)") from None
    except DockerException as exc:
        raise InfraError(f"inspecting {image} failed: {exc}") from None


def _build_npm(spec: PackSpec, dest: Path) -> dict[str, str]:
    npm = shutil.which("npm")
    if npm is None:
        raise InfraError("npm is needed on the host to build npm agent packs")
    cpu, _ = npm_platform()
    argv = [
        npm,
        "install",
        "--prefix",
        str(dest),
        "--no-save",
        "--no-audit",
        "--no-fund",
        "--no-update-notifier",
        "--ignore-scripts",
        "--include=optional",
        "--os=linux",
        f"--cpu={cpu}",
        "--libc=glibc",
        f"{spec.package}@{spec.version}",
        *spec.extra,
    ]
    _run(argv, cwd=dest)
    lock = dest / "node_modules" / ".package-lock.json"
    resolved: dict[str, str] = {}
    with contextlib.suppress(OSError, ValueError):
        for where, meta in json.loads(lock.read_text()).get("packages", {}).items():
            name = where.rsplit("node_modules/", 1)[-1]
            if name and isinstance(meta, dict) and "version" in meta:
                resolved[name] = str(meta["version"])
    for leftover in ("package.json", "package-lock.json"):
        (dest / leftover).unlink(missing_ok=True)
    return resolved


def _build_pypi(
    spec: PackSpec, dest: Path, client: docker.DockerClient | None, *, pip_cache: Path
) -> dict[str, str]:
    from docker.errors import DockerException

    from evalkit.images import resolve_ca_bundle
    from evalkit.sandbox import docker_client

    client = client or docker_client()
    ca = resolve_ca_bundle(None)
    reqs = " ".join(shlex.quote(r) for r in (f"{spec.package}=={spec.version}", *spec.extra))
    py = f"{PACK_MOUNT}/venv/bin/python"
    script = (
        f"set -e; /usr/bin/python3 -m venv {PACK_MOUNT}/venv; "
        f"{py} -m pip install --no-input --disable-pip-version-check -q {reqs}; "
        f"{py} -m pip list --format json > {PACK_MOUNT}/.resolved.json"
    )
    # A wheel cache shared by every PyPI pack build (mini-swe-agent and aider share most of
    # their dependencies); only downloads live there, never an installed tree.
    pip_cache.mkdir(exist_ok=True)
    env = {"PIP_CACHE_DIR": "/evalkit/pip-cache"}
    volumes = {
        str(dest): {"bind": PACK_MOUNT, "mode": "rw"},
        str(pip_cache): {"bind": "/evalkit/pip-cache", "mode": "rw"},
    }
    if ca is not None:
        volumes[str(ca)] = {"bind": "/evalkit/ca.crt", "mode": "ro"}
        env |= {"PIP_CERT": "/evalkit/ca.crt", "SSL_CERT_FILE": "/evalkit/ca.crt"}
    try:
        container = client.containers.run(
            spec.base_image,
            ["/bin/sh", "-c", script],
            detach=True,
            network_mode="bridge",
            environment=env,
            volumes=volumes,
            labels={"evalkit.pack-build": spec.package},
        )
    except DockerException as exc:
        raise InfraError(f"starting the pack build container failed: {exc}") from None
    try:
        try:
            status = container.wait(timeout=BUILD_TIMEOUT_S)
        except Exception:
            raise InfraError(f"building {spec.package} took over {BUILD_TIMEOUT_S}s") from None
        if status.get("StatusCode") != 0:
            tail = container.logs(tail=20).decode(errors="replace").strip()
            raise InfraError(f"pip install {spec.package}=={spec.version} failed: {tail}")
    finally:
        with contextlib.suppress(Exception):
            container.remove(force=True)
    listing = dest / ".resolved.json"
    rows: Any = json.loads(listing.read_text())
    listing.unlink()
    return {str(r["name"]): str(r["version"]) for r in rows}


def _link_bins(spec: PackSpec, dest: Path) -> dict[str, str]:
    out: dict[str, str] = {}
    if not spec.bins:
        return out
    (dest / "bin").mkdir(exist_ok=True)
    for name, pattern in spec.bins:
        hits = sorted(p for p in dest.glob(pattern) if p.is_file())
        if not hits:
            raise InfraError(f"{spec.package}@{spec.version}: no file matches {pattern}")
        target = hits[0].relative_to(dest)
        # Relative, so the link resolves wherever the pack is mounted.
        (dest / "bin" / name).symlink_to(Path("..") / target)
        out[name] = str(target)
    return out


def _make_read_only(root: Path) -> None:
    for dirpath, dirnames, filenames in os.walk(root):
        for name in filenames:
            p = Path(dirpath) / name
            if not p.is_symlink():
                mode = p.stat().st_mode
                p.chmod((mode | 0o444) & ~0o222)
        for name in dirnames:
            p = Path(dirpath) / name
            if not p.is_symlink():
                p.chmod(0o555)
    root.chmod(0o555)


def _remove_tree(path: Path) -> None:
    """Remove a (possibly read-only) tree; only ever our own temp build dirs."""
    if not path.exists():
        return
    for dirpath, dirnames, _ in os.walk(path):
        for name in dirnames:
            with contextlib.suppress(OSError):
                (Path(dirpath) / name).chmod(0o755)
    with contextlib.suppress(OSError):
        path.chmod(0o755)
    shutil.rmtree(path, ignore_errors=True)


def remove_pack(pack: Pack) -> None:
    """Delete one pack (e.g. a broken one); the next ensure_pack rebuilds it."""
    _remove_tree(pack.path)


def _run(argv: list[str], *, cwd: Path) -> None:
    try:
        proc = subprocess.run(
            argv, cwd=cwd, capture_output=True, text=True, timeout=BUILD_TIMEOUT_S, check=False
        )
    except subprocess.TimeoutExpired:
        raise InfraError(f"{' '.join(argv[:3])} took over {BUILD_TIMEOUT_S}s") from None
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-5:]
        raise InfraError(f"{' '.join(argv[:2])} failed: {' | '.join(tail)}")
