"""What a cluster node does for a unit, without Ray: labelled sandboxes that die with
their attempt, the repository bundle and environment image made local, and a reaper.

Ray retries a unit elsewhere when its node or worker dies, but Docker containers are
dockerd's children, not Ray's: the first attempt's container keeps running. So every
container carries its run, unit and attempt; PID 1 ends it at its deadline; the worker
removes its containers on any exit it survives; and one reaper per node removes the
containers of workers that did not survive (``ray.cancel(force=True)``, a lost raylet,
a killed driver), within seconds.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import secrets
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

from evalkit.errors import InfraError
from evalkit.sandbox import LABEL_HOST, DockerSandbox, Limits, remove_stale

if TYPE_CHECKING:
    import docker

    from evalkit.environment import EnvSpec
    from evalkit.harness import EvalUnit
    from evalkit.records import TaskInstance

LABEL_RUN = "evalkit.run"
LABEL_UNIT = "evalkit.unit"
LABEL_ATTEMPT = "evalkit.attempt"
LABEL_NODE = "evalkit.node"
REAP_INTERVAL_S = 2.0
ENV_IMAGE_PREFIX = "evalkit-env/"


def node_dir() -> Path:
    """Node-local state: bundles, build logs and locks (never shared between nodes)."""
    from evalkit.repo import cache_root

    path = cache_root() / "node"
    path.mkdir(parents=True, exist_ok=True)
    return path


def unit_key(unit: EvalUnit) -> str:
    """A short, label-safe id of (model, instance)."""
    ident = f"{unit.prediction.model_name_or_path}\0{unit.instance.instance_id}"
    return hashlib.sha256(ident.encode()).hexdigest()[:16]


def attempt_key(key: tuple[str, str, int]) -> str:
    """A short, label-safe id of a bake-off attempt (agent, task, repeat)."""
    agent, instance_id, repeat = key
    ident = f"attempt\0{agent}\0{instance_id}\0{repeat}"
    return hashlib.sha256(ident.encode()).hexdigest()[:16]


@contextlib.contextmanager
def node_lock(name: str) -> Iterator[None]:
    """An exclusive lock across every process on this node (workers are processes)."""
    locks = node_dir() / "locks"
    locks.mkdir(exist_ok=True)
    safe = hashlib.sha256(name.encode()).hexdigest()[:24]
    with open(locks / f"{safe}.lock", "a+b") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


class LabelledSandboxes:
    """Sandboxes for one attempt of one unit, labelled with its run, unit and attempt;
    :meth:`close` removes every one of them and waits until they are gone."""

    def __init__(
        self, client: docker.DockerClient, *, run_id: str, unit: str, attempt: int, node: str
    ):
        self._client = client
        self._run_id = run_id
        self._labels = {
            LABEL_RUN: run_id,
            LABEL_UNIT: unit,
            LABEL_ATTEMPT: str(attempt),
            LABEL_NODE: node,
        }
        self.boxes: list[DockerSandbox] = []

    def acquire(self, image: str, limits: Limits) -> DockerSandbox:
        box = DockerSandbox(self._client, image, limits, label=self._run_id, labels=self._labels)
        self.boxes.append(box)
        return box

    def close(self) -> None:
        for box in self.boxes:
            box.close(wait=True)
        self.boxes.clear()


def local_bundle(bundle: Path, data: bytes | None, sha256: str) -> Path:
    """A bundle on this node: its own path when that holds the same bytes (a shared
    filesystem), else written once from ``data`` into the node's cache."""
    if data is None:
        if not bundle.is_file():
            raise InfraError(f"bundle {bundle} is not on this node's filesystem")
        return bundle
    path = node_dir() / "bundles" / f"{sha256}.bundle"
    if path.is_file():
        return path
    if hashlib.sha256(data).hexdigest() != sha256:
        raise InfraError("the repository bundle arrived corrupted")
    path.parent.mkdir(exist_ok=True)
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)
    return path


def registry_name(registry: str, tag: str) -> str:
    """Where ``tag`` (``evalkit-env/<repo>:<key>``) lives in ``registry`` (``host/prefix``)."""
    return f"{registry.strip().rstrip('/')}/{tag}"


def pull_env_image(
    client: docker.DockerClient, registry: str, tag: str, key: str, log: Callable[[str], None]
) -> bool:
    """Pull ``tag`` from ``registry`` and tag it locally; False (and nothing kept) when
    the pull fails or the image is not the one this key builds (its ``evalkit.env-key``
    label differs): the caller then builds it."""
    from docker.errors import DockerException

    remote = registry_name(registry, tag)
    repository, _, version = remote.rpartition(":")
    try:
        image = client.images.pull(repository, tag=version)
    except DockerException as exc:  # unreachable, unknown, unauthorised: build instead
        log(f"pull {remote} failed ({str(exc).splitlines()[0][:200]}); building")
        return False
    if (image.labels or {}).get("evalkit.env-key") != key:
        log(f"{remote} is not the environment of key {key} (label mismatch); building")
        with contextlib.suppress(DockerException):
            client.images.remove(remote)
        return False
    image.tag(*tag.rsplit(":", 1))
    return True


def env_image(
    client: docker.DockerClient,
    tag: str,
    key: str,
    *,
    build: Callable[[], str],
    registry: str | None = None,
    log: Callable[[str], None] = lambda _: None,
) -> str:
    """The environment image ``tag`` on this node: present, else pulled from
    ``registry``, else built by ``build``; one pull or build per node however many
    units wait for it (a per-node lock)."""
    from evalkit.images import image_exists

    if image_exists(client, tag):
        return tag
    with node_lock(tag):
        if image_exists(client, tag):  # another unit made it while this one waited
            return tag
        if registry and pull_env_image(client, registry, tag, key, log):
            return tag
        return build()


def ensure_env(
    client: docker.DockerClient,
    *,
    instance: TaskInstance,
    spec: EnvSpec,
    image: str,
    bundle: Path,
    registry: str | None = None,
) -> str:
    """An instance's environment image on this node, by the same recipe and content
    hash as on the driver (``image`` is its tag or its bare build key)."""
    from evalkit.environment import image_tag
    from evalkit.images import ensure_env_image, resolve_ca_bundle
    from evalkit.repo import Repository

    if image.startswith(ENV_IMAGE_PREFIX):
        key = image.rpartition(":")[2]
    elif ":" in image or "/" in image:
        return image  # not one of evalkit's: the node must have (or pull) it
    else:
        key = image
    tag = image_tag(instance.repo, key)
    log_path = node_dir() / "images" / f"{key}.log"

    def build() -> str:
        repository = Repository(bundle)
        return ensure_env_image(
            client,
            repo=instance.repo,
            spec=spec,
            key=key,
            source_tar=lambda: repository.tree_tar(instance.env_commit, "."),
            ca_bundle=resolve_ca_bundle(None),
            log=lambda _: None,
            build_log=log_path,
        )

    def note(line: str) -> None:
        log_path.parent.mkdir(exist_ok=True)
        with log_path.open("a") as handle:
            handle.write(line + "\n")

    return env_image(client, tag, key, build=build, registry=registry, log=note)


def ensure_image(
    client: docker.DockerClient, unit: EvalUnit, bundle: Path, registry: str | None = None
) -> str:
    """The unit's environment image on this node (see :func:`ensure_env`)."""
    return ensure_env(
        client,
        instance=unit.instance,
        spec=unit.spec,
        image=unit.image,
        bundle=bundle,
        registry=registry,
    )


def prepare(
    client: docker.DockerClient,
    unit: EvalUnit,
    bundle_data: bytes | None,
    bundle_sha: str,
    registry: str | None = None,
) -> EvalUnit:
    """The unit with its bundle and image made local to this node."""
    local = replace(unit, bundle=local_bundle(unit.bundle, bundle_data, bundle_sha))
    return replace(local, image=ensure_image(client, local, local.bundle, registry))


# --- the per-node reaper ----------------------------------------------------------


def _cluster_containers(client: docker.DockerClient) -> list[dict[str, object]]:
    listed = client.api.containers(all=True, filters={"label": LABEL_ATTEMPT})
    host = socket.gethostname()
    return [c for c in listed if (c.get("Labels") or {}).get(LABEL_HOST) == host]


GATEWAY_DIR_PREFIX = "evalkit-gw-n"
"""``/tmp/evalkit-gw-n<pid>-<random>``: a node-side attempt gateway's socket directory,
named after the worker that owns it (short: a Unix socket path has 108 bytes)."""


def gateway_root() -> Path:
    """A fresh socket directory for one attempt's gateway on this node."""
    return Path("/tmp") / f"{GATEWAY_DIR_PREFIX}{os.getpid()}-{secrets.token_hex(4)}"


def reap_gateway_dirs(tmp: Path = Path("/tmp")) -> int:
    """Remove the socket directories of attempt gateways whose worker is gone (a killed
    worker runs no ``finally``)."""
    import shutil

    from evalkit.sandbox import _pid_alive

    removed = 0
    for path in tmp.glob(f"{GATEWAY_DIR_PREFIX}*-*"):
        pid = path.name.removeprefix(GATEWAY_DIR_PREFIX).split("-", 1)[0]
        if pid.isdigit() and not _pid_alive(int(pid)):
            shutil.rmtree(path, ignore_errors=True)
            removed += 1
    return removed


def reap_node(client: docker.DockerClient) -> int:
    """Remove evalkit containers nobody owns: expired, or of a dead process on this node;
    and the gateway directories of dead workers."""
    reap_gateway_dirs()
    return remove_stale(client)


def _reaper_lock() -> Path:
    return node_dir() / "reaper.lock"


def _waiter_lock() -> Path:
    return node_dir() / "reaper.waiting"


def start_reaper() -> None:
    """Make sure this node has a reaper from now on: an orphan in a session of its own,
    so the death of a Ray worker, its raylet or the driver does not take it along.

    A reaper that is about to exit (it saw no unit left) may still hold the lock when a
    new unit starts, so one successor waits for it; more than one waiter is pointless.
    """
    with open(_waiter_lock(), "a+b") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return  # a successor is already waiting to run
        fcntl.flock(handle, fcntl.LOCK_UN)
    # Started through a short-lived intermediate, so the reaper is nobody's child: Ray
    # kills a worker's child processes when the worker exits, and the worker is
    # exactly what a lost node or a killed driver takes down.
    launcher = (
        "import subprocess, sys; subprocess.Popen([sys.executable, '-m', "
        "'evalkit.executors._node'], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, "
        "stderr=subprocess.DEVNULL, start_new_session=True, close_fds=True)"
    )
    subprocess.run(
        [sys.executable, "-c", launcher],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        check=False,
        timeout=60,
    )


def reaper_loop(client: docker.DockerClient, interval: float = REAP_INTERVAL_S) -> None:
    """Reap until no cluster unit's container is left on this node (then exit: the next
    unit to run here starts a new reaper)."""
    with open(_waiter_lock(), "a+b") as waiting:
        try:
            fcntl.flock(waiting, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return  # another successor waits already
        with open(_reaper_lock(), "a+b") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)  # wait for a running reaper to finish
            fcntl.flock(waiting, fcntl.LOCK_UN)
            idle = 0
            while idle < 3:
                try:
                    reap_node(client)
                    idle = 0 if _cluster_containers(client) else idle + 1
                except Exception:  # the engine restarting: try again, but not forever
                    idle += 1
                time.sleep(interval)


def main() -> None:
    from evalkit.sandbox import docker_client

    with contextlib.suppress(InfraError, KeyboardInterrupt):
        reaper_loop(docker_client())


if __name__ == "__main__":
    main()
