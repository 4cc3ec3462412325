"""Executors: where units run. ``thread`` (the default) runs them on this machine;
``ray`` runs each as a task on a Ray cluster (the optional ``evalkit[ray]`` extra).

Importing this package never imports Ray: :class:`RayExecutor` is loaded on first use.
"""

from __future__ import annotations

import atexit
import os
import threading
from typing import TYPE_CHECKING, Any, NamedTuple

from evalkit.errors import UsageError

if TYPE_CHECKING:
    import docker

    from evalkit.executors._ray import RayExecutor
    from evalkit.harness import Executor

EXECUTORS = ("thread", "ray")

__all__ = [
    "EXECUTORS",
    "Placement",
    "RayExecutor",
    "make_executor",
    "resolve_placement",
    "shared_executor",
]

REGISTRY_ENV = "EVALKIT_IMAGE_REGISTRY"

_shared: dict[tuple[str, str, str | None, str | None], Executor] = {}
_shared_lock = threading.Lock()


def make_executor(
    kind: str,
    *,
    workers: int = 1,
    run_id: str,
    client: docker.DockerClient | None = None,
    address: str | None = None,
    image_registry: str | None = None,
) -> Executor:
    """The executor named ``kind``: ``thread`` (``workers`` local sandboxes) or ``ray``
    (the cluster at ``address``, else ``RAY_ADDRESS``, else a local one-node cluster
    with ``workers`` container slots; nodes pull missing images from
    ``image_registry``, else ``EVALKIT_IMAGE_REGISTRY``, before building them)."""
    if kind == "thread":
        from evalkit.harness import ThreadExecutor

        return ThreadExecutor(workers, client, label=run_id)
    if kind == "ray":
        from evalkit.executors._ray import RayExecutor

        # evaluate and mine have no config file of their own: the environment names it.
        registry = image_registry or os.environ.get(REGISTRY_ENV) or None
        return RayExecutor(address, run_id=run_id, local_slots=workers, image_registry=registry)
    raise UsageError(f"unknown executor {kind!r}: choose one of {', '.join(EXECUTORS)}")


def shared_executor(
    kind: str,
    *,
    run_id: str,
    address: str | None = None,
    image_registry: str | None = None,
    workers: int = 1,
) -> Executor | None:
    """One cluster executor per process, for callers that evaluate many times from many
    threads (a bake-off grades each attempt with its own ``evaluate`` call); ``None``
    for ``thread``, so ``evaluate`` keeps its local default. Closed at exit.
    ``workers``: the slots of a local one-node cluster, when there is no address."""
    if kind == "thread":
        return None
    with _shared_lock:
        key = (kind, run_id, address, image_registry)
        if key not in _shared:
            _shared[key] = make_executor(
                kind,
                workers=workers,
                run_id=run_id,
                address=address,
                image_registry=image_registry,
            )
            atexit.register(_shared[key].close)
        return _shared[key]


class Placement(NamedTuple):
    """Where a command's units run, once the command line, the environment and a config
    file have been combined."""

    executor: str
    ray_address: str | None
    image_registry: str | None


def resolve_placement(
    *,
    cli_executor: str | None,
    cli_address: str | None,
    cli_registry: str | None = None,
    config_executor: str | None = None,
    config_address: str | None = None,
    config_registry: str | None = None,
    environ: dict[str, str] | None = None,
) -> Placement:
    """Each setting from the command line, else the environment (``RAY_ADDRESS``,
    ``EVALKIT_IMAGE_REGISTRY``), else the config file; the executor defaults to
    ``thread``. An unknown executor is a :class:`UsageError`."""
    env = os.environ if environ is None else environ
    executor = cli_executor or config_executor or "thread"
    if executor not in EXECUTORS:
        raise UsageError(f"unknown executor {executor!r}: choose one of {', '.join(EXECUTORS)}")
    address = cli_address or env.get("RAY_ADDRESS") or config_address or None
    registry = cli_registry or env.get(REGISTRY_ENV) or config_registry or None
    return Placement(executor, address, registry)


def __getattr__(name: str) -> Any:
    if name == "RayExecutor":
        from evalkit.executors._ray import RayExecutor

        return RayExecutor
    raise AttributeError(name)
