"""Public numbers: provenance kept, like-for-like preferred, names matched by a clear rule."""

from __future__ import annotations

from pathlib import Path

import pytest

from evalkit.errors import UsageError
from evalkit.report._leaderboard import (
    PRO,
    VERIFIED,
    best_score,
    load_leaderboard,
    load_model_map,
    normalize,
)


def test_names_match_across_provider_prefixes_dates_and_punctuation() -> None:
    assert normalize("anthropic/claude-opus-4-5-20251101") == normalize("Claude Opus 4.5")
    assert normalize("gpt-5") != normalize("gpt-5.2")


def test_packaged_rows_carry_source_date_and_evidence() -> None:
    rows = load_leaderboard()
    assert len(rows) > 100
    assert all(r.source_url and r.date for r in rows)
    assert {"standardized_scaffold", "vendor_reported"} <= {r.evidence for r in rows}


def test_standardized_scaffold_is_preferred_over_vendor_numbers() -> None:
    rows = load_leaderboard()
    verified = best_score(rows, "Claude Opus 4.5", VERIFIED)
    pro = best_score(rows, "claude-opus-4-5", PRO)
    assert verified is not None and verified.evidence == "standardized_scaffold"
    assert pro is not None and pro.evidence == "standardized_scaffold"


def test_user_csv_adds_and_replaces_rows(tmp_path: Path) -> None:
    extra = tmp_path / "lb.csv"
    extra.write_text(
        "benchmark,split,system,model,score_pct,n_instances,date,source_url,source_note\n"
        "SWE-bench Verified,test,our harness,Acme Coder 1,61.5,500,2026-10-01,"
        "https://example.invalid/acme,evidence=standardized_scaffold; tier=primary\n"
    )
    score = best_score(load_leaderboard(extra), "acme-coder-1", VERIFIED)
    assert score is not None and score.score_pct == 61.5


def test_model_map_reads_toml_and_json_and_rejects_garbage(tmp_path: Path) -> None:
    (tmp_path / "m.toml").write_text('"team/agent-a" = "Claude Opus 4.5"\n')
    (tmp_path / "m.json").write_text('{"team/agent-a": "GPT-5"}')
    (tmp_path / "bad.json").write_text('{"team/agent-a": 3}')
    assert load_model_map(tmp_path / "m.toml") == {"team/agent-a": "Claude Opus 4.5"}
    assert load_model_map(tmp_path / "m.json") == {"team/agent-a": "GPT-5"}
    with pytest.raises(UsageError, match=r"bad\.json"):
        load_model_map(tmp_path / "bad.json")
