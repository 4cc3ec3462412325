"""``evalkit bakeoff``: the examples in its help work as written, mistakes are one line
with exit code 2, and mounting it keeps ``import evalkit.cli`` cheap."""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from evalkit.bakeoff.records import AttemptLog, write_manifest
from evalkit.bakeoff.store import open_store
from tests.bakeoff.test_records import attempt, manifest

ROOT = Path(__file__).resolve().parents[2]
COMMANDS = ("run", "check", "history", "init")


def evalkit(
    *args: str, cwd: Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    environ = {**os.environ, "PYTHONPATH": str(ROOT), "COLUMNS": "200", **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "evalkit.cli", *args],
        cwd=cwd,
        env=environ,
        capture_output=True,
        text=True,
        check=False,
    )


def examples() -> dict[str, list[list[str]]]:
    """The example command lines of each bakeoff command, from its docstring."""
    from evalkit.bakeoff.cli import app

    out: dict[str, list[list[str]]] = {}
    for command in app.registered_commands:
        assert command.callback is not None
        name = command.name or command.callback.__name__
        lines = (command.callback.__doc__ or "").splitlines()
        out[name] = [shlex.split(x.strip())[1:] for x in lines if x.strip().startswith("evalkit ")]
    return out


def one_line_error(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 2, (result.stdout, result.stderr)
    assert "Traceback" not in result.stderr and result.stderr.strip().count("\n") == 0, (
        result.stderr
    )
    return result.stderr.strip()


def test_every_command_has_examples_in_help(tmp_path: Path) -> None:
    found = examples()
    assert set(found) == set(COMMANDS)
    for name in COMMANDS:
        assert found[name], name
        help_text = evalkit("bakeoff", name, "--help", cwd=tmp_path).stdout
        assert "Example" in help_text, name
        for example in found[name]:
            assert " ".join(example[:3]) in " ".join(help_text.split()), (name, example)


def seed_run(runs: Path) -> None:
    write_manifest(runs / "nightly" / "bakeoff.json", manifest(repeats=1))
    log = AttemptLog(runs / "nightly" / "attempts.jsonl")
    log.append(attempt(instance_id="evalkit-samples__textkit-1"))
    with open_store(runs / "evalkit.db") as db:  # as the run would have
        db.import_run(runs / "nightly")


def test_the_examples_work_as_written(tmp_path: Path) -> None:
    (tmp_path / "tasks").symlink_to(ROOT / "tasks")
    found = examples()
    ran = []
    for name in ("init", "check", "run", "history"):
        if name == "history":
            seed_run(tmp_path / "runs")
        for example in found[name]:
            args = list(example)
            if args[1] == "run" and "--dry-run" not in args:
                # A real run needs Docker and the runner; the flags and plan are checked here.
                args.append("--dry-run")
            result = evalkit(*args, cwd=tmp_path)
            assert result.returncode == 0, (args, result.stdout, result.stderr)
            ran.append((args, result.stdout))
    outputs = {" ".join(a): out for a, out in ran}
    assert "config: demo/bakeoff.toml" in outputs["bakeoff init demo --tasks tasks/sample"]
    assert "ok" in outputs["bakeoff check demo/bakeoff.toml --no-build"].splitlines()
    dry = outputs[
        "bakeoff run demo/bakeoff.toml --tasks tasks/sample -a oracle,liar -k 2 --dry-run"
    ]
    assert "2 agent(s) x 4 task(s) x 2 repeat(s) = 16 attempts" in dry
    assert "synced nightly: 1 attempt(s)" in outputs["bakeoff history --runs-dir runs --sync"]
    assert "nightly" in outputs["bakeoff history --store runs/evalkit.db"]
    assert "oracle: resolved per night" in outputs["bakeoff history --agent oracle"]


def test_config_mistakes_exit_2_in_one_line(tmp_path: Path) -> None:
    config = tmp_path / "bakeoff.toml"
    config.write_text('[[agents]]\nname = "x"\nadapter = "cursor"\n')
    for args in (
        ("check", str(config)),
        ("run", str(config), "--tasks", str(ROOT / "tasks/sample")),
    ):
        message = one_line_error(evalkit("bakeoff", *args, cwd=tmp_path))
        assert message.startswith(f"evalkit: error: {config}: agents[0].adapter: unknown adapter")
    message = one_line_error(evalkit("bakeoff", "check", str(tmp_path / "none.toml"), cwd=tmp_path))
    assert "bake-off config not found" in message


def test_run_flags_are_checked_before_anything_runs(tmp_path: Path) -> None:
    (tmp_path / "tasks").symlink_to(ROOT / "tasks")
    assert evalkit("bakeoff", "init", "demo", "--cli-agent", "none", cwd=tmp_path).returncode == 0
    base = ("bakeoff", "run", "demo/bakeoff.toml", "--tasks", "tasks/sample", "--dry-run")
    message = one_line_error(evalkit(*base, "--agents", "oracle,codex", cwd=tmp_path))
    assert "--agents: unknown agent(s) 'codex'" in message
    message = one_line_error(evalkit(*base, "-i", "nope", cwd=tmp_path))
    assert "--instance-ids: not in the task set: nope" in message
    message = one_line_error(evalkit(*base, "--run-id", "a/b", cwd=tmp_path))
    assert "--run-id 'a/b'" in message
    message = one_line_error(
        evalkit("bakeoff", "run", "demo/bakeoff.toml", "--tasks", "missing", cwd=tmp_path)
    )
    assert "task set directory not found" in message


def test_a_resumed_run_id_reports_progress_and_refuses_another_config(tmp_path: Path) -> None:
    (tmp_path / "tasks").symlink_to(ROOT / "tasks")
    assert evalkit("bakeoff", "init", "demo", "--cli-agent", "none", cwd=tmp_path).returncode == 0
    runs = tmp_path / "runs"
    # Another config's run under the same id.
    write_manifest(runs / "nightly" / "bakeoff.json", manifest(repeats=1))
    AttemptLog(runs / "nightly" / "attempts.jsonl").append(
        attempt(instance_id="evalkit-samples__textkit-1")
    )
    base = ("bakeoff", "run", "demo/bakeoff.toml", "--tasks", "tasks/sample", "--run-id", "nightly")
    message = one_line_error(evalkit(*base, "--dry-run", cwd=tmp_path))
    assert "was started with a different config" in message and "use a new --run-id" in message
    # Without a manifest, attempts already finished count as done.
    (runs / "nightly" / "bakeoff.json").unlink()
    result = evalkit(*base, "--dry-run", "-a", "oracle", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "(1 done, 3 to run, 1 at a time)" in result.stdout
    assert "evalkit-samples__textkit-1" not in result.stdout.split("\n", 1)[1]


def test_check_names_host_variables_that_are_missing(tmp_path: Path) -> None:
    (tmp_path / "run.sh").write_text("true\n")
    (tmp_path / "bakeoff.toml").write_text(
        '[models.team]\nbase_url = "http://127.0.0.1:1"\napi_key_env = "EVALKIT_TEST_TEAM_KEY"\n'
        "price = { input_per_mtok = 1.0, output_per_mtok = 2.0 }\n"
        '[[agents]]\nname = "s"\nadapter = "command"\ncommand = ["bash", "/agent/run.sh"]\n'
        'files = { "/agent/run.sh" = "run.sh" }\nupstream = "team"\n'
        'env = ["BAKEOFF_TEST_FLAG"]\n'
    )
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("EVALKIT_TEST_TEAM_KEY", "BAKEOFF_TEST_FLAG")
    }
    result = subprocess.run(
        [sys.executable, "-m", "evalkit.cli", "bakeoff", "check", "bakeoff.toml"],
        cwd=tmp_path,
        env={**env, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "models.team.api_key_env: EVALKIT_TEST_TEAM_KEY is not set here" in result.stderr
    assert "agents[0].env: not set here: BAKEOFF_TEST_FLAG" in result.stderr
    ok = evalkit(
        "bakeoff",
        "check",
        "bakeoff.toml",
        cwd=tmp_path,
        env={"EVALKIT_TEST_TEAM_KEY": "k", "BAKEOFF_TEST_FLAG": "1"},
    )
    assert ok.returncode == 0 and "s: command files-" in ok.stdout


def test_history_of_a_broken_store_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "runs").mkdir()
    (tmp_path / "runs" / "evalkit.db").write_bytes(b"garbage" * 1000)
    message = one_line_error(evalkit("bakeoff", "history", cwd=tmp_path))
    assert "runs/evalkit.db: not an evalkit store" in message
    result = evalkit("bakeoff", "history", "--store", "elsewhere.db", cwd=tmp_path)
    assert result.returncode == 0 and "no bake-offs recorded yet" in result.stdout
    assert not (tmp_path / "elsewhere.db").exists()


def test_mounting_bakeoff_keeps_the_cli_import_cheap() -> None:
    code = (
        "import sys, evalkit.cli; "
        "loaded = {'sqlite3', 'evalkit.bakeoff.store', 'evalkit.bakeoff.config', 'docker'}"
        " & set(sys.modules); print(sorted(loaded))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert out.stdout.strip() == "[]", out.stdout


@pytest.mark.parametrize("command", COMMANDS)
def test_each_command_is_mounted_under_bakeoff(tmp_path: Path, command: str) -> None:
    result = evalkit("bakeoff", command, "--help", cwd=tmp_path)
    assert result.returncode == 0 and f"bakeoff {command}" in result.stdout
