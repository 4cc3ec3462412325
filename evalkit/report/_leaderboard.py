"""Public leaderboard rows, and the rule that matches an agent to one of their models."""

from __future__ import annotations

import csv
import io
import json
import re
import sys
from dataclasses import dataclass
from pathlib import Path

from evalkit.errors import UsageError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

PACKAGED = Path(__file__).parent / "data" / "public_leaderboards.csv"
VERIFIED = "SWE-bench Verified"
PRO = "SWE-bench Pro"

# Like with like: a standardized scaffold first, a vendor's own harness last.
EVIDENCE_RANK = {
    "standardized_scaffold": 0,
    "independent_eval": 1,
    "agent_system": 2,
    "vendor_reported": 3,
    "vendor_run": 4,
}
_COLUMNS = ("benchmark", "split", "system", "model", "score_pct", "date", "source_url")


@dataclass(frozen=True)
class PublicScore:
    """One public leaderboard number with its provenance."""

    benchmark: str
    split: str
    system: str
    model: str
    score_pct: float
    n_instances: str
    date: str
    source_url: str
    evidence: str
    tier: str

    @property
    def key(self) -> tuple[str, str, str, str]:
        return (self.benchmark, self.split, self.system, self.model)


def _tag(note: str, name: str) -> str:
    match = re.search(rf"\b{name}=([^;\s]+)", note)
    return match.group(1) if match else "unknown"


def _parse(text: str, source: str) -> list[PublicScore]:
    reader = csv.DictReader(io.StringIO(text))
    missing = [c for c in _COLUMNS if c not in (reader.fieldnames or [])]
    if missing:
        raise UsageError(f"leaderboard CSV lacks column(s) {missing}", path=source)
    rows = []
    for line, row in enumerate(reader, start=2):
        try:
            score = float(row["score_pct"])
        except ValueError:
            raise UsageError(
                f"score_pct {row['score_pct']!r} is not a number", path=source, line=line
            ) from None
        note = row.get("source_note") or ""
        rows.append(
            PublicScore(
                benchmark=row["benchmark"].strip(),
                split=(row.get("split") or "").strip(),
                system=row["system"].strip(),
                model=row["model"].strip(),
                score_pct=score,
                n_instances=(row.get("n_instances") or "").strip(),
                date=row["date"].strip(),
                source_url=row["source_url"].strip(),
                evidence=_tag(note, "evidence"),
                tier=_tag(note, "tier"),
            )
        )
    return rows


def load_leaderboard(extra: Path | None = None) -> list[PublicScore]:
    """The packaged rows, with ``extra``'s rows added or replacing same-key rows."""
    rows = {r.key: r for r in _parse(PACKAGED.read_text(encoding="utf-8"), str(PACKAGED))}
    if extra is not None:
        if not extra.is_file():
            raise UsageError("leaderboard file not found", path=str(extra))
        for row in _parse(extra.read_text(encoding="utf-8"), str(extra)):
            rows[row.key] = row
    return list(rows.values())


def normalize(name: str) -> str:
    """Comparable form of a model name: ``anthropic/claude-opus-4-5-20251101`` and
    ``Claude Opus 4.5`` both become ``claude opus 4 5``."""
    name = name.rsplit("/", 1)[-1].lower()
    tokens = re.split(r"[^a-z0-9]+", name)
    drop = {"", "latest", "preview", "instruct"}
    kept = [t for t in tokens if t not in drop and not re.fullmatch(r"(19|20)\d{6}|\d{4}", t)]
    return " ".join(kept)


def load_model_map(path: Path | None) -> dict[str, str]:
    """Agent ``model_name_or_path`` -> leaderboard model name, from TOML or JSON."""
    if path is None:
        return {}
    if not path.is_file():
        raise UsageError("model map not found", path=str(path))
    text = path.read_text(encoding="utf-8")
    try:
        data = json.loads(text) if path.suffix == ".json" else tomllib.loads(text)
    except (json.JSONDecodeError, tomllib.TOMLDecodeError) as exc:
        raise UsageError(f"cannot parse model map: {exc}", path=str(path)) from None
    if not isinstance(data, dict) or not all(isinstance(v, str) for v in data.values()):
        raise UsageError("model map must map agent names to model names (strings)", path=str(path))
    return {str(k): v for k, v in data.items()}


def best_score(rows: list[PublicScore], model: str, benchmark: str) -> PublicScore | None:
    """The most comparable public number: standardized scaffold first, then primary
    sources, then the newest; for Pro the public split before the commercial one."""
    wanted = normalize(model)
    candidates = [r for r in rows if r.benchmark == benchmark and normalize(r.model) == wanted]
    if not candidates:
        return None
    return min(
        candidates,
        key=lambda r: (
            EVIDENCE_RANK.get(r.evidence, 9),
            0 if r.split in ("test", "public") else 1,
            0 if r.tier == "primary" else 1,
            "".join(chr(0x10FFFF - ord(c)) for c in r.date),  # newest first
        ),
    )
