"""Runner adapters: detection, ids, selection files, config pinning and test-file rules."""

from __future__ import annotations

import json
from collections import Counter
from datetime import date

import pytest

from evalkit.grading import TestReport, parse_test_report, summary_problem
from evalkit.harness import prepare_config
from evalkit.node_env import build_files, infer_node_spec, node_major, package_manager
from evalkit.patch import is_test_infrastructure, is_test_path
from evalkit.records import Prediction, TaskInstance
from evalkit.runners import detect_runner, get_runner
from evalkit.runners.node import EMPTY_CONFIG, JEST, MOCHA, VITEST

PKG = json.dumps({"name": "x", "devDependencies": {"vitest": "3.2.4"}})


def test_the_runner_is_detected_from_package_json_and_defaults_to_pytest() -> None:
    assert detect_runner({"package.json": PKG}).name == "vitest"
    jest = json.dumps({"devDependencies": {"jest": "29"}})
    assert detect_runner({"package.json": jest}).name == "jest"
    mocha = json.dumps({"dependencies": {"mocha": "10"}})
    assert detect_runner({"package.json": mocha}).name == "mocha"
    assert detect_runner({"package.json": "{not json"}).name == "pytest"
    assert detect_runner({"pyproject.toml": ""}).name == "pytest"
    assert get_runner(None).name == "pytest"  # runs recorded before runners had names


def test_js_ids_name_their_file_and_swebench_colon_ids_map_onto_them() -> None:
    ids = ["test/a.test.ts > d > t one", "test/a.test.ts > d > t two", "src/b.spec.js > x"]
    assert VITEST.test_files(ids) == ["test/a.test.ts", "src/b.spec.js"]
    assert VITEST.from_swebench_id("test/a.test.ts::d::t") == "test/a.test.ts > d > t"
    assert VITEST.from_swebench_id("test/a.test.ts > d > t") == "test/a.test.ts > d > t"


@pytest.mark.parametrize(
    "path",
    ["src/a.test.ts", "lib/b.spec.mjs", "src/__tests__/c.tsx", "test/helpers.js", "x.test.cjs"],
)
def test_js_test_files_are_recognised(path: str) -> None:
    assert is_test_path(path)


@pytest.mark.parametrize("path", ["src/latest.ts", "src/contest.js", "src/testing.ts", "a.test.md"])
def test_js_sources_are_not_tests(path: str) -> None:
    assert not is_test_path(path)


@pytest.mark.parametrize(
    "path",
    [
        "vitest.config.ts",
        "vite.config.mjs",
        "jest.config.js",
        ".mocharc.yml",
        "node_modules/vitest/index.js",
        "pkg/node_modules/x.js",
        "package.json",
        "tsconfig.build.json",
    ],
)
def test_runner_config_is_test_infrastructure(path: str) -> None:
    assert is_test_infrastructure(path)


def _instance() -> TaskInstance:
    return TaskInstance(
        instance_id="o__r-1",
        repo="o/r",
        base_commit="0" * 40,
        patch="",
        test_patch="",
        problem_statement="",
        FAIL_TO_PASS=[],
        PASS_TO_PASS=[],
    )


def _diff(path: str) -> str:
    return f"diff --git a/{path} b/{path}\n--- a/{path}\n+++ b/{path}\n@@ -1 +1 @@\n-a\n+b\n"


def test_package_json_and_tsconfig_revert_only_when_their_test_parts_change() -> None:
    patch = _diff("package.json") + _diff("tsconfig.json") + _diff("vitest.config.ts")
    config = prepare_config(
        _instance(), Prediction(instance_id="o__r-1", model_name_or_path="m", model_patch=patch)
    )
    assert config["revert_always"] == ["vitest.config.ts"]
    assert config["revert_if_test_config_changed"] == ["package.json", "tsconfig.json"]


def test_the_base_config_is_pinned_and_without_one_none_is_read() -> None:
    files = {"vite.config.ts": "", "vitest.config.mts": ""}
    assert VITEST.pinned_config(files, []) == "/testbed/vitest.config.mts"
    assert VITEST.pinned_config({}, []) == EMPTY_CONFIG
    assert JEST.pinned_config({"package.json": '{"jest": {}}'}, []) == "/testbed/package.json"
    assert MOCHA.pinned_config({".mocharc.json": "{}"}, []) == "/testbed/.mocharc.json"


def _evidence(*records: dict[str, object]) -> str:
    lines = [json.dumps({"event": "runner", "name": "vitest"})]
    lines += [json.dumps(r) for r in records]
    return json.dumps({"connections": [{"authenticated": True, "lines": lines}]})


def test_js_reports_have_one_result_per_test_and_no_phases() -> None:
    report = parse_test_report(
        _evidence(
            {"event": "test", "nodeid": "a.test.ts > t", "when": "call", "outcome": "passed"},
            {"event": "session_finish", "exitstatus": 0},
            {"event": "end"},
        )
    )
    assert report.runner == "vitest" and not report.integrity
    assert report.counts == Counter(passed=1)


def test_a_second_result_for_one_js_test_is_an_integrity_finding() -> None:
    twice = {"event": "test", "nodeid": "a.test.ts > t", "when": "call", "outcome": "passed"}
    report = parse_test_report(_evidence(twice, twice, {"event": "session_finish"}))
    assert any("second call" in f for f in report.integrity)


def test_vitest_summary_must_agree_with_the_report() -> None:
    report = TestReport(runner="vitest", counts=Counter(passed=2, failed=1))
    agree = "\x1b[2m      Tests \x1b[22m 1 failed | 2 passed (3)\n"
    assert summary_problem(report, agree) is None
    assert "says 3 passed" in str(summary_problem(report, "      Tests  3 passed (3)\n"))
    forged = agree + " Tests  3 passed (3)\n"
    assert "more than once" in str(summary_problem(report, forged))
    assert "no final summary" in str(summary_problem(report, ""))


def test_jest_and_mocha_summaries_are_read() -> None:
    assert JEST.summaries("Tests:       1 failed, 4 passed, 5 total\n") == [
        Counter(failed=1, passed=4)
    ]
    assert MOCHA.summaries("\n  3 passing (5ms)\n  1 failing\n") == [Counter(passed=3, failed=1)]


def test_node_version_comes_from_nvmrc_then_engines_then_the_commit_date() -> None:
    assert node_major({".nvmrc": "v20.11.0\n"}) == 20
    assert node_major({"package.json": json.dumps({"engines": {"node": ">=16"}})}) == 18
    assert node_major({"package.json": json.dumps({"engines": {"node": "^19 || ^20"}})}) == 20
    assert node_major({}, date(2025, 3, 1)) == 20
    assert node_major({}) == 18


def test_the_package_manager_follows_the_lockfile() -> None:
    assert package_manager({"package-lock.json": "{}"})[1].startswith("npm ci")
    assert "pnpm install --frozen-lockfile" in package_manager({"pnpm-lock.yaml": ""})[1]
    assert "--frozen-lockfile" in package_manager({"yarn.lock": "# yarn v1\n"})[1]
    assert "--immutable" in package_manager({"yarn.lock": "__metadata:\n"})[1]


def test_a_node_repo_gets_a_node_spec_and_a_python_package_does_not() -> None:
    spec = infer_node_spec({"package.json": PKG, "package-lock.json": "{}"})
    assert spec is not None and spec.runner == "vitest" and spec.node == "18"
    assert infer_node_spec({"package.json": PKG, "pyproject.toml": ""}) is None


def test_a_release_bump_keeps_the_node_image() -> None:
    lock = {"name": "x", "version": "1.0.0", "packages": {"": {"version": "1.0.0"}}}
    bumped = {**lock, "version": "1.0.1", "packages": {"": {"version": "1.0.1"}}}
    spec = infer_node_spec({"package.json": PKG, "package-lock.json": json.dumps(lock)})
    assert spec is not None
    one = spec.build_key(build_files({"package.json": PKG, "package-lock.json": json.dumps(lock)}))
    two = spec.build_key(
        build_files({"package.json": PKG, "package-lock.json": json.dumps(bumped)})
    )
    changed = {**lock, "packages": {"": {"version": "1.0.0"}, "node_modules/a": {}}}
    three = spec.build_key(
        build_files({"package.json": PKG, "package-lock.json": json.dumps(changed)})
    )
    assert one == two != three
