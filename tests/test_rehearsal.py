"""A rehearsal that fails on the restored copy is a NO-GO for production (issue 23): the run's
changes are refused by the engine, production is untouched, the evidence is kept, the copy is
dropped. And the copy's gate opens the copy only."""

from __future__ import annotations

import json
import os

import pytest

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
