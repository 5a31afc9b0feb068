"""The rehearsal: the migration's changes (steps 02-05) on the restored copy, before production's first.

The restore drill proves the backup on a copy (``drill.py``); a copy that passed is kept for this.
Steps 02-05 then run there through the engine, with the run's parameters and under the run's own
gates: the copy is recorded as the run's (``gates.record_rehearsal_copy``), and a change accepts
no other database without the run's GO. What it records, per change: its outcome, rows and
seconds, and the locks its transaction held on the application's tables at COMMIT and for how
long (read by the change's own statement from ``pg_locks``, ``sql/engine/change.sql``); and where
the backfill put the entries: per workspace, shared, quarantined, listed for review; and the smoke
tests' isolation matrix, acting as each user on the copy, with each user's access lost and gained.
Then the copy is rolled back from the run's backup, proved as it was, and migrated again
(``rollback_proof.py``).

A change that fails on the copy, a user who sees what they should not there, or a rollback that
does not bring the copy back fails the rehearsal: production is then a NO-GO (the run stops
in 01, before any change), and the evidence is kept. The copy is dropped whatever happens. Its
failpoints are named apart (``rehearsal:<change>``): a crash test armed for production's change is
not reached on the copy.

The evidence goes to ``runs/<run_id>/rehearsal.json``; the run's gates hold its sha256.
Where it runs: where the drill kept the copy, the local server by default (no load on production),
or the target's own server with ``rehearse_on=target`` (production's version and hardware); given
first what Supabase gives production and the drill only stood in for (``like_supabase``).
"""

from __future__ import annotations

import json
import time
from typing import Any

from kbmigrate import db
from kbmigrate.backup import drill, rollback_proof
from kbmigrate.checks import smoke
from kbmigrate.digest import sha256_file
from kbmigrate.engine import budget, failpoint, gates, steps, transaction
from kbmigrate.engine.params import RunParams
from kbmigrate.errors import KbError, RehearsalFailed
from kbmigrate.paths import RUNS_DIR, read_sql, shown

REHEARSED = ("02_schema", "03_backfill", "04_seed_sections", "05_import_legacy")
FILE = "rehearsal.json"

PER_WORKSPACE = """select w.name as workspace, count(*) as entries
from public.knowledge_base kb join public.workspaces w on w.id = kb.workspace_id
group by w.name order by count(*) desc, w.name"""


def _change_row(step: str, outcome: Any) -> dict[str, Any]:
    detail = outcome.detail
    return {"step": step, "change": outcome.change, "outcome": outcome.outcome, "rows": outcome.rows_affected,
            "seconds": round(outcome.seconds, 3), "locks": detail.get("locks"),
            "held_seconds": detail.get("held_seconds"), "batches": detail.get("batches"),
            "max_batch_seconds": detail.get("max_batch_seconds")}


def _where_entries_went(conn: Any) -> dict[str, Any]:
    counts, per_workspace, quarantine, review = db.batch(conn, [
        (read_sql("report/backfill_counts.sql"), None), (PER_WORKSPACE, None),
        (f"select reason, count(*) as entries from ({read_sql('report/quarantine.sql').rstrip().rstrip(';')}) q "
         "group by reason order by reason", None),
        (f"select count(*) as entries from ({read_sql('report/review_shared_assigned.sql').rstrip().rstrip(';')}) r", None)])
    return {"totals": counts[0], "per_workspace": per_workspace, "quarantined_by_reason": quarantine,
            "listed_for_review": int(review[0]["entries"])}


def _access(conn: Any, params: RunParams) -> dict[str, Any]:
    """The smoke tests' isolation matrix on the copy (acting as each user, ``checks/smoke.py``), and
    each user's access lost (entries they created and can no longer read) and gained (legacy
    entries), computed from the rules as 06 computes them."""
    member_map = smoke.memberships(conn, params)
    rows = smoke.matrix(conn, params, smoke.subjects(conn, params, member_map=member_map), member_map,
                        smoke.expected_figures(conn))
    imported = db.scalar(conn, "select to_regclass('kbmigrate.legacy_imports') is not null")
    found = db.batch(conn, [(read_sql("report/lost_own_entries.sql"), None),
                            *([(read_sql("report/gained_access.sql"), None)] if imported else [])])
    lost = [{"user_id": str(r["user_id"]), "entries_lost": int(r["entries_lost"]), "quarantined": int(r["quarantined"]),
             "in_a_workspace_they_are_not_in": int(r["in_a_workspace_they_are_not_in"])} for r in found[0]]
    return {"users_probed": len(rows), "passed": sum(1 for r in rows if r["pass"]),
            "failed": [{"user": r["user"], "role": r.get("role"), "leaked": len(r["leaked"]), "missing": len(r["missing"])}
                       for r in rows if not r["pass"]],
            "lost": lost, "users_losing": len(lost), "entries_lost": sum(r["entries_lost"] for r in lost),
            "gained": {k: int(v) for k, v in found[1][0].items()} if imported else None}


def like_supabase(conn: Any) -> None:
    """Give the copy what Supabase gives production and the drill only stood in for: ``auth.uid()``
    reading the request's claims, the API roles and their privileges (``sql/compat/supabase.sql``,
    here on the copy only, whose ``auth`` schema holds nothing but the drill's stand-ins)."""
    if db.scalar(conn, "select to_regnamespace('auth') is not null"):
        conn.execute("comment on schema auth is 'kbmigrate supabase compatibility layer'")
    transaction.run_file(conn, "compat/supabase.sql")


def run(drilled: dict[str, Any], run_id: str, params: RunParams, on: drill.Where | None = None) -> dict[str, Any]:
    """Rehearse steps 02-05 on the copy the drill kept (``drilled``: its result) ``on`` the server
    it kept it on (``drill.where``: the local one by default); returns the evidence (also written
    to the run folder). Raises RehearsalFailed when a change fails there."""
    name = drilled.get("kept_for_rehearsal_as")
    if not name:
        raise RehearsalFailed(reason="the restore drill kept no copy to rehearse on", evidence="none")
    on = on or drill.where("local", None)
    if on.on_target != bool(drilled.get("on_target")):
        raise RehearsalFailed(reason="the copy is not on the server the rehearsal was asked to run on", evidence="none")
    copy = on.server.with_database(name)
    backup_of = gates.backup_for(run_id)
    started = time.monotonic()
    changes: list[dict[str, Any]] = []
    failure: str | None = None
    entries: dict[str, Any] = {}
    access: dict[str, Any] = {}
    undone: dict[str, Any] = {}
    try:
        with db.connect(copy, autocommit=True, application_name=f"kbmigrate rehearsal {run_id}"[:63]) as conn:
            gates.record_rehearsal_copy(conn, run_id, name)
            like_supabase(conn)

            at = [""]  # the step being rehearsed, for the failure's message

            def update() -> list[dict[str, Any]]:
                done: list[dict[str, Any]] = []
                with failpoint.named_apart("rehearsal"):
                    for at[0] in REHEARSED:
                        done += [_change_row(at[0], o) for o in steps.apply_step(conn, at[0], params, run_id, progress=False)]
                return done

            try:
                before = rollback_proof.schema_text(copy, conn, backup_of[1])
                changes = update()
            except KbError as exc:
                failure = f"{at[0]}: {exc.message}" if at[0] else exc.message
            if failure is None:
                entries = _where_entries_went(conn)
                access = _access(conn, params)
                if access["failed"]:
                    failure = (f"06_smoke_tests: isolation failed on the copy for {len(access['failed'])} of "
                               f"{access['users_probed']} users (leaked or missing entries, or a write let through)")
            def update_again() -> dict[str, Any]:
                update()
                return _where_entries_went(conn)

            if failure is None:
                undone = rollback_proof.prove(copy, conn, run_id, backup_of, params, before, update_again, entries)
                failure = undone["failure"] and f"the rollback on the copy: {undone['failure']}"
    finally:
        with db.connect(on.server, autocommit=True) as conn:
            db.drop_database(conn, name)
    evidence = {"where": drilled["where"], "database": name, "ok": failure is None, "failure": failure,
                "seconds": round(time.monotonic() - started, 2), "steps": [*REHEARSED, "06_smoke_tests"],
                "parameters": params.as_dict(), "changes": changes, "entries": entries,
                "access": access, "rollback": undone}
    path = RUNS_DIR / run_id / FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(evidence, indent=2, default=str), encoding="utf-8")
    path.chmod(0o600)
    gates.record_rehearsal(run_id, {"ok": evidence["ok"], "failure": failure, "path": shown(path),
                                    "sha256": sha256_file(path), "seconds": evidence["seconds"],
                                    "held": budget.basis(changes)})  # production's lock budget
    if failure:
        raise RehearsalFailed(reason=failure, evidence=shown(path))
    return evidence
