"""Never hang, resume in place: the steps after the schema and the backfill (04 to 06), each
blocked by a session holding the KB tables, stop within their bound naming it and finish on
``--resume``; the database is then where an undisturbed run leaves it. (00 to 03 and the
rollback: tests/test_never_hang.py, whose helpers these are.)"""

from __future__ import annotations

import os

from kbmigrate import db
from kbmigrate.conninfo import Target
from kbmigrate.engine.params import RunParams
from kbmigrate.engine.steps import apply_step

from conftest import drop, new_demo, gated
from crash_reference import reference as uninterrupted, state
from test_never_hang import blocked_then_resumed


def test_a_lock_held_in_each_late_step_stops_it_naming_the_blocker_and_resume_finishes(server: Target) -> None:
    blocked = new_demo(server, "kbt_hang_late")
    base = f"hang-late-{os.getpid()}"
    try:
        gated(blocked, f"{base}-setup")
        with db.connect(blocked, autocommit=True) as conn:  # the steps before, as a kernel applies them
            for step in ("02_schema", "03_backfill"):
                apply_step(conn, step, RunParams(), f"{base}-setup", progress=False)
        for step in ("04_seed_sections", "05_import_legacy", "06_smoke_tests"):
            blocked_then_resumed(blocked, step, f"{base}-{step[:2]}", backup_of=f"{base}-setup")
        assert state(blocked) == uninterrupted(server)["state"]  # steps 02-05 as one undisturbed run leaves them
    finally:
        drop(server, blocked)
