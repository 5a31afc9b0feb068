"""Evidence that proves itself: every run folder verifies, and editing a notebook, a manifest or a
ledger row, or deleting a run, is caught by `kbmigrate verify`, naming what broke. The record names
the operator and the code; run folders are private."""

from __future__ import annotations

import getpass
import json
import os
import shutil
import socket
import stat
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from kbmigrate import db
from kbmigrate.conninfo import Target
from kbmigrate.engine import ledger, plan
from kbmigrate.engine.params import RunParams
from kbmigrate.paths import RUNS_DIR
from kbmigrate.run import runner

from conftest import drop, new_demo, run_cli
from test_runbook import QUIET


@pytest.fixture(scope="module")
def two_runs(server: Target) -> Iterator[tuple[Target, str, str]]:
    target = new_demo(server, "kbt_evidence")
    first, second = f"t-ev1-{uuid.uuid4().hex[:6]}", f"t-ev2-{uuid.uuid4().hex[:6]}"
    runner.run(target, RunParams(), run_id=first, **QUIET)
    runner.run(target, RunParams(), run_id=second, backup_of=first, **QUIET)  # the re-run: a no-op, sealed after the first
    yield target, first, second
    drop(server, target)


def _verify(target: Target, run_id: str) -> Any:
    return run_cli("verify", run_id, "--dsn", target.conninfo)


def test_the_record_names_people_code_and_the_chain(two_runs: Any) -> None:
    target, first, second = two_runs
    one, two = (json.loads((RUNS_DIR / r / "manifest.json").read_text()) for r in (first, second))
    assert one["operator"] == two["operator"] == {"os_user": getpass.getuser(), "host": socket.gethostname()}
    assert one["code"]["kbmigrate_version"] and len(one["code"]["git_commit"] or "") == 40
    assert isinstance(one["code"]["dirty"], bool) and one["code"]["dirty"] == bool(one["code"]["changed_files"])
    assert "pg_dump" in one["pg_dump_version"] and one["server_version"]
    assert two["previous"]["run_id"] == first
    for run_id in (first, second):
        folder = RUNS_DIR / run_id
        assert stat.S_IMODE(folder.stat().st_mode) == 0o700
        assert all(stat.S_IMODE(p.stat().st_mode) == 0o600 for p in folder.rglob("*") if p.is_file())
        assert (folder / "sql" / "deploy" / "kb_columns.sql").is_file()
    done = _verify(target, second)
    assert done.returncode == 0 and "chain of 2 run(s)" in done.stdout, done.stdout + done.stderr
    listed = run_cli("runs", "--dsn", target.conninfo)
    assert listed.returncode == 0 and listed.stdout.index(second) < listed.stdout.index(first)


def test_the_chain_and_the_runs_are_counted_as_they_are(two_runs: Any) -> None:
    """A third run (the smoke tests alone) after the two: verify walks a chain of 3, and the list of
    runs says which steps each ran, a rerun's missing 01 included."""
    target, first, second = two_runs
    third = f"t-ev3-{uuid.uuid4().hex[:6]}"
    assert run_cli("run", "--dsn", target.conninfo, "--run-id", third, "--only", "06", "--no-progress").returncode == 0
    done = _verify(target, third)
    assert done.returncode == 0 and "chain of 3 run(s)" in done.stdout, done.stdout + done.stderr
    listed = {line.split()[0]: line for line in run_cli("runs", "--dsn", target.conninfo).stdout.splitlines()
              if line.strip().startswith("t-ev")}
    assert listed[third].endswith("step 06") and "steps 00, 02, 03, 04, 05, 06;" in listed[second], listed
    assert "steps 00, 01, 02, 03, 04, 05, 06;" in listed[first], listed
    # a change counts once, however many rows it has (a backfill's batches, a step run again)
    changing = {(c.step, c.name) for c in plan.load() if c.step in plan.CHANGING}
    assert listed[second].endswith(f"ledger: {len(changing)} noop"), listed[second]  # the re-run changed nothing
    with db.connect(target) as conn:
        noops = len({(r["step"], r["change"]) for r in ledger.for_run(conn, first) if r["outcome"] == "noop"})
    assert f"ledger: {len(changing) - noops} applied" in listed[first], listed[first]


def test_a_step_run_twice_in_a_run_counts_its_changes_once(two_runs: Any) -> None:
    target, first, _ = two_runs
    run_id = f"t-ev4-{uuid.uuid4().hex[:6]}"
    once = run_cli("run", "--dsn", target.conninfo, "--run-id", run_id, "--backup-of", first, "--only", "00", "02", "--no-progress")
    assert once.returncode == 0, once.stderr
    again = run_cli("run", "--dsn", target.conninfo, "--resume", run_id, "--only", "02", "--no-progress")
    assert again.returncode == 0, again.stderr
    with db.connect(target) as conn:
        rows = [r for r in ledger.for_run(conn, run_id) if r["step"] == "02_schema"]
    in_02 = {c.name for c in plan.load() if c.step == "02_schema"}
    assert len(rows) > len(in_02)  # each change has two rows in this run
    listed = next(line for line in run_cli("runs", "--dsn", target.conninfo).stdout.splitlines() if run_id in line)
    assert listed.endswith(f"ledger: {len(in_02)} noop"), listed


def test_runs_without_a_target_asks_the_newest_runs_database(two_runs: Any, tmp_path: Path) -> None:
    """As verify finds its run's database in the manifest, runs without --dsn asks the database of
    the newest run folder, and says so (it said 'Cannot connect to @localhost:5432/')."""
    target, first, second = two_runs
    for run_id in (first, second):
        shutil.copytree(RUNS_DIR / run_id, tmp_path / run_id)
    def runs(folder: Path) -> Any:
        env = {k: v for k, v in os.environ.items() if k not in ("PGHOST", "PGPORT", "PGDATABASE", "PGUSER", "PGSERVICE")}
        return subprocess.run([str(Path(sys.executable).parent / "kbmigrate"), "runs"], capture_output=True, text=True,
                              env={**env, "KBMIGRATE_RUNS_DIR": str(folder)}, timeout=120)

    done = runs(tmp_path)
    assert done.returncode == 0 and f"the database of the newest run here, {second}" in done.stdout, done.stdout + done.stderr
    assert first in done.stdout and target.label in done.stdout
    empty = tmp_path / "none"
    empty.mkdir()
    done = runs(empty)
    assert done.returncode == 0 and "no kbmigrate runs recorded" in done.stdout and "Cannot connect" not in done.stderr


def _broken(target: Target, run_id: str, expect: str) -> None:
    done = _verify(target, run_id)
    assert done.returncode != 0 and "Traceback" not in done.stderr, done.stdout + done.stderr
    assert done.stderr.startswith(f"kbmigrate: The evidence of run {run_id} does not verify") and expect in done.stderr, done.stderr


def test_an_edited_notebook_is_caught(two_runs: Any) -> None:
    target, _, second = two_runs
    path = RUNS_DIR / second / "03_backfill.ipynb"
    original = path.read_bytes()
    try:
        path.write_bytes(original.replace(b"quarantined", b"quarantinee", 1))
        _broken(target, second, "03_backfill.ipynb")
    finally:
        path.write_bytes(original)
    assert _verify(target, second).returncode == 0


def test_an_edited_manifest_is_caught(two_runs: Any) -> None:
    target, first, second = two_runs
    path = RUNS_DIR / first / "manifest.json"
    original = path.read_bytes()
    try:
        record = json.loads(original)
        record["operator"]["os_user"] = "somebody-else"
        path.write_text(json.dumps(record, indent=2))
        _broken(target, second, f"manifest of {first}")
    finally:
        path.write_bytes(original)


def test_an_edited_seal_is_caught(two_runs: Any) -> None:
    target, first, second = two_runs
    with db.connect(target, autocommit=True) as conn:
        seal = db.scalar(conn, "select manifest_sha256 from kbmigrate.seals where run_id = %s", (first,))
        assert seal and not db.scalar(conn, "select count(*) from kbmigrate.ledger where step = 'run'")  # a table of their own
        conn.execute("update kbmigrate.seals set manifest_sha256 = %s where run_id = %s", ("0" * 64, first))
        try:
            _broken(target, second, "the seal says " + "0" * 64)
        finally:
            conn.execute("update kbmigrate.seals set manifest_sha256 = %s where run_id = %s", (seal, first))


def test_a_deleted_run_is_caught(two_runs: Any, tmp_path: Path) -> None:
    target, first, second = two_runs
    moved = tmp_path / first
    shutil.move(str(RUNS_DIR / first), moved)
    try:
        _broken(target, second, f"run {first}")
    finally:
        shutil.move(str(moved), RUNS_DIR / first)
    assert _verify(target, second).returncode == 0
