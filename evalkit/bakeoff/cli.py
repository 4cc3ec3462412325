"""``evalkit bakeoff``: run coding agents on a task set, check a config, list past bake-offs.

A thin typer layer: everything it does is a library call. Imports stay lazy so
``evalkit --help`` does not load pydantic models, sqlite or Docker.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

if TYPE_CHECKING:
    from rich.console import Console

    from evalkit.bakeoff.records import AgentAttempt

app = typer.Typer(
    name="bakeoff",
    help="Bake-offs: run real coding agents on a task set in sandboxes and grade what they did.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode="markdown",
)

EXIT_USAGE = 2
EXIT_INCOMPLETE = 1

ConfigArg = Annotated[
    Path, typer.Argument(metavar="CONFIG", help="Bake-off config (TOML).", show_default=False)
]
RunsDirOpt = Annotated[
    Path, typer.Option("--runs-dir", help="Where runs are written (and the default store).")
]
StoreOpt = Annotated[
    Path | None,
    typer.Option("--store", help="SQLite history file (default: RUNS_DIR/evalkit.db)."),
]


def _fail(message: str, code: int = EXIT_USAGE) -> None:
    typer.echo(f"evalkit: error: {message}", err=True)
    raise typer.Exit(code)


def _console() -> Console:
    from rich.console import Console

    console = Console()
    return console if console.is_terminal else Console(width=120)


def _print_attempts(attempts: list[AgentAttempt], agents: tuple[str, ...]) -> None:
    from rich.table import Table

    table = Table(title="Per-agent summary", title_justify="left")
    for column in ("agent", "resolved", "claimed", "overclaimed", "infra", "cost", "time"):
        table.add_column(column, justify="left" if column == "agent" else "right")
    for agent in agents:
        mine = [a for a in attempts if a.agent == agent]
        scored = [a for a in mine if a.scored]
        resolved = sum(a.resolved for a in scored)
        claimed = sum(a.claim is True for a in scored)
        over = sum(a.claim is True and not a.resolved for a in scored)
        rate = f" ({resolved / len(scored):.0%})" if scored else ""
        table.add_row(
            agent,
            f"{resolved}/{len(scored)}{rate}",
            f"{claimed}/{len(scored)}",
            f"{over}/{claimed}" if claimed else "0",
            str(len(mine) - len(scored)),
            f"${sum(a.cost_usd for a in mine):.2f}",
            f"{sum(a.duration_s for a in mine):.0f}s",
        )
    _console().print(table)


@app.command()
def run(
    config_path: ConfigArg,
    tasks: Annotated[
        Path, typer.Option("--tasks", help="Task set directory (instances.jsonl + repos/).")
    ],
    run_id: Annotated[
        str | None,
        typer.Option(
            "--run-id", help="Name of the run (default: bakeoff-DATE-TIME); re-use to resume."
        ),
    ] = None,
    runs_dir: RunsDirOpt = Path("runs"),
    repeats: Annotated[
        int | None, typer.Option("--repeats", "-k", min=1, help="Attempts per task and agent.")
    ] = None,
    workers: Annotated[
        int | None, typer.Option("--workers", "-j", min=1, help="Attempts in parallel.")
    ] = None,
    agents: Annotated[
        list[str] | None,
        typer.Option("--agents", "-a", help="Only these agents (comma-separated or repeated)."),
    ] = None,
    instance_ids: Annotated[
        list[str] | None,
        typer.Option("--instance-ids", "-i", help="Only these tasks (space/comma or repeated)."),
    ] = None,
    store: StoreOpt = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Check everything and print the plan; run nothing.")
    ] = False,
    executor: Annotated[
        str | None,
        typer.Option(
            "--executor",
            help="Where attempts and grading run: thread (this machine) or ray (evalkit[ray]); "
            "default: [bakeoff] executor, else thread.",
        ),
    ] = None,
    ray_address: Annotated[
        str | None,
        typer.Option(
            "--ray-address",
            help="Ray cluster for the ray executor; default: RAY_ADDRESS, else "
            "[bakeoff] ray_address.",
        ),
    ] = None,
    image_registry: Annotated[
        str | None,
        typer.Option(
            "--image-registry",
            help="host/prefix a node pulls missing environment images from before building "
            "them; default: EVALKIT_IMAGE_REGISTRY, else [bakeoff] image_registry.",
        ),
    ] = None,
) -> None:
    """Run every (task x agent x repeat) attempt in a sandbox, grade each, record it all.

    Examples:

        evalkit bakeoff init demo --tasks tasks/sample

        evalkit bakeoff run demo/bakeoff.toml --tasks tasks/sample --dry-run

        evalkit bakeoff run demo/bakeoff.toml --tasks tasks/sample --run-id nightly -j 2

        evalkit bakeoff run demo/bakeoff.toml --tasks tasks/sample -a oracle,liar -k 2 --dry-run

    Attempts land in RUNS_DIR/RUN_ID/attempts.jsonl as each ends; repeat k is also an
    ordinary evaluate run RUNS_DIR/RUN_ID.rK (for `evalkit report --runs RUN_ID.r1`).
    Re-running the same --run-id resumes. Exit 0: every attempt has a scored result.
    """
    from evalkit.bakeoff.config import (
        load_config,
        make_manifest,
        make_run_options,
        plan_attempts,
        select_instances,
    )
    from evalkit.bakeoff.records import BakeoffRunDir, check_resume, read_attempts, read_manifest
    from evalkit.dataset import load_task_set

    config = load_config(config_path)
    task_set = load_task_set(tasks)
    options = make_run_options(
        config,
        run_id=run_id,
        runs_dir=runs_dir,
        repeats=repeats,
        workers=workers,
        agents=agents,
        instance_ids=instance_ids,
        store=store,
    )
    import dataclasses

    from evalkit.executors import resolve_placement

    place = resolve_placement(
        cli_executor=executor,
        cli_address=ray_address,
        cli_registry=image_registry,
        config_executor=config.bakeoff.executor,
        config_address=config.bakeoff.ray_address,
        config_registry=config.bakeoff.image_registry,
    )
    options = dataclasses.replace(
        options,
        executor=place.executor,
        ray_address=place.ray_address,
        image_registry=place.image_registry,
    )
    ids = select_instances(task_set.instances, options)
    plan = plan_attempts(options, ids)
    run_dir = BakeoffRunDir(options.runs_dir, options.run_id)
    done = {a.key for a in read_attempts(run_dir.attempts)}
    if run_dir.manifest.exists():
        new = make_manifest(
            config, options, tasks_dir=tasks, tasks_sha256=task_set.sha256(), instance_ids=ids
        )
        check_resume(read_manifest(run_dir.manifest), new, run_dir.manifest)
    pending = [key for key in plan if key not in done]
    typer.echo(
        f"bake-off {options.run_id}: {len(options.agents)} agent(s) x {len(ids)} task(s) x "
        f"{options.repeats} repeat(s) = {len(plan)} attempts "
        f"({len(plan) - len(pending)} done, {len(pending)} to run, {options.workers} at a time)"
    )
    if dry_run:
        for key in pending:
            typer.echo(f"  r{key.repeat}  {key.agent}  {key.instance_id}")
        typer.echo(f"dry run: nothing ran; results would go to {run_dir.attempts}")
        return
    import importlib

    # CALL SITE (the lead's runner): run_bakeoff(config, task_set, run_dir, options, ...).
    try:
        run_bakeoff = importlib.import_module("evalkit.bakeoff.runner").run_bakeoff
    except ModuleNotFoundError as exc:
        if exc.name != "evalkit.bakeoff.runner":
            raise
        _fail("the bake-off runner (evalkit.bakeoff.runner) is not part of this build")
    try:
        run_bakeoff(
            config, task_set, run_dir, options, log=typer.echo, progress=sys.stderr.isatty()
        )
    except KeyboardInterrupt:
        typer.echo("evalkit: interrupted; finished attempts are kept (re-run to resume)", err=True)
        raise typer.Exit(130) from None
    attempts = read_attempts(run_dir.attempts)
    _sync_store(options.store, run_dir.root)
    _print_attempts(attempts, options.agents)
    typer.echo(f"attempts: {run_dir.attempts}")
    repeat_runs = [run_dir.repeat_run_id(k) for k in range(1, options.repeats + 1)]
    typer.echo(f"evaluate runs (for evalkit report --runs): {' '.join(repeat_runs)}")
    finished = {a.key: a for a in attempts}
    missing = [key for key in plan if key not in finished]
    infra = [key for key in plan if key in finished and not finished[key].scored]
    if missing or infra:
        _fail(
            f"{len(missing)} attempt(s) did not finish and {len(infra)} were lost to "
            "infrastructure; re-run the same --run-id to resume",
            EXIT_INCOMPLETE,
        )


def _sync_store(path: Path, run_root: Path) -> None:
    # The runner records as it goes; importing the run dir again is an idempotent upsert
    # that guarantees the history has every finished attempt.
    from evalkit.bakeoff.store import open_store

    with open_store(path) as db:
        db.import_run(run_root)


@app.command()
def check(
    config_path: ConfigArg,
    build: Annotated[
        bool,
        typer.Option("--build/--no-build", help="Also build (or find) every agent's pack."),
    ] = True,
) -> None:
    """Validate a config, its agents' files and host variables, and build each agent pack.

    Runs nothing. A pack already built is found, not rebuilt.

    Examples:

        evalkit bakeoff check demo/bakeoff.toml --no-build

        evalkit bakeoff check demo/bakeoff.toml
    """
    import os

    from evalkit.bakeoff.config import load_config, resolve_agent_files

    config = load_config(config_path)
    problems: list[str] = []
    typer.echo(
        f"{config.path}: {len(config.agents)} agent(s), {len(config.models)} upstream(s), "
        f"{config.bakeoff.repeats} repeat(s), {config.bakeoff.timeout:g}s and "
        f"${config.bakeoff.budget_usd:g} per attempt"
    )
    used = {a.upstream for a in config.agents if a.upstream is not None}
    for name in sorted(used):
        upstream = config.models[name]
        if upstream.api_key_env and upstream.api_key_env not in os.environ:
            problems.append(f"models.{name}.api_key_env: {upstream.api_key_env} is not set here")
    for index, agent in enumerate(config.agents):
        files = resolve_agent_files(agent)
        missing = [n for n in agent.env if n not in os.environ]
        if missing:
            problems.append(f"agents[{index}].env: not set here: {', '.join(missing)}")
        line = f"  {agent.name}: {agent.adapter} {agent.agent_version}"
        if agent.upstream:
            line += f" -> {agent.upstream}/{agent.model or '(default model)'}"
        if files:
            line += f", {len(files)} file(s)"
        if agent.adapter == "command":
            pack = "no pack needed"
        else:
            pack = _check_pack(agent.adapter, agent.version) if build else "pack not checked"
        if pack.startswith("error: "):
            problems.append(f"agents[{index}] ({agent.name}): {pack[7:]}")
        typer.echo(f"{line}; {pack}")
    for problem in problems:
        typer.echo(f"evalkit: error: {config.path}: {problem}", err=True)
    if problems:
        raise typer.Exit(EXIT_USAGE)
    typer.echo("ok")


def _check_pack(adapter_name: str, version: str) -> str:
    """Build (or find) one agent pack; a one-phrase outcome, ``error: ...`` when it failed."""
    import importlib

    from evalkit.errors import EvalkitError

    # CALL SITE (helper "agents"): evalkit.bakeoff.adapters.get_adapter and
    # evalkit.bakeoff.packs.ensure_pack are written concurrently; until both import,
    # packs are reported as not checked rather than failing the whole check.
    try:
        get_adapter = importlib.import_module("evalkit.bakeoff.adapters").get_adapter
        ensure_pack = importlib.import_module("evalkit.bakeoff.packs").ensure_pack
    except ModuleNotFoundError as exc:
        if exc.name not in ("evalkit.bakeoff.adapters", "evalkit.bakeoff.packs"):
            raise
        return f"pack not checked ({exc.name} is not in this build)"
    try:
        spec = get_adapter(adapter_name).pack_spec(version)
        if spec is None:
            return "no pack needed"
        pack = ensure_pack(spec, log=lambda message: typer.echo(f"    {message}"))
    except EvalkitError as exc:
        return f"error: {exc}"
    return f"pack {pack.key[:12]} at {pack.path}"


@app.command()
def history(
    store: StoreOpt = None,
    runs_dir: RunsDirOpt = Path("runs"),
    agent: Annotated[
        str | None, typer.Option("--agent", help="One agent's resolved rate per night instead.")
    ] = None,
    sync: Annotated[
        bool,
        typer.Option("--sync", help="First add bake-offs found in RUNS_DIR (e.g. a lost store)."),
    ] = False,
) -> None:
    """List past bake-offs from the store: per agent, resolved rate and cost.

    Examples:

        evalkit bakeoff history

        evalkit bakeoff history --agent oracle

        evalkit bakeoff history --runs-dir runs --sync

        evalkit bakeoff history --store runs/evalkit.db
    """
    from rich.table import Table

    from evalkit.bakeoff.records import BAKEOFF_MANIFEST_FILE, DEFAULT_STORE_FILE
    from evalkit.bakeoff.store import open_store

    path = store if store is not None else runs_dir / DEFAULT_STORE_FILE
    if not path.exists() and not sync:
        typer.echo(f"no bake-offs recorded yet ({path} does not exist)")
        return
    with open_store(path) as db:
        if sync:
            for manifest in sorted(runs_dir.glob(f"*/{BAKEOFF_MANIFEST_FILE}")):
                count = db.import_run(manifest.parent)
                typer.echo(f"synced {manifest.parent.name}: {count} attempt(s)")
        console = _console()
        if agent is not None:
            points = db.trend(agent)
            if not points:
                typer.echo(f"no attempts of agent {agent!r} in {path}")
                return
            table = Table(title=f"{agent}: resolved per night (UTC)", title_justify="left")
            for column in ("night", "bake-offs", "version", "resolved", "cost"):
                table.add_column(column, justify="left" if column != "resolved" else "right")
            for p in points:
                rate = f" ({p.resolved_rate:.0%})" if p.resolved_rate is not None else ""
                table.add_row(
                    p.night,
                    ", ".join(p.run_ids),
                    ", ".join(p.versions),
                    f"{p.resolved}/{p.scored}{rate}",
                    f"${p.cost_usd:.2f}",
                )
            console.print(table)
            return
        summaries = db.history()
        if not summaries:
            typer.echo(f"no bake-offs recorded yet in {path}")
            return
        table = Table(title=f"Bake-offs in {path}", title_justify="left")
        for column in ("run", "created (UTC)", "agents: resolved", "attempts", "cost", "config"):
            table.add_column(column)
        for s in summaries:
            rates = "\n".join(
                f"{r.agent} {r.version}: {r.resolved}/{r.scored}"
                + (f" ({r.resolved_rate:.0%})" if r.resolved_rate is not None else "")
                for r in s.agents
            )
            table.add_row(
                s.run_id,
                s.created_at[:19].replace("T", " "),
                rates or "-",
                str(s.attempts),
                f"${s.cost_usd:.2f}",
                s.config_sha256[:12],
            )
        console.print(table)


@app.command()
def init(
    out: Annotated[Path, typer.Argument(help="Directory to write bakeoff.toml and its files.")],
    tasks: Annotated[
        Path, typer.Option("--tasks", help="Task set the oracle gets fixes from.")
    ] = Path("tasks/sample"),
    model_url: Annotated[
        str | None,
        typer.Option(
            "--model-url", help="Base URL of the scripted model server (default: a placeholder)."
        ),
    ] = None,
    cli_agent: Annotated[
        str,
        typer.Option("--cli-agent", help="Real CLI driven by the scripted model ('none': skip)."),
    ] = "mini-swe-agent",
) -> None:
    """Write a bake-off config of the scripted agents (oracle, liar, tamperer, sloppy and one
    real CLI driven by the scripted model server), ready for `bakeoff run`.

    Examples:

        evalkit bakeoff init demo --tasks tasks/sample

        evalkit bakeoff init demo --cli-agent none
    """
    from evalkit.bakeoff.agents import PLACEHOLDER_MODEL_URL, write_demo_config

    path = write_demo_config(
        tasks,
        out,
        model_url=model_url or PLACEHOLDER_MODEL_URL,
        cli_agent=None if cli_agent == "none" else cli_agent,
    )
    typer.echo(f"config: {path}")
