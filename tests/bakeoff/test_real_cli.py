"""The demo's real CLI agent, through the whole runner: the CLI installed from its registry
runs in the attempt sandbox, talks to the scripted model server only through the gateway,
makes the scripted fix with its own shell tool, claims it, and grading in a separate
sandbox verifies it. Only the model is scripted."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest

from evalkit.bakeoff.config import load_config, make_run_options
from evalkit.bakeoff.demo import DEMO_CLI_AGENT, cli_script, write_cli_demo_config
from evalkit.bakeoff.records import AttemptStatus, BakeoffRunDir, read_attempts
from evalkit.bakeoff.runner import run_bakeoff
from evalkit.bakeoff.scripted import ScriptedModelServer
from evalkit.dataset import load_task_set
from evalkit.records import Status

pytestmark = [pytest.mark.docker, pytest.mark.agents]

SAMPLE = Path(__file__).resolve().parents[2] / "tasks" / "sample"
TASKS = ["evalkit-samples__textkit-1", "evalkit-samples__textkit-2"]


def test_the_demo_config_gives_the_cli_the_fixes_but_no_task_names(tmp_path: Path) -> None:
    server_url = "http://127.0.0.1:4242"
    path = write_cli_demo_config(SAMPLE, tmp_path / "cfg", model_url=server_url)
    config = load_config(path)
    cli = config.agent(DEMO_CLI_AGENT)
    assert cli.adapter == DEMO_CLI_AGENT and cli.upstream == "scripted"
    assert config.models["scripted"].base_url == server_url
    assert set(cli.files) == {"/agent/oracle-patches"}
    # Generic: the script knows no task, it reads the task's id from the sandbox's env.
    text = json.dumps(cli_script().model_dump())
    assert "textkit" not in text and "$EVALKIT_INSTANCE_ID" in text


def test_real_cli_through_the_runner_resolves_and_claims(
    docker_engine: Any, base_image: str, tmp_path: Path
) -> None:
    with ScriptedModelServer(cli_script()) as server:
        assert server.base_url is not None
        path = write_cli_demo_config(SAMPLE, tmp_path / "cfg", model_url=server.base_url)
        config = load_config(path)
        options = make_run_options(
            config,
            run_id="cli",
            runs_dir=tmp_path / "runs",
            repeats=1,
            workers=1,
            agents=[DEMO_CLI_AGENT],
            instance_ids=TASKS,
            store=tmp_path / "runs" / "evalkit.db",
        )
        run = BakeoffRunDir(tmp_path / "runs", "cli")
        start = time.monotonic()
        run_bakeoff(config, load_task_set(SAMPLE), run, options, log=print)
        print(
            f"[timing] {DEMO_CLI_AGENT} bake-off, {len(TASKS)} attempts: "
            f"{time.monotonic() - start:.1f}s"
        )
        calls = server.model_calls()
    attempts = sorted(read_attempts(run.attempts), key=lambda a: a.instance_id)
    assert [a.instance_id for a in attempts] == TASKS
    for attempt in attempts:
        log = run.resolve(attempt.agent_log).read_text(errors="replace")[-3000:]
        assert attempt.attempt_status is AttemptStatus.COMPLETED, (attempt.error, log)
        assert attempt.status is Status.RESOLVED, log
        assert attempt.claim is True and attempt.claim_source == "claim_file"
        assert attempt.tampered_files == [] and attempt.integrity_flags == []
        # The gateway metered the CLI's model calls and kept the transcript.
        assert attempt.model_calls >= 3 and attempt.input_tokens > 0 and attempt.cost_usd > 0
        transcript = run.resolve(attempt.transcript).read_text()
        assert "/v1/chat/completions" in transcript
    # Every call reached the scripted server through the gateway, none around it, and a
    # keyless upstream gets no credential at all: the sandbox's dummy key never leaves.
    assert len(calls) == sum(a.model_calls for a in attempts)
    for call in calls:
        sent = {k.lower(): v for k, v in call.headers.items()}
        assert "authorization" not in sent and "x-api-key" not in sent, sent
    # The repeat is an ordinary evaluate run the report reads.
    results = (tmp_path / "runs" / "cli.r1" / "results.jsonl").read_text().splitlines()
    assert {json.loads(line)["model_name_or_path"] for line in results} == {DEMO_CLI_AGENT}
