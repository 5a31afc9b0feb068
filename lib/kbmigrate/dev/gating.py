"""Give a run its gates the way a run gets them, through the library, for the development tools
that drive the engine directly (the benchmarks, the tests): preflight's verdict, which must be
GO, then a backup, its restore drill and the rehearsal on the copy, approved as automation's
self-approval, or a link to another run's proven and rehearsed backup. Nothing here grants a gate
the library would not: it runs the same checks, dump, drill and rehearsal as 00 and 01, and the
approval is recorded as ``kbmigrate run --auto-approve`` records it."""

from __future__ import annotations

from typing import Any

from kbmigrate import db
from kbmigrate.backup import drill, dump, rehearsal
from kbmigrate.checks import preflight
from kbmigrate.conninfo import Target
from kbmigrate.engine import gates
from kbmigrate.engine.params import RunParams
from kbmigrate.errors import NoGo


def gated(target: Target, run_id: str, params: RunParams | None = None, *, backup_of: str | None = None) -> dict[str, Any]:
    """Run ``run_id``'s preflight on ``target`` (NoGo unless GO), then its backup and drill, or
    ``backup_of``'s proven backup; returns the backup record the run relies on."""
    params = params or RunParams()
    if backup_of:  # first: the preflight weighs which backup the run relies on
        gates.link_backup(run_id, backup_of)
    with db.connect(target, autocommit=True, application_name=f"kbmigrate preflight {run_id}"[:63]) as conn:
        rows = preflight.verdict(conn, target, params, run_id)
    if not preflight.go(rows):
        raise NoGo(target=target.label, reason="; ".join(f"{r['check']}: {r['detail']}" for r in rows
                                                         if r["status"] == "NO-GO"))
    if not backup_of:
        info = dump.dump(target, run_id, params)
        on = drill.where(params.rehearse_on, target)
        rehearsal.run(drill.run(info, run_id, keep_for_rehearsal=True, on=on), run_id, params, on)
    if gates.rehearsal_of(run_id)[1]:  # a linked backup that was never rehearsed stays unapproved: the engine says so
        gates.approve(run_id, by=AUTOMATION, how="auto (development tooling)")
    return gates.backup_for(run_id)[1]


AUTOMATION = "kbmigrate.dev.gating"
