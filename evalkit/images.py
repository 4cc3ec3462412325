"""Docker image adapter: the registry-free base image and per-repo environment images."""

from __future__ import annotations

import functools
import io
import json
import os
import shlex
import shutil
import subprocess
import tarfile
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

from evalkit.environment import (
    BOOTSTRAP_IMAGE,
    DEBIAN_PYTHONS,
    PROVIDED_PYTHONS,
    UV_VERSION,
    EnvSpec,
    image_tag,
)
from evalkit.errors import InfraError, UsageError
from evalkit.records import EnvironmentImage

if TYPE_CHECKING:
    import docker
    import jinja2

Log = Callable[[str], None]

BOOTSTRAP_PACKAGES = ("python3", "python3-venv", "git", "patch", "ca-certificates")
DEBIAN_MIRROR = "http://deb.debian.org/debian"
CA_ENV_VARS = ("SSL_CERT_FILE", "REQUESTS_CA_BUNDLE", "PIP_CERT")

_build_locks: dict[str, threading.Lock] = {}
_build_guard = threading.Lock()


def harness_dir() -> Path:
    """Dockerfile templates and scripts: in the wheel, or at the source tree's top."""
    packaged = Path(__file__).parent / "_harness"
    return packaged if packaged.is_dir() else Path(__file__).parent.parent / "harness"


def resolve_ca_bundle(explicit: Path | None) -> Path | None:
    """The site CA bundle: ``--ca-bundle``, else SSL_CERT_FILE, REQUESTS_CA_BUNDLE or PIP_CERT."""
    if explicit is not None:
        if not explicit.is_file():
            raise UsageError("CA bundle not found", path=str(explicit))
        return explicit
    for var in CA_ENV_VARS:
        value = os.environ.get(var)
        if value and Path(value).is_file():
            return Path(value)
    return None


def image_exists(client: docker.DockerClient, name: str) -> bool:
    from docker.errors import ImageNotFound

    try:
        client.images.get(name)
    except ImageNotFound:
        return False
    return True


def bootstrap_name(python: str) -> str:
    """The registry-free base image for a Python version (its Debian release)."""
    if python not in DEBIAN_PYTHONS:
        raise UsageError(
            f"no Debian release ships Python {python}; registry-free bases exist for "
            f"{', '.join(PROVIDED_PYTHONS)} (a python:{python}-slim image needs a registry)"
        )
    return f"evalkit/base:{DEBIAN_PYTHONS[python]}"


def bootstrap_base(
    client: docker.DockerClient,
    *,
    name: str = BOOTSTRAP_IMAGE,
    suite: str = "bookworm",
    mirror: str = DEBIAN_MIRROR,
    force: bool = False,
    log: Log = print,
) -> str:
    """Build a base image from Debian packages with debootstrap: no registry needed."""
    if image_exists(client, name) and not force:
        log(f"base image {name} already present")
        return name
    if shutil.which("debootstrap") is None:
        raise UsageError(
            "debootstrap is not installed (apt-get install debootstrap); it builds the "
            "base image without a registry"
        )
    if os.geteuid() != 0:
        raise UsageError("debootstrap needs root to build the base image")
    with tempfile.TemporaryDirectory(prefix="evalkit-rootfs-") as tmp:
        root = Path(tmp) / "rootfs"
        log(f"debootstrap {suite} from {mirror} (about a minute)...")
        cmd = [
            "debootstrap",
            "--variant=minbase",
            f"--include={','.join(BOOTSTRAP_PACKAGES)}",
            suite,
            str(root),
            mirror,
        ]
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
            raise InfraError(f"debootstrap failed: {' | '.join(tail)}")
        archive = Path(tmp) / "rootfs.tar"
        subprocess.run(["tar", "-C", str(root), "-cf", str(archive), "."], check=True)
        repository, _, tag = name.partition(":")
        log(f"importing {name}...")
        client.api.import_image_from_file(str(archive), repository=repository, tag=tag or "latest")
    return name


class BaseChoice(NamedTuple):
    image: str
    python: str
    """The Python the image has: the spec's, unless substituted."""
    substituted: str | None = None
    """``"3.8 -> 3.9"`` when ``--substitute-python`` had to stand in another version."""


_resolved_bases: dict[tuple[str, str, bool], BaseChoice] = {}
_resolve_lock = threading.Lock()


def resolve_base_image(
    client: docker.DockerClient, spec: EnvSpec, *, substitute: bool = False, log: Log = print
) -> BaseChoice:
    """The base image for ``spec``: its ``base_image``, else ``python:X-slim`` (present or
    pullable), else the Debian release that ships X (built with debootstrap if missing).

    A version none of these can provide is a :class:`UsageError`, unless ``substitute``:
    then the nearest provided version stands in and the choice says so.
    """
    ident = (spec.base_image, spec.python, substitute)
    with _resolve_lock:  # parallel builds: one pull attempt, one warning
        known = _resolved_bases.get(ident)
        if known is not None and image_exists(client, known.image):
            return known
        _resolved_bases[ident] = _resolve_base_image(client, spec, substitute, log=log)
        return _resolved_bases[ident]


def _pull(client: docker.DockerClient, name: str) -> str | None:
    """None if pulled, else why not (one line)."""
    from docker.errors import DockerException

    try:
        client.images.pull(name)
    except DockerException as exc:
        return str(getattr(exc, "explanation", None) or exc).splitlines()[0][:120]
    return None


def _resolve_base_image(
    client: docker.DockerClient, spec: EnvSpec, substitute: bool, *, log: Log
) -> BaseChoice:
    python = spec.python
    if spec.base_image:
        if image_exists(client, spec.base_image):
            return BaseChoice(spec.base_image, python)
        reason = _pull(client, spec.base_image)
        if reason is None:
            return BaseChoice(spec.base_image, python)
        raise UsageError(f"base image {spec.base_image} is not available ({reason})")
    slim = f"python:{python}-slim"
    if image_exists(client, slim):
        return BaseChoice(slim, python)
    if python in DEBIAN_PYTHONS and image_exists(client, bootstrap_name(python)):
        return BaseChoice(bootstrap_name(python), python)
    reason = _pull(client, slim)
    if reason is None:
        return BaseChoice(slim, python)
    if python in DEBIAN_PYTHONS:
        log(f"{slim} cannot be pulled ({reason}); building {bootstrap_name(python)} instead")
        return BaseChoice(_bootstrap_for(client, python, log), python)
    if not substitute:
        raise UsageError(
            f"Python {python} is not available: {slim} cannot be pulled ({reason}) and no "
            f"Debian release ships it (registry-free: {', '.join(PROVIDED_PYTHONS)}); "
            "give --substitute-python to run with the nearest of those, recorded on every result"
        )
    nearest = min(
        PROVIDED_PYTHONS,
        key=lambda v: (
            abs(int(v.split(".")[1]) - int(python.split(".")[1])) * 2
            + (int(v.split(".")[1]) < int(python.split(".")[1]))
        ),
    )
    log(f"warning: Python {python} is not available; substituting {nearest} (--substitute-python)")
    return BaseChoice(_bootstrap_for(client, nearest, log), nearest, f"{python} -> {nearest}")


def _bootstrap_for(client: docker.DockerClient, python: str, log: Log) -> str:
    name = bootstrap_name(python)
    if not image_exists(client, name):
        bootstrap_base(client, name=name, suite=DEBIAN_PYTHONS[python], log=log)
    return name


@functools.cache
def harness_templates() -> jinja2.Environment:
    """The Dockerfile and eval-script templates (built once: evaluate renders per unit)."""
    from jinja2 import Environment, FileSystemLoader, StrictUndefined

    return Environment(
        loader=FileSystemLoader(harness_dir()),
        undefined=StrictUndefined,
        keep_trailing_newline=True,
        autoescape=False,  # shell and Dockerfile text; every value is shlex-quoted
    )


def render_dockerfile(
    spec: EnvSpec, *, repo: str, key: str, base_image: str, ca: bool, python: str | None = None
) -> str:
    """The environment image's Dockerfile; ``python`` is the version the base must have
    (the spec's, or its stand-in under ``--substitute-python``)."""
    return (
        harness_templates()
        .get_template("env.Dockerfile.j2")
        .render(
            repo=repo,
            key=key,
            base_image=base_image,
            ca_bundle=ca,
            uid=1000,
            python=python or spec.python,
            uv_version=UV_VERSION,
            exclude_newer=spec.exclude_newer,
            pip_packages=" ".join(shlex.quote(p) for p in spec.pip_packages),
            install=list(spec.install),
        )
    )


def _context(
    dockerfile: str, source_tar: bytes, ca_bundle: Path | None, script: str = "env_install.py"
) -> io.BytesIO:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        items: list[tuple[str, bytes]] = [
            ("Dockerfile", dockerfile.encode()),
            ("src.tar", source_tar),
            (script, (harness_dir() / script).read_bytes()),
        ]
        if ca_bundle is not None:
            items.append(("ca-bundle.crt", ca_bundle.read_bytes()))
        for name, data in items:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    buf.seek(0)
    return buf


def ensure_env_image(
    client: docker.DockerClient,
    *,
    repo: str,
    spec: EnvSpec,
    key: str,
    source_tar: Callable[[], bytes],
    ca_bundle: Path | None,
    log: Log = print,
    build_log: Path | None = None,
) -> str:
    """Build the environment image for (repo, key) unless it exists. Returns its tag."""
    return ensure_environment(
        client,
        repo=repo,
        spec=spec,
        key=key,
        source_tar=source_tar,
        ca_bundle=ca_bundle,
        log=log,
        build_log=build_log,
    ).tag


def describe_image(client: docker.DockerClient, tag: str) -> EnvironmentImage:
    """What an environment image is, from its labels (the lock included)."""
    labels = client.images.get(tag).labels or {}
    try:
        lock = [str(x) for x in json.loads(labels.get("evalkit.lock", "[]"))]
    except ValueError:
        lock = []
    return EnvironmentImage(
        tag=tag,
        repo=labels.get("evalkit.repo", ""),
        python=labels.get("evalkit.python", ""),
        base_image=labels.get("evalkit.base", ""),
        exclude_newer=labels.get("evalkit.exclude-newer", ""),
        python_substituted=labels.get("evalkit.python-substituted") or None,
        lock=lock,
    )


def ensure_environment(
    client: docker.DockerClient,
    *,
    repo: str,
    spec: EnvSpec,
    key: str,
    source_tar: Callable[[], bytes],
    ca_bundle: Path | None,
    substitute_python: bool = False,
    log: Log = print,
    build_log: Path | None = None,
) -> EnvironmentImage:
    """Build the environment image for (repo, key) unless it exists; describe it.

    The resolved versions (``uv pip freeze``) go into the image's ``evalkit.lock`` label.
    """
    tag = image_tag(repo, key)
    with _build_guard:
        lock = _build_locks.setdefault(tag, threading.Lock())
    with lock:
        if image_exists(client, tag):
            return describe_image(client, tag)
        if spec.node:  # a JavaScript / TypeScript repository (evalkit.node_env)
            from evalkit.node_env import ensure_node_base, node_ca_bundle, render_node_dockerfile

            ca_bundle = node_ca_bundle(ca_bundle)
            node_base = ensure_node_base(client, spec, log=log)
            dockerfile = render_node_dockerfile(
                spec, repo=repo, key=key, base_image=node_base, ca=ca_bundle is not None
            )
            log(f"building environment image {tag} (Node) from {node_base}...")
            labels = {"evalkit.env-key": key, "evalkit.base": node_base}
            context = _context(dockerfile, source_tar(), ca_bundle, "env_node_layout.py")
            _build(client, context, tag, labels, dockerfile, build_log)
            return describe_image(client, tag)
        base = resolve_base_image(client, spec, substitute=substitute_python, log=log)
        if base.substituted:
            tag = image_tag(repo, f"{key}-as{base.python.replace('.', '')}")
            if image_exists(client, tag):
                return describe_image(client, tag)
        dockerfile = render_dockerfile(
            spec,
            repo=repo,
            key=key,
            base_image=base.image,
            ca=ca_bundle is not None,
            python=base.python,
        )
        log(f"building environment image {tag} (Python {base.python}) from {base.image}...")
        labels = {"evalkit.env-key": key, "evalkit.base": base.image}
        if base.substituted:
            labels["evalkit.python-substituted"] = base.substituted
        context = _context(dockerfile, source_tar(), ca_bundle)
        _build(client, context, tag, labels, dockerfile, build_log)
        lock_lines = _read_lock(client, tag)
        # Labels are fixed at build time: one more (instant) layer carries the lock.
        label_file = f"FROM {tag}\nLABEL evalkit.lock={json.dumps(json.dumps(lock_lines))}\n"
        _build(client, _context(label_file, b"", None), tag, labels, label_file, None)
        return describe_image(client, tag)


def _read_lock(client: docker.DockerClient, tag: str) -> list[str]:
    from docker.errors import DockerException

    try:
        raw = client.containers.run(
            tag, ["cat", "/etc/evalkit/lock.txt"], remove=True, network_disabled=True, user="0"
        )
    except DockerException as exc:
        raise InfraError(f"reading the lock of {tag} failed: {exc}") from None
    text = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else str(raw)
    return [line.strip() for line in text.splitlines() if line.strip()]


def _build(
    client: docker.DockerClient,
    context: io.BytesIO,
    tag: str,
    labels: dict[str, str],
    dockerfile: str,
    build_log: Path | None,
) -> None:
    from docker.errors import DockerException

    lines: list[str] = []
    error = None
    try:
        stream = client.api.build(
            fileobj=context,
            custom_context=True,
            tag=tag,
            rm=True,
            forcerm=True,
            decode=True,
            labels=labels,
        )
        for chunk in stream:
            if "stream" in chunk:
                lines.append(str(chunk["stream"]))
            if "error" in chunk:
                error = str(chunk["error"]).strip()
    except DockerException as exc:
        error = str(exc)
    if build_log is not None:
        build_log.parent.mkdir(parents=True, exist_ok=True)
        build_log.write_text(dockerfile + "\n# ---- build output ----\n" + "".join(lines))
    if error is not None:
        tail = "".join(lines).strip().splitlines()[-3:]
        raise InfraError(f"building {tag} failed: {error[:300]} | {' | '.join(tail)[-400:]}")
