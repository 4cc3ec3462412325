"""Task sets and predictions load in SWE-bench's formats; bad records get one-line errors."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

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


def test_a_prediction_without_model_patch_counts_as_empty_but_is_reported(
    tmp_path: Path,
) -> None:
    rows = [
        {"instance_id": "acme__calc-1", "model_name_or_path": "m"},
        {"instance_id": "acme__calc-2", "model_name_or_path": "m", "model_patch": None},
        {"instance_id": "acme__calc-2", "model_name_or_path": "n", "model_patch": ""},
    ]
    path = write(tmp_path / "p.jsonl", "".join(json.dumps(r) + "\n" for r in rows))
    preds, problems = load_predictions(path, IDS)
    assert [(p.model_name_or_path, p.model_patch) for p in preds] == [
        ("m", ""),
        ("m", ""),
        ("n", ""),
    ]
    assert [(str(p), p.warning) for p in problems] == [
        (f"{path}:1: no model_patch; counted as an empty patch", True),
        (f"{path}:2: no model_patch; counted as an empty patch", True),
    ]
    as_dict = write(tmp_path / "d.json", json.dumps({"acme__calc-1": {"model_name_or_path": "m"}}))
    (problem,) = load_predictions(as_dict, IDS)[1]
    assert str(problem) == f"{as_dict}: entry 0: no model_patch; counted as an empty patch"


def test_invalid_utf8_in_predictions_is_a_problem_on_its_line(tmp_path: Path) -> None:
    good = json.dumps({"instance_id": "acme__calc-1", "model_name_or_path": "m"}).encode()
    path = tmp_path / "p.jsonl"
    path.write_bytes(good + b"\n" + b'{"instance_id": "\xff"}\n')
    preds, problems = load_predictions(path, IDS)
    assert len(preds) == 1
    assert f"{path}:2: not valid UTF-8 (byte 18)" in [str(p) for p in problems]
    whole = tmp_path / "p.json"
    whole.write_bytes(b'[{"instance_id": "\xff"}]')
    with pytest.raises(UsageError, match=r"p.json: not valid UTF-8"):
        load_predictions(whole, IDS)


def test_invalid_utf8_in_instances_is_a_usage_error_naming_the_line(
    mini_tasks: MiniTasks, tmp_path: Path
) -> None:
    import shutil

    tasks = tmp_path / "tasks"
    shutil.copytree(mini_tasks.root, tasks)
    with (tasks / "instances.jsonl").open("ab") as fh:
        fh.write(b'{"instance_id": "\xc3"}\n')
    with pytest.raises(UsageError, match=r"instances.jsonl:3: not valid UTF-8"):
        load_task_set(tasks)


@pytest.mark.parametrize(
    "model", ["x" * 300, "é" * 300, "[/]", "a\nb", "nul\x00", "../../etc", "acme/agent"]
)
def test_hostile_model_names_load_and_messages_stay_one_short_line(
    tmp_path: Path, model: str
) -> None:
    row = {"instance_id": "acme__calc-1", "model_name_or_path": model, "model_patch": "x"}
    path = write(tmp_path / "p.jsonl", (json.dumps(row) + "\n") * 2)
    preds, problems = load_predictions(path, IDS)
    assert [p.model_name_or_path for p in preds] == [model]
    (duplicate,) = problems
    assert "duplicate prediction" in str(duplicate)
    assert "\n" not in str(duplicate) and len(str(duplicate)) < len(str(path)) + 300


# --- evalkit tasks import: SWE-bench-format records plus a local clone --------------

import subprocess  # noqa: E402

from tests.conftest import git, write_tree  # noqa: E402


def _history(root: Path) -> tuple[Path, list[str]]:
    repo = root / "clone"
    repo.mkdir()
    git(repo, "init", "-q")
    shas = []
    for n in range(3):
        write_tree(repo, {"pkg/mod.py": f"X = {n}\n", "tests/test_mod.py": f"# {n}\n"})
        git(repo, "add", "-A")
        git(repo, "commit", "-qm", f"c{n}")
        shas.append(git(repo, "rev-parse", "HEAD"))
    git(repo, "tag", "v-late")
    return repo, shas


def _record(shas: list[str], **extra: Any) -> dict[str, Any]:
    return {
        "instance_id": "acme__lib-7",
        "repo": "acme/lib",
        "base_commit": shas[1],
        "environment_setup_commit": shas[0],
        "patch": "diff --git a/pkg/mod.py b/pkg/mod.py\n",
        "test_patch": "",
        "problem_statement": "X is wrong",
        "version": 1.0,
        "FAIL_TO_PASS": '["tests/test_mod.py::test_x"]',  # SWE-bench: a JSON string
        "PASS_TO_PASS": [],
        "install_config": {
            "python": "3.9",
            "install": "pip install -e .",
            "pip_packages": ["mock"],
        },
        **extra,
    }


def test_import_swebench_jsonl_writes_bundles_without_later_history(tmp_path: Path) -> None:
    from evalkit.dataset import import_records

    repo, shas = _history(tmp_path)
    records = tmp_path / "records.jsonl"
    records.write_text(json.dumps(_record(shas)) + "\n")
    out = tmp_path / "tasks"
    summary = import_records(str(records), out, repos={"acme/lib": repo})
    assert summary.instances == 1 and summary.specs == 1
    task_set = load_task_set(out)
    instance = task_set.instances["acme__lib-7"]
    assert instance.FAIL_TO_PASS == ["tests/test_mod.py::test_x"] and instance.version == "1.0"
    bundle = task_set.bundle_path(instance)
    heads = subprocess.run(
        ["git", "bundle", "list-heads", str(bundle)], capture_output=True, text=True, check=True
    ).stdout
    listed = {line.split()[0] for line in heads.splitlines()}
    assert listed == {shas[0], shas[1]}  # the needed commits; no tag, no later commit
    clone = tmp_path / "check"
    git(tmp_path, "clone", "-q", "--bare", str(bundle), str(clone))
    assert subprocess.run(["git", "-C", str(clone), "cat-file", "-e", shas[2]]).returncode != 0
    spec = task_set.spec_file.instances["acme__lib-7"]
    assert spec["python"] == "3.9" and spec["install"] == ["pip install -e ."]
    assert spec["pip_packages"] == ["pytest", "mock"]


def test_import_reads_json_and_parquet_lists_as_swebench_has_them(tmp_path: Path) -> None:
    import pandas as pd

    from evalkit.dataset import import_records

    repo, shas = _history(tmp_path)
    row = _record(shas, FAIL_TO_PASS=["a::b"], PASS_TO_PASS='["c::d"]')
    del row["install_config"]
    (tmp_path / "r.json").write_text(json.dumps([row]))
    pd.DataFrame([{**row, "FAIL_TO_PASS": ["a::b"], "version": "1.0"}]).to_parquet(
        tmp_path / "r.parquet"
    )
    for name in ("r.json", "r.parquet"):
        out = tmp_path / f"out-{name}"
        import_records(
            str(tmp_path / name), out, clones=tmp_path / "clones-missing", repos={"acme/lib": repo}
        )
        instance = load_task_set(out).instances["acme__lib-7"]
        assert (instance.FAIL_TO_PASS, instance.PASS_TO_PASS) == (["a::b"], ["c::d"])
        assert not (out / "evalkit.toml").exists()  # no spec in the source: inferred


def test_import_errors_name_the_record(tmp_path: Path) -> None:
    from evalkit.dataset import import_records

    repo, shas = _history(tmp_path)
    records = tmp_path / "records.jsonl"
    records.write_text(json.dumps(_record(shas, base_commit="ab" * 20)) + "\n")
    with pytest.raises(UsageError, match=r"record 1 \('acme__lib-7'\): commit abab.* is not in"):
        import_records(str(records), tmp_path / "o1", repos={"acme/lib": repo})
    bad = _record(shas)
    del bad["base_commit"]
    records.write_text(
        json.dumps(_record(shas, instance_id="acme__lib-8")) + "\n" + json.dumps(bad)
    )
    with pytest.raises(
        UsageError, match=r"record 2 \('acme__lib-7'\): missing field 'base_commit'"
    ):
        import_records(str(records), tmp_path / "o2", repos={"acme/lib": repo})
    records.write_text(json.dumps(_record(shas)) + "\n")
    with pytest.raises(UsageError, match="no clone of acme/lib; give --repo"):
        import_records(str(records), tmp_path / "o3")
