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


# --- SWE-bench Multilingual / Pro records of a TypeScript repository ------------------------

TS_SAMPLE = Path(__file__).resolve().parents[1] / "tasks" / "sample-ts"


def _split(test_id: str) -> tuple[str, list[str]]:
    file, *names = test_id.split(" > ")
    return file, names


# How each benchmark writes evalkit's `file > describe > name` (the export side of the test).
STYLES = {
    # Multilingual with vitest's verbose reporter: evalkit's own form.
    "multilingual-vitest": lambda i: i,
    # Multilingual's jest parser keeps the test's own title only.
    "multilingual-jest": lambda i: _split(i)[1][-1],
    # Pro: the file, " | ", then jest / mocha's full name (titles joined by spaces).
    "pro": lambda i: f"{_split(i)[0]} | {' '.join(_split(i)[1])}",
    # Some log parsers: pytest-like separators.
    "colons": lambda i: "::".join([_split(i)[0], *_split(i)[1]]),
}


def _export(style: str, out: Path) -> Path:
    """tasks/sample-ts as SWE-bench records of ``style``: the columns that benchmark
    publishes, its id form, its list encoding."""
    rows = []
    for line in (TS_SAMPLE / "instances.jsonl").read_text().splitlines():
        inst = json.loads(line)
        f2p = [STYLES[style](i) for i in inst["FAIL_TO_PASS"]]
        p2p = [STYLES[style](i) for i in inst["PASS_TO_PASS"]]
        row = {k: inst[k] for k in ("repo", "instance_id", "base_commit", "patch", "test_patch")}
        row["problem_statement"] = inst["problem_statement"]
        if style == "pro":  # lowercase columns, Python-literal lists, Pro's extra context
            row |= {
                "fail_to_pass": repr(f2p),
                "pass_to_pass": repr(p2p),
                "repo_language": "ts",
                "requirements": "Keep the public API.",
                "interface": "",
                "selected_test_files_to_run": repr(
                    sorted({_split(i)[0] for i in inst["FAIL_TO_PASS"]})
                ),
            }
        else:
            row |= {
                "FAIL_TO_PASS": json.dumps(f2p),
                "PASS_TO_PASS": json.dumps(p2p),
                "version": str(inst["instance_id"].rsplit("-", 1)[1]),
                "environment_setup_commit": inst["base_commit"],
            }
        rows.append(row)
    out.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return out


@pytest.fixture(scope="module")
def ts_clone(tmp_path_factory: pytest.TempPathFactory) -> Path:
    clone = tmp_path_factory.mktemp("tskit") / "tskit.git"
    bundle = TS_SAMPLE / "repos" / "evalkit-samples__tskit.bundle"
    subprocess.run(["git", "clone", "-q", "--mirror", str(bundle), str(clone)], check=True)
    return clone


@pytest.mark.parametrize("style", sorted(STYLES))
def test_js_records_of_each_benchmark_import_with_evalkit_ids(
    style: str, ts_clone: Path, tmp_path: Path
) -> None:
    from evalkit.dataset import import_records

    records = _export(style, tmp_path / f"{style}.jsonl")
    out = tmp_path / "tasks"
    summary = import_records(str(records), out, repos={"evalkit-samples/tskit": ts_clone})
    assert summary.instances == 3 and summary.specs == 0
    assert not (out / "evalkit.toml").exists()  # everything is inferred from package.json
    got = load_task_set(out).instances
    want = load_task_set(TS_SAMPLE).instances
    for iid, inst in want.items():
        assert got[iid].FAIL_TO_PASS == inst.FAIL_TO_PASS, (style, iid)
        assert got[iid].PASS_TO_PASS == inst.PASS_TO_PASS, (style, iid)
        assert got[iid].patch == inst.patch and got[iid].test_patch == inst.test_patch
    if style == "pro":
        first = got[sorted(got)[0]]
        assert first.problem_statement.endswith("Requirements:\nKeep the public API.\n")
        assert (first.model_extra or {}).get("repo_language") == "ts"


def test_a_js_id_that_maps_to_no_test_or_to_two_is_one_line_naming_record_and_id(
    ts_clone: Path, tmp_path: Path
) -> None:
    from evalkit.dataset import import_records

    records = _export("multilingual-jest", tmp_path / "r.jsonl")
    rows = [json.loads(line) for line in records.read_text().splitlines()]
    rows[1]["FAIL_TO_PASS"] = json.dumps(["decodes everything"])
    records.write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(UsageError) as err:
        import_records(str(records), tmp_path / "o", repos={"evalkit-samples/tskit": ts_clone})
    message = str(err.value)
    assert "\n" not in message and "record 2" in message and "tskit-2" in message
    assert "'decodes everything'" in message and "no test named" in message


@pytest.mark.parametrize(
    ("test_id", "expected"),
    [
        ("a.test.ts > outer > inner > t", "a.test.ts > outer > inner > t"),
        ("a.test.ts::outer::t", "a.test.ts > outer > t"),
        ("a.test.ts | outer inner t", "a.test.ts > outer > inner > t"),
        ("a.test.ts | outer t", "a.test.ts > outer > t"),
        ("outer > inner > t", "a.test.ts > outer > inner > t"),  # karma: no file
        ("only here", "b.spec.js > only here"),  # jest verbose: the title alone
        ("b.spec.js | only here", "b.spec.js > only here"),
    ],
)
def test_js_id_forms_map_to_file_describe_name(test_id: str, expected: str) -> None:
    from evalkit.dataset import map_js_test_id

    assert map_js_test_id(test_id, SOURCES) == expected


SOURCES = {
    "a.test.ts": """
import { describe, it, expect } from "vitest";
// it("commented out", () => {})
describe("outer", () => {
  it("t", () => { expect(")").toBe(")"); });
  describe.skip('inner', function () {
    test.only(`t`, () => { const s = "describe('x', () => {"; });
    it(`dynamic ${1}`, () => {});
  });
  it.each([1, 2])("each %i", () => {});
});
""",
    "b.spec.js": "it('only here', () => {})\ndescribe('x', () => { it('t', () => {}) })\n",
}


def test_js_titles_follow_nesting_and_skip_strings_comments_and_templates() -> None:
    from evalkit.dataset import js_test_titles

    assert js_test_titles(SOURCES["a.test.ts"]) == [
        ("outer", "t"),
        ("outer", "inner", "t"),
    ]
    assert js_test_titles(SOURCES["b.spec.js"]) == [("only here",), ("x", "t")]


@pytest.mark.parametrize(
    ("test_id", "needle"),
    [
        ("t", "3 tests named 't'"),  # outer > t, outer > inner > t, x > t
        ("missing", "no test named 'missing'"),
        ("c.test.ts | outer t", "is not a test file"),
        ("a.test.ts | outer nope", "no test named 'outer nope' in a.test.ts"),
    ],
)
def test_unmappable_js_ids_say_why(test_id: str, needle: str) -> None:
    from evalkit.dataset import map_js_test_id

    with pytest.raises(ValueError) as err:
        map_js_test_id(test_id, SOURCES)
    assert needle in str(err.value) and "\n" not in str(err.value)


@pytest.mark.docker
@pytest.mark.parametrize("style", ["multilingual-jest", "pro"])
def test_imported_js_records_evaluate_gold_resolved(
    docker_engine: Any, style: str, ts_clone: Path, tmp_path: Path
) -> None:
    from evalkit.dataset import import_records
    from evalkit.harness import evaluate
    from evalkit.records import Status

    out = tmp_path / "tasks"
    import_records(
        str(_export(style, tmp_path / "r.jsonl")), out, repos={"evalkit-samples/tskit": ts_clone}
    )
    outcome = evaluate(
        out,
        None,
        "gold",
        runs_dir=tmp_path / "runs",
        workers=2,
        gold=True,
        progress=False,
        log=lambda _: None,
    )
    assert len(outcome.verdicts) == 3
    assert all(v.status is Status.RESOLVED for v in outcome.verdicts), [
        (v.instance_id, v.status) for v in outcome.verdicts
    ]
