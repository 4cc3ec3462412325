"""Task sets and predictions load in SWE-bench's formats; bad records get one-line errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from evalkit.dataset import gold_predictions, load_predictions, load_task_set
from evalkit.errors import UsageError
from tests.conftest import MiniTasks

IDS = {"acme__calc-1", "acme__calc-2"}


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_swebench_string_encoded_test_lists_are_decoded(mini_tasks: MiniTasks) -> None:
    task_set = load_task_set(mini_tasks.root)
    assert (
        task_set.instances["acme__calc-1"].FAIL_TO_PASS[0] == "tests/test_calc.py::test_add[1-2-3]"
    )
    assert [p.model_name_or_path for p in gold_predictions(task_set)] == ["gold", "gold"]


def test_task_set_loads_with_hugging_face_datasets(mini_tasks: MiniTasks, tmp_path: Path) -> None:
    import datasets

    ds = datasets.load_dataset(
        "json", data_files=str(mini_tasks.root / "instances.jsonl"), cache_dir=str(tmp_path)
    )["train"]
    assert sorted(ds["instance_id"]) == sorted(IDS)


def test_bad_predictions_are_reported_by_line_and_the_rest_kept(tmp_path: Path) -> None:
    good = {"instance_id": "acme__calc-1", "model_name_or_path": "m", "model_patch": "x"}
    lines = [
        json.dumps(good),
        "{not json",
        json.dumps({"instance_id": "acme__calc-2", "model_patch": "x"}),
        json.dumps({**good, "instance_id": "nope-9"}),
        json.dumps(good),
        json.dumps({**good, "instance_id": "acme__calc-2", "model_patch": None}),
    ]
    preds, problems = load_predictions(write(tmp_path / "p.jsonl", "\n".join(lines) + "\n"), IDS)
    assert [(p.instance_id, p.model_patch) for p in preds] == [
        ("acme__calc-1", "x"),
        ("acme__calc-2", ""),
    ]
    messages = [str(p) for p in problems]
    assert messages[0].endswith(
        "p.jsonl:2: not valid JSON (Expecting property name enclosed in double quotes)"
    )
    assert "p.jsonl:3: missing field 'model_name_or_path'" in messages[1]
    assert "p.jsonl:4: unknown instance_id 'nope-9'" in messages[2]
    assert "p.jsonl:5: duplicate prediction" in messages[3]
    assert all("\n" not in m for m in messages)


def test_json_predictions_as_list_or_dict_keyed_by_id(tmp_path: Path) -> None:
    row = {"model_name_or_path": "m", "model_patch": "x"}
    as_dict = write(tmp_path / "d.json", json.dumps({"acme__calc-1": row}))
    as_list = write(tmp_path / "l.json", json.dumps([{"instance_id": "acme__calc-2", **row}]))
    assert load_predictions(as_dict, IDS)[0][0].instance_id == "acme__calc-1"
    assert load_predictions(as_list, IDS)[0][0].instance_id == "acme__calc-2"


def test_missing_files_are_usage_errors(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="predictions file not found"):
        load_predictions(tmp_path / "none.jsonl", IDS)
    with pytest.raises(UsageError, match="task set directory not found"):
        load_task_set(tmp_path / "nowhere")


def test_malformed_instance_line_names_file_and_line(tmp_path: Path) -> None:
    (tmp_path / "instances.jsonl").write_text(
        json.dumps({"instance_id": "a", "repo": "o/r", "base_commit": "abc1234"})
        + "\n"
        + json.dumps({"instance_id": "b", "repo": "not a repo", "base_commit": "abc1234"})
        + "\n"
    )
    with pytest.raises(UsageError, match=r"instances.jsonl:2: field 'repo'"):
        load_task_set(tmp_path)


def test_hugging_face_export_keeps_swebench_columns(mini_tasks: MiniTasks, tmp_path: Path) -> None:
    import datasets

    from evalkit.dataset import export_hf

    assert export_hf(mini_tasks.root, tmp_path / "hf") == 2
    ds = datasets.load_from_disk(str(tmp_path / "hf" / "dataset"))
    assert {"instance_id", "FAIL_TO_PASS", "test_patch", "environment_setup_commit"} <= set(
        ds.column_names
    )
    assert isinstance(ds[0]["FAIL_TO_PASS"], str)  # JSON-encoded, as SWE-bench ships it
    assert (tmp_path / "hf" / "test.parquet").is_file()
