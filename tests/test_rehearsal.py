"""A rehearsal that fails on the restored copy is a NO-GO for production (issue 23): the run's
changes are refused by the engine, production is untouched, the evidence is kept, the copy is
dropped. And the copy's gate opens the copy only."""

from __future__ import annotations

import json
import os
import time

import pytest
from psycopg import sql

from kbmigrate import db
from kbmigrate.backup import drill, rehearsal
from kbmigrate.conninfo import Target
from kbmigrate.engine import gates
from kbmigrate.engine.params import RunParams
from kbmigrate.errors import GateClosed, RehearsalFailed
from kbmigrate.paths import RUNS_DIR

from conftest import drop, gated, new_demo
from test_runbook import checksums


def test_a_rehearsal_that_fails_is_a_no_go_and_production_is_untouched(server: Target) -> None:
    target = new_demo(server, "kbt_rehearse")
    run_id = f"rehearse-{os.getpid()}"
    try:
        info = gated(target, run_id)
        drilled = drill.run(info, run_id, keep_for_rehearsal=True)
        copy = drill.local_server().with_database(drilled["kept_for_rehearsal_as"])
        with db.connect(copy, autocommit=True) as conn:  # planted on the copy only: the workspaces are gone
            conn.execute("alter table public.workspaces rename to workspaces_gone")
        before = checksums(target)

        with pytest.raises(RehearsalFailed) as failed:
            rehearsal.run(drilled, run_id, RunParams())
        assert "02_schema" in failed.value.message and "NO-GO" in failed.value.message

        evidence = json.loads((RUNS_DIR / run_id / rehearsal.FILE).read_text())
        assert evidence["ok"] is False and evidence["failure"].startswith("02_schema")
        assert gates.read(run_id)["rehearsal"]["ok"] is False
        with db.connect(drill.local_server().with_database("postgres")) as conn:
            assert not db.scalar(conn, "select count(*) from pg_database where datname = %s", (copy.params["dbname"],))

        assert checksums(target) == before
        with db.connect(target) as conn:
            assert db.scalar(conn, "select to_regnamespace('kbmigrate') is null"), "production was changed"
            with pytest.raises(GateClosed, match="rehearsal on the restored copy failed"):
                gates.require(conn, run_id, "02_schema (kb_columns)")
            with pytest.raises(GateClosed, match="not the rehearsal's own copy"):  # production is no copy
                gates.record_rehearsal_copy(conn, run_id, conn.info.dbname)
    finally:
        drop(server, target)


def test_the_copy_is_rolled_back_proved_identical_and_migrated_again(server: Target) -> None:
    """Update, rollback, update on the copy (Liquibase's update-testing-rollback, on the demo's data):
    each figure compared with what the backup recorded at dump time, not with the proof's own."""
    target = new_demo(server, "kbt_rehearse_undo")
    run_id = f"rehearse-undo-{os.getpid()}"
    try:
        info = gated(target, run_id)
        evidence = json.loads((RUNS_DIR / run_id / rehearsal.FILE).read_text())
        undone = evidence["rollback"]
        assert evidence["ok"] and undone["failure"] is None, undone
        assert undone["schema_diff_lines"] == 0 and undone["schema_diff"] == []
        assert {"public", "kb_private"} <= set(undone["schemas_compared"])
        dumped = {t: v["rows"] for t, v in info["checksums"].items()}
        assert {t["table"]: t["rows now"] for t in undone["tables"]} == dumped
        assert all(t["equal"] for t in undone["tables"])
        restored = undone["restored_tables"]
        assert "public.knowledge_base" in restored
        assert undone["rows_loaded"] == sum(info["row_counts"][t] for t in restored)
        assert undone["lost_writes_counted"] == 0
        again = undone["applied_again"]
        assert again["same_outcome"] and again["entries"] == evidence["entries"]
        assert evidence["entries"]["totals"], "the first update placed no entry"
    finally:
        drop(server, target)


def test_the_copys_rollback_waits_out_autovacuum(server: Target, monkeypatch) -> None:
    """After the rehearsal's changes autovacuum works on the copy's KB table, holding SHARE UPDATE
    EXCLUSIVE, and yields to a lock request only after deadlock_timeout (1 s), as long as the
    run's lock_timeout: a bench run at 1M rows lost its rehearsal to that race. Planted here: a
    session holding that lock for 2 s when the rollback starts; the rollback waits and passes."""
    import threading

    import psycopg

    from kbmigrate.backup import restore, rollback_proof

    original, held = restore.restore_in, []

    def blocked_first(conn, *args, **kwargs):  # type: ignore[no-untyped-def]
        if not held:
            ready = threading.Event()

            def hold() -> None:
                with psycopg.connect(drill.local_server().with_database(conn.info.dbname).conninfo) as other:
                    other.execute("lock table public.knowledge_base in share update exclusive mode")
                    held.append(db.scalar(other, "select pg_backend_pid()"))
                    ready.set()
                    time.sleep(2)

            threading.Thread(target=hold, daemon=True).start()
            assert ready.wait(10)
        return original(conn, *args, **kwargs)

    monkeypatch.setattr(restore, "restore_in", blocked_first)
    target = new_demo(server, "kbt_rehearse_vacuum")
    run_id = f"rehearse-vacuum-{os.getpid()}"
    try:
        gated(target, run_id)  # lock_timeout 1s, as by default
        undone = json.loads((RUNS_DIR / run_id / rehearsal.FILE).read_text())["rollback"]
        assert held and undone["failure"] is None and undone["attempts"] == 1, undone
        assert undone["rollback_seconds"] >= 1.5  # it did wait for the lock
        assert rollback_proof.COPY_LOCK_WAIT == "5s"
    finally:
        drop(server, target)


ROLLBACK_FAULTS = {
    # the migration's helper schema is left behind: the schema proof must see it
    "kb_private left": ("drop schema if exists kb_private cascade;", "", "schema differs from before the changes"),
    # a table the migration does not touch is changed by the rollback: the data proof must see it
    "workspaces changed": ("delete from kbmigrate.quarantine;",
                           "delete from kbmigrate.quarantine;\nupdate public.workspaces set name = name || '.';",
                           "public.workspaces"),
}


@pytest.mark.parametrize("fault", sorted(ROLLBACK_FAULTS))
def test_a_rollback_that_does_not_bring_the_copy_back_is_a_no_go(server: Target, tmp_path, monkeypatch,
                                                                 fault: str) -> None:
    from kbmigrate.backup import restore
    from kbmigrate.paths import read_sql

    old, new, named = ROLLBACK_FAULTS[fault]
    prepare = read_sql(restore.PREPARE)
    assert old in prepare
    planted = tmp_path / "rollback_prepare.sql"
    planted.write_text(prepare.replace(old, new))
    monkeypatch.setattr(restore, "PREPARE", str(planted))  # an absolute path: read_sql reads it as it is
    target = new_demo(server, "kbt_rehearse_bad_undo")
    run_id = f"rehearse-bad-undo-{os.getpid()}"
    try:
        with pytest.raises(RehearsalFailed, match="the rollback on the copy") as failed:
            gated(target, run_id)
        assert named in failed.value.message
        evidence = json.loads((RUNS_DIR / run_id / rehearsal.FILE).read_text())
        assert evidence["ok"] is False and evidence["rollback"]["failure"]
        assert gates.read(run_id)["rehearsal"]["ok"] is False
    finally:
        drop(server, target)


def test_asked_to_the_drill_and_the_rehearsal_run_on_the_targets_own_server(server: Target) -> None:
    """``rehearse_on=target``: the copy is a scratch database on the target's server (as Supabase's
    ``postgres``: CREATEDB, no superuser), proved by the server's system identifier the copy's
    gate recorded; the rehearsal and its rollback pass there, and nothing is left behind."""
    target = new_demo(server, "kbt_rehearse_there")
    run_id = f"rehearse-there-{os.getpid()}"
    try:
        gated(target, run_id, RunParams(rehearse_on="target"))
        evidence = json.loads((RUNS_DIR / run_id / rehearsal.FILE).read_text())
        assert evidence["ok"] and evidence["where"].startswith("target:"), evidence["where"]
        assert evidence["rollback"]["failure"] is None and evidence["access"]["failed"] == []
        copy = gates.read(run_id)["rehearsal_copy"]["identity"]
        with db.connect(target) as conn:
            here = db.scalar(conn, "select system_identifier::text from pg_control_system()")
            left = db.scalar(conn, "select count(*) from pg_database where datname = any(%s)",
                             ([drill.scratch_name(p, run_id) for p in ("kbmigrate_drill_", gates.REHEARSAL_PREFIX)],))
        assert copy["system_identifier"] == here and copy["database"].startswith(gates.REHEARSAL_PREFIX)
        assert (copy["host"], copy["port"]) == (target.params["host"], target.params["port"])
        assert left == 0, "a scratch database was left on the target's server"
    finally:
        drop(server, target)


def test_preflight_refuses_a_rehearsal_on_the_target_without_createdb(server: Target) -> None:
    from kbmigrate.checks import preflight

    target = new_demo(server, "kbt_rehearse_nocreatedb")
    role = f"kbt_no_createdb_{os.getpid()}"
    try:
        with db.connect(target, autocommit=True) as conn:
            conn.execute(sql.SQL("create role {} nologin nocreatedb").format(sql.Identifier(role)))
            conn.execute(sql.SQL("grant {} to current_user").format(sql.Identifier(role)))
            rows = {r["check"]: r for r in preflight.checks(conn, target, RunParams(rehearse_on="target"))}
            assert rows["rehearsal on the target's server"]["status"] == "GO", rows["rehearsal on the target's server"]
            assert "restore drill server" not in rows  # the embedded server is not needed then
            conn.execute(sql.SQL("set role {}").format(sql.Identifier(role)))  # what preflight reads, as that role
            ok, detail = preflight.on_target(db.rows(conn, preflight.REHEARSAL_FACTS)[0])
            assert not ok and "no CREATEDB privilege" in detail, detail
            conn.execute("reset role")
    finally:
        with db.connect(target, autocommit=True) as conn:
            conn.execute(sql.SQL("drop role if exists {}").format(sql.Identifier(role)))
        drop(server, target)


def test_a_stale_membership_view_is_replaced_not_trusted(server: Target) -> None:
    """Planted on the copy: a ``kbmigrate.membership`` view from elsewhere, with the right columns,
    making every user a member of every workspace. Its change's verify compares the view's rows
    with the membership table's, so the change replaces it (a verify that checked only the columns
    let it stand: the backfill then put entries in the wrong workspaces)."""
    target = new_demo(server, "kbt_rehearse_stale")
    run_id = f"rehearse-stale-{os.getpid()}"
    try:
        drilled = drill.run(gated_backup(target, run_id), run_id, keep_for_rehearsal=True)
        copy = drill.local_server().with_database(drilled["kept_for_rehearsal_as"])
        with db.connect(copy, autocommit=True) as conn:
            conn.execute("create schema kbmigrate")
            conn.execute("create view kbmigrate.membership as select u.id as user_id, w.id as workspace_id, "
                         "m.joined_at from auth.users u cross join public.workspaces w "
                         "cross join lateral (select min(joined_at) as joined_at from public.workspace_members) m")
        evidence = rehearsal.run(drilled, run_id, RunParams())
        assert {c["change"]: c["outcome"] for c in evidence["changes"]}["membership_view"] == "applied"
        clean_run = f"{run_id}-clean"  # the same data rehearsed without the plant: the same losses, user by user
        clean = rehearsal.run(drill.run(gated_backup(target, clean_run), clean_run, keep_for_rehearsal=True),
                              clean_run, RunParams())
        assert evidence["access"]["lost"] == clean["access"]["lost"] and evidence["entries"] == clean["entries"]
    finally:
        drop(server, target)


def gated_backup(target: Target, run_id: str) -> dict[str, object]:
    """A GO and a dump of ``target`` for ``run_id``, as 00 and 01 take them, without the drill."""
    from kbmigrate.backup import dump
    from kbmigrate.checks import preflight

    with db.connect(target, autocommit=True) as conn:
        assert preflight.go(preflight.verdict(conn, target, RunParams(), run_id))
    return dump.dump(target, run_id, RunParams())
