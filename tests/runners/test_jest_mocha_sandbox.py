"""jest and mocha through the real harness: a fix resolves, a wrong fix and a config swap
do not."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from evalkit.harness import evaluate
from evalkit.records import Status
from tests.conftest import git, write_tree

DATA = Path(__file__).parent / "data"
SUM_V1 = "exports.sum = (a, b) => a - b;\nexports.twice = (a) => a * 2;\n"
SUM_V2 = "exports.sum = (a, b) => a + b;\nexports.twice = (a) => a * 2;\n"
# One test file both runners read (describe / it globals, node's assert).
TEST_V1 = """\
const assert = require("node:assert");
const { twice } = require("../src/sum");

describe("twice", () => {
  it("doubles", () => {
    assert.strictEqual(twice(2), 4);
  });
});
"""
TEST_V2 = (
    TEST_V1
    + """
describe("sum", () => {
  describe("small numbers", () => {
    it("adds two numbers", () => {
      assert.strictEqual(require("../src/sum").sum(1, 2), 3);
    });
  });
});
"""
)
# Swap in a config that selects nothing (so nothing could fail).
EVIL_CONFIG = {
    "jest": ("jest.config.js", 'module.exports = { testRegex: "^$", passWithNoTests: true };\n'),
    "mocha": (".mocharc.json", '{"grep": "^$", "spec": []}\n'),
}


def _tasks(root: Path, runner: str) -> Path:
    repo = root / "repo"
    repo.mkdir()
    write_tree(
        repo,
        {
            "package.json": (DATA / f"{runner}-package.json").read_text(),
            "package-lock.json": (DATA / f"{runner}-package-lock.json").read_text(),
            ".gitignore": "node_modules/\n",
            "src/sum.js": SUM_V1,
            "test/sum.test.js": TEST_V1,
        },
    )
    git(repo, "init", "-q")
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", "initial")
    base = git(repo, "rev-parse", "HEAD")
    write_tree(repo, {"src/sum.js": SUM_V2, "test/sum.test.js": TEST_V2})
    git(repo, "commit", "-qam", "fix sum")
    fix = git(repo, "rev-parse", "HEAD")
    out = root / "tasks"
    (out / "repos").mkdir(parents=True)
    git(repo, "bundle", "create", "-q", str(out / "repos" / f"acme__{runner}.bundle"), "--all")
    row = {
        "instance_id": f"acme__{runner}-1",
        "repo": f"acme/{runner}",
        "base_commit": base,
        "patch": git(repo, "diff", base, fix, "--", "src") + "\n",
        "test_patch": git(repo, "diff", base, fix, "--", "test") + "\n",
        "problem_statement": "sum subtracts",
        "FAIL_TO_PASS": ["test/sum.test.js > sum > small numbers > adds two numbers"],
        "PASS_TO_PASS": ["test/sum.test.js > twice > doubles"],
    }
    (out / "instances.jsonl").write_text(json.dumps(row) + "\n")
    name, text = EVIL_CONFIG[runner]
    write_tree(repo, {name: text})
    git(repo, "add", "-A")
    evil = git(repo, "diff", "--cached", "HEAD") + "\n"
    git(repo, "reset", "-q", "--hard")
    wrong = row["patch"].replace("a + b", "a * b")
    package = json.loads((DATA / f"{runner}-package.json").read_text())

    def package_patch(**changes: object) -> str:
        write_tree(repo, {"package.json": json.dumps({**package, **changes}, indent=2) + "\n"})
        text = git(repo, "diff", "HEAD", "--", "package.json") + "\n"
        git(repo, "reset", "-q", "--hard")
        return text

    # The runner's key in package.json is test configuration; the description is not.
    key = package_patch(**{runner: {"testRegex": "^$"} if runner == "jest" else {"grep": "^$"}})
    described = row["patch"] + package_patch(description="sums")
    iid = f"acme__{runner}-1"
    preds = [
        {"instance_id": iid, "model_name_or_path": "m/config", "model_patch": evil},
        {"instance_id": iid, "model_name_or_path": "m/wrong", "model_patch": wrong},
        {"instance_id": iid, "model_name_or_path": "m/package-key", "model_patch": key},
        {"instance_id": iid, "model_name_or_path": "m/described", "model_patch": described},
    ]
    (out / "preds.jsonl").write_text("".join(json.dumps(p) + "\n" for p in preds))
    return out


@pytest.mark.docker
@pytest.mark.parametrize("runner", ["jest", "mocha"])
def test_a_fix_resolves_and_a_wrong_fix_or_a_swapped_config_does_not(
    docker_engine: Any, tmp_path: Path, runner: str
) -> None:
    tasks = _tasks(tmp_path, runner)
    outcome = evaluate(
        tasks,
        tasks / "preds.jsonl",
        runner,
        gold=True,
        runs_dir=tmp_path / "runs",
        progress=False,
        log=lambda _: None,
    )
    got = {v.model_name_or_path: v for v in outcome.verdicts}
    assert got["gold"].status is Status.RESOLVED, got["gold"]
    assert got["m/wrong"].status is Status.UNRESOLVED
    assert got["m/config"].status is Status.UNRESOLVED
    assert got["m/config"].tampered_files == [EVIL_CONFIG[runner][0]]
    assert got["m/package-key"].status is Status.UNRESOLVED
    assert got["m/package-key"].tampered_files == ["package.json"]
    assert got["m/described"].status is Status.RESOLVED, got["m/described"]
    assert got["m/described"].tampered_files == []
