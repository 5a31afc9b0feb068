"""Stop when told (issue 13), with a real second session:

- SIGINT and SIGTERM during a blocked statement end the run within 5 s, status ``interrupted``,
  exit 130/143, no session or kernel of the run left; the interrupted run, resumed, finishes.
- Every session the tool opened during a run, as seen from outside (pg_stat_activity, sampled by
  the test), is in the run's session log with a lock_timeout, a statement_timeout and an
  idle_in_transaction_session_timeout the server holds.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import nbformat

from kbmigrate import db
from kbmigrate.conninfo import Target
from kbmigrate.paths import REPO_ROOT, RUNS_DIR

from conftest import drop, new_demo, run_cli
from test_never_hang import KB_TABLES, holding, leftovers, manifest, waiting_for_a_lock

EXE = Path(sys.executable).parent / "kbmigrate"





def _interrupt_blocked_run(target: Target, sig: signal.Signals) -> tuple[int, float, str, str, set[int]]:
    run_id = f"sig{sig.name.lower()}-{os.getpid()}"
    with holding(target, KB_TABLES):
        # (the preflight alone: the resume below then finishes it without running the whole plan)
        proc = subprocess.Popen([str(EXE), "run", "--dsn", target.conninfo, "--run-id", run_id, "--no-progress",
                                 "--only", "00", "-p", "lock_timeout=10min", "-p", "read_timeout=10min"],
                                cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        waiting_for_a_lock(target, proc, f"kbmigrate%{run_id}%")
        its_kernels = kernels_of(proc.pid)  # this run's: other tests' runs may have kernels of their own
        assert its_kernels, "the blocked run has no kernel"
        t0 = time.monotonic()
        proc.send_signal(sig)
        out, err = proc.communicate(timeout=30)
        took = time.monotonic() - t0
    return proc.returncode, took, err, run_id, its_kernels


def kernels_of(parent: int) -> set[int]:
    found = subprocess.run(["pgrep", "-P", str(parent), "-f", "ipykernel_launcher"], capture_output=True, text=True).stdout
    return {int(p) for p in found.split()}


def alive(pids: set[int]) -> set[int]:
    out = set()
    for pid in pids:
        try:
            os.kill(pid, 0)
            out.add(pid)
        except ProcessLookupError:
            pass
    return out


def test_sigint_and_sigterm_stop_a_blocked_run_within_5_seconds(server: Target) -> None:
    target = new_demo(server, "kbt_sig")
    runs: dict[signal.Signals, str] = {}
    try:
        for sig, code in ((signal.SIGINT, 130), (signal.SIGTERM, 143)):
            returncode, took, err, run_id, its_kernels = _interrupt_blocked_run(target, sig)
            assert returncode == code, err
            assert took < 5, f"{sig.name}: the run took {took:.1f} s to stop"
            assert f"interrupted ({sig.name})" in err and "Traceback" not in err, err
            record = manifest(run_id)
            assert record["status"] == "interrupted" and record["interrupted"]["signal"] == sig.name
            step = record["steps"][-1]
            assert step["status"] == "interrupted" and step["step"] == "00_preflight"
            book = nbformat.read(RUNS_DIR / run_id / "00_preflight.ipynb", as_version=4)
            assert "kbmigrate-interrupted" in book.cells[0].metadata.get("tags", [])
            assert not leftovers(target, run_id)
            assert not alive(its_kernels), "a kernel of the interrupted run is still alive"
            assert (RUNS_DIR / run_id / "report.html").exists()
            assert run_cli("verify", run_id, "--dsn", target.conninfo).returncode == 0
            runs[sig] = run_id

        # a run whose SQL changed since it began is not resumed: its evidence would not hold the code that ran
        path = RUNS_DIR / runs[signal.SIGINT] / "manifest.json"
        record = json.loads(path.read_text())
        record["sql_files"]["deploy/kb_columns.sql"] = "0" * 64
        path.write_text(json.dumps(record))
        refused = run_cli("run", "--resume", runs[signal.SIGINT], "--dsn", target.conninfo, "--no-progress")
        assert refused.returncode == 2 and "the SQL changed since" in refused.stderr, refused.stderr

        # the interrupted run, resumed, finishes in its own folder, and its report tells the story
        done = run_cli("run", "--resume", runs[signal.SIGTERM], "--dsn", target.conninfo, "--no-progress",
                       "-p", "lock_timeout=1s", "-p", "read_timeout=1min")
        assert done.returncode == 0, done.stderr
        record = manifest(runs[signal.SIGTERM])
        assert record["status"] == "succeeded"
        assert record["resumed"][0]["interrupted_before"]["signal"] == "SIGTERM"
        assert record["resumed"][0]["parameters_changed"] == {"lock_timeout": "1s", "read_timeout": "1min"}
        report = (RUNS_DIR / runs[signal.SIGTERM] / "report.html").read_text()
        assert "<h2>History</h2>" in report and "SIGTERM" in report and "00_preflight.attempt1" in report
        assert run_cli("verify", runs[signal.SIGTERM], "--dsn", target.conninfo).returncode == 0
    finally:
        drop(server, target)


def test_every_session_of_a_run_is_bounded(server: Target) -> None:
    target = new_demo(server, "kbt_sessions")
    run_id = f"sessions-{os.getpid()}"
    seen: dict[int, str] = {}
    stop = threading.Event()

    def observe() -> None:  # from outside: every client session on the database, whatever opened it
        with db.connect(target, autocommit=True, application_name="test observer") as conn:
            while not stop.is_set():
                for r in db.rows(conn, "select pid, application_name from pg_stat_activity where datname = "
                                       "current_database() and backend_type = 'client backend' and pid <> pg_backend_pid()"):
                    seen.setdefault(r["pid"], r["application_name"])
                time.sleep(0.02)

    watcher = threading.Thread(target=observe)
    watcher.start()
    try:
        done = run_cli("run", "--dsn", target.conninfo, "--run-id", run_id, "--no-progress")
    finally:
        stop.set()
        watcher.join()
    try:
        assert done.returncode == 0, done.stderr
        log = [json.loads(line) for line in (RUNS_DIR / run_id / "sessions.jsonl").read_text().splitlines()]
        by_pid = {e["pid"]: e for e in log if e.get("pid")}
        by_name = {e["application_name"] for e in log if not e.get("pid")}  # pg_dump, pg_restore: no pid to list
        assert len(seen) >= 10, seen  # the observer did see the run's sessions
        unlisted = {pid: app for pid, app in seen.items() if pid not in by_pid and app not in by_name}
        assert not unlisted, f"sessions the run opened without listing them: {unlisted}"
        for entry in log:
            if entry["program"] in ("psycopg", "ipython-sql"):
                for key in ("lock_timeout", "statement_timeout", "idle_in_transaction_session_timeout"):
                    assert entry[key] not in ("0", "", None), entry
            else:  # pg_dump, pg_restore: bounded from outside
                assert entry["wall_clock_seconds"] > 0 and entry["application_name"].startswith("kbmigrate")
        assert {e["program"] for e in log} >= {"psycopg", "pg_dump", "pg_restore"}  # %sql is on each step's session
    finally:
        drop(server, target)
