"""Apply every change of one notebook step, in plan order: neighbours that are each one
transaction go to the server together (``apply.apply_together``), one round trip for all.

While the application is there (``throttle``, and other client sessions present when the step
begins), the step gives way between its changes as the backfill does between its batches: each
change goes on its own (a round trip each, so that the application's queries run between them),
followed by a pause that makes the server's work on it (its ``held_seconds``; the wall time where
the server did not say, as for an index build) ``work_share`` of the time, at most ``max_pause``
(``RunParams.pause_after``); and its index builds go
without parallel workers, which on a small server take the cores the application's queries run
on. No lock is held during a pause: each change has committed. Alone on the database the step
runs at full speed, its neighbours together."""

from __future__ import annotations

import time
from typing import Any

import psycopg

from kbmigrate import db
from kbmigrate.engine import apply, backfill
from kbmigrate.engine.apply import Outcome
from kbmigrate.engine.params import RunParams
from kbmigrate.engine.plan import Change, for_step
from kbmigrate.engine.throttle import MIN_PAUSE
from kbmigrate.paths import read_sql


def apply_step(conn: psycopg.Connection[Any], step: str, params: RunParams, run_id: str,
               *, progress: bool = True) -> list[Outcome]:
    done: list[Outcome] = []
    changes = for_step(step, params)
    found = apply.present(conn, changes) if params.import_legacy is not False else set()  # one round trip for all
    waiting: list[Change] = []  # neighbours that go to the server together, in one round trip
    gentle = give_way_if_present(conn, changes, params, run_id)

    def given_way(outcomes: list[Outcome], took: float) -> None:
        done.extend(outcomes)
        worked = server_seconds(outcomes, took)
        if gentle and outcomes and worked >= MIN_PAUSE:
            pause = params.pause_after(worked)
            outcomes[-1].detail["paused_after"] = round(pause, 3)
            time.sleep(pause)

    def send() -> None:
        if waiting:
            t0 = time.monotonic()
            given_way(apply.apply_together(conn, waiting, params, run_id, found), time.monotonic() - t0)
            waiting.clear()

    for change in changes:
        if apply.together(change, params) and not gentle:
            waiting.append(change)
            continue
        send()
        if change.has("batched"):  # it gives way batch by batch (engine/throttle.py)
            done.append(backfill.run(conn, change, params, run_id, progress=progress))
        else:
            t0 = time.monotonic()
            given_way([apply.apply(conn, change, params, run_id, found)], time.monotonic() - t0)
    send()
    return done


def server_seconds(outcomes: list[Outcome], took: float) -> float:
    """How long the server worked on ``outcomes``: their ``held_seconds`` (from each change's first
    statement to its COMMIT, read on the server), or ``took``, the wall time round trips included,
    when one that was applied did not say."""
    held = [o.detail.get("held_seconds") for o in outcomes if o.outcome == "applied"]
    if any(h is None for h in held):
        return took
    return float(sum(held))


def give_way_if_present(conn: psycopg.Connection[Any], changes: list[Change], params: RunParams, run_id: str) -> bool:
    """Whether this step gives way to the application (the module's docstring): the throttle is on,
    the step has more than the backfill to do, and other client sessions are present now. When it
    does and the step builds indexes, this session's builds go without parallel workers from here
    on (a session setting: it ends with the step's session)."""
    if not params.throttle or all(c.has("batched") for c in changes):
        return False
    present = int(db.scalar(conn, read_sql("report/others_present.sql"), {"run_id": run_id}))
    if present and any(c.has("notx") for c in changes):
        conn.execute("set max_parallel_maintenance_workers = 0")
    return present > 0
