"""The CLI is cheap to import, documents itself, and turns mistakes into one-line errors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.conftest import MiniTasks


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
