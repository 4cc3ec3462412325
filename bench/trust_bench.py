"""Trust benchmark: what the gates, the audit and the canaries add to an attempt's wall time.

    python bench/trust_bench.py                     # tasks/sample, oracle + Claude Code, 2 reps
    python bench/trust_bench.py --reps 3 --agents oracle

Each attempt runs twice per repetition, with trust on (gate pack, canaries planted and
verified, the agent under the audit's tracer) and off, alternating to share the machine's noise. Two
figures: the agent sandbox's wall time (container start to diff), and the whole attempt
(sandbox and grading, which is identical both ways: what a bake-off spends per attempt). Claude Code is the real CLI driven by the scripted model server (it reads
files, edits one, runs the tests), so the tracer sees a real agent's process load. Needs Docker.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from evalkit.bakeoff import runner as runner_module
from evalkit.bakeoff.agents import write_demo_config
from evalkit.bakeoff.config import AttemptKey, load_config, make_run_options
from evalkit.bakeoff.gateway import Gateway, Upstream
from evalkit.bakeoff.records import BakeoffRunDir
from evalkit.bakeoff.scripted import ScriptedModelServer, parse_script
from evalkit.dataset import load_task_set
from evalkit.sandbox import docker_client

ROOT = Path(__file__).resolve().parents[1]
KEY_ENV = "EVALKIT_BENCH_SCRIPTED_KEY"
CLAUDE = {
    "schema_version": 1,
    "steps": [
        {"bash": "ls -la && git status --short && cat README* 2>/dev/null | head -n 20"},
        {"bash": "grep -rn def --include=*.py . | head -n 40"},
        {"write": {"path": "NOTES.md", "content": "looked around\n"}},
        {
            "bash": "PYTHONDONTWRITEBYTECODE=1 /opt/venv/bin/python -m pytest -q"
            " -p no:cacheprovider 2>&1 | tail -n 3"
        },
        {"final": "Done."},
    ],
}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--tasks", type=Path, default=ROOT / "tasks" / "sample")
    ap.add_argument("--reps", type=int, default=2)
    ap.add_argument("--agents", default="oracle,claude-code")
    args = ap.parse_args()
    agents = args.agents.split(",")
    os.environ.setdefault(KEY_ENV, "evalkit-bench-" + os.urandom(8).hex())
    timings: dict[tuple[str, bool], list[float]] = {}
    original = runner_module.run_attempt

    def timed(*a: Any, **kw: Any) -> Any:
        start = time.monotonic()
        try:
            return original(*a, **kw)
        finally:
            key = (current[0], kw.get("trust") is not None)
            timings.setdefault(key, []).append(time.monotonic() - start)

    current = [""]
    runner_module.run_attempt = timed  # type: ignore[assignment]
    parts: dict[str, list[float]] = {}
    durations: dict[tuple[str, bool], list[float]] = {}
    whole: dict[tuple[str, bool], list[float]] = {}

    def part(module: Any, name: str) -> None:
        fn = getattr(module, name)

        def wrapped(*a: Any, **kw: Any) -> Any:
            start = time.monotonic()
            try:
                return fn(*a, **kw)
            finally:
                if current[0] != "warm":
                    parts.setdefault(name, []).append(time.monotonic() - start)

        setattr(module, name, wrapped)

    from evalkit.bakeoff import gates

    for module, name in (
        (gates, "collector_ready"),
        (gates, "stop_collector"),
    ):
        part(module, name)
    with tempfile.TemporaryDirectory() as tmp, ScriptedModelServer(parse_script(CLAUDE)) as server:
        assert server.base_url
        path = write_demo_config(
            args.tasks, Path(tmp) / "config", model_url=server.base_url, cli_agent="claude-code"
        )
        text = path.read_text().replace(
            "[models.scripted]\n", f'[models.scripted]\napi_key_env = "{KEY_ENV}"\n'
        )
        path.write_text(text.replace('model = "scripted"', 'model = "claude-opus-4-5"'))
        config = load_config(path)
        task_set = load_task_set(args.tasks)
        ids = sorted(task_set.instances)
        client = docker_client()
        upstreams = {
            n: Upstream(n, m.base_url, m.api_key_env, 0, 0) for n, m in config.models.items()
        }
        with Gateway(upstreams, root=Path(tmp) / "gw") as gateway:
            for trust in (True, False):  # warm both paths (images, packs, gate pack)
                options = make_run_options(
                    config,
                    run_id=f"warm{trust}",
                    runs_dir=Path(tmp) / "runs",
                    repeats=1,
                    workers=1,
                    agents=agents,
                    instance_ids=ids[:1],
                    store=None,
                )
                r = runner_module.BakeoffRunner(
                    config,
                    task_set,
                    BakeoffRunDir(Path(tmp) / "runs", f"warm{trust}"),
                    options,
                    log=lambda _: None,
                    trust=trust,
                )
                for agent in agents:
                    current[0] = "warm"
                    r.attempt(client, gateway, AttemptKey(agent, ids[0], 1))
            timings.clear()
            for rep in range(args.reps):
                for trust in (True, False) if rep % 2 == 0 else (False, True):
                    run_id = f"r{rep}{'t' if trust else 'n'}"
                    options = make_run_options(
                        config,
                        run_id=run_id,
                        runs_dir=Path(tmp) / "runs",
                        repeats=1,
                        workers=1,
                        agents=agents,
                        instance_ids=ids,
                        store=None,
                    )
                    r = runner_module.BakeoffRunner(
                        config,
                        task_set,
                        BakeoffRunDir(Path(tmp) / "runs", run_id),
                        options,
                        log=lambda _: None,
                        trust=trust,
                    )
                    for agent in agents:
                        for iid in ids:
                            current[0] = agent
                            start = time.monotonic()
                            a = r.attempt(client, gateway, AttemptKey(agent, iid, 1))
                            whole.setdefault((agent, trust), []).append(time.monotonic() - start)
                            durations.setdefault((agent, trust), []).append(a.duration_s)
                            if a.attempt_status.value != "completed":
                                print("!", agent, iid, trust, a.attempt_status.value, a.error)
    print(
        f"{'agent':<12} {'n':>3} {'sandbox off':>12} {'sandbox on':>11} {'overhead':>9} "
        f"{'min off':>8} {'min on':>7} {'agent off':>10} {'agent on':>9}"
    )
    for agent in agents:
        off, on = timings.get((agent, False), []), timings.get((agent, True), [])
        if not off or not on:
            continue
        m_off, m_on = statistics.median(off), statistics.median(on)
        d_off = statistics.median(durations[(agent, False)])
        d_on = statistics.median(durations[(agent, True)])
        print(
            f"{agent:<12} {len(on):>3} {m_off:>11.2f}s {m_on:>10.2f}s "
            f"{100 * (m_on - m_off) / m_off:>8.0f}% {min(off):>7.2f}s {min(on):>6.2f}s "
            f"{d_off:>9.2f}s {d_on:>8.2f}s"
        )
    print(f"\n{'agent':<12} {'attempt off':>12} {'attempt on':>11} {'overhead':>9}  (run + grade)")
    for agent in agents:
        off, on = whole.get((agent, False), []), whole.get((agent, True), [])
        if off and on:
            m_off, m_on = statistics.median(off), statistics.median(on)
            print(f"{agent:<12} {m_off:>11.2f}s {m_on:>10.2f}s {100 * (m_on - m_off) / m_off:>8.0f}%")
    print(
        "fixed per-attempt steps (median s): "
        + ", ".join(f"{k} {statistics.median(v):.2f}" for k, v in parts.items())
    )
    print(f"load average at the end: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cpus")


if __name__ == "__main__":
    main()
