"""Bake-off benchmark: what one attempt costs beyond the agent's own time, at one worker.

    python bench/bakeoff_bench.py                  # sample task set, 6 attempts per variant
    python bench/bakeoff_bench.py --attempts 10

Runs :func:`evalkit.bakeoff.runner.run_attempt` (the runner's own attempt function) with a
``command`` agent that exits at once, so nearly all of the wall time is evalkit's: container
start, agent pack and gateway mounts, staging the checkout and the base tree, starting the
model forwarder, the agent exec itself (its measured time is subtracted), killing the agent
user's processes, collecting the claim, the diff, and teardown. Each sandbox method is timed
through a thin subclass, so the table says where the time goes. Variants: no pack; with the
mini-swe-agent pack mounted (the pack-mount cost); with the pack and a gateway channel (the
full path a CLI agent takes). Teardown runs in the background in the runner (off the
attempt's critical path); it is timed here separately by waiting for it.

Also: ``ensure_pack`` on a warm pack for each CLI adapter (a second attempt of the same
(adapter, version) must never reinstall: the pack's build timestamp must not change).
Grading is an ordinary ``evaluate`` and is benchmarked by bench/harness_bench.py.
Needs a Docker engine (scripts/setup.sh) and the packs in the cache. Figures go in
docs/bakeoff.md and the README.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import threading
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

from evalkit.bakeoff import runner
from evalkit.bakeoff.adapters import DEFAULT_VERSIONS, get_adapter
from evalkit.bakeoff.config import AgentSpec
from evalkit.bakeoff.gateway import Gateway, Upstream
from evalkit.bakeoff.packs import ensure_pack
from evalkit.bakeoff.scripted import ScriptedModelServer, parse_script
from evalkit.dataset import load_task_set
from evalkit.repo import Repository
from evalkit.sandbox import DockerSandbox, Limits, docker_client, drain_removals

ROOT = Path(__file__).resolve().parents[1]
TIMES: dict[str, float] = defaultdict(float)
_INSIDE = threading.local()  # put_archive runs tar through exec: count it once


def _phase(argv: list[str]) -> str:
    text = " ".join(argv)
    if argv and argv[0] == "timeout":
        return "agent (excluded)"
    if "--git-dir=/evalkit/base.git" in text and " init " in f" {text} ":
        return "staging: base tree"
    if "init -q" in text:
        return "staging: checkout repo"
    if "cat > " in text:
        return "staging: adapter files"
    if "kill -9 -1" in text:
        return "kill agent processes"
    if "diff --cached" in text:
        return "diff"
    if "head -c" in text:
        return "collect claim/outputs"
    return "other exec"


class TimedSandbox(DockerSandbox):
    """The runner's sandbox with each step timed (the runner itself is unchanged)."""

    def __init__(self, *args: Any, **kwargs: Any):
        start = time.perf_counter()
        super().__init__(*args, **kwargs)
        TIMES["container start (+ mounts)"] += time.perf_counter() - start

    def put_archive(self, path: str, data: bytes, *, user: str | None = None) -> None:
        start = time.perf_counter()
        _INSIDE.archive = True
        try:
            super().put_archive(path, data, user=user)
        finally:
            _INSIDE.archive = False
        key = "staging: checkout tar" if path == "/testbed" else "staging: evalkit lib"
        TIMES[key] += time.perf_counter() - start

    def exec(self, cmd: list[str], **kwargs: Any) -> Any:  # type: ignore[override]
        start = time.perf_counter()
        try:
            return super().exec(cmd, **kwargs)
        finally:
            if not getattr(_INSIDE, "archive", False):
                TIMES[_phase(cmd)] += time.perf_counter() - start

    def start(self, cmd: list[str], **kwargs: Any) -> Any:  # type: ignore[override]
        begin = time.perf_counter()
        process = super().start(cmd, **kwargs)
        read_line = process.read_line

        def timed_read_line(timeout: float) -> bytes:
            t = time.perf_counter()
            try:
                return read_line(timeout)
            finally:
                TIMES["gateway forwarder start"] += time.perf_counter() - t

        process.read_line = timed_read_line  # type: ignore[method-assign]
        TIMES["gateway forwarder start"] += time.perf_counter() - begin
        return process

    def close(self, *, wait: bool = True) -> None:
        start = time.perf_counter()
        super().close(wait=wait)
        TIMES["teardown (hand-off to reaper)"] += time.perf_counter() - start


def one_attempt(
    client: Any,
    env: tuple[str, Repository],
    instance: Any,
    pack: Any,
    gateway: Gateway | None,
    stage_root: Path,
) -> tuple[float, float, float]:
    """(critical-path seconds, agent seconds, background teardown seconds)."""
    agent = AgentSpec(name="bench", adapter="command", command=["true"])
    channel = None
    start = time.perf_counter()
    gateway_dir, api_key = None, "dummy"
    if gateway is not None:
        channel = gateway.open_attempt(
            f"bench/{time.monotonic_ns()}",
            "scripted",
            budget_usd=1.0,
            deadline=time.time() + 600,
            transcript=stage_root / "transcript.jsonl",
        )
        gateway_dir, api_key = channel.socket_dir, channel.api_key
        TIMES["gateway channel open"] += time.perf_counter() - start
    result = runner.run_attempt(
        client,
        image=env[0],
        instance=instance,
        repository=env[1],
        agent=agent,
        adapter=get_adapter("command"),
        pack=pack,
        gateway_dir=gateway_dir,
        api_key=api_key,
        env={},
        limits=Limits(memory="4g", pids=512, cpus=1.0, disk="4g", lifetime_s=900),
        timeout=600,
        stage={},
        label="bench-bakeoff",
    )
    if channel is not None:
        t = time.perf_counter()
        channel.close()
        TIMES["gateway channel close"] += time.perf_counter() - t
    critical = time.perf_counter() - start
    t = time.perf_counter()
    drain_removals()
    teardown = time.perf_counter() - t
    assert result.status.value == "completed", result
    return critical, result.duration_s, teardown


def environment(client: Any, task_set: Any, instance: Any) -> tuple[str, Repository]:
    """The task's environment image, built (or found) as the runner does."""
    from evalkit.harness import build_environment, resolve_environment
    from evalkit.images import resolve_ca_bundle

    repository = Repository(task_set.bundle_path(instance))
    spec, key = resolve_environment(task_set.spec_file, instance, repository)
    image = build_environment(
        client,
        instance,
        spec,
        key,
        repository,
        ca_bundle=resolve_ca_bundle(None),
        log=lambda _: None,
        build_log=Path(tempfile.mkdtemp()) / "build.log",
    )
    return image, repository


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=Path, default=ROOT / "tasks" / "sample")
    parser.add_argument("--attempts", type=int, default=6)
    args = parser.parse_args()
    client = docker_client()
    task_set = load_task_set(args.tasks)
    instance = task_set.instances[sorted(task_set.instances)[0]]
    env = environment(client, task_set, instance)

    # Warm packs: ensure_pack on an installed (adapter, version) must not reinstall.
    print("| warm pack | ensure_pack | reinstalled? |\n|---|---|---|")
    mini = None
    for name in ("claude-code", "codex", "mini-swe-agent", "aider"):
        spec = get_adapter(name).pack_spec(DEFAULT_VERSIONS[name])
        assert spec is not None
        first = ensure_pack(spec, client=client, log=lambda _: None)
        built = first.manifest().built_at
        times = []
        for _ in range(5):
            t = time.perf_counter()
            again = ensure_pack(spec, client=client, log=lambda _: None)
            times.append(time.perf_counter() - t)
        rebuilt = again.manifest().built_at != built or again.path != first.path
        print(
            f"| {name} {spec.version} | {min(times) * 1000:.2f} ms (best of 5), "
            f"{statistics.median(times) * 1000:.2f} ms median | {'YES' if rebuilt else 'no'} |"
        )
        if name == "mini-swe-agent":
            mini = again

    runner.DockerSandbox = TimedSandbox  # type: ignore[misc]
    script = parse_script({"schema_version": 1, "steps": [{"final": "done"}]})
    with ScriptedModelServer(script) as server, tempfile.TemporaryDirectory() as tmp:
        assert server.base_url is not None
        upstream = Upstream("scripted", server.base_url, "", 0.0, 0.0)
        with Gateway({"scripted": upstream}, root=Path("/tmp") / f"ek-bench-{os.getpid()}") as gw:
            variants = [
                ("no pack", None, None),
                ("pack mounted", mini, None),
                ("pack + gateway", mini, gw),
            ]
            summary = []
            for label, pack, gateway in variants:
                one_attempt(client, env, instance, pack, gateway, Path(tmp))  # warm-up
                TIMES.clear()
                crit, agent_s, down = [], [], []
                for _ in range(args.attempts):
                    c, a, d = one_attempt(client, env, instance, pack, gateway, Path(tmp))
                    crit.append(c)
                    agent_s.append(a)
                    down.append(d)
                over = [c - a for c, a in zip(crit, agent_s, strict=True)]
                summary.append((label, over, down, dict(TIMES)))
    load = os.getloadavg()[0]
    print(
        f"\nper-attempt overhead at 1 worker, {args.attempts} attempts each "
        f"({instance.instance_id}; load average {load:.1f} on {os.cpu_count()} cores)\n"
    )
    print(
        "| variant | overhead, median (min–max) | + background teardown (median) |\n|---|---|---|"
    )
    for label, over, down, _ in summary:
        print(
            f"| {label} | {statistics.median(over):.2f} s ({min(over):.2f}–{max(over):.2f}) | "
            f"{statistics.median(down):.2f} s |"
        )
    print("\n(the agent exec's own round trip, ~0.05 s for `true`, is counted as agent time)")
    label, over, _, times = summary[-1]
    print(f"\nwhere the time goes ({label}, mean per attempt)\n\n| step | seconds |\n|---|---|")
    for key, total in sorted(times.items(), key=lambda kv: -kv[1]):
        print(f"| {key} | {total / args.attempts:.3f} |")


if __name__ == "__main__":
    main()
