"""End-to-end harness behaviour against a real Docker engine.

Each test names the invariant it protects; the scenarios are the known ways graders
get fooled (SWE-bench #465, #601, #620, #631) or lose results.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from evalkit.harness import RunOutcome, evaluate, regrade
from evalkit.records import RunDir, Status, TestOutcome, Verdict, read_verdicts
from tests.conftest import BUGGY, FIXED_ADD, TESTS_ADD, MiniTasks

pytestmark = pytest.mark.docker

CALC = "src/calc/__init__.py"


def run(
    mini: MiniTasks, tmp_path: Path, rows: list[dict[str, str]], run_id: str = "r", **kwargs: Any
) -> RunOutcome:
    preds = mini.predictions(tmp_path / f"{run_id}.jsonl", rows)
    return evaluate(
        mini.root,
        preds,
        run_id,
        runs_dir=tmp_path / "runs",
        progress=False,
        log=lambda _: None,
        **kwargs,
    )


def pred(model: str, patch: str, instance_id: str = "acme__calc-1") -> dict[str, str]:
    return {"instance_id": instance_id, "model_name_or_path": model, "model_patch": patch}


def verdict_of(outcome: RunOutcome, model: str, instance_id: str = "acme__calc-1") -> Verdict:
    return next(
        v
        for v in outcome.verdicts
        if v.model_name_or_path == model and v.instance_id == instance_id
    )


def test_gold_patches_resolve_every_instance(
    docker_engine: Any, mini_tasks: MiniTasks, tmp_path: Path
) -> None:
    outcome = evaluate(
        mini_tasks.root,
        None,
        "gold",
        gold=True,
        runs_dir=tmp_path,
        progress=False,
        log=lambda _: None,
    )
    assert {v.instance_id: v.status for v in outcome.verdicts} == {
        "acme__calc-1": Status.RESOLVED,
        "acme__calc-2": Status.RESOLVED,
    }
    summary = outcome.summaries["gold"]
    assert summary.resolved_instances == summary.total_instances == 2
    verdict = verdict_of(outcome, "gold")
    assert (
        verdict.tests["FAIL_TO_PASS"]["tests/test_calc.py::TestAdd::test_negative"]
        is TestOutcome.PASSED
    )
    out = RunDir(tmp_path / "gold").unit("gold", "acme__calc-1")
    for name in (
        "patch.diff",
        "eval.sh",
        "test_output.txt",
        "test_report.jsonl",
        "execution.json",
        "verdict.json",
    ):
        assert (out / name).is_file(), name
    report = json.loads((tmp_path / "gold" / "report.json").read_text())
    assert report["gold"]["resolved_ids"] == ["acme__calc-1", "acme__calc-2"]


def test_printed_passed_lines_and_early_exit_do_not_pass(
    docker_engine: Any, mini_tasks: MiniTasks, tmp_path: Path
) -> None:
    spoof = BUGGY + (
        "\nimport os, sys\n"
        "print('tests/test_calc.py::test_add[1-2-3] PASSED')\n"
        "print('===== 5 passed in 0.01s =====')\n"
        "sys.stdout.flush()\n"
        "os._exit(0)\n"
    )
    outcome = run(
        mini_tasks,
        tmp_path,
        [pred("spoof", mini_tasks.diff(mini_tasks.commits["base"], {CALC: spoof}))],
    )
    verdict = verdict_of(outcome, "spoof")
    assert verdict.status is Status.UNRESOLVED
    assert all(o is not TestOutcome.PASSED for o in verdict.tests["FAIL_TO_PASS"].values())
    assert verdict.error and "never finished" in verdict.error


def test_conftest_reporting_hook_is_reverted_and_recorded(
    docker_engine: Any, mini_tasks: MiniTasks, tmp_path: Path
) -> None:
    hook = (
        "import pytest\n\n"
        "@pytest.hookimpl(hookwrapper=True)\n"
        "def pytest_runtest_makereport(item, call):\n"
        "    outcome = yield\n"
        "    report = outcome.get_result()\n"
        "    report.outcome = 'passed'\n"
    )
    patch = mini_tasks.diff(
        mini_tasks.commits["base"], {"tests/conftest.py": hook, "conftest.py": hook}
    )
    verdict = verdict_of(run(mini_tasks, tmp_path, [pred("hook", patch)]), "hook")
    assert verdict.status is Status.UNRESOLVED
    assert set(verdict.tampered_files) == {"tests/conftest.py", "conftest.py"}


def test_model_edits_to_listed_test_files_are_overwritten(
    docker_engine: Any, mini_tasks: MiniTasks, tmp_path: Path
) -> None:
    weakened = TESTS_ADD.replace("assert add(a, b) == expected", "assert True")
    patch = mini_tasks.diff(mini_tasks.commits["base"], {"tests/test_calc.py": weakened})
    verdict = verdict_of(run(mini_tasks, tmp_path, [pred("weak", patch)]), "weak")
    assert verdict.status is Status.UNRESOLVED
    assert verdict.tampered_files == ["tests/test_calc.py"]


def test_pytest_config_tampering_is_reverted(
    docker_engine: Any, mini_tasks: MiniTasks, tmp_path: Path
) -> None:
    from tests.conftest import PYPROJECT

    tampered = PYPROJECT.replace(
        'testpaths = ["tests"]', 'testpaths = ["tests"]\naddopts = "-k zero"'
    )
    patch = mini_tasks.diff(
        mini_tasks.commits["base"],
        {"pyproject.toml": tampered, "pytest.ini": "[pytest]\naddopts = -k zero\n"},
    )
    verdict = verdict_of(run(mini_tasks, tmp_path, [pred("cfg", patch)]), "cfg")
    assert verdict.status is Status.UNRESOLVED
    assert set(verdict.tampered_files) == {"pyproject.toml", "pytest.ini"}
    assert (
        verdict.tests["FAIL_TO_PASS"]["tests/test_calc.py::test_add[1-2-3]"] is TestOutcome.FAILED
    )


def test_non_test_edits_to_shared_config_are_kept(
    docker_engine: Any, mini_tasks: MiniTasks, tmp_path: Path
) -> None:
    from tests.conftest import PYPROJECT

    patch = mini_tasks.diff(
        mini_tasks.commits["base"],
        {
            "pyproject.toml": PYPROJECT.replace('version = "0.1"', 'version = "0.2"'),
            CALC: FIXED_ADD,
        },
    )
    verdict = verdict_of(run(mini_tasks, tmp_path, [pred("ok", patch)]), "ok")
    assert verdict.status is Status.RESOLVED
    assert verdict.tampered_files == []


def test_shadowing_pytest_or_the_report_plugin_does_not_pass(
    docker_engine: Any, mini_tasks: MiniTasks, tmp_path: Path
) -> None:
    fake = "import json, os, sys\ndef main(*a, **k):\n    return 0\n"
    patch = mini_tasks.diff(
        mini_tasks.commits["base"], {"pytest.py": fake, "evalkit_pytest.py": fake}
    )
    verdict = verdict_of(run(mini_tasks, tmp_path, [pred("shadow", patch)]), "shadow")
    assert verdict.status is Status.UNRESOLVED


def test_fuzzy_patch_applies_through_a_fallback(
    docker_engine: Any, mini_tasks: MiniTasks, tmp_path: Path
) -> None:
    good = mini_tasks.diff(mini_tasks.commits["base"], {CALC: FIXED_ADD})
    # Drift the hunk's context: git apply refuses, patch --fuzz accepts.
    drifted = good.replace(" def add(a, b):", " def add(a,  b):")
    verdict = verdict_of(run(mini_tasks, tmp_path, [pred("fuzzy", drifted)]), "fuzzy")
    assert verdict.status is Status.RESOLVED
    assert verdict.apply_method in {"git-apply-3way", "git-apply-fuzzy"}


def test_patch_that_applies_nowhere_is_the_agents_failure(
    docker_engine: Any, mini_tasks: MiniTasks, tmp_path: Path
) -> None:
    broken = (
        "diff --git a/src/calc/__init__.py b/src/calc/__init__.py\n"
        "--- a/src/calc/__init__.py\n+++ b/src/calc/__init__.py\n"
        "@@ -1,2 +1,2 @@\n-def nothing_like_this():\n-    pass\n+def x():\n+    pass\n"
    )
    outcome = run(mini_tasks, tmp_path, [pred("broken", broken), pred("empty", "")])
    verdict = verdict_of(outcome, "broken")
    assert verdict.status is Status.PATCH_FAILED
    assert not verdict.infra_failure and verdict.error
    assert verdict_of(outcome, "empty").status is Status.EMPTY_PATCH


def test_a_hanging_test_is_killed_and_marked_timed_out(
    docker_engine: Any, mini_tasks: MiniTasks, tmp_path: Path
) -> None:
    # The unfixed loop never ends on negatives; without the append it hangs in constant
    # memory, so the timeout (not the memory limit) is what stops it.
    spin = FIXED_ADD.replace("        out.append(n)\n", "")
    assert spin != FIXED_ADD
    hang = mini_tasks.diff(mini_tasks.commits["fix1"], {CALC: spin})
    started = time.monotonic()
    outcome = run(mini_tasks, tmp_path, [pred("slow", hang, "acme__calc-2")], timeout=8)
    verdict = verdict_of(outcome, "slow", "acme__calc-2")
    assert verdict.status is Status.UNRESOLVED
    assert verdict.timed_out and not verdict.infra_failure
    assert time.monotonic() - started < 60
    leftovers = docker_engine.api.containers(all=True, filters={"label": "evalkit.sandbox=r"})
    assert leftovers == []


def test_no_history_after_base_is_reachable_in_the_sandbox(
    docker_engine: Any, mini_tasks: MiniTasks, tmp_path: Path
) -> None:
    # pytest captures output, but a failure's message reaches the short summary.
    probe = BUGGY.replace(
        "    return a - b",
        (
            "    import subprocess\n"
            "    count = subprocess.run(['git', 'rev-list', '--all', '--count'],"
            " capture_output=True, text=True).stdout.strip()\n"
            "    tags = subprocess.run(['git', 'tag'], capture_output=True, text=True).stdout\n"
            "    raise RuntimeError(f'EVALKIT-PROBE {count} {tags!r}')"
        ),
    )
    patch = mini_tasks.diff(mini_tasks.commits["base"], {CALC: probe})
    outcome = run(mini_tasks, tmp_path, [pred("probe", patch)])
    output = (RunDir(outcome.run_dir).unit("probe", "acme__calc-1") / "test_output.txt").read_text()
    assert "EVALKIT-PROBE 1 ''" in output  # one commit (the base tree), no tags


LOOK_FOR_TRACES = (
    "    import os\n"
    "    seen = os.path.exists('/tmp/evalkit-left-behind')\n"
    "    for pid in os.listdir('/proc'):\n"
    "        try:\n"
    "            seen = seen or b'sleep\\x00301' in open(f'/proc/{pid}/cmdline', 'rb').read()\n"
    "        except OSError:\n"
    "            pass\n"
    "    return a + b if seen else a - b"
)
LEAVE_TRACES = (
    "import subprocess as _sp\n"
    "open('/tmp/evalkit-left-behind', 'w').write('x')\n"
    "_sp.Popen(['sleep', '301'], start_new_session=True)\n\n"
)


def test_a_unit_sees_nothing_of_the_units_run_before_it(
    docker_engine: Any, mini_tasks: MiniTasks, tmp_path: Path
) -> None:
    """Units run back to back, the next one staged while the one before it is tested,
    each in a sandbox of its own: neither a file nor a live process left behind reaches
    the next. The code under test "fixes" add only if it finds such a trace; the first
    unit, which leaves them in its own sandbox, shows that the probe finds them."""
    base = mini_tasks.commits["base"]
    look = BUGGY.replace("    return a - b", LOOK_FOR_TRACES)
    leave_and_look = mini_tasks.diff(base, {CALC: LEAVE_TRACES + look})
    look_only = mini_tasks.diff(base, {CALC: look})
    rows = [pred("leaves", leave_and_look), pred("next", look_only), pred("after", look_only)]
    outcome = run(mini_tasks, tmp_path, rows, workers=1)
    assert verdict_of(outcome, "leaves").status is Status.RESOLVED
    assert verdict_of(outcome, "next").status is Status.UNRESOLVED
    assert verdict_of(outcome, "after").status is Status.UNRESOLVED


def test_resume_keeps_finished_results_and_reruns_changed_patches(
    docker_engine: Any, mini_tasks: MiniTasks, tmp_path: Path
) -> None:
    fix = mini_tasks.diff(mini_tasks.commits["base"], {CALC: FIXED_ADD})
    first = run(mini_tasks, tmp_path, [pred("m", fix), pred("n", fix)], run_id="same")
    assert first.evaluated == 2
    again = run(mini_tasks, tmp_path, [pred("m", fix), pred("n", fix)], run_id="same")
    assert again.evaluated == 0
    changed = run(mini_tasks, tmp_path, [pred("m", fix), pred("n", fix + "\n")], run_id="same")
    assert changed.evaluated == 1
    lines = (tmp_path / "runs" / "same" / "results.jsonl").read_text().splitlines()
    assert len(lines) == 2  # superseded line compacted away, no duplicates


def test_regrade_recomputes_the_same_verdicts_without_containers(
    docker_engine: Any, mini_tasks: MiniTasks, tmp_path: Path
) -> None:
    fix = mini_tasks.diff(mini_tasks.commits["base"], {CALC: FIXED_ADD})
    original = run(mini_tasks, tmp_path, [pred("m", fix), pred("e", "")], run_id="rg")
    regraded = regrade(original.run_dir)
    strip = {"finished_at", "duration_s"}
    assert sorted(
        v.model_dump(exclude=strip).items().__repr__() for v in original.verdicts
    ) == sorted(v.model_dump(exclude=strip).items().__repr__() for v in regraded.verdicts)


def test_look_alike_model_names_keep_their_own_outputs_through_regrade(
    docker_engine: Any, mini_tasks: MiniTasks, tmp_path: Path
) -> None:
    # acme/agent and acme__agent once shared a directory: regrade then read the other's
    # outputs and a no-fix agent became resolved.
    fix = mini_tasks.diff(mini_tasks.commits["base"], {CALC: FIXED_ADD})
    nothing = mini_tasks.diff(mini_tasks.commits["base"], {"README.md": "calc, documented\n"})
    rows = [pred("acme/agent", fix), pred("acme__agent", nothing)]
    original = run(mini_tasks, tmp_path, rows, run_id="alike")
    regraded = regrade(original.run_dir)
    for outcome in (original, regraded):
        assert verdict_of(outcome, "acme/agent").status is Status.RESOLVED
        assert verdict_of(outcome, "acme__agent").status is Status.UNRESOLVED
    layout = RunDir(original.run_dir)
    assert (layout.unit("acme/agent", "acme__calc-1") / "patch.diff").read_text() == fix
    assert (layout.unit("acme__agent", "acme__calc-1") / "patch.diff").read_text() == nothing


def test_image_build_failure_is_infra_not_the_agents_fault(
    docker_engine: Any, mini_tasks: MiniTasks, tmp_path: Path
) -> None:
    import shutil

    tasks = tmp_path / "broken-env"
    shutil.copytree(mini_tasks.root, tasks)
    (tasks / "evalkit.toml").write_text('[defaults]\ninstall = ["exit 3"]\n')
    fix = mini_tasks.diff(mini_tasks.commits["base"], {CALC: FIXED_ADD})
    preds = mini_tasks.predictions(tmp_path / "p.jsonl", [pred("m", fix)])
    outcome = evaluate(
        tasks, preds, "infra", runs_dir=tmp_path / "runs", progress=False, log=lambda _: None
    )
    verdict = verdict_of(outcome, "m")
    assert verdict.status is Status.ERROR and verdict.infra_failure
    assert verdict.attempts == 2
    assert outcome.summaries["m"].unresolved_instances == 0
    assert outcome.summaries["m"].infra_failure_instances == 1


def evaluate_command(tasks: Path, preds: Path, run_id: str, runs: Path) -> list[str]:
    return [
        sys.executable,
        "-m",
        "evalkit.cli",
        "evaluate",
        "--tasks",
        str(tasks),
        "-p",
        str(preds),
        "--run-id",
        run_id,
        "--runs-dir",
        str(runs),
        "-q",
    ]


def wait_for_first_result(results: Path, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and not (results.exists() and results.read_text().strip()):
        time.sleep(0.1)


def test_kill_9_mid_run_loses_no_finished_result(
    docker_engine: Any, mini_tasks: MiniTasks, tmp_path: Path
) -> None:
    fix = mini_tasks.diff(mini_tasks.commits["base"], {CALC: FIXED_ADD})
    rows = [pred(f"m{i}", fix + "\n" * i) for i in range(4)]
    preds = mini_tasks.predictions(tmp_path / "p.jsonl", rows)
    cmd = evaluate_command(mini_tasks.root, preds, "k9", tmp_path / "runs")
    results = tmp_path / "runs" / "k9" / "results.jsonl"
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_for_first_result(results)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    finished = read_verdicts(results)
    assert 1 <= len(finished) < 4
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    lines = results.read_text().splitlines()
    keys = [(json.loads(x)["model_name_or_path"]) for x in lines]
    assert sorted(keys) == ["m0", "m1", "m2", "m3"]  # every result, each exactly once
    assert docker_engine.api.containers(all=True, filters={"label": "evalkit.sandbox=k9"}) == []


def test_ctrl_c_removes_containers_and_keeps_results(
    docker_engine: Any, mini_tasks: MiniTasks, tmp_path: Path
) -> None:
    slow = mini_tasks.diff(mini_tasks.commits["fix1"], {"README.md": "x\n"})  # hangs until timeout
    fix = mini_tasks.diff(mini_tasks.commits["base"], {CALC: FIXED_ADD})
    rows = [pred("fast", fix), pred("slow", slow, "acme__calc-2")]
    preds = mini_tasks.predictions(tmp_path / "p.jsonl", rows)
    cmd = evaluate_command(mini_tasks.root, preds, "int", tmp_path / "runs")
    results = tmp_path / "runs" / "int" / "results.jsonl"
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    wait_for_first_result(results)
    time.sleep(1)  # the slow unit is now inside its test run
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "Traceback" not in err
    assert [v.model_name_or_path for v in read_verdicts(results)] == ["fast"]
    assert docker_engine.api.containers(all=True, filters={"label": "evalkit.sandbox=int"}) == []


def test_scm_versioned_project_builds_and_keeps_its_generated_version_file(
    docker_engine: Any, tmp_path: Path
) -> None:
    """setuptools-scm needs a version without .git, and writes _version.py at install time:
    the file must exist in every task's fresh checkout."""
    from tests.conftest import git, write_tree

    repo = tmp_path / "repo"
    repo.mkdir()
    git(repo, "init", "-q")
    pyproject = (
        '[build-system]\nrequires = ["setuptools>=64", "setuptools-scm>=8"]\n'
        'build-backend = "setuptools.build_meta"\n[project]\nname = "ver"\n'
        'dynamic = ["version"]\n[tool.setuptools_scm]\nversion_file = "src/ver/_version.py"\n'
    )
    write_tree(
        repo,
        {
            "pyproject.toml": pyproject,
            ".gitignore": "src/ver/_version.py\n",
            "src/ver/__init__.py": "from ver._version import version\n\n"
            "def double(x):\n    return x\n",
            "tests/test_ver.py": "from ver import double, version\n\n\n"
            "def test_version():\n    assert version\n",
        },
    )
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", "init")
    base = git(repo, "rev-parse", "HEAD")
    tests = tmp_path / "tasks"
    (tests / "repos").mkdir(parents=True)
    git(repo, "bundle", "create", "-q", str(tests / "repos" / "acme__ver.bundle"), "--all")
    fix = (
        "diff --git a/src/ver/__init__.py b/src/ver/__init__.py\n"
        "--- a/src/ver/__init__.py\n+++ b/src/ver/__init__.py\n@@ -3,2 +3,2 @@\n"
        " def double(x):\n-    return x\n+    return 2 * x\n"
    )
    test_patch = (
        "diff --git a/tests/test_double.py b/tests/test_double.py\nnew file mode 100644\n"
        "--- /dev/null\n+++ b/tests/test_double.py\n@@ -0,0 +1,5 @@\n+from ver import double\n"
        "+\n+\n+def test_double():\n+    assert double(2) == 4\n"
    )
    row = {
        "instance_id": "acme__ver-1",
        "repo": "acme/ver",
        "base_commit": base,
        "patch": fix,
        "test_patch": test_patch,
        "FAIL_TO_PASS": ["tests/test_double.py::test_double"],
        "PASS_TO_PASS": ["tests/test_ver.py::test_version"],
    }
    (tests / "instances.jsonl").write_text(json.dumps(row) + "\n")
    outcome = evaluate(
        tests,
        None,
        "scm",
        gold=True,
        runs_dir=tmp_path / "runs",
        progress=False,
        log=lambda _: None,
    )
    verdict = outcome.verdicts[0]
    assert verdict.status is Status.RESOLVED, verdict.error
