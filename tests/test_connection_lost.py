"""A connection lost mid-step (the server restarted, the network cut) is named as such, with the
command to go on, and that command finishes the run (issue 21, item 8): here the step's session
is ended from outside while it waits, as a server restart ends it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from kbmigrate import db
from kbmigrate.conninfo import Target
from kbmigrate.paths import REPO_ROOT

from conftest import drop, new_demo, run_cli
from test_never_hang import FAST, KB_TABLES, holding, manifest, waiting_for_a_lock

EXE = Path(sys.executable).parent / "kbmigrate"


def test_a_step_whose_connection_is_lost_says_so_and_resumes(server: Target) -> None:
    target = new_demo(server, "kbt_lost")
    run_id = f"lost-{os.getpid()}"
    try:
        gates = run_cli("run", "--dsn", target.conninfo, "--run-id", run_id, "--only", "00", "01", "--no-progress")
        assert gates.returncode == 0, gates.stderr
        with holding(target, KB_TABLES):  # 02 waits for its lock: its session is ended meanwhile
            proc = subprocess.Popen([str(EXE), "run", "--auto-approve", "--dsn", target.conninfo, "--resume", run_id, "--only", "02",
                                     "-p", "lock_timeout=30s", "-p", "lock_retries=0", "--no-progress"],
                                    cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            waiting_for_a_lock(target, proc, f"kbmigrate 02_schema {run_id}", seconds=120)
            with db.connect(target, autocommit=True, application_name="test observer") as conn:
                ended = db.terminate(conn, f"kbmigrate 02_schema {run_id}")
            assert len(ended) == 1
            out, err = proc.communicate(timeout=120)
        assert proc.returncode == 1 and "Traceback" not in err, err
        assert "lost its database connection" in err and f"kbmigrate run --resume {run_id}" in err, err
        assert manifest(run_id)["status"] == "failed"
        again = run_cli("run", "--dsn", target.conninfo, "--resume", run_id, *FAST)
        assert again.returncode == 0, again.stderr
        assert manifest(run_id)["status"] == "succeeded"
    finally:
        drop(server, target)


def test_ending_the_runs_sessions_ends_no_other(server: Target) -> None:
    """The sessions to end are chosen before any is ended: in one WHERE, PostgreSQL called
    pg_terminate_backend first, on every session the role could end (the application's too)."""
    target = new_demo(server, "kbt_terminate")
    try:
        with db.connect(target, autocommit=True, application_name="an application") as app, \
                db.connect(target, autocommit=True, application_name="kbmigrate 02_schema doomed") as doomed, \
                db.connect(target, autocommit=True, application_name="test observer") as observer:
            assert db.terminate(observer, "no such program") == []
            assert db.terminate(observer, "kbmigrate 02_schema doomed") == [doomed.info.backend_pid]
            assert db.scalar(app, "select 1") == 1 and db.scalar(observer, "select 1") == 1  # both still there
    finally:
        drop(server, target)
