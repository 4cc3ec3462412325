"""The CLI is cheap to import, documents itself, and turns mistakes into one-line errors."""

from __future__ import annotations

import base64
import json
import os
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from click.testing import Result
from typer.testing import CliRunner

from evalkit.cli import app
from evalkit.dataset import load_task_set
from evalkit.patch import sha256_text
from evalkit.records import (
    RunDir,
    RunManifest,
    Status,
    Verdict,
    append_jsonl,
    scan_verdicts,
    write_model,
)
from tests.conftest import MiniTasks
from tests.test_records import hold_lock


def evalkit(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "evalkit.cli", *args], capture_output=True, text=True, check=False
    )


def test_import_evalkit_is_cheap_and_silent() -> None:
    code = (
        "import sys, evalkit, evalkit.harness, evalkit.grading; "
        "heavy = {'docker', 'pandas', 'datasets', 'jinja2'} & set(sys.modules); "
        "print(sorted(heavy))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]" and out.stderr == ""


def test_every_command_has_examples_in_help() -> None:
    for command in (["evaluate"], ["images", "bootstrap"], ["demo"], ["report"]):
        assert "Example" in evalkit(*command, "--help").stdout, command


def test_missing_task_set_is_one_line_exit_2(tmp_path: Path) -> None:
    result = evalkit(
        "evaluate",
        "--tasks",
        str(tmp_path / "none"),
        "--gold",
        "--run-id",
        "x",
        "--runs-dir",
        str(tmp_path),
    )
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0 and "Traceback" not in result.stderr
    assert "task set directory not found" in result.stderr


def test_unusable_predictions_exit_2_but_keep_other_results(
    mini_tasks: MiniTasks, tmp_path: Path
) -> None:
    preds = tmp_path / "p.jsonl"
    preds.write_text(
        json.dumps({"instance_id": "acme__calc-1", "model_name_or_path": "m", "model_patch": ""})
        + "\n{oops\n"
    )
    result = evalkit(
        "evaluate",
        "--tasks",
        str(mini_tasks.root),
        "-p",
        str(preds),
        "--run-id",
        "x",
        "--runs-dir",
        str(tmp_path / "runs"),
    )
    assert result.returncode == 2
    assert f"{preds}:2: not valid JSON" in result.stdout + result.stderr
    assert "Traceback" not in result.stdout + result.stderr
    lines = (tmp_path / "runs" / "x" / "results.jsonl").read_text().splitlines()
    assert json.loads(lines[0])["status"] == "empty_patch"


def test_unsafe_patch_is_the_agents_failure_not_a_crash(
    mini_tasks: MiniTasks, tmp_path: Path
) -> None:
    evil = "diff --git a/../x b/../x\n--- a/../x\n+++ b/../x\n@@ -1 +1 @@\n-a\n+b\n"
    preds = tmp_path / "p.jsonl"
    preds.write_text(
        json.dumps({"instance_id": "acme__calc-1", "model_name_or_path": "m", "model_patch": evil})
        + "\n"
    )
    result = evalkit(
        "evaluate",
        "--tasks",
        str(mini_tasks.root),
        "-p",
        str(preds),
        "--run-id",
        "x",
        "--runs-dir",
        str(tmp_path / "runs"),
    )
    assert result.returncode == 0, result.stderr
    verdict = json.loads((tmp_path / "runs" / "x" / "results.jsonl").read_text())
    assert verdict["status"] == "patch_failed" and "escapes the repository" in verdict["error"]


def test_missing_bundle_and_unknown_base_commit_are_named(
    mini_tasks: MiniTasks, tmp_path: Path
) -> None:
    import shutil

    tasks = tmp_path / "tasks"
    shutil.copytree(mini_tasks.root, tasks)
    rows = [json.loads(x) for x in (tasks / "instances.jsonl").read_text().splitlines()]
    rows[1]["base_commit"] = "deadbeef" * 5
    (tasks / "instances.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    result = evalkit(
        "evaluate",
        "--tasks",
        str(tasks),
        "--gold",
        "--run-id",
        "x",
        "--runs-dir",
        str(tmp_path / "runs"),
        "-i",
        "acme__calc-2",
    )
    assert result.returncode == 2
    assert f"commit {'deadbeef' * 5} of acme__calc-2 is not in the bundle" in result.stderr
    (tasks / "repos" / "acme__calc.bundle").unlink()
    result = evalkit(
        "evaluate",
        "--tasks",
        str(tasks),
        "--gold",
        "--run-id",
        "y",
        "--runs-dir",
        str(tmp_path / "runs"),
    )
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert (
        "acme__calc.bundle: repository bundle is missing (needed by acme__calc-1)" in result.stderr
    )


# --- corrupted run records: one line naming file and line, exit 2 (no Docker needed) ---

GOOD_PRED = {"instance_id": "acme__calc-1", "model_name_or_path": "m", "model_patch": ""}


def crafted_run(mini_tasks: MiniTasks, runs: Path, run_id: str = "x") -> RunDir:
    """A finished run as evaluate leaves it: one empty-patch verdict, no containers."""
    run = RunDir.of(runs, run_id)
    write_model(
        run.manifest,
        RunManifest(
            run_id=run_id,
            evalkit_version="test",
            tasks_dir=str(mini_tasks.root.resolve()),
            tasks_sha256=load_task_set(mini_tasks.root).sha256(),
            predictions="p",
            timeout_s=0,
            workers=1,
            created_at="",
        ),
    )
    verdict = Verdict(
        instance_id="acme__calc-1",
        model_name_or_path="m",
        status=Status.EMPTY_PATCH,
        patch_sha256=sha256_text(""),
    )
    append_jsonl(run.results, [verdict])
    return run


def cli(mini_tasks: MiniTasks, tmp_path: Path, *extra: str, rows: Any = None) -> Result:
    preds = tmp_path / "p.jsonl"
    preds.write_text("".join(json.dumps(r) + "\n" for r in (rows or [GOOD_PRED])))
    args = ["evaluate", "--tasks", str(mini_tasks.root), "--run-id", "x"]
    args += ["--runs-dir", str(tmp_path / "runs"), "-p", str(preds), *extra]
    return CliRunner().invoke(app, args)


def one_line_exit_2(result: Result) -> str:
    assert result.exit_code == 2, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    assert "Traceback" not in result.output
    assert result.stderr.count("\n") == 1, result.stderr
    return result.stderr


def corrupt_results_dir(run: RunDir) -> str:
    run.results.unlink()
    run.results.mkdir()
    return f"{run.results}: is a directory"


def corrupt_manifest_truncated(run: RunDir) -> str:
    run.manifest.write_bytes(run.manifest.read_bytes()[:40])
    return f"{run.manifest}: not valid JSON"


def corrupt_manifest_utf8(run: RunDir) -> str:
    run.manifest.write_bytes(run.manifest.read_bytes().replace(b'"test"', b'"\xff"'))
    return f"{run.manifest}: not valid UTF-8"


def corrupt_manifest_newer(run: RunDir) -> str:
    data = json.loads(run.manifest.read_text())
    run.manifest.write_text(json.dumps({**data, "schema_version": 3}))
    return f"{run.manifest}: written by a newer evalkit (RunManifest schema 3"


def corrupt_manifest_old_layout(run: RunDir) -> str:
    data = json.loads(run.manifest.read_text())
    run.manifest.write_text(json.dumps({**data, "schema_version": 1}))
    return f"{run.manifest}: the run was made by an older evalkit"


def corrupt_run_lock_dir(run: RunDir) -> str:
    run.lock_file.mkdir()
    return f"{run.lock_file}: cannot open the run lock"


WHOLE_FILE_CORRUPTIONS = [
    corrupt_results_dir,
    corrupt_manifest_truncated,
    corrupt_manifest_utf8,
    corrupt_manifest_newer,
    corrupt_manifest_old_layout,
    corrupt_run_lock_dir,
]


@pytest.mark.parametrize("regrade", [False, True], ids=["evaluate", "regrade"])
@pytest.mark.parametrize("corrupt", WHOLE_FILE_CORRUPTIONS, ids=lambda f: f.__name__[8:])
def test_a_corrupt_run_file_is_one_line_naming_it_and_exit_2(
    mini_tasks: MiniTasks, tmp_path: Path, corrupt: Callable[[RunDir], str], regrade: bool
) -> None:
    run = crafted_run(mini_tasks, tmp_path / "runs")
    expected = corrupt(run)
    result = cli(mini_tasks, tmp_path, *(["--regrade"] if regrade else []))
    assert f"evalkit: error: {expected}" in one_line_exit_2(result)


BAD_RESULT_LINES = {
    "not-json": (b"{oops", "not valid JSON"),
    "not-utf8": (b'{"instance_id": "\xff"}', "not valid UTF-8"),
    "not-a-verdict": (b'{"valid": "json"}', "not a Verdict: missing field 'instance_id'"),
    "newer-verdict": (
        json.dumps(
            {"schema_version": 2, "instance_id": "i", "model_name_or_path": "z", "status": "?"}
        ).encode(),
        "written by a newer evalkit (Verdict schema 2; this evalkit reads up to 1): "
        "upgrade evalkit",
    ),
}


@pytest.mark.parametrize("bad", list(BAD_RESULT_LINES))
def test_regrade_refuses_an_unreadable_results_line_and_rewrites_nothing(
    mini_tasks: MiniTasks, tmp_path: Path, bad: str
) -> None:
    raw, reason = BAD_RESULT_LINES[bad]
    run = crafted_run(mini_tasks, tmp_path / "runs")
    with run.results.open("ab") as fh:
        fh.write(raw + b"\n")
    append_jsonl(
        run.results,
        [Verdict(instance_id="acme__calc-2", model_name_or_path="m", status=Status.EMPTY_PATCH)],
    )
    before = run.results.read_bytes()
    stderr = one_line_exit_2(cli(mini_tasks, tmp_path, "--regrade"))
    assert f"evalkit: error: {run.results}:2: {reason}" in stderr
    assert run.results.read_bytes() == before


@pytest.mark.parametrize("bad", list(BAD_RESULT_LINES))
def test_evaluate_reports_an_unreadable_results_line_keeps_it_and_copies_it_aside(
    mini_tasks: MiniTasks, tmp_path: Path, bad: str
) -> None:
    raw, reason = BAD_RESULT_LINES[bad]
    run = crafted_run(mini_tasks, tmp_path / "runs")
    with run.results.open("ab") as fh:
        fh.write(raw + b"\n")
    rows = [GOOD_PRED, {**GOOD_PRED, "instance_id": "acme__calc-2"}]
    for _ in range(2):  # reported on every resume, copied aside once
        result = cli(mini_tasks, tmp_path, rows=rows)
        assert result.exit_code == 2 and "Traceback" not in result.output
        assert f"evalkit: error: {run.results}:2: {reason}" in result.stderr
        # The line, then "1 record(s) could not be used" (besides the gold-check warning).
        lines = [x for x in result.stderr.splitlines() if "no gold check" not in x]
        assert len(lines) == 2
        assert raw + b"\n" in run.results.read_bytes()  # never compacted away
    verdicts = scan_verdicts(run.results).verdicts
    assert sorted(v.instance_id for v in verdicts) == ["acme__calc-1", "acme__calc-2"]
    (aside,) = run.rejected.read_text().splitlines()
    assert base64.b64decode(json.loads(aside)["raw_base64"]) == raw


@pytest.mark.parametrize("content", [b'{"apply_method": "git-ap', b'{"image": "\xff"}', None])
def test_regrade_names_a_corrupt_execution_record(
    mini_tasks: MiniTasks, tmp_path: Path, content: bytes | None
) -> None:
    run = crafted_run(mini_tasks, tmp_path / "runs")
    execution = run.unit("m", "acme__calc-1") / "execution.json"
    if content is None:
        execution.mkdir(parents=True)
    else:
        execution.parent.mkdir(parents=True)
        execution.write_bytes(content)
    before = run.results.read_bytes()
    stderr = one_line_exit_2(cli(mini_tasks, tmp_path, "--regrade"))
    assert f"evalkit: error: {execution}: " in stderr
    assert run.results.read_bytes() == before


def test_a_run_in_use_by_a_live_process_is_refused(mini_tasks: MiniTasks, tmp_path: Path) -> None:
    run = crafted_run(mini_tasks, tmp_path / "runs")
    proc, _ = hold_lock(run.path)
    try:
        for extra in ([], ["--regrade"]):
            stderr = one_line_exit_2(cli(mini_tasks, tmp_path, *extra))
            assert f"run 'x' is in use by another evalkit (pid {proc.pid} on " in stderr
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    result = cli(mini_tasks, tmp_path)  # the killed holder's lock is taken over
    assert result.exit_code == 0, result.output


def test_missing_model_patch_is_a_warning_and_counts_as_empty(
    mini_tasks: MiniTasks, tmp_path: Path
) -> None:
    row = {"instance_id": "acme__calc-1", "model_name_or_path": "m"}
    result = cli(mini_tasks, tmp_path, rows=[row])
    assert result.exit_code == 0, result.output
    preds = tmp_path / "p.jsonl"
    assert f"evalkit: warning: {preds}:1: no model_patch; counted as an empty patch" in (
        result.stderr
    )
    (verdict,) = scan_verdicts(tmp_path / "runs" / "x" / "results.jsonl").verdicts
    assert verdict.status is Status.EMPTY_PATCH


def test_hostile_model_names_never_crash_a_run(mini_tasks: MiniTasks, tmp_path: Path) -> None:
    unsafe = "diff --git a/../x b/../x\n--- a/../x\n+++ b/../x\n@@ -1 +1 @@\n-a\n+b\n"
    names = ["x" * 300, "é" * 200, "[/]", "[bold]x[/italic]", "a\nb", "nul\x00", "acme/agent"]
    names += ["acme__agent", "../../etc"]
    rows = [{"instance_id": "acme__calc-1", "model_name_or_path": n} for n in names]
    rows += [
        {"instance_id": "acme__calc-2", "model_name_or_path": n, "model_patch": unsafe}
        for n in ("[/]", "acme/agent", "x" * 300)
    ]
    result = cli(mini_tasks, tmp_path, rows=rows[:-1])
    assert result.exit_code == 0, result.output
    result = cli(mini_tasks, tmp_path, rows=rows)  # and resuming the same run
    assert result.exit_code == 0, result.output
    verdicts = scan_verdicts(tmp_path / "runs" / "x" / "results.jsonl").verdicts
    assert sorted(v.model_name_or_path for v in verdicts) == sorted(
        [*names, "[/]", "acme/agent", "x" * 300]
    )
    assert "Traceback" not in result.output
