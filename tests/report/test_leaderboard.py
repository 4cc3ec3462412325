"""Public numbers: provenance kept, like-for-like preferred, names matched on the whole
model name (version included), near misses named, duplicates refused."""

from __future__ import annotations

from pathlib import Path

import pytest

from evalkit.errors import UsageError
from evalkit.report._leaderboard import (
    PRO,
    VERIFIED,
    best_score,
    candidates,
    load_leaderboard,
    load_model_map,
    near_misses,
    normalize,
    parse_model_name,
    safe_url,
)

HEADER = "benchmark,split,system,model,score_pct,n_instances,date,source_url,source_note\n"


def test_names_match_across_provider_prefixes_dates_and_punctuation() -> None:
    assert normalize("anthropic/claude-opus-4-5-20251101") == normalize("Claude Opus 4.5")
    assert parse_model_name("openai/gpt-5-2025-08-07").matches(parse_model_name("GPT-5"))
    assert normalize("gpt-5") != normalize("gpt-5.2")


@pytest.mark.parametrize(
    ("agent", "bench", "model", "score"),
    [
        # The audit's mismatches: each version gets its own row, or none.
        ("moonshotai/Kimi-K2-Instruct-0905", VERIFIED, "Kimi K2 0905", 69.2),
        ("mistralai/Devstral-Small-2505", VERIFIED, "mistralai/Devstral-Small-2505", 46.8),
        ("openai/gpt-5-2025-08-07", VERIFIED, "GPT-5", 65.0),
        ("claude-3-5-sonnet-20241022", VERIFIED, "Claude 3.5 Sonnet (2024-10-22)", 38.0),
        ("claude-3-5-sonnet-20240620", VERIFIED, "Claude 3.5 Sonnet (2024-06-20)", 33.6),
    ],
)
def test_versions_and_snapshot_dates_select_their_own_row(
    agent: str, bench: str, model: str, score: float
) -> None:
    found = best_score(load_leaderboard(), agent, bench)
    assert found is not None and (found.model, found.score_pct) == (model, score)


def test_a_version_without_a_public_row_matches_nothing_and_is_a_near_miss() -> None:
    rows = load_leaderboard()
    assert best_score(rows, "Devstral-Small-2507", VERIFIED) is None
    assert "Devstral small (2512)" in near_misses(rows, "Devstral-Small-2507")
    assert best_score(rows, "Kimi-K2-Instruct-0711", VERIFIED) is None
    assert "Kimi K2 Instruct" in near_misses(rows, "Kimi-K2-Instruct-0711")
    assert near_misses(rows, "agent-5") == []  # GLM-5 / GPT-5 are other families


def test_spelling_of_a_dated_name_does_not_change_the_evidence_kind() -> None:
    rows = load_leaderboard()
    plain, dated = (
        best_score(rows, "gpt-4.1", VERIFIED),
        best_score(rows, "gpt-4.1-2025-04-14", VERIFIED),
    )
    assert plain is not None and plain == dated


def test_packaged_rows_carry_source_date_evidence_and_reliability() -> None:
    rows = load_leaderboard()
    assert len(rows) > 100
    assert all(r.source_url and r.date for r in rows)
    assert {"standardized_scaffold", "vendor_reported"} <= {r.evidence for r in rows}
    seal = best_score(rows, "claude-opus-4-5", PRO)
    assert seal is not None and seal.reliability == "AI digest / low confidence"
    official = best_score(rows, "Claude Opus 4.5", VERIFIED)
    assert official is not None and official.reliability == "official leaderboard"
    assert official.public_n == 500 and seal.public_n == 731


def test_harness_spread_lists_every_public_number_for_the_model() -> None:
    found = candidates(load_leaderboard(), "claude-opus-4-5", VERIFIED)
    assert found[0].evidence == "standardized_scaffold"
    assert {r.score_pct for r in found} >= {74.4, 80.9}


def test_standardized_scaffold_is_preferred_over_vendor_numbers() -> None:
    rows = load_leaderboard()
    verified = best_score(rows, "Claude Opus 4.5", VERIFIED)
    pro = best_score(rows, "claude-opus-4-5", PRO)
    assert verified is not None and verified.evidence == "standardized_scaffold"
    assert pro is not None and pro.evidence == "standardized_scaffold"


def test_user_csv_adds_and_replaces_rows(tmp_path: Path) -> None:
    extra = tmp_path / "lb.csv"
    extra.write_text(
        HEADER + "SWE-bench Verified,test,our harness,Acme Coder 1,61.5,500,2026-10-01,"
        "https://example.invalid/acme,evidence=standardized_scaffold; tier=primary\n"
    )
    score = best_score(load_leaderboard(extra), "acme-coder-1", VERIFIED)
    assert score is not None and score.score_pct == 61.5


def test_a_duplicate_key_is_an_error_naming_the_line(tmp_path: Path) -> None:
    row = "SWE-bench Pro,public,SWE-agent,Acme Coder 1,{},731,2026-10-01,https://x.invalid,\n"
    extra = tmp_path / "dup.csv"
    extra.write_text(HEADER + row.format(25.9) + row.format(23.3))
    with pytest.raises(UsageError, match=r"dup\.csv:3: duplicate row"):
        load_leaderboard(extra)


def test_an_empty_or_partial_date_sorts_as_oldest(tmp_path: Path) -> None:
    extra = tmp_path / "d.csv"
    line = "SWE-bench Verified,test,{},Acme Coder 1,{},500,{},https://x.invalid,evidence=agent_system\n"
    extra.write_text(
        HEADER
        + line.format("a", 10, "")
        + line.format("b", 20, "2025-10")
        + line.format("c", 30, "2025-10-28")
        + line.format("d", 40, "2025")
    )
    found = best_score(load_leaderboard(extra), "acme-coder-1", VERIFIED)
    assert found is not None and found.system == "c"


@pytest.mark.parametrize(
    "url",
    [
        "javascript:alert(1)",
        "JaVaScRiPt:alert(1)",
        "java\tscript:alert(1)",
        " javascript:alert(1)",
        "data:text/html,<script>alert(1)</script>",
        "github-code-index:id=123",
        "//evil.invalid/x",
        "https://",
    ],
)
def test_only_plain_http_urls_become_links(url: str) -> None:
    assert safe_url(url) == ""


def test_http_and_https_urls_stay_links() -> None:
    assert safe_url("https://www.swebench.com/") == "https://www.swebench.com/"
    assert safe_url("http://example.com/a?b=1") == "http://example.com/a?b=1"


def test_model_map_reads_toml_and_json_and_rejects_garbage(tmp_path: Path) -> None:
    (tmp_path / "m.toml").write_text('"team/agent-a" = "Claude Opus 4.5"\n')
    (tmp_path / "m.json").write_text('{"team/agent-a": "GPT-5"}')
    (tmp_path / "bad.json").write_text('{"team/agent-a": 3}')
    assert load_model_map(tmp_path / "m.toml") == {"team/agent-a": "Claude Opus 4.5"}
    assert load_model_map(tmp_path / "m.json") == {"team/agent-a": "GPT-5"}
    with pytest.raises(UsageError, match=r"bad\.json"):
        load_model_map(tmp_path / "bad.json")
