"""The ``evalkit`` command: a thin typer layer over the library functions."""

from __future__ import annotations

import sys
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, NoReturn

import typer

from evalkit.errors import EvalkitError, InfraError, UsageError

if TYPE_CHECKING:
    from evalkit.records import ModelSummary, Verdict

app = typer.Typer(
    name="evalkit",
    help="Evaluate coding agents on your own team's issues, in a locked-down Docker sandbox.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    rich_markup_mode="markdown",
)
images_app = typer.Typer(help="Build and inspect evalkit's Docker images.", no_args_is_help=True)
app.add_typer(images_app, name="images")
tasks_app = typer.Typer(help="Work with task sets.", no_args_is_help=True)
app.add_typer(tasks_app, name="tasks")
app.add_typer(__import__("evalkit.bakeoff.cli", fromlist=["app"]).app, name="bakeoff")

EXIT_USAGE = 2


def _one_line(text: object) -> str:
    """Messages quote user data (paths, names): keep each one a single line."""
    return str(text).replace("\r", "\\r").replace("\n", "\\n")


def _fail(message: str, code: int = EXIT_USAGE) -> NoReturn:
    typer.echo(f"evalkit: error: {_one_line(message)}", err=True)
    raise typer.Exit(code)


def _print_summaries(summaries: Mapping[str, ModelSummary]) -> None:
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    table = Table(title="Per-model summary", title_justify="left")
    for column in (
        "model",
        "resolved",
        "unresolved",
        "patch failed",
        "empty",
        "error (infra)",
        "task errors",
        "timed out",
        "tampered",
    ):
        table.add_column(column, justify="left" if column == "model" else "right")
    for model, s in summaries.items():
        rate = s.resolved_instances / s.total_instances if s.total_instances else 0.0
        table.add_row(
            Text(model if len(model) <= 120 else model[:120] + "..."),  # a name, not markup
            f"{s.resolved_instances}/{s.total_instances} ({rate:.0%})",
            str(s.unresolved_instances),
            str(s.patch_failed_instances),
            str(s.empty_patch_instances),
            f"{s.error_instances} ({s.infra_failure_instances})",
            str(s.task_error_instances),
            str(s.timed_out_instances),
            str(len(s.tampered_ids)),
        )
    console = Console()
    if not console.is_terminal:
        console = Console(width=120)  # logs and pipes: no squeezed columns
    console.print(table)
    broken = sorted({i for s in summaries.values() for i in s.task_error_ids})
    if broken:
        shown = ", ".join(broken[:20]) + (
            f" and {len(broken) - 20} more" if len(broken) > 20 else ""
        )
        typer.echo(f"task errors, in no denominator (broken environment or task): {shown}")


ExecutorOption = Annotated[
    str,
    typer.Option(
        "--executor",
        help="Where units run: thread (this machine) or ray (a Ray cluster; evalkit[ray]).",
    ),
]
RayAddressOption = Annotated[
    str | None,
    typer.Option(
        "--ray-address",
        envvar="RAY_ADDRESS",
        help="Ray cluster to run on (with --executor ray); default: RAY_ADDRESS.",
    ),
]


@app.command()
def evaluate(
    tasks: Annotated[
        Path, typer.Option("--tasks", help="Task set directory (instances.jsonl + repos/).")
    ],
    run_id: Annotated[str, typer.Option("--run-id", help="Name of the run; re-use it to resume.")],
    predictions: Annotated[
        Path | None,
        typer.Option("--predictions", "-p", help="SWE-bench predictions (.jsonl/.json)."),
    ] = None,
    gold: Annotated[
        bool, typer.Option("--gold", help="Also evaluate each task's own fix (model 'gold').")
    ] = False,
    runs_dir: Annotated[Path, typer.Option("--runs-dir", help="Where runs are written.")] = Path(
        "runs"
    ),
    workers: Annotated[int, typer.Option("--workers", "-j", min=1, help="Parallel sandboxes.")] = 1,
    executor: ExecutorOption = "thread",
    ray_address: RayAddressOption = None,
    timeout: Annotated[
        float | None,
        typer.Option("--timeout", min=1, help="Seconds per test run (default: spec, 1800)."),
    ] = None,
    instance_ids: Annotated[
        list[str] | None,
        typer.Option("--instance-ids", "-i", help="Only these instances (repeatable)."),
    ] = None,
    ca_bundle: Annotated[
        Path | None,
        typer.Option("--ca-bundle", help="CA bundle for pip in image builds (proxy sites)."),
    ] = None,
    regrade_only: Annotated[
        bool,
        typer.Option(
            "--regrade", help="Recompute verdicts of --run-id from saved outputs; no containers."
        ),
    ] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")] = False,
    substitute_python: Annotated[
        bool,
        typer.Option(
            "--substitute-python",
            help="If a task's Python cannot be had, use the nearest one (recorded on results).",
        ),
    ] = False,
) -> None:
    """Grade SWE-bench-format predictions on a task set, each in a sandboxed container.

    Examples:

        evalkit evaluate --tasks tasks/sample --gold --run-id gold-check

        evalkit evaluate --tasks tasks/sample -p preds.jsonl --run-id nightly -j 2

        evalkit evaluate --tasks tasks/sample --run-id nightly --regrade

    Results land in RUNS_DIR/RUN_ID/results.jsonl (one line per model and instance, written
    as each finishes) and report.json. Exit code 0 means every prediction got a result.
    """
    from evalkit.harness import evaluate as run_evaluate
    from evalkit.harness import regrade
    from evalkit.records import RESULTS_FILE, RunDir

    if instance_ids:
        # Accept SWE-bench's space-separated style as well as repeated flags.
        instance_ids = [i for value in instance_ids for i in value.replace(",", " ").split()]
    try:
        if regrade_only:
            outcome = regrade(RunDir.of(runs_dir, run_id).path, tasks)
        else:
            outcome = run_evaluate(
                tasks,
                predictions,
                run_id,
                runs_dir=runs_dir,
                workers=workers,
                timeout=timeout,
                instance_ids=instance_ids,
                gold=gold,
                ca_bundle=ca_bundle,
                log=typer.echo,
                progress=not quiet and sys.stderr.isatty(),
                executor=executor,
                ray_address=ray_address,
                substitute_python=substitute_python,
            )
    except KeyboardInterrupt:
        # Containers are removed by the sandbox's exit hooks; written lines stay.
        typer.echo("evalkit: interrupted; finished results are kept (re-run to resume)", err=True)
        raise typer.Exit(130) from None
    except UsageError as exc:
        _fail(str(exc))
    _print_summaries(outcome.summaries)
    typer.echo(f"results: {outcome.run_dir / RESULTS_FILE}")
    errors = [p for p in outcome.problems if not p.warning]
    for problem in outcome.problems:
        kind = "warning" if problem.warning else "error"
        typer.echo(f"evalkit: {kind}: {_one_line(problem)}", err=True)
    if errors:
        _fail(f"{len(errors)} record(s) could not be used (listed above)")
    failing = _print_gold_failures(outcome.verdicts) if gold else 0
    if failing:
        _fail(f"the gold patch fails on {failing} task(s): they are task errors for every model", 1)


def _print_gold_failures(verdicts: list[Verdict]) -> int:
    """The table of tasks whose gold patch fails, with the first error line of each."""
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    from evalkit.dataset import GOLD_MODEL
    from evalkit.harness import TASK_ERROR_PREFIX
    from evalkit.records import Status

    failed = [
        v for v in verdicts if v.model_name_or_path == GOLD_MODEL and v.status != Status.RESOLVED
    ]
    if not failed:
        return 0
    table = Table(title="Tasks whose gold patch fails (task errors)", title_justify="left")
    for column in ("instance", "status", "first error line"):
        table.add_column(column)
    for v in sorted(failed, key=lambda v: v.instance_id):
        cause = (v.error or "").removeprefix(TASK_ERROR_PREFIX + ": ")
        status = "infra" if v.infra_failure else v.status.value
        table.add_row(Text(v.instance_id), status, Text(_one_line(cause)[:200]))
    console = Console()
    if not console.is_terminal:
        console = Console(width=160)
    console.print(table)
    return len(failed)


@images_app.command("bootstrap")
def images_bootstrap(
    force: Annotated[bool, typer.Option("--force", help="Rebuild even if present.")] = False,
    python: Annotated[
        str | None,
        typer.Option("--python", help="Python version: 3.9 (bullseye), 3.11, 3.13 (trixie)."),
    ] = None,
    suite: Annotated[
        str | None, typer.Option("--suite", help="Debian suite (default: bookworm).")
    ] = None,
    mirror: Annotated[
        str, typer.Option("--mirror", help="Debian mirror URL.")
    ] = "http://deb.debian.org/debian",
) -> None:
    """Build a base image from Debian packages, with no registry access (air-gapped sites).

    One per Python: the Debian release that ships it (bullseye 3.9, bookworm 3.11,
    trixie 3.13), named evalkit/base:SUITE.

    Examples:

        evalkit images bootstrap

        evalkit images bootstrap --python 3.9

        evalkit images bootstrap --mirror http://apt.internal/debian --force
    """
    from evalkit.environment import DEBIAN_PYTHONS
    from evalkit.images import bootstrap_base, bootstrap_name
    from evalkit.sandbox import docker_client

    if python is not None and suite is not None:
        _fail("give --python or --suite, not both")
    try:
        if python is not None:
            image, suite = bootstrap_name(python), DEBIAN_PYTHONS[python]
        else:
            suite = suite or "bookworm"
            image = f"evalkit/base:{suite}"
        name = bootstrap_base(
            docker_client(), name=image, suite=suite, mirror=mirror, force=force, log=typer.echo
        )
    except UsageError as exc:
        _fail(str(exc))
    typer.echo(name)


@images_app.command("list")
def images_list() -> None:
    """List evalkit's environment images: size, Python, dependency date.

    Example:

        evalkit images list
    """
    from evalkit.sandbox import docker_client

    client = docker_client()
    for image in client.images.list(filters={"label": "evalkit.env-key"}):
        size = image.attrs.get("Size", 0) / 1e6
        labels = image.labels or {}
        python = labels.get("evalkit.python", "?")
        dated = labels.get("evalkit.exclude-newer") or "undated"
        typer.echo(
            f"{', '.join(image.tags) or image.short_id}\t{size:.0f} MB\tPython {python}\t{dated}"
        )


@app.command()
def report(
    run_ids: Annotated[
        list[str] | None,
        typer.Argument(
            help="Run id(s); several runs of one agent are its repeats.", show_default=False
        ),
    ] = None,
    runs: Annotated[
        list[str] | None,
        typer.Option("--runs", help="Run id(s), as an option (repeat, or comma-separate)."),
    ] = None,
    out: Annotated[Path, typer.Option("--out", help="HTML file to write.")] = Path(
        "reports/report.html"
    ),
    runs_dir: Annotated[Path, typer.Option("--runs-dir", help="Where runs live.")] = Path("runs"),
    leaderboard: Annotated[
        Path | None, typer.Option("--leaderboard", help="CSV adding/replacing public rows.")
    ] = None,
    model_map: Annotated[
        Path | None,
        typer.Option("--model-map", help="TOML/JSON: agent name -> leaderboard model name."),
    ] = None,
    cutoff: Annotated[
        list[str] | None, typer.Option("--cutoff", help="MODEL=YYYY-MM-DD training cutoff.")
    ] = None,
    bakeoff: Annotated[
        list[str] | None,
        typer.Option(
            "--bakeoff",
            help="Bake-off run id: adds its graded repeats and its claims/trust sections.",
        ),
    ] = None,
    store: Annotated[
        Path | None,
        typer.Option(
            "--store", help="Bake-off history for the trend (default RUNS_DIR/evalkit.db)."
        ),
    ] = None,
) -> None:
    """Write the HTML gap report: which agent is best, how sure, and the gap to public numbers.

    Repeats of a bake-off (RUN_ID.r1, ... or --bakeoff RUN_ID) add what each agent claimed
    against what was verified, its trust record, cost, time and trend across nights.

    Examples:

        evalkit report nightly --out reports/nightly.html

        evalkit report nightly-1 nightly-2 nightly-3 --model-map agents.toml

        evalkit report --runs demo --cutoff claude-opus-4-5=2025-03-01

        evalkit report --bakeoff nightly-20261124
    """
    from evalkit.report import build_report

    cutoffs: dict[str, str] = {}
    for item in cutoff or []:
        model, sep, date = item.partition("=")
        if not sep or not model or not date:
            _fail(f"--cutoff {item!r}: expected MODEL=YYYY-MM-DD")
        cutoffs[model] = date
    # `--runs a b c` parses as --runs a plus positional b c: both forms end up here.
    given = [*(runs or []), *(run_ids or [])]
    ids = [r for value in given for r in value.replace(",", " ").split()]
    bakeoffs = [b for value in bakeoff or [] for b in value.replace(",", " ").split()]
    if not ids and not bakeoffs:
        _fail("give at least one run id: evalkit report RUN_ID... --out FILE")
    result = build_report(
        ids,
        runs_dir=runs_dir,
        out=out,
        leaderboard=leaderboard,
        model_map=model_map,
        cutoffs=cutoffs,
        bakeoffs=bakeoffs,
        store=store,
    )
    typer.echo(result.summary)
    for line in result.bakeoff_lines:
        typer.echo(f"bake-off: {line}")
    for warning in result.warnings:
        typer.echo(f"warning: {warning}", err=True)
    typer.echo(f"report: {result.html_path} ({result.tasks} tasks, {len(result.agents)} agents)")
    typer.echo(f"tables: {result.tables_dir}/")
    if result.unmatched_agents:
        typer.echo(
            f"no public leaderboard match for: {', '.join(result.unmatched_agents)} "
            "(use --model-map)"
        )


@app.command()
def mine(
    repo: Annotated[str, typer.Argument(help="A local git clone (path) or a clone URL.")],
    out: Annotated[Path, typer.Option("--out", help="Task set directory to write.")],
    issues: Annotated[
        Path | None, typer.Option("--issues", help="Closed-issue export (GitHub REST or gh JSON).")
    ] = None,
    github: Annotated[
        str | None, typer.Option("--github", help="OWNER/REPO on GitHub / GitHub Enterprise.")
    ] = None,
    gitlab: Annotated[str | None, typer.Option("--gitlab", help="GitLab project path.")] = None,
    api_url: Annotated[
        str | None, typer.Option("--api-url", help="API base URL (GHES, GitLab).")
    ] = None,
    repo_name: Annotated[
        str | None, typer.Option("--repo-name", help="owner/name for ids (default: inferred).")
    ] = None,
    since: Annotated[str | None, typer.Option("--since", help="Only changes after DATE.")] = None,
    until: Annotated[str | None, typer.Option("--until", help="Only changes before DATE.")] = None,
    max_candidates: Annotated[
        int | None, typer.Option("--max", help="At most N candidates.")
    ] = None,
    workers: Annotated[int, typer.Option("--workers", "-j", min=1)] = 1,
    executor: ExecutorOption = "thread",
    ray_address: RayAddressOption = None,
    runs: Annotated[int, typer.Option("--runs", min=1, help="Validation runs per state.")] = 3,
    link_pattern: Annotated[
        str | None,
        typer.Option("--link-pattern", help="Regex for tracker keys, e.g. '(PROJ-\\d+)'."),
    ] = None,
    test_glob: Annotated[
        list[str] | None, typer.Option("--test-glob", help="Extra test-path globs (repeatable).")
    ] = None,
    timeout: Annotated[float, typer.Option("--timeout", help="Seconds per validation run.")] = 300,
    max_lines: Annotated[
        int, typer.Option("--max-lines", min=1, help="Skip changes over N changed lines.")
    ] = 2000,
    max_files: Annotated[
        int, typer.Option("--max-files", min=1, help="Skip changes over N changed files.")
    ] = 50,
    spec: Annotated[
        Path | None, typer.Option("--spec", help="evalkit.toml to build and test with.")
    ] = None,
    branch: Annotated[
        list[str] | None,
        typer.Option("--branch", help="Also mine this (maintenance) branch (repeatable)."),
    ] = None,
) -> None:
    """Turn a repository's closed issues and their fixes into a validated task set.

    Examples:

        evalkit mine ../payments --out tasks/payments

        evalkit mine ../payments --out tasks/payments --issues closed_issues.json --since 2025-01-01

        GITHUB_TOKEN=... evalkit mine ../api --out tasks/api --github acme/api --api-url https://ghe.acme.internal/api/v3

        evalkit mine ../api --out tasks/api --max-files 20 --runs 5 -j 2

        GITLAB_TOKEN=... evalkit mine ../web --out tasks/web --gitlab acme/web --api-url https://gitlab.acme.internal/api/v4
    """
    import os

    from evalkit import mining
    from evalkit.repo import cache_root

    if sum(x is not None for x in (issues, github, gitlab)) > 1:
        _fail("give at most one issue source: --issues, --github or --gitlab")
    found: mining.IssueIndex | None = None
    source: mining.SourceKind = "commit"
    name = repo_name
    if issues is not None:
        found, source = mining.load_issue_export(issues), "export"
    elif github is not None or gitlab is not None:
        kind: mining.SourceKind = "github" if github is not None else "gitlab"
        target = str(github or gitlab)
        base = api_url or ("https://api.github.com" if kind == "github" else "")
        if not base:
            _fail("--gitlab needs --api-url (e.g. https://gitlab.example.com/api/v4)")
        token = os.environ.get("GITHUB_TOKEN" if kind == "github" else "GITLAB_TOKEN")
        http = mining.HttpCache(
            cache_root() / "http",
            token,
            mining.github_auth if kind == "github" else mining.gitlab_auth,
        )
        fetch = mining.fetch_github_issues if kind == "github" else mining.fetch_gitlab_issues
        # The index also fetches late single issues and, for candidates, their comments.
        found, source = fetch(http, base, target), kind
        name = name or target
    if name is None:
        name = "local/" + Path(repo.rstrip("/")).name.removesuffix(".git")
    options = mining.MineOptions(
        since=since,
        until=until,
        max_candidates=max_candidates,
        workers=workers,
        runs=runs,
        link_pattern=link_pattern,
        test_globs=tuple(test_glob or ()),
        timeout=timeout,
        max_lines=max_lines,
        max_files=max_files,
        executor=executor,
        ray_address=ray_address,
        branches=tuple(branch or ()),
    )
    summary = mining.mine(
        repo,
        out,
        repo_name=name,
        issues=found,
        source=source,
        options=options,
        spec_path=spec,
        log=typer.echo,
        progress=sys.stderr.isatty(),
    )
    for line in summary.lines():
        typer.echo(line)
    typer.echo(f"task set: {out}  (why each candidate was kept or not: {out / 'candidates.jsonl'})")


@tasks_app.command("export")
def tasks_export(
    tasks: Annotated[Path, typer.Argument(help="Task set directory.")],
    hf: Annotated[Path, typer.Option("--hf", help="Output directory for the HF dataset.")],
) -> None:
    """Export a task set as a Hugging Face dataset (save_to_disk + parquet), SWE-bench columns.

    Example:

        evalkit tasks export tasks/payments --hf exports/payments
    """
    from evalkit.dataset import export_hf

    count = export_hf(tasks, hf)
    typer.echo(f"{count} instances -> {hf}/dataset and {hf}/test.parquet")


@tasks_app.command("import")
def tasks_import(
    source: Annotated[
        str, typer.Argument(help="Records: a .json/.jsonl/.parquet file or a HF dataset name.")
    ],
    out: Annotated[Path, typer.Option("--out", help="Task set directory to write.")],
    repo: Annotated[
        list[str] | None,
        typer.Option("--repo", help="owner/name=PATH of a local clone or bare mirror."),
    ] = None,
    clones: Annotated[
        Path | None, typer.Option("--clones", help="Directory of clones (owner__name, name).")
    ] = None,
    specs: Annotated[
        Path | None,
        typer.Option("--specs", help="JSON: per-repo, per-version install specs (SWE-bench's)."),
    ] = None,
    split: Annotated[str, typer.Option("--split", help="Dataset split (HF names).")] = "test",
    instance_ids: Annotated[
        list[str] | None, typer.Option("--instance-ids", "-i", help="Only these (repeatable).")
    ] = None,
) -> None:
    """Turn SWE-bench, SWE-bench-Live or SWE-rebench records into a task set.

    Each repository's bundle holds the commits the records need and no history after
    them. Install specs the records carry go to evalkit.toml; otherwise environments
    are inferred. Check the result with `evalkit tasks validate OUT`.

    Examples:

        evalkit tasks import swe-bench.jsonl --out tasks/swe --repo psf/requests=../requests

        evalkit tasks import SWE-bench/SWE-bench_Lite --out tasks/lite --clones ~/mirrors
    """
    from evalkit.dataset import import_records

    mapping: dict[str, Path] = {}
    for item in repo or []:
        name, sep, path = item.partition("=")
        if not sep or "/" not in name or not path:
            _fail(f"--repo {item!r}: expected owner/name=PATH")
        mapping[name] = Path(path)
    ids = [i for value in instance_ids or [] for i in value.replace(",", " ").split()]
    try:
        summary = import_records(
            source,
            out,
            repos=mapping,
            clones=clones,
            specs=specs,
            split=split,
            instance_ids=ids or None,
        )
    except UsageError as exc:
        _fail(str(exc))
    repos = ", ".join(f"{r} ({n})" for r, n in summary.repos.items())
    typer.echo(f"{summary.instances} instances from {repos} -> {out}")
    if summary.specs:
        typer.echo(f"install specs for {summary.specs} instance(s) -> {out / 'evalkit.toml'}")
    typer.echo(f"next: evalkit tasks validate {out}")


@tasks_app.command("validate")
def tasks_validate(
    tasks: Annotated[Path, typer.Argument(help="Task set directory.")],
    runs_dir: Annotated[Path, typer.Option("--runs-dir", help="Where runs are written.")] = Path(
        "runs"
    ),
    run_id: Annotated[
        str | None, typer.Option("--run-id", help="Run id (default: validate-<dir name>).")
    ] = None,
    workers: Annotated[int, typer.Option("--workers", "-j", min=1)] = 1,
    substitute_python: Annotated[
        bool, typer.Option("--substitute-python", help="Stand in the nearest Python if needed.")
    ] = False,
) -> None:
    """The gold check: every task's own fix must resolve it in its environment.

    Results go to TASKS/gold-check.json; tasks whose gold patch fails are listed with
    the first error line of each and are task errors for every model. Exit 1 if any.

    Example:

        evalkit tasks validate tasks/swe -j 2
    """
    from evalkit.harness import evaluate as run_evaluate

    try:
        outcome = run_evaluate(
            tasks,
            None,
            run_id or f"validate-{tasks.resolve().name}",
            runs_dir=runs_dir,
            workers=workers,
            gold=True,
            log=typer.echo,
            progress=sys.stderr.isatty(),
            substitute_python=substitute_python,
        )
    except UsageError as exc:
        _fail(str(exc))
    _print_summaries(outcome.summaries)
    failing = _print_gold_failures(outcome.verdicts)
    typer.echo(f"gold check: {tasks / 'gold-check.json'}")
    if failing:
        _fail(f"the gold patch fails on {failing} task(s): they are task errors for every model", 1)


@app.command()
def demo(
    runs_dir: Annotated[Path, typer.Option("--runs-dir", help="Where runs are written.")] = Path(
        "runs"
    ),
    workers: Annotated[int, typer.Option("--workers", "-j", min=1)] = 2,
) -> None:
    """The whole job on the sample project: mine its history, evaluate gold patches and
    scripted agents on what was mined, and write the gap report.

    The scripted agents are a careful one (one wrong fix), a sloppy one (a patch that
    needs a fuzzy apply, one that applies nowhere, an empty one) and a cheater (conftest
    hook, printed PASSED lines with an early exit, pytest.ini edits, weakened tests).
    Then a bake-off in sandboxes: an oracle, a liar, a tamperer, a sloppy agent and the
    real mini-swe-agent CLI driven by a scripted model server through the gateway. Then
    the TypeScript sample: gold, scripted patches, and a bake-off on its Node image (an
    oracle, a liar, a tamperer and a migrator that runs drizzle-kit / prisma).

    Example:

        evalkit demo

        evalkit demo --runs-dir /tmp/runs -j 1
    """
    # 1. Mine the sample repository's history and its closed-issue export into a task
    #    set, validated in Docker.
    import shutil

    from evalkit.harness import evaluate as run_evaluate
    from evalkit.mining import MineOptions, load_issue_export, mine
    from evalkit.report import build_report
    from evalkit.sample import REPO, build_sample_repo, sample_task_set

    sample = sample_task_set(runs_dir)
    repo = runs_dir / "sample-repo"
    mined = runs_dir / "mined-sample"
    # The demo starts clean each time, so it always shows the whole job end to end.
    for stale in (repo, mined, runs_dir / "demo"):
        shutil.rmtree(stale, ignore_errors=True)
    build_sample_repo(repo)
    typer.echo(f"mining {repo} (issues: {sample / 'issues.json'}) -> {mined}")
    issues = load_issue_export(sample / "issues.json")
    summary = mine(
        str(repo),
        mined,
        repo_name=REPO,
        issues=issues,
        source="export",
        options=MineOptions(workers=workers, runs=3, timeout=10),
        log=typer.echo,
        progress=sys.stderr.isatty(),
    )
    for line in summary.lines():
        typer.echo(f"  {line}")
    # 2. Evaluate what was mined: gold patches plus the scripted agents' predictions.
    predictions = sample / "predictions" / "scripted.jsonl"
    outcome = run_evaluate(
        mined,
        predictions,
        "demo",
        runs_dir=runs_dir,
        workers=workers,
        gold=True,
        log=typer.echo,
        progress=sys.stderr.isatty(),
    )
    _print_summaries(outcome.summaries)
    typer.echo(f"results: {outcome.run_dir / 'results.jsonl'}")
    # 3. A bake-off: the scripted command agents and one real agent CLI (mini-swe-agent,
    #    from its pinned pack) run in sandboxes on the mined tasks; the CLI talks to the
    #    scripted model server on loopback only through the gateway. Each claim is
    #    checked against the verified result.
    from evalkit.bakeoff.config import load_config, make_run_options
    from evalkit.bakeoff.demo import DEMO_CLI_AGENT, cli_script, write_cli_demo_config
    from evalkit.bakeoff.records import BakeoffRunDir
    from evalkit.bakeoff.runner import run_bakeoff
    from evalkit.bakeoff.scripted import ScriptedModelServer
    from evalkit.dataset import load_task_set

    shutil.rmtree(runs_dir / "demo-bakeoff", ignore_errors=True)
    shutil.rmtree(runs_dir / "demo-bakeoff.r1", ignore_errors=True)
    with ScriptedModelServer(cli_script(), host="127.0.0.1", port=0) as server:
        assert server.base_url is not None
        config_path = write_cli_demo_config(
            mined, runs_dir / "demo-bakeoff-config", model_url=server.base_url
        )
        config = load_config(config_path)
        options = make_run_options(
            config,
            run_id="demo-bakeoff",
            runs_dir=runs_dir,
            repeats=1,
            workers=workers,
            agents=[
                "oracle",
                "liar",
                "tamperer",
                "sloppy",
                "overclaimer",
                "destroyer",
                "snoop",
                DEMO_CLI_AGENT,
            ],
            instance_ids=None,
            store=None,
        )
        typer.echo(
            f"bake-off: {', '.join(options.agents)} on {mined} "
            f"(scripted model server at {server.base_url}, behind the gateway)"
        )
        attempts = run_bakeoff(
            config,
            load_task_set(mined),
            BakeoffRunDir(runs_dir, "demo-bakeoff"),
            options,
            log=typer.echo,
        )
    overclaimed = sum(1 for a in attempts if a.claim and a.status is not None and not a.resolved)
    typer.echo(
        f"bake-off: {len(attempts)} attempts, {overclaimed} claimed success they did not earn"
    )
    # 4. The gap report, with the bake-off's claims, trust and cost sections.
    result = build_report(
        ["demo", "demo-bakeoff.r1"], runs_dir=runs_dir, out=Path("reports") / "demo.html"
    )
    for line in result.bakeoff_lines:
        typer.echo(f"bake-off: {line}")
    typer.echo(f"report: {result.html_path}")
    # 5. A second ecosystem: the TypeScript sample (vitest), gold and scripted agents.
    ts_tasks = Path(__file__).resolve().parent.parent / "tasks" / "sample-ts"
    if not (ts_tasks / "instances.jsonl").is_file():
        from evalkit.sample_ts import build_ts_taskset

        ts_tasks = runs_dir / "sample-ts-tasks"
        if not (ts_tasks / "instances.jsonl").is_file():
            build_ts_taskset(ts_tasks)
    shutil.rmtree(runs_dir / "demo-ts", ignore_errors=True)
    typer.echo(f"evaluating the TypeScript sample {ts_tasks}")
    ts = run_evaluate(
        ts_tasks,
        ts_tasks / "predictions" / "scripted.jsonl",
        "demo-ts",
        runs_dir=runs_dir,
        workers=workers,
        gold=True,
        log=typer.echo,
        progress=sys.stderr.isatty(),
    )
    _print_summaries(ts.summaries)
    # 6. Its bake-off on the Node environment image: oracle, liar, tamperer and the Node
    #    migrator (drizzle-kit / prisma against production, each refused by a gate).
    from evalkit.bakeoff.demo import TS_BAKEOFF_RUN, run_ts_bakeoff

    run_ts_bakeoff(ts_tasks, runs_dir, workers=workers, log=typer.echo)
    ts_report = build_report(
        ["demo-ts", f"{TS_BAKEOFF_RUN}.r1"], runs_dir=runs_dir, out=Path("reports") / "demo-ts.html"
    )
    for line in ts_report.bakeoff_lines:
        typer.echo(f"bake-off (TypeScript): {line}")
    typer.echo(f"report: {ts_report.html_path}")


def main() -> None:
    """Entry point: user mistakes and infrastructure trouble print one line, not a traceback."""
    try:
        app()
    except UsageError as exc:
        typer.echo(f"evalkit: error: {_one_line(exc)}", err=True)
        sys.exit(EXIT_USAGE)
    except InfraError as exc:
        typer.echo(f"evalkit: infrastructure error: {_one_line(exc)}", err=True)
        sys.exit(EXIT_USAGE)
    except EvalkitError as exc:
        typer.echo(f"evalkit: error: {_one_line(exc)}", err=True)
        sys.exit(EXIT_USAGE)


if __name__ == "__main__":
    main()
