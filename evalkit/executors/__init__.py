"""Executors: where units run. ``thread`` (the default) runs them on this machine;
``ray`` runs each as a task on a Ray cluster (the optional ``evalkit[ray]`` extra).

Importing this package never imports Ray: :class:`RayExecutor` is loaded on first use.
"""

from __future__ import annotations

import atexit
import threading
from typing import TYPE_CHECKING, Any

from evalkit.errors import UsageError

if TYPE_CHECKING:
    import docker

    from evalkit.executors._ray import RayExecutor
    from evalkit.harness import Executor

EXECUTORS = ("thread", "ray")

__all__ = ["EXECUTORS", "RayExecutor", "make_executor", "shared_executor"]

_shared: dict[tuple[str, str, str | None], Executor] = {}
_shared_lock = threading.Lock()


def make_executor(
    kind: str,
    *,
    workers: int = 1,
    run_id: str,
    client: docker.DockerClient | None = None,
    address: str | None = None,
) -> Executor:
    """The executor named ``kind``: ``thread`` (``workers`` local sandboxes) or ``ray``
    (the cluster at ``address``, else ``RAY_ADDRESS``, else a local one-node cluster
    with ``workers`` container slots)."""
    if kind == "thread":
        from evalkit.harness import ThreadExecutor

        return ThreadExecutor(workers, client, label=run_id)
    if kind == "ray":
        from evalkit.executors._ray import RayExecutor

        return RayExecutor(address, run_id=run_id, local_slots=workers)
    raise UsageError(f"unknown executor {kind!r}: choose one of {', '.join(EXECUTORS)}")


def shared_executor(kind: str, *, run_id: str, address: str | None = None) -> Executor | None:
    """One cluster executor per process, for callers that evaluate many times from many
    threads (a bake-off grades each attempt with its own ``evaluate`` call); ``None``
    for ``thread``, so ``evaluate`` keeps its local default. Closed at exit."""
    if kind == "thread":
        return None
    with _shared_lock:
        key = (kind, run_id, address)
        if key not in _shared:
            _shared[key] = make_executor(kind, run_id=run_id, address=address)
            atexit.register(_shared[key].close)
        return _shared[key]


def __getattr__(name: str) -> Any:
    if name == "RayExecutor":
        from evalkit.executors._ray import RayExecutor

        return RayExecutor
    raise AttributeError(name)
