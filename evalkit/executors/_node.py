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
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

from evalkit.errors import InfraError
from evalkit.sandbox import LABEL_HOST, DockerSandbox, Limits, remove_stale

if TYPE_CHECKING:
    import docker

    from evalkit.harness import EvalUnit

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


def local_bundle(unit: EvalUnit, data: bytes | None, sha256: str) -> Path:
    """The unit's bundle on this node: its own path when that holds the same bytes (a
    shared filesystem), else written once from ``data`` into the node's cache."""
    if data is None:
        if not unit.bundle.is_file():
            raise InfraError(f"bundle {unit.bundle} is not on this node's filesystem")
        return unit.bundle
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


def ensure_image(client: docker.DockerClient, unit: EvalUnit, bundle: Path) -> str:
    """The unit's environment image on this node, built from the same recipe and
    content hash when missing; one build per node however many units wait for it."""
    from evalkit.environment import image_tag
    from evalkit.images import ensure_env_image, image_exists, resolve_ca_bundle
    from evalkit.repo import Repository

    image = unit.image
    if image.startswith(ENV_IMAGE_PREFIX):
        key = image.rpartition(":")[2]
    elif ":" in image or "/" in image:
        return image  # not one of evalkit's: the node must have (or pull) it
    else:
        key = image
    tag = image_tag(unit.instance.repo, key)
    if image_exists(client, tag):
        return tag
    with node_lock(tag):
        repository = Repository(bundle)
        return ensure_env_image(
            client,
            repo=unit.instance.repo,
            spec=unit.spec,
            key=key,
            source_tar=lambda: repository.tree_tar(unit.instance.env_commit, "."),
            ca_bundle=resolve_ca_bundle(None),
            log=lambda _: None,
            build_log=node_dir() / "images" / f"{key}.log",
        )


def prepare(
    client: docker.DockerClient, unit: EvalUnit, bundle_data: bytes | None, bundle_sha: str
) -> EvalUnit:
    """The unit with its bundle and image made local to this node."""
    local = replace(unit, bundle=local_bundle(unit, bundle_data, bundle_sha))
    return replace(local, image=ensure_image(client, local, local.bundle))


# --- the per-node reaper ----------------------------------------------------------


def _cluster_containers(client: docker.DockerClient) -> list[dict[str, object]]:
    listed = client.api.containers(all=True, filters={"label": LABEL_ATTEMPT})
    host = socket.gethostname()
    return [c for c in listed if (c.get("Labels") or {}).get(LABEL_HOST) == host]


def reap_node(client: docker.DockerClient) -> int:
    """Remove evalkit containers nobody owns: expired, or of a dead process on this node."""
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
