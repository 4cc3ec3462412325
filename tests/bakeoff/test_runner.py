"""The bake-off runner end to end against a real Docker engine, with scripted agents.

Each attempt runs in its own sandbox; what it claims is recorded beside what grading
in a separate sandbox verified, and nothing the agent leaves in ``.git`` runs when the
prediction is taken.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from evalkit.bakeoff.agents import write_demo_config
from evalkit.bakeoff.config import load_config, make_run_options
from evalkit.bakeoff.records import AttemptStatus, BakeoffRunDir, read_attempts
from evalkit.bakeoff.runner import run_bakeoff
from evalkit.dataset import load_task_set
from evalkit.records import Status
from tests.conftest import MiniTasks

pytestmark = pytest.mark.docker

TRAP = """#!/bin/bash
# A generic agent that leaves traps for whoever diffs its work: a hook, an fsmonitor
# command and a diff driver that would write a marker file if any of them ran.
set -u
cd /testbed
printf '#!/bin/sh\\ntouch /testbed/PWNED\\n' > .git/hooks/pre-commit
chmod +x .git/hooks/pre-commit
git config core.fsmonitor 'touch /testbed/PWNED; false'
git config diff.x.command 'touch /testbed/PWNED'
echo '* diff=x' > .gitattributes
echo 'new file' > added_by_agent.txt
python3 - <<'PY'
import socket
try:
    socket.create_connection(("1.1.1.1", 80), timeout=2)
    print("egress: open")
except OSError as exc:
    print("egress: refused", exc)
PY
echo '{"resolved": true, "summary": "all done"}' > "$EVALKIT_CLAIM_FILE"
"""


def test_claims_are_recorded_beside_verified_results_and_traps_never_run(
    docker_engine: Any, mini_tasks: MiniTasks, tmp_path: Path
) -> None:
    config_dir = tmp_path / "config"
    path = write_demo_config(mini_tasks.root, config_dir, model_url="http://127.0.0.1:9")
    (config_dir / "trap.sh").write_text(TRAP)
    path.write_text(
        path.read_text() + '\n[[agents]]\nname = "trap"\nadapter = "command"\n'
        'command = ["bash", "/agent/trap.sh"]\nfiles = { "/agent/trap.sh" = "trap.sh" }\n'
    )
    config = load_config(path)
    options = make_run_options(
        config,
        run_id="bo",
        runs_dir=tmp_path / "runs",
        repeats=1,
        workers=2,
        agents=["oracle", "liar", "trap"],
        instance_ids=["acme__calc-1"],
        store=None,
    )
    run = BakeoffRunDir(tmp_path / "runs", "bo")
    run_bakeoff(config, load_task_set(mini_tasks.root), run, options, log=lambda _: None)
    attempts = {a.agent: a for a in read_attempts(run.attempts)}
    assert set(attempts) == {"oracle", "liar", "trap"}
    assert attempts["oracle"].status is Status.RESOLVED and attempts["oracle"].claim is True
    liar = attempts["liar"]
    assert liar.claim is True and liar.claim_source == "claim_file"
    assert liar.status is Status.EMPTY_PATCH  # the overclaim is on the record
    trap = attempts["trap"]
    assert trap.attempt_status is AttemptStatus.COMPLETED
    patch = run.resolve(trap.patch).read_text()
    assert "added_by_agent.txt" in patch and "PWNED" not in patch
    log = run.resolve(trap.agent_log).read_text()
    assert "egress: refused" in log
    # Each repeat is an ordinary evaluate run the report and regrade can read.
    assert (tmp_path / "runs" / "bo.r1" / "results.jsonl").is_file()
    # Resuming runs nothing again.
    again = run_bakeoff(config, load_task_set(mini_tasks.root), run, options, log=lambda _: None)
    assert again == [] and len(read_attempts(run.attempts)) == 3
