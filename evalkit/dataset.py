"""Reading task sets and predictions, with one-line errors that name file and line.

A task set is a directory: ``instances.jsonl`` (SWE-bench columns), ``repos/`` with
one git bundle per repository, and an optional ``evalkit.toml``. Predictions use
SWE-bench's format (``.jsonl``, or ``.json`` as a list or a dict keyed by id).
"""

from __future__ import annotations

import hashlib
import json
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
