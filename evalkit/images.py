"""Docker image adapter: the registry-free base image and per-repo environment images."""

from __future__ import annotations

import functools
import io
import os
import shlex
import shutil
import subprocess
import tarfile
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from evalkit.environment import BOOTSTRAP_IMAGE, EnvSpec, image_tag
from evalkit.errors import InfraError, UsageError

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


_resolved_bases: dict[str, str] = {}
_resolve_lock = threading.Lock()


def resolve_base_image(client: docker.DockerClient, wanted: str, *, log: Log = print) -> str:
    """Use ``wanted`` if present or pullable; otherwise say so (once) and use the bootstrap base."""
    with _resolve_lock:  # parallel builds: one pull attempt, one warning
        if wanted in _resolved_bases and image_exists(client, _resolved_bases[wanted]):
            return _resolved_bases[wanted]
        _resolved_bases[wanted] = _resolve_base_image(client, wanted, log=log)
        return _resolved_bases[wanted]


def _resolve_base_image(client: docker.DockerClient, wanted: str, *, log: Log) -> str:
    from docker.errors import DockerException

    if wanted and image_exists(client, wanted):
        return wanted
    if wanted and wanted != BOOTSTRAP_IMAGE:
        try:
            client.images.pull(wanted)
            return wanted
        except DockerException as exc:
            reason = str(getattr(exc, "explanation", None) or exc).splitlines()[0][:120]
            log(
                f"base image {wanted} is not available locally and cannot be pulled "
                f"({reason}); using the registry-free base {BOOTSTRAP_IMAGE}"
            )
    if not image_exists(client, BOOTSTRAP_IMAGE):
        bootstrap_base(client, log=log)
    return BOOTSTRAP_IMAGE


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


def render_dockerfile(spec: EnvSpec, *, repo: str, key: str, base_image: str, ca: bool) -> str:
    return (
        harness_templates()
        .get_template("env.Dockerfile.j2")
        .render(
            repo=repo,
            key=key,
            base_image=base_image,
            ca_bundle=ca,
            uid=1000,
            python="python3",
            pip_packages=" ".join(shlex.quote(p) for p in spec.pip_packages),
            install=list(spec.install),
        )
    )


def _context(dockerfile: str, source_tar: bytes, ca_bundle: Path | None) -> io.BytesIO:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        items: list[tuple[str, bytes]] = [
            ("Dockerfile", dockerfile.encode()),
            ("src.tar", source_tar),
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
    from docker.errors import DockerException

    tag = image_tag(repo, key)
    with _build_guard:
        lock = _build_locks.setdefault(tag, threading.Lock())
    with lock:
        if image_exists(client, tag):
            return tag
        if spec.node:  # a JavaScript / TypeScript repository (evalkit.node_env)
            from evalkit.node_env import ensure_node_base, node_ca_bundle, render_node_dockerfile

            ca_bundle = node_ca_bundle(ca_bundle)
            base = ensure_node_base(client, spec, log=log)
            dockerfile = render_node_dockerfile(
                spec, repo=repo, key=key, base_image=base, ca=ca_bundle is not None
            )
        else:
            wanted = spec.base_image or f"python:{spec.python}-slim"
            base = resolve_base_image(client, wanted, log=log)
            dockerfile = render_dockerfile(
                spec, repo=repo, key=key, base_image=base, ca=ca_bundle is not None
            )
        log(f"building environment image {tag} from {base}...")
        lines: list[str] = []
        try:
            stream = client.api.build(
                fileobj=_context(dockerfile, source_tar(), ca_bundle),
                custom_context=True,
                tag=tag,
                rm=True,
                forcerm=True,
                decode=True,
                labels={"evalkit.env-key": key},
            )
            error = None
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
        return tag
