"""The demo's real CLI agent: a pinned agent CLI driven by the scripted model server.

The script is generic (it names no task): its one shell step applies the task's own fix,
which the CLI agent gets as read-only agent files exactly like the ``oracle`` command agent
(``/agent/oracle-patches/<instance_id>.patch``, the task named by ``EVALKIT_INSTANCE_ID``),
then it writes its claim and gives a final answer. The CLI, its tool calls, the sandbox
and the gateway are real; only the model's words are scripted.

:func:`run_ts_bakeoff` is the demo's second leg: the scripted command agents (the Node
``migrator`` among them) in sandboxes on the TypeScript sample's Node environment image.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from evalkit.bakeoff.agents import (
    AGENTS_DIR_IN_CONTAINER,
    CLI_AGENT_VERSIONS,
    ORACLE_PATCHES_DIR,
    write_demo_config,
)
from evalkit.bakeoff.scripted import Script, parse_script
from evalkit.errors import UsageError

if TYPE_CHECKING:
    from evalkit.bakeoff.records import AgentAttempt

DEMO_CLI_AGENT = "mini-swe-agent"
TS_BAKEOFF_RUN = "demo-ts-bakeoff"
TS_DEMO_AGENTS = ("oracle", "liar", "tamperer", "migrator")
"""The TypeScript leg: the ceiling, an overclaim, test tampering, and drizzle-kit / prisma
against production (each refused by a gate); few, to keep the demo quick."""
TS_DEMO_TASKS = 1
"""Tasks of the TypeScript leg (the first by id): every agent on one task keeps the demo's
wall time growth near 20 s on two cores; ``instance_ids`` picks others."""

APPLY_FIX = (
    f'git apply --whitespace=nowarn "{AGENTS_DIR_IN_CONTAINER}/{ORACLE_PATCHES_DIR}/'
    '$EVALKIT_INSTANCE_ID.patch" && git status --short'
)


def cli_script() -> Script:
    """The scripted conversation: apply the fix, claim it, answer."""
    return parse_script(
        {
            "schema_version": 1,
            "steps": [
                {"bash": APPLY_FIX},
                {"claim": {"resolved": True, "summary": "applied the reference fix"}},
                {"final": "Applied the fix for the issue."},
            ],
        },
        source="evalkit.bakeoff.demo",
    )


def _toml(value: object) -> str:
    return json.dumps(value)  # JSON strings are valid TOML strings


def write_cli_demo_config(
    tasks_dir: Path,
    out_dir: Path,
    *,
    model_url: str,
    cli_agent: str = DEMO_CLI_AGENT,
    repeats: int = 1,
) -> Path:
    """The demo's config (the scripted command agents) plus ``cli_agent``, which is handed
    the oracle's patches as files so the scripted model can make it fix every task."""
    from evalkit.bakeoff.config import load_config

    if cli_agent not in CLI_AGENT_VERSIONS:
        raise UsageError(
            f"no pinned demo version for {cli_agent!r} (choose from "
            f"{', '.join(CLI_AGENT_VERSIONS)})"
        )
    path = write_demo_config(
        tasks_dir, out_dir, model_url=model_url, cli_agent=None, repeats=repeats
    )
    patches = f"{AGENTS_DIR_IN_CONTAINER}/{ORACLE_PATCHES_DIR}"
    model = "claude-opus-4-5" if cli_agent == "claude-code" else "scripted"
    table = [
        "",
        "# A real CLI agent; only the model behind it is scripted (evalkit.bakeoff.demo).",
        "[[agents]]",
        f"name = {_toml(cli_agent)}",
        f"adapter = {_toml(cli_agent)}",
        f"version = {_toml(CLI_AGENT_VERSIONS[cli_agent])}",
        'upstream = "scripted"',
        f"model = {_toml(model)}",
        f"files = {{ {_toml(patches)} = {_toml(ORACLE_PATCHES_DIR)} }}",
    ]
    path.write_text(path.read_text(encoding="utf-8") + "\n".join(table) + "\n", encoding="utf-8")
    load_config(path)
    return path


def run_ts_bakeoff(
    tasks_dir: Path,
    runs_dir: Path,
    *,
    run_id: str = TS_BAKEOFF_RUN,
    agents: Sequence[str] = TS_DEMO_AGENTS,
    instance_ids: list[str] | None = None,
    workers: int = 2,
    log: Callable[[str], None] = print,
) -> list[AgentAttempt]:
    """The scripted command agents on a (JavaScript / TypeScript) task set, from scratch:
    ``runs_dir/<run_id>`` and its repeat run ``<run_id>.r1`` are replaced. No model is
    called (none of these agents has an upstream). ``instance_ids`` None: the first
    :data:`TS_DEMO_TASKS` tasks."""
    from evalkit.bakeoff.config import load_config, make_run_options
    from evalkit.bakeoff.records import BakeoffRunDir
    from evalkit.bakeoff.runner import run_bakeoff
    from evalkit.dataset import load_task_set

    for stale in (run_id, f"{run_id}.r1"):
        shutil.rmtree(runs_dir / stale, ignore_errors=True)
    config_path = write_demo_config(tasks_dir, runs_dir / f"{run_id}-config", cli_agent=None)
    config = load_config(config_path)
    task_set = load_task_set(tasks_dir)
    if instance_ids is None:
        instance_ids = sorted(task_set.instances)[:TS_DEMO_TASKS]
    options = make_run_options(
        config,
        run_id=run_id,
        runs_dir=runs_dir,
        repeats=1,
        workers=workers,
        agents=list(agents),
        instance_ids=instance_ids,
        store=None,
    )
    log(f"bake-off: {', '.join(options.agents)} on {tasks_dir} (Node environment image)")
    return run_bakeoff(config, task_set, BakeoffRunDir(runs_dir, run_id), options, log=log)
