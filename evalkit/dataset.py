"""Reading task sets and predictions, with one-line errors that name file and line.

A task set is a directory: ``instances.jsonl`` (SWE-bench columns), ``repos/`` with
one git bundle per repository, and an optional ``evalkit.toml``. Predictions use
SWE-bench's format (``.jsonl``, or ``.json`` as a list or a dict keyed by id).
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from evalkit.environment import SpecFile, load_spec_file
from evalkit.errors import UsageError
from evalkit.records import (
    ENV_SPEC_FILE,
    INSTANCES_FILE,
    REPOS_DIR,
    Prediction,
    TaskInstance,
    iter_jsonl_lines,
    iter_jsonl_raw,
)

GOLD_MODEL = "gold"


def _first_error(exc: ValidationError) -> str:
    err = exc.errors()[0]
    where = ".".join(str(p) for p in err["loc"]) or "record"
    if err["type"] == "missing":
        return f"missing field {where!r}"
    return f"field {where!r}: {err['msg']}"


def _shown(text: str, limit: int = 80) -> str:
    """A name as it appears in a message: quoted, escaped, and cut, so a hostile or
    huge name cannot break the one-line error format."""
    return repr(text) if len(text) <= limit else repr(text[:limit]) + "..."


@dataclass
class TaskSet:
    """A loaded task set directory."""

    root: Path
    instances: dict[str, TaskInstance]
    spec_file: SpecFile = field(default_factory=SpecFile)

    def bundle_path(self, instance: TaskInstance) -> Path:
        return self.root / REPOS_DIR / instance.bundle_name

    def sha256(self) -> str:
        """Identity of the task set's instances (order-independent)."""
        digest = hashlib.sha256()
        for iid in sorted(self.instances):
            digest.update(self.instances[iid].model_dump_json().encode())
        return digest.hexdigest()


def load_task_set(root: Path) -> TaskSet:
    """Load and validate ``root/instances.jsonl``; any bad line is a :class:`UsageError`."""
    path = root / INSTANCES_FILE
    if not root.is_dir():
        raise UsageError("task set directory not found", path=str(root))
    if not path.is_file():
        raise UsageError(f"no {INSTANCES_FILE} in the task set", path=str(root))
    instances: dict[str, TaskInstance] = {}
    for number, line in iter_jsonl_lines(path):
        try:
            instance = TaskInstance.model_validate_json(line)
        except ValidationError as exc:
            if exc.errors()[0]["type"] == "json_invalid":
                raise UsageError("not valid JSON", path=str(path), line=number) from None
            raise UsageError(_first_error(exc), path=str(path), line=number) from None
        if instance.instance_id in instances:
            raise UsageError(
                f"duplicate instance_id {instance.instance_id!r}", path=str(path), line=number
            )
        instances[instance.instance_id] = instance
    if not instances:
        raise UsageError("the task set has no instances", path=str(path))
    return TaskSet(root=root, instances=instances, spec_file=load_spec_file(root / ENV_SPEC_FILE))


@dataclass(frozen=True)
class Problem:
    """One bad input record: reported, skipped, and never costing other results.

    A ``warning`` is reported but the record was still used (the exit code stays 0).
    """

    path: str
    line: int | None
    message: str
    warning: bool = False

    def __str__(self) -> str:
        where = f"{self.path}:{self.line}" if self.line is not None else self.path
        return f"{where}: {self.message}"


def _raw_predictions(path: Path) -> list[tuple[int | None, Any]]:
    if path.suffix == ".json":
        try:
            data = json.loads(path.read_bytes().decode("utf-8"))
        except UnicodeDecodeError as exc:
            raise UsageError(f"not valid UTF-8 (byte {exc.start + 1})", path=str(path)) from None
        except json.JSONDecodeError as exc:
            raise UsageError(
                f"not valid JSON ({exc.msg} at line {exc.lineno})", path=str(path)
            ) from None
        if isinstance(data, dict):
            return [
                (None, {"instance_id": k, **v} if isinstance(v, dict) else v)
                for k, v in data.items()
            ]
        if isinstance(data, list):
            return [(None, item) for item in data]
        raise UsageError("expected a JSON list or an object keyed by instance_id", path=str(path))
    rows: list[tuple[int | None, Any]] = []
    for number, raw, _ in iter_jsonl_raw(path):
        try:
            rows.append((number, json.loads(raw.decode("utf-8"))))
        except UnicodeDecodeError as exc:
            rows.append((number, ValueError(f"not valid UTF-8 (byte {exc.start + 1})")))
        except json.JSONDecodeError as exc:
            rows.append((number, ValueError(f"not valid JSON ({exc.msg})")))
    return rows


def load_predictions(path: Path, known_ids: set[str]) -> tuple[list[Prediction], list[Problem]]:
    """Valid predictions in file order, and a :class:`Problem` for every rejected record
    (plus a warning for each one counted as an empty patch because it has none)."""
    if not path.is_file():
        raise UsageError("predictions file not found", path=str(path))
    predictions: list[Prediction] = []
    problems: list[Problem] = []
    seen: set[tuple[str, str]] = set()
    for index, (line, raw) in enumerate(_raw_predictions(path)):
        label = "" if line is not None else f"entry {index}: "

        def reject(message: str, line: int | None = line, label: str = label) -> None:
            problems.append(Problem(str(path), line, label + message))

        if isinstance(raw, ValueError):
            reject(str(raw))
            continue
        if not isinstance(raw, dict):
            reject("expected a JSON object")
            continue
        try:
            prediction = Prediction.model_validate(raw)
        except ValidationError as exc:
            reject(_first_error(exc))
            continue
        if prediction.instance_id not in known_ids:
            reject(f"unknown instance_id {_shown(prediction.instance_id)} (not in the task set)")
            continue
        key = (prediction.model_name_or_path, prediction.instance_id)
        if key in seen:
            reject(
                f"duplicate prediction for {_shown(key[1])} by model {_shown(key[0])}; "
                "the first one is kept"
            )
            continue
        seen.add(key)
        if raw.get("model_patch") is None:
            # SWE-bench counts it as an empty patch too; say so, since it may be a typo.
            problems.append(
                Problem(str(path), line, label + "no model_patch; counted as an empty patch", True)
            )
        predictions.append(prediction)
    return predictions, problems


def gold_predictions(task_set: TaskSet) -> list[Prediction]:
    """Each task's own fix, as model ``gold``: the check that a task set is valid."""
    return [
        Prediction(instance_id=i.instance_id, model_name_or_path=GOLD_MODEL, model_patch=i.patch)
        for i in task_set.instances.values()
    ]


def export_hf(task_dir: Path, out: Path) -> int:
    """Write the task set as a Hugging Face dataset (``save_to_disk`` plus one parquet file)
    with SWE-bench's columns; FAIL_TO_PASS / PASS_TO_PASS become JSON strings, as there."""
    import datasets

    task_set = load_task_set(task_dir)
    rows = []
    for instance in task_set.instances.values():
        row = instance.model_dump()
        row["FAIL_TO_PASS"] = json.dumps(instance.FAIL_TO_PASS)
        row["PASS_TO_PASS"] = json.dumps(instance.PASS_TO_PASS)
        # Extra provenance columns vary by source: keep them as one JSON string column.
        extra = {k: row.pop(k) for k in list(row) if k not in SWEBENCH_COLUMNS}
        row["evalkit_metadata"] = json.dumps(extra, default=str)
        rows.append(row)
    dataset = datasets.Dataset.from_list(rows)
    out.mkdir(parents=True, exist_ok=True)
    dataset.save_to_disk(str(out / "dataset"))
    dataset.to_parquet(str(out / "test.parquet"))
    return len(rows)


SWEBENCH_COLUMNS = (
    "instance_id",
    "repo",
    "base_commit",
    "patch",
    "test_patch",
    "problem_statement",
    "hints_text",
    "created_at",
    "version",
    "environment_setup_commit",
    "FAIL_TO_PASS",
    "PASS_TO_PASS",
)


# --- importing SWE-bench-style records ---------------------------------------------

_SPEC_FIELDS = {"python", "install", "pip_packages", "pre_install", "pre_test", "eval_commands"}


@dataclass
class ImportSummary:
    """What ``evalkit tasks import`` wrote."""

    out: Path
    instances: int
    repos: dict[str, int]
    specs: int
    """Instances whose install spec came from the source (written to evalkit.toml)."""


def read_records(source: str, split: str = "test") -> list[tuple[str, dict[str, Any]]]:
    """Rows of a SWE-bench / SWE-bench-Live / SWE-rebench file (``.json`` list,
    ``.jsonl``, ``.parquet``) or Hugging Face dataset name, each with a label naming it."""
    path = Path(source)
    rows: list[Any]
    if path.is_file():
        if path.suffix == ".parquet":
            import pandas as pd

            frame = pd.read_parquet(path)
            rows = [_plain(r) for r in frame.to_dict(orient="records")]
        elif path.suffix == ".json":
            try:
                data = json.loads(path.read_text(encoding="utf-8"))
            except (UnicodeDecodeError, json.JSONDecodeError) as exc:
                raise UsageError(f"not valid JSON ({exc})", path=str(path)) from None
            if isinstance(data, dict):
                data = data.get("rows") or data.get("data") or list(data.values())
            if not isinstance(data, list):
                raise UsageError("expected a JSON list of records", path=str(path))
            rows = data
        else:
            rows = []
            for number, line in iter_jsonl_lines(path):
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError:
                    raise UsageError("not valid JSON", path=str(path), line=number) from None
        return [(f"{path}: record {i + 1}", r) for i, r in enumerate(rows)]
    if path.suffix in {".json", ".jsonl", ".parquet"} or "/" not in source:
        raise UsageError("records file not found", path=source)
    try:
        import datasets

        dataset = datasets.load_dataset(source, split=split)
    except Exception as exc:  # the hub's errors are many kinds; each is one line here
        first = str(exc).strip().splitlines()[:1]
        raise UsageError(
            f"cannot load Hugging Face dataset {source!r} split {split!r}: "
            f"{first[0][:200] if first else type(exc).__name__}"
        ) from None
    return [(f"{source}[{split}]: record {i + 1}", dict(r)) for i, r in enumerate(dataset)]


def _plain(value: Any) -> Any:
    """Parquet gives numpy arrays for list columns: back to plain lists."""
    if hasattr(value, "tolist") and not isinstance(value, (str, bytes)):
        return _plain(value.tolist())
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


def _install_spec(row: dict[str, Any]) -> dict[str, Any]:
    """An evalkit.toml table from a record's own install spec (SWE-rebench's
    ``install_config``, or SWE-bench-style spec fields), where the source gives one."""
    raw = row.get("install_config") or row.get("spec") or {}
    if isinstance(raw, str):
        try:
            raw = json.loads(raw)
        except json.JSONDecodeError:
            raw = {}
    if not isinstance(raw, dict):
        return {}
    return spec_table(raw)


def spec_table(raw: dict[str, Any]) -> dict[str, Any]:
    """SWE-bench's per-version spec (``python``, ``pre_install``, ``install``,
    ``pip_packages``, ``eval_commands``) as evalkit.toml keys."""

    def as_list(value: Any) -> list[str]:
        if value is None:
            return []
        if isinstance(value, str):
            return [value] if value.strip() else []
        return [str(v) for v in value if str(v).strip()]

    table: dict[str, Any] = {}
    if raw.get("python"):
        table["python"] = str(raw["python"])
    install = as_list(raw.get("pre_install")) + as_list(raw.get("install"))
    if install:
        table["install"] = install
    packages = as_list(raw.get("pip_packages"))
    if packages:
        table["pip_packages"] = ["pytest", *packages]
    pre_test = [c for c in as_list(raw.get("eval_commands")) if not c.startswith("source ")]
    if pre_test:
        table["pre_test"] = pre_test
    return table


def _find_clone(repo: str, repos: dict[str, Path], clones: Path | None) -> Path | None:
    if repo in repos:
        return repos[repo]
    if clones is None:
        return None
    owner, name = repo.split("/", 1)
    for candidate in (
        clones / repo,
        clones / f"{owner}__{name}",
        clones / f"{owner}+{name}",
        clones / f"{owner}+{name}" / "repo",
        clones / name,
        clones / f"{name}.git",
    ):
        if candidate.is_dir():
            return candidate
    return None


def _git_out(repo: Path, *args: str) -> str:
    import subprocess

    proc = subprocess.run(
        ["git", "-C", str(repo), *args], capture_output=True, text=True, check=False
    )
    if proc.returncode != 0:
        raise OSError(proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else "git")
    return proc.stdout.strip()


def write_bundle(clone: Path, commits: list[str], bundle: Path) -> None:
    """A bundle holding ``commits`` and their history, nothing after them: no branch,
    tag or later commit of the clone comes along (one ref per needed commit)."""
    import subprocess
    import tempfile

    objects = Path(_git_out(clone, "rev-parse", "--path-format=absolute", "--git-common-dir"))
    with tempfile.TemporaryDirectory(prefix="evalkit-import-") as tmp:
        scratch = Path(tmp) / "r.git"
        subprocess.run(["git", "init", "-q", "--bare", str(scratch)], check=True)
        (scratch / "objects" / "info" / "alternates").write_text(str(objects / "objects") + "\n")
        for sha in commits:
            _git_out(scratch, "update-ref", f"refs/heads/evalkit/{sha}", sha)
        bundle.parent.mkdir(parents=True, exist_ok=True)
        tmp_bundle = bundle.with_name(bundle.name + ".tmp")
        _git_out(scratch, "bundle", "create", "-q", str(tmp_bundle), "--all")
        tmp_bundle.replace(bundle)


def import_records(
    source: str,
    out: Path,
    *,
    repos: dict[str, Path] | None = None,
    clones: Path | None = None,
    specs: Path | None = None,
    split: str = "test",
    instance_ids: list[str] | None = None,
) -> ImportSummary:
    """Write a task set from SWE-bench-format records plus local clones or mirrors.

    ``specs``: SWE-bench's per-repo, per-version install specs as JSON
    (``{"owner/name": {"version": {...}}}``), translated into ``evalkit.toml``.
    Any bad record, unknown repo or missing commit is a :class:`UsageError` naming it.
    """
    repos = repos or {}
    version_specs: dict[str, Any] = {}
    if specs is not None:
        try:
            version_specs = json.loads(specs.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise UsageError(f"cannot read install specs: {exc}", path=str(specs)) from None
    instances: list[TaskInstance] = []
    tables: dict[str, dict[str, Any]] = {}
    labels: dict[str, str] = {}
    for label, row in read_records(source, split):
        if not isinstance(row, dict):
            raise UsageError(f"{label}: expected an object")
        row = swebench_row(row)
        try:
            instance = TaskInstance.model_validate(row)
        except ValidationError as exc:
            name = row.get("instance_id")
            raise UsageError(
                f"{label}{f' ({_shown(str(name))})' if name else ''}: {_first_error(exc)}"
            ) from None
        if instance_ids and instance.instance_id not in instance_ids:
            continue
        if instance.instance_id in labels:
            raise UsageError(f"{label}: duplicate instance_id {_shown(instance.instance_id)}")
        labels[instance.instance_id] = label
        table = _install_spec(row)
        by_version = version_specs.get(instance.repo, {})
        if isinstance(by_version, dict) and isinstance(by_version.get(instance.version), dict):
            table = {**spec_table(by_version[instance.version]), **table}
        if table:
            tables[instance.instance_id] = table
        extra = {k: v for k, v in (instance.model_extra or {}).items() if k in SWEBENCH_EXTRAS}
        instances.append(
            TaskInstance.model_validate(
                {**instance.model_dump(exclude=set(instance.model_extra or {})), **extra}
            )
        )
    if not instances:
        raise UsageError("no records to import", path=source)
    by_repo: dict[str, list[TaskInstance]] = {}
    mapped: dict[str, TaskInstance] = {}
    for instance in instances:
        by_repo.setdefault(instance.repo, []).append(instance)
    out.mkdir(parents=True, exist_ok=True)
    for repo, items in by_repo.items():
        clone = _find_clone(repo, repos, clones)
        if clone is None:
            raise UsageError(
                f"{labels[items[0].instance_id]} ({_shown(items[0].instance_id)}): no clone of "
                f"{repo}; give --repo {repo}=PATH or --clones DIR"
            )
        needed: dict[str, None] = {}
        for instance in items:
            for sha in (instance.base_commit, instance.env_commit):
                try:
                    _git_out(clone, "cat-file", "-e", f"{sha}^{{commit}}")
                except OSError:
                    raise UsageError(
                        f"{labels[instance.instance_id]} ({_shown(instance.instance_id)}): "
                        f"commit {sha} is not in {clone}"
                    ) from None
                needed.setdefault(_git_out(clone, "rev-parse", f"{sha}^{{commit}}"), None)
        try:
            write_bundle(clone, list(needed), out / REPOS_DIR / items[0].bundle_name)
        except OSError as exc:
            raise UsageError(f"cannot bundle {repo} from {clone}: {exc}") from None
        for instance in items:
            mapped[instance.instance_id] = _map_js_ids(
                instance, clone, f"{labels[instance.instance_id]} ({_shown(instance.instance_id)})"
            )
    instances = [mapped.get(i.instance_id, i) for i in instances]
    from evalkit.records import write_atomic

    write_atomic(out / INSTANCES_FILE, "".join(i.model_dump_json() + "\n" for i in instances))
    if tables:
        write_atomic(out / ENV_SPEC_FILE, _spec_toml(tables))
    return ImportSummary(out, len(instances), {r: len(v) for r, v in by_repo.items()}, len(tables))


SWEBENCH_EXTRAS = (
    *("difficulty", "image_name", "license", "meta", "pr_number", "issue_number"),
    *("repo_language", "selected_test_files_to_run"),
)


def _spec_toml(tables: dict[str, dict[str, Any]]) -> str:
    lines = ["# written by evalkit tasks import: install specs the source records gave\n"]
    for iid, table in sorted(tables.items()):
        lines.append(f"\n[instances.{json.dumps(iid)}]\n")
        for key, value in table.items():
            lines.append(f"{key} = {json.dumps(value)}\n")
    return "".join(lines)


# --- SWE-bench Multilingual / Pro records of JavaScript and TypeScript repositories --------


def _decode_ids(value: str) -> Any:
    """A list of test ids as a JSON string (SWE-bench) or a Python literal (Pro, which
    decodes it with ``eval``; here only a literal is accepted)."""
    import ast

    if not value.strip():
        return []
    try:
        return json.loads(value)
    except json.JSONDecodeError:
        pass
    try:
        decoded = ast.literal_eval(value)
    except (ValueError, SyntaxError, MemoryError, RecursionError):
        return value  # left to the record's own validation, which names the field
    return list(decoded) if isinstance(decoded, (list, tuple)) else value


def swebench_row(row: dict[str, Any]) -> dict[str, Any]:
    """A record in SWE-bench's columns, whichever benchmark wrote it: SWE-bench Pro's
    lowercase ``fail_to_pass`` / ``pass_to_pass`` (Python-literal lists) become
    ``FAIL_TO_PASS`` / ``PASS_TO_PASS``, and its ``requirements`` and ``interface`` (the
    context Pro gives its agents) are appended to the problem statement."""
    row = dict(row)
    for upper in ("FAIL_TO_PASS", "PASS_TO_PASS"):
        lower = upper.lower()
        if upper not in row and lower in row:
            row[upper] = row.pop(lower)
        if isinstance(row.get(upper), str):
            row[upper] = _decode_ids(row[upper])
    extra = [
        f"{title}:\n{str(row[key]).strip()}\n"
        for key, title in (("requirements", "Requirements"), ("interface", "Interface"))
        if isinstance(row.get(key), str) and str(row[key]).strip()
    ]
    if extra:
        statement = str(row.get("problem_statement") or "").rstrip("\n")
        row["problem_statement"] = "\n\n".join([statement, *extra]).lstrip("\n")
    for key in ("requirements", "interface"):
        row.pop(key, None)
    return row


_TITLE_CALLS = {"describe": True, "suite": True, "context": True, "it": False, "test": False}
_TITLE_CALLS["specify"] = False
_MODIFIERS = {"only", "skip", "concurrent", "sequential", "todo", "fails", "shuffle", "failing"}
_IDENT = re.compile(r"[A-Za-z_$][\w$]*")
_STRING_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", "\\": "\\", "'": "'", '"': '"', "`": "`"}


def _literal(source: str, at: int) -> tuple[str | None, int]:
    """The string literal starting at ``source[at]`` (its value, or None for a template
    with substitutions) and the index after it."""
    quote, i, out = source[at], at + 1, []
    while i < len(source):
        ch = source[i]
        if ch == "\\" and i + 1 < len(source):
            out.append(_STRING_ESCAPES.get(source[i + 1], source[i + 1]))
            i += 2
            continue
        if ch == quote:
            return "".join(out), i + 1
        if quote == "`" and source.startswith("${", i):
            end = source.find("`", i)
            return None, (end + 1 if end >= 0 else len(source))
        out.append(ch)
        i += 1
    return None, len(source)


def js_test_titles(source: str) -> list[tuple[str, ...]]:
    """Each test's title path in a JavaScript / TypeScript test file, in file order: the
    enclosing ``describe`` / ``suite`` / ``context`` titles and the ``it`` / ``test`` title
    (with ``.only`` / ``.skip`` / ... modifiers). Only literal titles: a template with
    substitutions or a ``.each`` table names no test here. A scan, not a parser: brackets
    nest, strings and comments are skipped."""
    found: list[tuple[str, ...]] = []
    suites: list[tuple[str, int]] = []
    depth, i, n = 0, 0, len(source)
    while i < n:
        ch = source[i]
        if source.startswith("//", i):
            i = source.find("\n", i)
            i = n if i < 0 else i
            continue
        if source.startswith("/*", i):
            end = source.find("*/", i + 2)
            i = n if end < 0 else end + 2
            continue
        if ch in "'\"`":
            i = _literal(source, i)[1]
            continue
        if ch in "([{":
            depth += 1
        elif ch in ")]}":
            depth = max(0, depth - 1)
        elif (ch.isalpha() or ch in "_$") and (
            i == 0 or not (source[i - 1].isalnum() or source[i - 1] in "_$.")
        ):
            word = _IDENT.match(source, i)
            assert word is not None
            name, j = word.group(), word.end()
            if name in _TITLE_CALLS:
                while source.startswith(".", j):
                    mod = _IDENT.match(source, j + 1)
                    if mod is None or mod.group() not in _MODIFIERS:
                        break
                    j = mod.end()
                k = j
                while k < n and source[k].isspace():
                    k += 1
                if k < n and source[k] == "(":
                    k += 1
                    while k < n and source[k].isspace():
                        k += 1
                    if k < n and source[k] in "'\"`":
                        title, _ = _literal(source, k)
                        if title is not None:
                            while suites and suites[-1][1] >= depth:
                                suites.pop()
                            if _TITLE_CALLS[name]:
                                suites.append((title, depth))
                            else:
                                found.append((*(t for t, _ in suites), title))
            i = j
            continue
        i += 1
    return found


def map_js_test_id(test_id: str, sources: Mapping[str, str]) -> str:
    """A SWE-bench Multilingual / Pro id of a JavaScript / TypeScript test in evalkit's
    form ``path/to/file.test.ts > describe > test name``; ``sources`` are the test files
    (path -> text, with the test patch applied). ValueError (one line) when it cannot be
    mapped unambiguously.

    - ``file > describe > name`` (vitest's own, evalkit's): as is;
    - ``file::describe::name``: the parts joined with `` > ``;
    - ``file | describe name`` (Pro: the file, then jest / mocha's full name, the titles
      joined by spaces): the one test of that file whose titles join to that name;
    - no file (Multilingual's jest parser keeps the test's own title only; karma's
      ``describe > name``): the one test in all the files with that title, title path
      (`` > ``) or full name.
    """
    from evalkit.runners.node import JS_EXTENSIONS, SEPARATOR

    def is_file(part: str) -> bool:
        return part.rsplit(".", 1)[-1] in JS_EXTENSIONS and " " not in part.strip()

    def one(matches: set[str], what: str, where: str) -> str:
        if len(matches) == 1:
            return matches.pop()
        if not matches:
            raise ValueError(f"no test {what} in {where}")
        raise ValueError(f"{len(matches)} tests {what} in {where} (ambiguous)")

    def joined(path: tuple[str, ...]) -> set[str]:
        return {SEPARATOR.join(path), " ".join(path)}

    head = test_id.split(SEPARATOR, 1)[0]
    if SEPARATOR in test_id and is_file(head):
        return test_id
    if "::" in test_id and is_file(test_id.split("::", 1)[0]):
        return SEPARATOR.join(test_id.split("::"))
    if " | " in test_id and is_file(test_id.split(" | ", 1)[0]):
        file, name = (p.strip() for p in test_id.split(" | ", 1))
        if file not in sources:
            raise ValueError(f"its file {file!r} is not a test file at base + test patch")
        found = {
            SEPARATOR.join((file, *p)) for p in js_test_titles(sources[file]) if name in joined(p)
        }
        return one(found, f"named {name!r}", file)
    found = {
        SEPARATOR.join((file, *p))
        for file, text in sources.items()
        for p in js_test_titles(text)
        if test_id == p[-1] or test_id in joined(p)
    }
    return one(found, f"named {test_id!r}", f"the {len(sources)} test file(s)")


_JS_SOURCE_CAP = 2 * 1024 * 1024


def js_test_sources(clone: Path, base: str, test_patch: str) -> dict[str, str]:
    """The JavaScript / TypeScript test files of ``clone`` at ``base`` with ``test_patch``
    applied (path -> text), read through a scratch index (the clone is not touched)."""
    import os
    import subprocess
    import tempfile

    from evalkit.runners.node import is_js_test_path

    with tempfile.TemporaryDirectory(prefix="evalkit-import-") as tmp:
        env = {**os.environ, "GIT_INDEX_FILE": str(Path(tmp) / "index")}

        def git(*args: str, data: bytes | None = None) -> bytes:
            proc = subprocess.run(
                ["git", "-C", str(clone), *args], input=data, env=env, capture_output=True
            )
            if proc.returncode != 0:
                lines = proc.stderr.decode("utf-8", "replace").strip().splitlines()
                raise OSError(lines[-1] if lines else f"git {args[0]} failed")
            return proc.stdout

        git("read-tree", base)
        if test_patch.strip():
            git("apply", "--cached", "-", data=test_patch.encode())
        wanted = []
        for line in git("ls-files", "-s", "-z").split(b"\0"):
            meta, _, raw = line.partition(b"\t")
            name = raw.decode("utf-8", "replace")
            if name and is_js_test_path(name):
                wanted.append((meta.split()[1].decode(), name))
        out: dict[str, str] = {}
        if wanted:
            batch = git("cat-file", "--batch", data="".join(f"{s}\n" for s, _ in wanted).encode())
            at = 0
            for _, path in wanted:
                header_end = batch.index(b"\n", at)
                size = int(batch[at:header_end].split()[2])
                body = batch[header_end + 1 : header_end + 1 + size]
                at = header_end + 1 + size + 1
                if size <= _JS_SOURCE_CAP:
                    out[path] = body.decode("utf-8", "replace")
        return out


def _map_js_ids(instance: TaskInstance, clone: Path, where: str) -> TaskInstance:
    """The instance with its test ids in evalkit's JavaScript form, when its repository is
    a JavaScript / TypeScript one (the runner its ``package.json`` names); else as is."""
    from evalkit.runners import detect_runner

    try:
        package = _git_out(clone, "show", f"{instance.env_commit}:package.json")
    except OSError:
        return instance
    if detect_runner({"package.json": package}).ecosystem != "node":
        return instance
    try:
        sources = js_test_sources(clone, instance.base_commit, instance.test_patch)
    except OSError as exc:
        raise UsageError(f"{where}: cannot apply its test_patch to read the tests: {exc}") from None
    lists: dict[str, list[str]] = {}
    for key in ("FAIL_TO_PASS", "PASS_TO_PASS"):
        lists[key] = []
        for test_id in getattr(instance, key):
            try:
                lists[key].append(map_js_test_id(test_id, sources))
            except ValueError as exc:
                raise UsageError(
                    f"{where}: {key} id {_shown(test_id)} does not map to a "
                    f"'file > describe > test' id: {exc}"
                ) from None
    return instance.model_copy(update=lists)
