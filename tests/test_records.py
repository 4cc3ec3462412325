"""Record files survive interruption: atomic writes, append-only lines, torn-line repair."""

from __future__ import annotations

from pathlib import Path

from evalkit.records import (
    Status,
    Verdict,
    append_jsonl,
    model_dir_name,
    read_verdicts,
    repair_jsonl,
    write_atomic,
)


def v(model: str, status: Status = Status.RESOLVED) -> Verdict:
    return Verdict(instance_id="i", model_name_or_path=model, status=status)


def test_torn_last_line_is_dropped_before_appending(tmp_path: Path) -> None:
    path = tmp_path / "results.jsonl"
    append_jsonl(path, [v("a")])
    with path.open("a") as fh:
        fh.write('{"schema_version": 1, "instance_id": "i", "mod')  # killed mid-write
    repair_jsonl(path)
    append_jsonl(path, [v("b")])
    assert [x.model_name_or_path for x in read_verdicts(path)] == ["a", "b"]
    assert len(path.read_text().splitlines()) == 2


def test_latest_line_per_model_and_instance_wins(tmp_path: Path) -> None:
    path = tmp_path / "results.jsonl"
    append_jsonl(path, [v("a", Status.ERROR), v("a", Status.RESOLVED)])
    assert [x.status for x in read_verdicts(path)] == [Status.RESOLVED]


def test_atomic_write_leaves_no_temp_files(tmp_path: Path) -> None:
    write_atomic(tmp_path / "x.json", "{}")
    write_atomic(tmp_path / "x.json", "[]")
    assert [p.name for p in tmp_path.iterdir()] == ["x.json"]
    assert (tmp_path / "x.json").read_text() == "[]"


def test_model_names_become_safe_directory_names() -> None:
    assert model_dir_name("org/model-v1.2") == "org__model-v1.2"
    assert model_dir_name("../../etc") == "__..__etc"
    assert "/" not in model_dir_name("a/b c/d")
