"""Rollback and partial revert, against expectations the tests compute themselves."""

from __future__ import annotations

import json
import os
import re
import subprocess
import threading
import time
import uuid
from typing import Any

import psycopg
import pytest

from kbmigrate import db
from kbmigrate.run import runner
from kbmigrate.run.record import Run
from kbmigrate.conninfo import Target, libpq_env
from kbmigrate.components.embedded import bin_dir
from kbmigrate.engine.params import RunParams
from kbmigrate.checks.rls import acting_as
from kbmigrate.engine.steps import apply_step

from conftest import drop, gated, new_demo, run_cli

CHANGING = ("02_schema", "03_backfill", "04_seed_sections", "05_import_legacy")
from test_runbook import checksums


def schema_dump(target: Target) -> list[str]:
    """The whole schema (the ledger aside), as the wheel's pg_dump writes it; the per-column
    stamps PostgreSQL 15.20 gives each column it creates (pg_attver) are not part of it."""
    env = {**os.environ, **libpq_env(target)}
    out = subprocess.run([str(bin_dir() / "pg_dump"), "--schema-only", "--exclude-schema=kbmigrate"],
                         env=env, capture_output=True, text=True, check=True).stdout
    stamp = re.compile(r"^ALTER TABLE ONLY \S+ ALTER COLUMN \S+ SET \(pg_attver=\d+\);$")
    return [ln for ln in out.splitlines() if ln.strip() and not stamp.match(ln)
            and not ln.startswith(("\\restrict", "\\unrestrict", "-- Dumped"))]


@pytest.fixture
def migrated(server: Target) -> Any:
    target = new_demo(server, "kbt_rb")
    before = {"schema": schema_dump(target), "data": checksums(target)}
    run_id = f"t-{uuid.uuid4().hex[:8]}"
    # migrated by the engine, as the notebooks' cells drive it, in a run of its own: its record, its
    # gates (preflight, backup, drill) and its changes; the whole headless run is tested elsewhere
    gated(target, run_id)
    with db.connect(target, autocommit=True) as conn:
        Run.open(target, conn, run_id, RunParams(), steps=list(CHANGING))
        for step in CHANGING:
            apply_step(conn, step, RunParams(), run_id, progress=False)
    assert schema_dump(target) != before["schema"]  # the migration did change it
    yield target, run_id, before
    drop(server, target)


def test_rollback_returns_the_pre_migration_state(migrated: Any) -> None:
    target, run_id, before = migrated
    done = run_cli("rollback", "--dsn", target.conninfo, "--run", run_id, "--confirm", run_id, "--no-progress")
    assert done.returncode == 0, done.stderr
    assert schema_dump(target) == before["schema"]
    assert checksums(target) == before["data"]
    with db.connect(target) as conn:  # the ledger survives, with the rollback in it
        assert db.scalar(conn, "select count(*) from kbmigrate.ledger where change = %s", (f"rollback of {run_id}",)) == 1
        # the restored table has its column statistics at once: a table made by the restore has none
        # until autovacuum gets to it, and the application's queries are planned blind meanwhile
        assert db.scalar(conn, "select count(*) from pg_stats where schemaname = 'public' "
                               "and tablename = 'knowledge_base'") > 0


def test_rollback_refusals(migrated: Any) -> None:
    target, run_id, _ = migrated
    migrated_state = checksums(target)
    done = run_cli("rollback", "--dsn", target.conninfo, "--run", run_id, "--confirm", "something-else")
    assert done.returncode != 0 and "--confirm must repeat the run id" in done.stderr

    # an application write after the backup blocks the rollback without --accept-loss
    with db.connect(target, autocommit=True) as conn:
        conn.execute("set role service_role")
        conn.execute("insert into knowledge_base (title, content) values ('written after the backup', 'x')")
        conn.execute("update knowledge_base set content = 'edited' where id = (select id from knowledge_base "
                     "where metadata ->> 'imported_from' is null order by id limit 1)")
    after_write = checksums(target)
    done = run_cli("rollback", "--dsn", target.conninfo, "--run", run_id, "--confirm", run_id, "--no-progress")
    assert done.returncode != 0 and "--accept-loss" in done.stderr and "2 rows" in done.stderr, done.stderr
    assert "Traceback" not in done.stderr
    assert checksums(target) == after_write != migrated_state  # refused before touching anything

    # a tampered backup is refused
    manifest = json.loads((runner.RUNS_DIR / run_id / "manifest.json").read_text())
    dump = manifest["backup"]["path"]
    dump = dump if os.path.isabs(dump) else os.path.join(runner.REPO_ROOT, dump)
    original = open(dump, "rb").read()
    try:
        with open(dump, "ab") as fh:
            fh.write(b"\0")
        done = run_cli("rollback", "--dsn", target.conninfo, "--run", run_id, "--confirm", run_id, "--accept-loss")
        assert done.returncode != 0 and "no longer has the sha256 recorded" in done.stderr, done.stderr
        assert checksums(target) == after_write
    finally:
        with open(dump, "wb") as fh:
            fh.write(original)
    done = run_cli("rollback", "--dsn", target.conninfo, "--run", run_id, "--confirm", run_id, "--accept-loss", "--no-progress")
    assert done.returncode == 0, done.stderr


def _kb(target: Target) -> dict[Any, tuple]:
    with db.connect(target) as conn:
        return {r["id"]: (r["title"], r["content"], r["workspace_id"], r["section_id"], r["is_shared"], r["source"])
                for r in db.rows(conn, "select *, metadata ->> 'imported_from' as source from knowledge_base")}


def test_partial_reverts_leave_the_rest_intact(server: Target) -> None:
    target = new_demo(server, "kbt_revert")
    try:
        params = RunParams()
        gated(target, "migrate")
        with db.connect(target, autocommit=True) as conn:
            for step in ("02_schema", "03_backfill", "04_seed_sections", "05_import_legacy"):
                apply_step(conn, step, params, "migrate", progress=False)
        full = _kb(target)
        tables = checksums(target)

        refused = run_cli("revert", "import_legacy_icp", "--dsn", target.conninfo)  # a change too: it needs a backup
        assert refused.returncode == 2 and "--backup-of" in refused.stderr, refused.stderr
        revert_id = f"t-rv-{uuid.uuid4().hex[:6]}"
        reverted = run_cli("revert", "import_legacy_icp", "--dsn", target.conninfo, "--backup-of", "migrate",
                           "--run-id", revert_id)
        assert reverted.returncode == 0, reverted.stderr
        record = json.loads((runner.RUNS_DIR / revert_id / "manifest.json").read_text())  # a run, with its evidence
        assert record["status"] == "succeeded" and record["backup_of"] == "migrate"
        assert record["reverted"][0]["change"] == "import_legacy_icp" and record["changed"]["changes reverted"] == 1
        assert run_cli("verify", revert_id, "--dsn", target.conninfo).returncode == 0
        after = _kb(target)
        assert after == {k: v for k, v in full.items() if v[5] != "legacy_icp_data"}
        assert any(v[5] == "legacy_icp_data" for v in full.values())
        assert {t: c for t, c in checksums(target).items() if t != "knowledge_base"} == \
               {t: c for t, c in tables.items() if t != "knowledge_base"}
        with db.connect(target, autocommit=True) as conn:
            assert db.scalar(conn, "select count(*) from kbmigrate.legacy_imports where source = 'legacy_icp_data'") == 0
        gated(target, "again", backup_of="migrate")
        with db.connect(target, autocommit=True) as conn:
            apply_step(conn, "05_import_legacy", params, "again", progress=False)  # re-imports icp, and only icp
        again = _kb(target)
        assert sorted(v for v in again.values() if v[5] == "legacy_icp_data") == \
               sorted(v for v in full.values() if v[5] == "legacy_icp_data")
        assert len(again) == len(full)

        before_rls = _kb(target)
        assert run_cli("revert", "rls_policies", "--dsn", target.conninfo, "--backup-of", "migrate").returncode == 0
        with db.connect(target) as conn:
            assert db.scalar(conn, "select count(*) from pg_policies where tablename like 'knowledge_base%%'") == 0
            assert not db.scalar(conn, "select relrowsecurity from pg_class where oid = 'knowledge_base'::regclass")
            assert db.scalar(conn, "select count(*) from knowledge_base_sections") > 0
        assert _kb(target) == before_rls

        assert run_cli("revert", "import_legacy", "--dsn", target.conninfo, "--backup-of", "migrate").returncode == 0
        assert _kb(target) == {k: v for k, v in before_rls.items() if v[5] is None}
        done = run_cli("revert", "sections", "--dsn", target.conninfo, "--backup-of", "migrate")
        assert done.returncode == 2 and "cannot be reverted" in done.stderr
    finally:
        drop(server, target)


def _what_members_see(target: Target) -> dict[str, list[str]]:
    """Each member's readable KB ids, acting as the API does (authenticated, with their claims)."""
    with db.connect(target, autocommit=True) as conn:
        users = [r["user_id"] for r in db.rows(conn, "select distinct user_id from workspace_members order by 1 limit 8")]
        seen = {}
        for user in users:
            with acting_as(conn, user):
                seen[str(user)] = sorted(str(r["id"]) for r in db.rows(conn, "select id from public.knowledge_base"))
    assert any(seen.values())
    return seen


def test_a_rollback_that_fails_leaves_the_database_as_it_was(migrated: Any) -> None:
    target, run_id, before = migrated
    with db.connect(target, autocommit=True) as conn:  # written after the backup: a report on the KB table
        conn.execute("create schema app_reports")
        conn.execute("create view app_reports.kb_titles as select id, title from public.knowledge_base")
        imports = db.scalar(conn, "select count(*) from kbmigrate.legacy_imports")
    assert imports > 0
    state = {"schema": schema_dump(target), "data": checksums(target), "seen": _what_members_see(target)}

    done = run_cli("rollback", "--dsn", target.conninfo, "--run", run_id, "--confirm", run_id, "--no-progress")
    assert done.returncode != 0 and "Traceback" not in done.stderr
    assert "undone" in done.stderr and "kb_titles" in done.stderr, done.stderr
    assert schema_dump(target) == state["schema"]
    assert checksums(target) == state["data"]
    assert _what_members_see(target) == state["seen"]
    with db.connect(target) as conn:
        assert db.scalar(conn, "select count(*) from kbmigrate.legacy_imports") == imports

    with db.connect(target, autocommit=True) as conn:
        conn.execute("drop schema app_reports cascade")
    again = run_cli("rollback", "--dsn", target.conninfo, "--run", run_id, "--confirm", run_id, "--no-progress")
    assert again.returncode == 0, again.stderr  # no --accept-loss: the migration's own rows are not the app's
    assert schema_dump(target) == before["schema"]
    assert checksums(target) == before["data"]


def test_a_rollback_under_the_applications_writes_succeeds_and_counts_them(migrated: Any) -> None:
    """The application keeps writing while the rollback runs: the writes up to the restore's locks
    are counted (and, accepted, lost); those after its COMMIT stay, and do not fail the proof."""
    target, run_id, before = migrated
    stop, written = threading.Event(), [0]

    def app() -> None:
        with db.connect(target, autocommit=True, application_name="a writing app") as conn:
            conn.execute("set role service_role")
            while not stop.is_set():
                try:
                    conn.execute("insert into knowledge_base (title, content) values ('live write', 'x')")
                    written[0] += 1
                except psycopg.errors.LockNotAvailable:
                    pass
                time.sleep(0.02)

    writer = threading.Thread(target=app)
    writer.start()
    try:
        done = run_cli("rollback", "--dsn", target.conninfo, "--run", run_id, "--confirm", run_id, "--accept-loss",
                       "--rollback-id", f"{run_id}-rb", "--no-progress")
    finally:
        stop.set()
        writer.join()
    assert done.returncode == 0, done.stderr
    with db.connect(target) as conn:
        kept = db.scalar(conn, "select count(*) from knowledge_base where title = 'live write'")
        ledger_row = db.rows(conn, "select detail from kbmigrate.ledger where change = %s", (f"rollback of {run_id}",))[0]
    lost = ledger_row["detail"]["lost_rows_accepted"]
    assert written[0] > 0 and lost + kept == written[0], (written, lost, kept)  # every write: lost, counted, or kept
    assert schema_dump(target) == before["schema"]
