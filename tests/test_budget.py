"""The rehearsal becomes the budget (issue 23): in production a change may hold its locks at most
its rehearsed time × lock_budget_margin, or lock_budget_floor; past it the server cancels it, the
change is rolled back and the run stops naming the change, its statement and both figures.

The slow change is planted with ``KBMIGRATE_FAILPOINT_SLOW``: production's ``kb_constraints``
(ACCESS EXCLUSIVE on knowledge_base) sleeps 6 s with its lock held; its rehearsal on the copy
does not (the failpoint is named apart there)."""

from __future__ import annotations

import json
import os

from kbmigrate import db
from kbmigrate.conninfo import Target
from kbmigrate.paths import RUNS_DIR

from conftest import drop, new_demo, run_cli

SLOW = "kb_constraints"
CONSTRAINTS = ["knowledge_base_workspace_id_fkey", "knowledge_base_section_in_workspace_fkey",
               "knowledge_base_section_needs_workspace"]  # what sql/deploy/kb_constraints.sql adds


def catalog(target: Target) -> dict[str, object]:
    """What the catalog says of the changes around the slow one, read apart from the engine."""
    with db.connect(target, autocommit=True) as conn:
        return {
            "constraints": [r["conname"] for r in db.rows(
                conn, "select conname from pg_constraint where conrelid = 'public.knowledge_base'::regclass "
                      "and conname = any(%s) order by conname", (CONSTRAINTS,))],
            "workspace_column": bool(db.scalar(conn, "select count(*) from information_schema.columns where "
                                                     "table_schema = 'public' and table_name = 'knowledge_base' "
                                                     "and column_name = 'workspace_id'")),
            "sections_table": db.scalar(conn, "select to_regclass('public.knowledge_base_sections') is not null"),
            "ledger": {(r["change"], r["outcome"]) for r in db.rows(
                conn, "select change, outcome from kbmigrate.ledger where change = any(%s)",
                (["kb_columns", "sections_table", SLOW, "kb_constraints_validate"],))},
            "holding": db.scalar(conn, "select count(*) from pg_locks l join pg_stat_activity a using (pid) "
                                       "where l.relation = 'public.knowledge_base'::regclass "
                                       # relation oids are per database, and every test database is a copy
                                       # of one template: another test's run holds the same oid elsewhere
                                       "and l.database = (select oid from pg_database where datname = current_database()) "
                                       "and a.application_name like 'kbmigrate%%'"),
        }


def test_a_change_slower_than_its_rehearsal_is_stopped_by_its_budget(server: Target) -> None:
    target = new_demo(server, "kbt_budget")
    run_id = f"budget-{os.getpid()}"
    args = ["--dsn", target.conninfo, "--no-progress", "-p", "lock_timeout=500ms", "-p", "lock_budget_floor=1s"]
    try:
        done = run_cli("run", "--run-id", run_id, *args, env={"KBMIGRATE_FAILPOINT_SLOW": f"{SLOW}=6"})
        assert done.returncode == 1, done.stdout + done.stderr
        said = done.stderr.strip().splitlines()[-1]
        assert "Traceback" not in done.stderr

        # the budget, computed here from the rehearsal's evidence: max(held × 5, 1 s)
        evidence = json.loads((RUNS_DIR / run_id / "rehearsal.json").read_text())
        rehearsed = next(c for c in evidence["changes"] if c["change"] == SLOW)
        assert rehearsed["locks"] and rehearsed["held_seconds"] < 1, rehearsed  # the copy was not slowed
        budget = max(rehearsed["held_seconds"] * 5.0, 1.0)
        assert f"change {SLOW} ran past its lock budget" in said, said
        assert f"its budget is {budget:.3f} s" in said and f"{rehearsed['held_seconds']:.3f} s rehearsed" in said, said
        assert "pg_sleep" in said and f"sql/verify/{SLOW}.sql" in said, said  # the statement it was in
        assert f"--resume {run_id}" in said, said
        took = float(said.split("cancelled by the server after ")[1].split(" s")[0])
        assert budget <= took < budget + 0.5 + 2, took  # budget + lock_timeout, plus the client's own time

        # production as the rollback of that change leaves it: the changes before it in, it out
        state = catalog(target)
        assert state["constraints"] == [] and state["workspace_column"] and state["sections_table"], state
        assert ("kb_columns", "applied") in state["ledger"] and ("sections_table", "applied") in state["ledger"]
        assert (SLOW, "failed") in state["ledger"] and (SLOW, "applied") not in state["ledger"], state["ledger"]
        assert not any(change == "kb_constraints_validate" for change, _ in state["ledger"]), state["ledger"]
        assert state["holding"] == 0, "a lock of the migration outlived the run"
        manifest = json.loads((RUNS_DIR / run_id / "manifest.json").read_text())
        assert [(s["step"], s["status"]) for s in manifest["steps"]][-1] == ("02_schema", "failed")

        # the change at its own speed is within budget: the resumed run finishes
        again = run_cli("run", "--resume", run_id, "--no-progress")
        assert again.returncode == 0, again.stderr
        assert sorted(catalog(target)["constraints"]) == sorted(CONSTRAINTS)
        assert run_cli("verify", run_id, "--dsn", target.conninfo).returncode == 0
    finally:
        drop(server, target)
