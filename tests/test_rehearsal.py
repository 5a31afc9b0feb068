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
