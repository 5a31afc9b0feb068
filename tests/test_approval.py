"""The approval gate (issue 23): between the rehearsal and production's first change.

A headless run with no terminal waits at the gate for ``kbmigrate approve RUN``; a wrong hash is
refused; the right one lets it go on, and the run records who approved, how, and the sha256 of
the rehearsal's evidence (computed here from the file). Four eyes refuse the operator, and
accept someone else. A run nobody approves stops, resumable, having changed nothing."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from kbmigrate import db
from kbmigrate.conninfo import Target
from kbmigrate.engine import gates
from kbmigrate.errors import GateClosed, NotApproved
from kbmigrate.paths import REPO_ROOT, RUNS_DIR
from kbmigrate.run import approval

from conftest import drop, new_demo, run_cli

EXE = Path(sys.executable).parent / "kbmigrate"


def evidence_sha(run_id: str) -> str:
    return hashlib.sha256((RUNS_DIR / run_id / "rehearsal.json").read_bytes()).hexdigest()


def changed_by(target: Target, run_id: str) -> int:
    """Production's changes (steps 02-05) the ledger holds for the run, read apart from the engine."""
    with db.connect(target, autocommit=True) as conn:
        if not db.scalar(conn, "select to_regclass('kbmigrate.ledger') is not null"):
            return 0
        return int(db.scalar(conn, "select count(*) from kbmigrate.ledger where run_id = %s and step in "
                                   "('02_schema', '03_backfill', '04_seed_sections', '05_import_legacy')", (run_id,)))


def until_waiting(proc: "subprocess.Popen[str]", seen: list[str], seconds: float = 120) -> None:
    deadline = time.monotonic() + seconds
    assert proc.stdout is not None
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line and proc.poll() is not None:
            raise AssertionError("the run ended before it waited for approval:\n" + "".join(seen))
        seen.append(line)
        if "waiting for approval" in line:
            return
    raise AssertionError("the run never said it waited for approval:\n" + "".join(seen))


def test_a_headless_run_waits_at_the_gate_until_approved(server: Target) -> None:
    target = new_demo(server, "kbt_approve")
    run_id = f"approve-{os.getpid()}"
    try:
        proc = subprocess.Popen([str(EXE), "run", "--dsn", target.conninfo, "--run-id", run_id, "--no-progress",
                                 "--approval-wait", "120"], cwd=REPO_ROOT, stdin=subprocess.DEVNULL,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        seen: list[str] = []
        try:
            until_waiting(proc, seen)
            sha = evidence_sha(run_id)
            assert any(sha in line for line in seen), "the run did not show the evidence's hash"
            time.sleep(1.0)
            assert proc.poll() is None and changed_by(target, run_id) == 0, "it went on without an approval"
            with db.connect(target) as conn, pytest.raises(GateClosed, match="nobody has approved"):
                gates.require(conn, run_id, "02_schema (kb_columns)")  # the engine refuses, whatever the runner does

            # at a terminal, a wrong answer approves nothing (run/approval.py's prompt, given its answer here)
            asked: list[str] = []
            with pytest.raises(NotApproved, match="not approved at the terminal"):
                approval.obtain(run_id, approve=None, wait=1, echo=asked.append, ask=lambda q: asked.append(q) or "nope")
            assert sha[:8] in asked[-1] and any("kb_columns" in line for line in asked)  # shown, then asked
            with pytest.raises(GateClosed, match="nobody has approved"):
                gates.approved(run_id)

            shown = run_cli("approve", run_id, "--hash", "0" * 64)
            assert shown.returncode == 3 and "is not its rehearsal's" in shown.stderr, shown.stderr
            assert "kb_columns" in shown.stdout and sha in shown.stdout  # what the approver read
            assert run_cli("approve", run_id, "--hash", sha[:12]).returncode == 0
            out, err = proc.communicate(timeout=300)
        finally:
            if proc.poll() is None:
                proc.kill()
        assert proc.returncode == 0, "".join(seen) + out + err
        assert "approved by" in out
        record = json.loads((RUNS_DIR / run_id / "manifest.json").read_text())
        given = record["approval"]
        assert given["sha256"] == sha and given["how"] == "kbmigrate approve" and given["self"] is True
        assert given["by"] == record["operator"]["os_user"] and given["rehearsal_of"] == run_id
        assert changed_by(target, run_id) > 0
        assert run_cli("verify", run_id, "--dsn", target.conninfo).returncode == 0
        report = (RUNS_DIR / run_id / "report.html").read_text()
        assert "Approval" in report and sha in report
    finally:
        drop(server, target)


def test_four_eyes_refuse_the_operator_and_a_run_nobody_approves_stops(server: Target) -> None:
    target = new_demo(server, "kbt_four_eyes")
    run_id = f"four-eyes-{os.getpid()}"
    try:
        stopped = run_cli("run", "--dsn", target.conninfo, "--run-id", run_id, "--no-progress", "--four-eyes",
                          "--approval-wait", "1", approve=False)
        assert stopped.returncode == 1, stopped.stdout + stopped.stderr
        said = stopped.stderr.strip().splitlines()[-1]
        assert "stopped at the approval gate" in said and "within 1 s" in said and f"--resume {run_id}" in said, said
        assert changed_by(target, run_id) == 0
        sha = evidence_sha(run_id)

        mine = run_cli("approve", run_id, "--hash", sha)
        assert mine.returncode == 3 and "four eyes" in mine.stderr, mine.stderr
        auto = run_cli("run", "--resume", run_id, "--no-progress", "--auto-approve", approve=False)
        assert auto.returncode == 1 and "four eyes" in auto.stderr, auto.stderr
        assert changed_by(target, run_id) == 0

        other = {**os.environ, "USER": "second-pair", "LOGNAME": "second-pair"}
        theirs = subprocess.run([str(EXE), "approve", run_id, "--hash", sha], cwd=REPO_ROOT, env=other,
                                capture_output=True, text=True, stdin=subprocess.DEVNULL)
        assert theirs.returncode == 0, theirs.stderr
        done = run_cli("run", "--resume", run_id, "--no-progress", approve=False)
        assert done.returncode == 0, done.stderr
        record = json.loads((RUNS_DIR / run_id / "manifest.json").read_text())
        assert record["approval"]["by"] == "second-pair" and record["approval"]["self"] is False
        assert record["four_eyes"] is True and changed_by(target, run_id) > 0
    finally:
        drop(server, target)
