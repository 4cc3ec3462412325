"""Node environments: which Node a commit gets, npm ranges, monorepo workspaces (the
runner found in the root lockfile, the tests run in their workspace, every workspace's
node_modules kept), and, with Docker, npm and pnpm workspaces on trixie's Node 20."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import date, datetime, timezone
from pathlib import Path
from typing import Any

import pytest

from evalkit.environment import SpecFile, resolve_spec
from evalkit.node_env import (
    DEBIAN_NODE,
    dated_node,
    infer_node_spec,
    node_major,
    satisfies,
    workspace_dependencies,
)
from evalkit.runners.node import EMPTY_CONFIG, JEST, MOCHA, VITEST, workspace_dirs
from tests.conftest import git, write_tree

DATA = Path(__file__).parent / "data"
LAYOUT = Path(__file__).resolve().parent.parent / "harness" / "env_node_layout.py"


def _pkg(**fields: object) -> str:
    return json.dumps({"name": "p", "devDependencies": {"vitest": "1.0.0"}, **fields})


# --- which Node -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("day", "major"),
    [
        (date(2018, 3, 1), 18),  # before Node 12: the oldest Debian Node
        (date(2021, 6, 1), 18),  # Node 14: the Debian Node at or above it
        (date(2023, 1, 10), 18),  # Node 18: bookworm
        (date(2024, 2, 1), 20),  # Node 20: trixie
        (date(2026, 1, 1), 20),  # newer than any Debian Node: the newest
    ],
)
def test_a_commit_gets_the_node_of_its_time_as_a_debian_node(day: date, major: int) -> None:
    assert dated_node(day) == major
    assert major in DEBIAN_NODE.values()
    assert node_major({"package.json": _pkg()}, day) == major


def test_nvmrc_wins_over_engines_and_the_date() -> None:
    files = {".nvmrc": "v16.20.0\n", "package.json": _pkg(engines={"node": ">=20"})}
    assert node_major(files, date(2024, 5, 1)) == 16


@pytest.mark.parametrize(
    ("engines", "day", "major"),
    [
        (">=16", None, 18),  # no date: 18 when allowed
        (">=10", date(2020, 1, 1), 18),  # the Debian Node above the date's
        (">=10", date(2024, 3, 1), 20),
        (">=20", date(2019, 1, 1), 20),  # the date's Node is not allowed: the next one
        ("^19 || ^20", None, 20),
        ("<19", date(2024, 3, 1), 18),  # nothing at or above the date's Node: the newest allowed
        (">=18.21", None, 20),  # bookworm ships 18.20
        ("14.x", None, 14),  # no Debian Node fits: its major (a registry image)
        ("12 - 16", date(2024, 1, 1), 12),  # its lowest major
    ],
)
def test_engines_node_is_a_range_the_chosen_debian_node_must_satisfy(
    engines: str, day: date | None, major: int
) -> None:
    assert node_major({"package.json": _pkg(engines={"node": engines})}, day) == major


@pytest.mark.parametrize(
    ("version", "text", "expected"),
    [
        ((18, 19, 0), ">=18", True),
        ((18, 19, 0), ">=18.20.0", False),
        ((18, 20, 4), ">=18.20.0", True),
        ((18, 19, 0), "^18.0.0", True),
        ((20, 19, 2), "^18.0.0", False),
        ((20, 19, 2), "~20.19", True),
        ((20, 19, 2), "~20.18", False),
        ((12, 22, 12), ">=10 <13", True),
        ((18, 19, 0), ">= 14.17 < 19", True),
        ((20, 19, 2), "*", True),
        ((20, 19, 2), "18.x || 20.x", True),
        ((20, 19, 2), ">20", False),
        ((20, 19, 2), "<=20", True),
        ((20, 19, 2), "node lts", None),
    ],
)
def test_npm_ranges(version: tuple[int, int, int], text: str, expected: bool | None) -> None:
    assert satisfies(version, text) is expected


def test_resolve_spec_passes_the_environment_commits_date_to_node() -> None:
    files = {"package.json": _pkg(), "package-lock.json": "{}"}
    old = datetime(2023, 5, 1, tzinfo=timezone.utc)
    new = datetime(2024, 5, 1, tzinfo=timezone.utc)
    assert resolve_spec(SpecFile(), "a/b", "a__b-1", files, old).node == "18"
    assert resolve_spec(SpecFile(), "a/b", "a__b-1", files, new).node == "20"
    assert resolve_spec(SpecFile(), "a/b", "a__b-1", files, None).node == "18"
    # A repository that names its Node keeps it, whatever the date.
    pinned = {**files, ".nvmrc": "20\n"}
    assert resolve_spec(SpecFile(), "a/b", "a__b-1", pinned, old).node == "20"
    # The Node is in the image key: a commit of another time gets another image.
    keys = {resolve_spec(SpecFile(), "a/b", "i", files, d).build_key({}) for d in (old, new)}
    assert len(keys) == 2


# --- monorepos ----------------------------------------------------------------------

WS_ROOT = {
    "name": "acme-monorepo",
    "version": "1.0.0",
    "private": True,
    "workspaces": ["packages/*"],
    "engines": {"node": ">=20"},
    "dependencies": {"ms": "2.1.3"},
}
WS_FOO = {
    "name": "@acme/foo",
    "version": "1.0.0",
    "dependencies": {"@acme/bar": "1.0.0", "ms": "2.0.0"},
    "devDependencies": {"mocha": "10.8.2"},
}
WS_BAR = {"name": "@acme/bar", "version": "1.0.0", "main": "index.js"}


def _workspace_files(manager: str) -> dict[str, str]:
    """The monorepo's manifests and lockfile for npm or pnpm workspaces (the lockfiles
    were made from exactly these with ``npm install --package-lock-only`` and
    ``pnpm install --lockfile-only``)."""
    root, foo = dict(WS_ROOT), json.loads(json.dumps(WS_FOO))
    if manager == "npm":
        lock = {"package-lock.json": (DATA / "npm-workspace-package-lock.json").read_text()}
    else:
        del root["workspaces"]
        root["packageManager"] = "pnpm@9.15.9"
        foo["dependencies"]["@acme/bar"] = "workspace:*"
        lock = {
            "pnpm-lock.yaml": (DATA / "pnpm-workspace-lock.yaml").read_text(),
            "pnpm-workspace.yaml": "packages:\n  - 'packages/*'\n",
        }
    return {
        "package.json": json.dumps(root, indent=2) + "\n",
        "packages/foo/package.json": json.dumps(foo, indent=2) + "\n",
        **lock,
    }


@pytest.mark.parametrize("manager", ["npm", "pnpm"])
def test_a_monorepos_runner_is_found_in_its_root_lockfile(manager: str) -> None:
    files = _workspace_files(manager)
    assert {"mocha", "ms", "@acme/bar"} <= workspace_dependencies(files)
    assert "debug" not in workspace_dependencies(files)  # installed, not depended on
    spec = infer_node_spec(files)
    assert spec is not None and spec.runner == "mocha" and spec.node == "20"


def test_other_lockfile_forms_name_a_workspaces_runner_too() -> None:
    pnpm = (
        "lockfileVersion: '9.0'\n\nimporters:\n\n  .: {}\n\n  packages/web:\n"
        "    devDependencies:\n      vitest:\n        specifier: ^2.0.0\n"
        "        version: 2.1.0\n\npackages:\n\n  jest@29.0.0:\n    resolution: {}\n"
    )
    spec = infer_node_spec({"package.json": '{"name": "r"}', "pnpm-lock.yaml": pnpm})
    assert spec is not None and spec.runner == "vitest"
    yarn = '"jest@^29":\n  version "29.7.0"\n'
    spec = infer_node_spec({"package.json": '{"name": "r"}', "yarn.lock": yarn})
    assert spec is not None and spec.runner == "jest"
    assert infer_node_spec({"package.json": '{"name": "r"}', "package-lock.json": "{}"}) is None


def test_the_tests_run_in_their_workspace_when_it_has_its_own_config() -> None:
    tests = ["packages/foo/test/a.test.ts", "packages/foo/src/b.spec.ts"]
    assert workspace_dirs(tests) == ["packages/foo", "packages"]
    assert workspace_dirs(["packages/foo/a.test.ts", "packages/bar/b.test.ts"]) == ["packages"]
    assert workspace_dirs(["a.test.ts"]) == []
    assert workspace_dirs(["a.test.ts", "packages/foo/b.test.ts"]) == []
    assert workspace_dirs(["../up/a.test.ts"]) == []
    files = {
        "vitest.config.ts": "",
        "packages/foo/package.json": "{}",
        "packages/foo/vitest.config.mts": "",
    }
    assert "packages/foo/vitest.config.mts" in VITEST.config_candidates(tests)
    assert VITEST.pinned_config(files, tests) == "/testbed/packages/foo/vitest.config.mts"
    command = VITEST.test_command(
        config="/testbed/packages/foo/vitest.config.mts",
        test_files=tests,
        extra_args=[],
        timeout=60,
    )
    assert command.startswith("sh -c ")
    assert "cd /testbed/packages/foo && exec node /evalkit/lib/run_vitest.mjs" in command
    assert "--timeout 60 " in command
    assert command.index("evalkit-link-node-modules") < command.index("cd /testbed")
    # The test files go to the runner relative to the root (the ids' form) either way.
    assert "-- packages/foo/test/a.test.ts packages/foo/src/b.spec.ts" in command
    # A workspace without its own config: the root's, run from the root.
    del files["packages/foo/vitest.config.mts"]
    assert VITEST.pinned_config(files, tests) == "/testbed/vitest.config.ts"
    root = VITEST.test_command(
        config="/testbed/vitest.config.ts", test_files=tests, extra_args=[], timeout=60
    )
    assert "cd " not in root
    assert "cd " not in VITEST.test_command(
        config=EMPTY_CONFIG, test_files=tests, extra_args=[], timeout=60
    )
    # jest's key in the workspace's package.json, and mocha's rc file, are configs too.
    jest = {"packages/foo/package.json": '{"jest": {"testEnvironment": "node"}}'}
    assert JEST.pinned_config(jest, tests) == "/testbed/packages/foo/package.json"
    mocha = {"packages/foo/package.json": "{}", "packages/foo/.mocharc.json": "{}"}
    assert MOCHA.pinned_config(mocha, tests) == "/testbed/packages/foo/.mocharc.json"


def _layout(tmp_path: Path) -> tuple[Any, Path]:
    """The layout step's functions, pointed at a scratch root instead of /."""
    sys.path.insert(0, str(LAYOUT.parent))
    try:
        import env_node_layout as layout
    finally:
        sys.path.remove(str(LAYOUT.parent))
    return layout, tmp_path


def test_layout_keeps_workspace_node_modules_and_points_links_at_their_new_homes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    layout, _ = _layout(tmp_path)
    src = tmp_path / "deps"
    monkeypatch.setattr(layout, "CHECKOUT", "/testbed")
    monkeypatch.setattr(layout, "ROOT_MODULES", "/node_modules")
    monkeypatch.setattr(layout, "KEPT", "/opt/evalkit-node")
    write_tree(
        src,
        {
            "node_modules/.pnpm/dep@1/node_modules/dep/index.js": "",
            "packages/foo/src/x.js": "",
            "packages/bar/index.js": "",
            "packages/foo/node_modules/own/index.js": "",
        },
    )
    (src / "node_modules" / "@acme").mkdir()
    os.symlink("../../packages/bar", src / "node_modules" / "@acme" / "bar")  # npm workspace
    os.symlink(".pnpm/dep@1/node_modules/dep", src / "node_modules" / "dep")  # inside its tree
    os.symlink(
        "../../../node_modules/.pnpm/dep@1/node_modules/dep",
        src / "packages" / "foo" / "node_modules" / "dep",
    )  # pnpm: a workspace's link into the root store
    os.symlink("/usr/bin/env", src / "node_modules" / "outside")
    trees = layout.module_trees(str(src))
    assert trees == [".", "packages/foo"]
    assert sum(layout.fix_links(str(src), rel, trees) for rel in trees) == 2
    assert os.readlink(src / "node_modules" / "@acme" / "bar") == "/testbed/packages/bar"
    assert os.readlink(src / "node_modules" / "dep") == ".pnpm/dep@1/node_modules/dep"
    assert (
        os.readlink(src / "packages" / "foo" / "node_modules" / "dep")
        == "/node_modules/.pnpm/dep@1/node_modules/dep"
    )
    assert os.readlink(src / "node_modules" / "outside") == "/usr/bin/env"
    script = layout.linker_script(["packages/foo"])
    assert (
        "ln -s '/opt/evalkit-node/packages/foo/node_modules' '/testbed/packages/foo/node_modules'"
        in script
    )
    # The linker runs in the checkout: it never replaces what is there.
    checkout = tmp_path / "checkout"
    write_tree(checkout, {"packages/foo/node_modules/mine": "x", "packages/baz/a.js": ""})
    runnable = script.replace("/testbed", str(checkout)).replace("packages/foo", "packages/baz")
    subprocess.run(["sh", "-c", runnable], check=True)
    assert (checkout / "packages" / "baz" / "node_modules").is_symlink()
    subprocess.run(["sh", "-c", script.replace("/testbed", str(checkout))], check=True)
    assert not (checkout / "packages" / "foo" / "node_modules").is_symlink()


# --- with Docker: npm and pnpm workspaces on trixie's Node 20 ------------------------

FOO_V1 = 'exports.greet = (name) => "hello " + name;\n'
FOO_V2 = (
    'const { shout } = require("@acme/bar");\nexports.greet = (name) => shout("hello " + name);\n'
)
FOO_TEST_V1 = """\
const assert = require("node:assert");
const { greet } = require("../src/foo");

describe("foo", () => {
  it("runs in its workspace on Node 20", () => {
    assert.strictEqual(process.versions.node.split(".")[0], "20");
    assert.strictEqual(globalThis.fooSetup, "packages/foo/.mocharc.json");
    // The workspace's own node_modules: ms 2.0.0, which has no weeks (the root's 2.1.3 has).
    assert.strictEqual(require("ms")("1w"), undefined);
  });
  it("greets", () => {
    assert.match(greet("ada"), /ada/i);
  });
});
"""
FOO_TEST_V2 = (
    FOO_TEST_V1
    + """
describe("foo loudly", () => {
  it("shouts through the bar workspace", () => {
    assert.strictEqual(greet("ada"), "HELLO ADA");
  });
});
"""
)


def _workspace_tasks(root: Path, manager: str) -> tuple[Path, Path]:
    repo = root / "repo"
    write_tree(
        repo,
        {
            **_workspace_files(manager),
            ".gitignore": "node_modules/\n",
            "packages/bar/package.json": json.dumps(WS_BAR, indent=2) + "\n",
            "packages/bar/index.js": "exports.shout = (text) => text.toUpperCase();\n",
            "packages/foo/.mocharc.json": '{"require": ["./test/setup.js"]}\n',
            "packages/foo/test/setup.js": (
                'globalThis.fooSetup = require("node:path").relative(\n'
                '  "/testbed", process.cwd() + "/.mocharc.json");\n'
            ),
            "packages/foo/src/foo.js": FOO_V1,
            "packages/foo/test/foo.test.js": FOO_TEST_V1,
        },
    )
    git(repo, "init", "-q")
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", "initial")
    base = git(repo, "rev-parse", "HEAD")
    write_tree(
        repo, {"packages/foo/src/foo.js": FOO_V2, "packages/foo/test/foo.test.js": FOO_TEST_V2}
    )
    git(repo, "commit", "-qam", "foo: greet through bar's shout (fixes #1)")
    fix = git(repo, "rev-parse", "HEAD")
    out = root / "tasks"
    (out / "repos").mkdir(parents=True)
    git(repo, "bundle", "create", "-q", str(out / "repos" / f"acme__{manager}-ws.bundle"), "--all")
    row = {
        "instance_id": f"acme__{manager}-ws-1",
        "repo": f"acme/{manager}-ws",
        "base_commit": base,
        "patch": git(repo, "diff", base, fix, "--", "packages/foo/src") + "\n",
        "test_patch": git(repo, "diff", base, fix, "--", "packages/foo/test") + "\n",
        "problem_statement": "greet should shout",
        "FAIL_TO_PASS": [
            "packages/foo/test/foo.test.js > foo loudly > shouts through the bar workspace"
        ],
        "PASS_TO_PASS": [
            "packages/foo/test/foo.test.js > foo > runs in its workspace on Node 20",
            "packages/foo/test/foo.test.js > foo > greets",
        ],
    }
    (out / "instances.jsonl").write_text(json.dumps(row) + "\n")
    wrong = row["patch"].replace('shout("hello " + name)', '"HELLO " + name')
    # An attack on the kept node_modules: the fix ships its own workspace node_modules
    # (a "bar" that always answers right, an "ms" of the right version), which would
    # stop the linker from linking the image's and pass every test. It is reverted, the
    # image's is linked, and the wrong fix fails.
    git(repo, "checkout", "-q", base)
    write_tree(
        repo,
        {
            "packages/foo/src/foo.js": FOO_V2.replace('"hello " + name', '""'),
            "packages/foo/node_modules/@acme/bar/index.js": 'exports.shout = () => "HELLO ADA";\n',
            "packages/foo/node_modules/ms/index.js": "module.exports = () => undefined;\n",
        },
    )
    git(repo, "add", "-f", "-A")
    shadow = git(repo, "diff", "--cached", "HEAD") + "\n"
    git(repo, "reset", "-q", "--hard")
    git(repo, "checkout", "-q", "main")
    preds = [
        {"instance_id": row["instance_id"], "model_name_or_path": name, "model_patch": patch}
        for name, patch in (("m/wrong", wrong), ("m/shadow", shadow))
    ]
    (out / "preds.jsonl").write_text("".join(json.dumps(p) + "\n" for p in preds))
    return out, repo


@pytest.mark.docker
@pytest.mark.parametrize("manager", ["npm", "pnpm"])
def test_a_workspace_on_trixies_node_20_resolves_and_is_mined_from_its_workspace(
    docker_engine: Any, tmp_path: Path, manager: str
) -> None:
    from evalkit.harness import evaluate
    from evalkit.mining import MineOptions, mine
    from evalkit.records import Status

    tasks, repo = _workspace_tasks(tmp_path, manager)
    outcome = evaluate(
        tasks,
        tasks / "preds.jsonl",
        "ws",
        gold=True,
        runs_dir=tmp_path / "runs",
        progress=False,
        log=lambda _: None,
    )
    got = {v.model_name_or_path: v for v in outcome.verdicts}
    assert got["gold"].status is Status.RESOLVED, got["gold"]
    assert got["m/wrong"].status is Status.UNRESOLVED, got["m/wrong"]
    assert got["m/shadow"].status is Status.UNRESOLVED, got["m/shadow"]
    assert sorted(got["m/shadow"].tampered_files) == [
        "packages/foo/node_modules/@acme/bar/index.js",
        "packages/foo/node_modules/ms/index.js",
    ]
    images = docker_engine.images.list(filters={"label": f"evalkit.repo=acme/{manager}-ws"})
    assert {i.labels["evalkit.base"] for i in images} == {"evalkit/node-base:trixie"}
    # Mining the fix commit finds the tests it changed, by their repository-relative ids.
    mine(
        str(repo),
        tmp_path / "mined",
        repo_name=f"acme/{manager}-ws",
        issues=None,
        source="commit",
        options=MineOptions(runs=1),
        client=docker_engine,
        log=lambda _: None,
        progress=False,
    )
    rows = [
        json.loads(x) for x in (tmp_path / "mined" / "instances.jsonl").read_text().splitlines()
    ]
    want = json.loads((tasks / "instances.jsonl").read_text())
    assert [(r["FAIL_TO_PASS"], sorted(r["PASS_TO_PASS"])) for r in rows] == [
        (want["FAIL_TO_PASS"], sorted(want["PASS_TO_PASS"]))
    ]


WEB_CONFIG = """\
import { defineConfig } from "vitest/config";

// Relative to the workspace: run from the repository's root, this finds no test.
export default defineConfig({ test: { include: ["spec/**/*.spec.ts"] } });
"""
WEB_V1 = 'import { shout } from "@acme/bar";\n\nexport const greet = (name: string) => name;\n'
WEB_V2 = WEB_V1.replace("=> name", '=> shout("hello " + name)')
WEB_SPEC_V1 = """\
import { describe, expect, it } from "vitest";
import { greet } from "../src/web";

describe("greet", () => {
  it("keeps the name", () => {
    expect(greet("ada").toLowerCase()).toContain("ada");
  });
});
"""
WEB_SPEC_V2 = (
    WEB_SPEC_V1
    + """
describe("greet loudly", () => {
  it("shouts through the bar workspace", () => {
    expect(greet("ada")).toBe("HELLO ADA");
  });
});
"""
)


@pytest.mark.docker
def test_a_vitest_workspace_runs_from_its_own_directory_with_its_own_config(
    docker_engine: Any, tmp_path: Path
) -> None:
    """vitest's root is the workspace: its config's ``include`` is relative to it, its
    TypeScript config compiles into the workspace's kept node_modules/.vite-temp."""
    from evalkit.harness import evaluate
    from evalkit.records import Status

    repo = tmp_path / "repo"
    web = {
        "name": "@acme/web",
        "version": "1.0.0",
        "type": "module",
        "dependencies": {"@acme/bar": "workspace:*"},
        "devDependencies": {"vite": "^6.3.0", "vitest": "3.2.4"},
    }
    root = {
        "name": "acme-web-monorepo",
        "version": "1.0.0",
        "private": True,
        "packageManager": "pnpm@9.15.9",
        "engines": {"node": ">=20"},
    }
    bar = {"name": "@acme/bar", "version": "1.0.0", "type": "module", "main": "index.js"}
    write_tree(
        repo,
        {
            "package.json": json.dumps(root, indent=2) + "\n",
            "pnpm-workspace.yaml": "packages:\n  - 'packages/*'\n",
            "pnpm-lock.yaml": (DATA / "pnpm-vitest-workspace-lock.yaml").read_text(),
            ".gitignore": "node_modules/\n",
            "packages/bar/package.json": json.dumps(bar, indent=2) + "\n",
            "packages/bar/index.js": "export const shout = (text) => text.toUpperCase();\n",
            "packages/web/package.json": json.dumps(web, indent=2) + "\n",
            "packages/web/vitest.config.ts": WEB_CONFIG,
            "packages/web/src/web.ts": WEB_V1,
            "packages/web/spec/web.spec.ts": WEB_SPEC_V1,
        },
    )
    git(repo, "init", "-q")
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", "initial")
    base = git(repo, "rev-parse", "HEAD")
    write_tree(
        repo, {"packages/web/src/web.ts": WEB_V2, "packages/web/spec/web.spec.ts": WEB_SPEC_V2}
    )
    git(repo, "commit", "-qam", "greet shouts")
    fix = git(repo, "rev-parse", "HEAD")
    tasks = tmp_path / "tasks"
    (tasks / "repos").mkdir(parents=True)
    git(repo, "bundle", "create", "-q", str(tasks / "repos" / "acme__vitest-ws.bundle"), "--all")
    spec = "packages/web/spec/web.spec.ts"
    row = {
        "instance_id": "acme__vitest-ws-1",
        "repo": "acme/vitest-ws",
        "base_commit": base,
        "patch": git(repo, "diff", base, fix, "--", "packages/web/src") + "\n",
        "test_patch": git(repo, "diff", base, fix, "--", "packages/web/spec") + "\n",
        "problem_statement": "greet should shout",
        "FAIL_TO_PASS": [f"{spec} > greet loudly > shouts through the bar workspace"],
        "PASS_TO_PASS": [f"{spec} > greet > keeps the name"],
    }
    (tasks / "instances.jsonl").write_text(json.dumps(row) + "\n")
    wrong = row["patch"].replace('shout("hello " + name)', '"HELLO " + name')
    pred = {"instance_id": row["instance_id"], "model_name_or_path": "m/wrong"}
    (tasks / "preds.jsonl").write_text(json.dumps({**pred, "model_patch": wrong}) + "\n")
    outcome = evaluate(
        tasks,
        tasks / "preds.jsonl",
        "vw",
        gold=True,
        runs_dir=tmp_path / "runs",
        progress=False,
        log=lambda _: None,
    )
    got = {v.model_name_or_path: v for v in outcome.verdicts}
    assert got["gold"].status is Status.RESOLVED, got["gold"]
    assert got["m/wrong"].status is Status.UNRESOLVED, got["m/wrong"]
