"""Give a run its gates the way a run gets them, through the library, for the development tools
that drive the engine directly (the benchmarks, the tests): preflight's verdict, which must be
GO, then a backup and its restore drill, or a link to another run's proven backup. Nothing here
grants a gate the library would not: it runs the same checks, dump and drill as 00 and 01."""

from __future__ import annotations

from typing import Any

from kbmigrate import db
from kbmigrate.backup import drill, dump
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
    if backup_of:
        return gates.backup_for(run_id)[1]
    info = dump.dump(target, run_id, params)
    drill.run(info, run_id)
    return gates.backup_for(run_id)[1]
