"""vitest, jest and mocha as :class:`~evalkit.runners.TestRunner` s.

Test ids are ``path/to/file.test.ts > describe > test name``: the file relative to the
repository root, then each enclosing ``describe`` and the test's own name, joined by
``" > "``. Each runner is started by an evalkit launcher (``evalkit/_container/run_*.mjs``)
that reads its instructions on stdin, connects to the collector with the nonce before
any checkout code is loaded, and drives the runner through its programmatic API with
evalkit's reporter passed as an object, so neither the project's config nor the code
under test chooses how results are reported. The runner modules are resolved from the
environment image's root-owned ``/node_modules``, never from the checkout.
"""

from __future__ import annotations

import json
import posixpath
import re
import shlex
from collections import Counter
from collections.abc import Iterable, Mapping
from pathlib import PurePosixPath
from typing import TYPE_CHECKING

from evalkit.runners.python import compare_summaries

if TYPE_CHECKING:
    from evalkit.grading import TestReport

SEPARATOR = " > "
JS_EXTENSIONS = ("js", "jsx", "ts", "tsx", "mjs", "cjs", "mts", "cts")
JS_TEST_DIRS = frozenset({"__tests__", "test", "tests", "spec", "__mocks__", "e2e"})
_TEST_NAME = re.compile(r"\.(test|spec)\.[cm]?[jt]sx?$")
_CONFIG_NAME = re.compile(
    r"^(vitest|vite|jest|vitest\.workspace|vitest\.setup|jest\.setup|babel)\.config\.[cm]?[jt]s$"
    r"|^(vitest\.workspace|jest\.setup|vitest\.setup|setupTests)\.[cm]?[jt]sx?$"
    r"|^\.mocharc(\.[a-z]+)?$|^\.babelrc(\.[a-z]+)?$|^jest\.config\.json$|^vitest\.workspace\.json$"
    r"|^\.swcrc$|^\.npmrc$|^\.yarnrc(\.yml)?$|^\.pnpmfile\.cjs$"
)
_TSCONFIG = re.compile(r"^tsconfig(\..*)?\.json$")
EMPTY_CONFIG = "/evalkit/none"
"""What the launchers read as "no config file at base": the runner's defaults."""


def is_js_test_path(path: str) -> bool:
    """``*.test.*``, ``*.spec.*`` and anything under ``__tests__/``, ``test/``, ``tests/``."""
    pure = PurePosixPath(path)
    if pure.suffix.lstrip(".") not in JS_EXTENSIONS and not any(
        part in ("__tests__", "__mocks__") for part in pure.parts[:-1]
    ):
        return False
    if _TEST_NAME.search(pure.name):
        return True
    return any(part in JS_TEST_DIRS for part in pure.parts[:-1])


def is_js_test_module(path: str) -> bool:
    """A file the runners collect by default (not a helper under ``test/``)."""
    pure = PurePosixPath(path)
    if pure.suffix.lstrip(".") not in JS_EXTENSIONS:
        return False
    return bool(_TEST_NAME.search(pure.name)) or "__tests__" in pure.parts[:-1]


def is_js_config_path(path: str) -> bool:
    """Runner, transpiler and package-manager config, and anything under ``node_modules``
    (a patch adding ``node_modules/vitest/...`` would shadow the runner for the tests)."""
    pure = PurePosixPath(path)
    return "node_modules" in pure.parts or bool(_CONFIG_NAME.match(pure.name))


def is_shared_node_config(path: str) -> bool:
    name = PurePosixPath(path).name
    return name == "package.json" or bool(_TSCONFIG.match(name))


def _dependencies(files: Mapping[str, str]) -> dict[str, str]:
    try:
        data = json.loads(files.get("package.json", "") or "{}")
    except ValueError:
        return {}
    if not isinstance(data, dict):
        return {}
    deps: dict[str, str] = {}
    for key in ("devDependencies", "dependencies"):
        table = data.get(key)
        if isinstance(table, dict):
            deps.update({str(k): str(v) for k, v in table.items()})
    return deps


_LINKER = "/usr/local/bin/evalkit-link-node-modules"
NODE_MODULES_LINKER = f"[ ! -x {_LINKER} ] || {_LINKER}"
"""Links each workspace's node_modules, kept in the image, into the fresh checkout
(written by ``harness/env_node_layout.py``; absent from images of single packages)."""


def workspace_dirs(test_files: Iterable[str]) -> list[str]:
    """The directories above every test file, deepest first, the root left out."""
    parents = [str(PurePosixPath(f).parent) for f in test_files]
    if not parents or any(p.startswith("/") or ".." in p.split("/") for p in parents):
        return []  # not inside the repository: no workspace to look for
    common = PurePosixPath(posixpath.commonpath(parents)).parts
    return ["/".join(common[:n]) for n in range(len(common), 0, -1)]


def split_id(test_id: str) -> tuple[str, list[str]]:
    """``a.test.ts > d > t`` -> (``a.test.ts``, [``d``, ``t``])."""
    file, *names = test_id.split(SEPARATOR)
    return file, names


class _NodeRunner:
    """What the three JavaScript runners share."""

    name = ""
    ecosystem = "node"
    phased = False
    starts_ahead = True
    package = ""
    launcher = ""
    config_search: tuple[str, ...] = ()
    __test__ = False

    def detect(self, files: Mapping[str, str]) -> bool:
        return "package.json" in files and self.package in _dependencies(files)

    def test_files(self, test_ids: Iterable[str]) -> list[str]:
        files: dict[str, None] = {}
        for test_id in test_ids:
            file, names = split_id(test_id)
            if names or _TEST_NAME.search(file):
                files.setdefault(file, None)
        return list(files)

    def from_swebench_id(self, test_id: str) -> str:
        """SWE-bench Multilingual / Pro write ``file > describe > name`` or, from some log
        parsers, ``file::describe::name`` or ``describe name`` without a file (kept as is:
        it then matches nothing and the task is reported, not guessed)."""
        if SEPARATOR not in test_id and "::" in test_id:
            return SEPARATOR.join(test_id.split("::"))
        return test_id

    def is_test_path(self, path: str) -> bool:
        return is_js_test_path(path)

    def is_config_path(self, path: str) -> bool:
        return is_js_config_path(path)

    # Monorepos: the tests run in the workspace that holds them (the deepest directory
    # with a package.json above every listed test file) when it has a config of its
    # own: that config, and that directory as the runner's cwd and root. Test ids stay
    # relative to the repository's root, as SWE-bench Multilingual writes them.
    def _config_names(self) -> tuple[str, ...]:
        return (*self.config_search, "package.json")

    def _own_config(self, files: Mapping[str, str], prefix: str) -> str | None:
        found = (f"/testbed/{prefix}{p}" for p in self.config_search if prefix + p in files)
        return next(found, None)

    def config_candidates(self, test_files: Iterable[str]) -> tuple[str, ...]:
        names = self._config_names()
        nested = [f"{d}/{n}" for d in workspace_dirs(test_files) for n in names]
        return (*nested, *names)

    def pinned_config(self, files: Mapping[str, str], test_files: Iterable[str]) -> str:
        for folder in workspace_dirs(test_files):
            if f"{folder}/package.json" in files:
                found = self._own_config(files, folder + "/")
                if found is not None:
                    return found
                break  # a workspace without its own config: the root's, from the root
        return self._own_config(files, "") or EMPTY_CONFIG

    def test_command(
        self, *, config: str, test_files: list[str], extra_args: list[str], timeout: int
    ) -> str:
        args = " ".join(shlex.quote(a) for a in [*extra_args, "--", *test_files])
        folder = str(PurePosixPath(config).parent)
        cd = f"cd {shlex.quote(folder)} && " if folder.startswith("/testbed/") else ""
        # The launcher keeps the timeout itself, counted from its go signal (it may be
        # started ahead of its turn: :attr:`starts_ahead`).
        run = (
            f"{NODE_MODULES_LINKER}; {cd}exec node /evalkit/lib/{self.launcher} "
            f"--timeout {timeout} --config {shlex.quote(config)} {args}"
        )
        # One command (the eval script execs it): link the workspaces, then the runner.
        return f"sh -c {shlex.quote(run)}"

    def summary_problem(self, report: TestReport, output: str) -> str | None:
        return compare_summaries(self.summaries(output), report, self.name, ("passed", "failed"))

    def summaries(self, output: str) -> list[Counter[str]]:
        raise NotImplementedError


def _counts(text: str, words: dict[str, str]) -> Counter[str]:
    counts: Counter[str] = Counter()
    for number, word in re.findall(r"(\d+) (\w+)", text):
        if word in words:
            counts[words[word]] += int(number)
    return counts


_ANSI = re.compile(r"\x1b\[[0-9;]*m")


class VitestRunner(_NodeRunner):
    name = "vitest"
    package = "vitest"
    launcher = "run_vitest.mjs"
    config_search = tuple(
        f"{stem}.config.{ext}"
        for stem in ("vitest", "vite")
        for ext in ("ts", "mts", "cts", "js", "mjs", "cjs")
    )
    _LINE = re.compile(r"^\s*Tests\s+(?P<body>.*\(\d+\)|no tests)\s*$", re.MULTILINE)

    def summaries(self, output: str) -> list[Counter[str]]:
        text = _ANSI.sub("", output)
        words = {"passed": "passed", "failed": "failed"}
        return [_counts(m.group("body"), words) for m in self._LINE.finditer(text)]


class JestRunner(_NodeRunner):
    name = "jest"
    package = "jest"
    launcher = "run_jest.mjs"
    config_search = tuple(f"jest.config.{ext}" for ext in ("ts", "mts", "cts", "js", "mjs", "cjs"))
    _LINE = re.compile(r"^Tests:\s+(?P<body>.*\d+ total)\s*$", re.MULTILINE)

    def _config_names(self) -> tuple[str, ...]:
        return (*self.config_search, "jest.config.json", "package.json")

    def _own_config(self, files: Mapping[str, str], prefix: str) -> str | None:
        found = super()._own_config(files, prefix)
        if found is None and prefix + "jest.config.json" in files:
            return f"/testbed/{prefix}jest.config.json"
        if found is None and '"jest"' in files.get(prefix + "package.json", ""):
            return f"/testbed/{prefix}package.json"  # the launcher reads its "jest" key
        return found

    def summaries(self, output: str) -> list[Counter[str]]:
        text = _ANSI.sub("", output)
        words = {"passed": "passed", "failed": "failed"}
        return [_counts(m.group("body"), words) for m in self._LINE.finditer(text)]


class MochaRunner(_NodeRunner):
    name = "mocha"
    package = "mocha"
    launcher = "run_mocha.mjs"
    config_search = (
        ".mocharc.js",
        ".mocharc.cjs",
        ".mocharc.yaml",
        ".mocharc.yml",
        ".mocharc.jsonc",
        ".mocharc.json",
    )
    _PASSING = re.compile(r"^\s+(\d+) passing", re.MULTILINE)
    _FAILING = re.compile(r"^\s+(\d+) failing", re.MULTILINE)

    def summaries(self, output: str) -> list[Counter[str]]:
        text = _ANSI.sub("", output)
        passing = self._PASSING.findall(text)
        failing = self._FAILING.findall(text)
        if not passing and not failing:
            return []
        found = []
        for i in range(max(len(passing), 1)):
            counts: Counter[str] = Counter()
            if i < len(passing):
                counts["passed"] = int(passing[i])
            if i < len(failing):
                counts["failed"] = int(failing[i])
            found.append(counts)
        return found


VITEST = VitestRunner()
JEST = JestRunner()
MOCHA = MochaRunner()
