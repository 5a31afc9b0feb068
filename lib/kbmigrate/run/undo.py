"""``kbmigrate revert CHANGE``: one change undone, as a run of its own with its evidence.

Like any change, a revert needs its run's gates (``engine/gates.py``): the backup that covers it
(the migration's run, ``--backup-of RUN``) and a GO from preflight, which it runs first. Its run
folder holds the manifest (preflight's rows, what was reverted, what changed in numbers), a
report, and its seal in the database, like every other run.
"""

from __future__ import annotations

from typing import Any

from kbmigrate import db
from kbmigrate.checks import preflight
from kbmigrate.conninfo import Target
from kbmigrate.engine import gates, revert
from kbmigrate.engine.lock import run_lock
from kbmigrate.engine.params import RunParams
from kbmigrate.errors import BadParameter, Blocked, NoGo
from kbmigrate.run import runner
from kbmigrate.run.record import Run


def run(target: Target, change: str, params: RunParams, run_id: str, backup_of: str) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Revert ``change`` in run ``run_id``, relying on run ``backup_of``'s backup; returns the
    run's record and what was reverted."""
    if (runner.RUNS_DIR / run_id).exists():
        raise BadParameter(name="--run-id", reason=f"runs/{run_id} already exists; a run id is used once")
    gates.proven_backup(backup_of)  # refused before anything starts
    with runner.private_files(), run_lock(target, f"run {run_id}"), \
            db.connect(target, autocommit=True, application_name=f"kbmigrate {run_id}"[:63]) as conn:
        record = Run.open(target, conn, run_id, params, steps=[], extra={"revert": change}, backup_of=backup_of)
        status, done = "failed", []
        try:
            rows = preflight.verdict(conn, target, params, run_id)
            record.data["preflight"] = rows
            if not preflight.go(rows):
                raise NoGo(target=target.label, reason="; ".join(f"{r['check']}: {r['detail']}" for r in rows
                                                                 if r["status"] == "NO-GO"))
            try:
                done = revert.revert(conn, change, params, run_id)
            except Blocked as exc:
                raise Blocked(**{**exc.details, "then": f"run 'kbmigrate revert {change}' again"}) from None
            status = "succeeded"
            record.data["reverted"] = done
        finally:
            with db.connect(target, autocommit=True, limits=runner.closing_limits(params),
                            application_name=f"kbmigrate seal {run_id}"[:63]) as closing:
                record.finish(closing, status)
                record.seal(closing)
    return record.as_dict(), done
