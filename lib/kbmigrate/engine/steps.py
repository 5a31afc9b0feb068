"""Apply every change of one notebook step, in plan order: neighbours that are each one
transaction go to the server together (``apply.apply_together``), one round trip for all."""

from __future__ import annotations

from typing import Any

import psycopg

from kbmigrate.engine import apply, backfill
from kbmigrate.engine.apply import Outcome
from kbmigrate.engine.params import RunParams
from kbmigrate.engine.plan import Change, for_step


def apply_step(conn: psycopg.Connection[Any], step: str, params: RunParams, run_id: str,
               *, progress: bool = True) -> list[Outcome]:
    done: list[Outcome] = []
    changes = for_step(step, params)
    found = apply.present(conn, changes) if params.import_legacy is not False else set()  # one round trip for all
    waiting: list[Change] = []  # neighbours that go to the server together, in one round trip

    def send() -> None:
        done.extend(apply.apply_together(conn, waiting, params, run_id, found))
        waiting.clear()

    for change in changes:
        if apply.together(change, params):
            waiting.append(change)
            continue
        send()
        if change.has("batched"):
            done.append(backfill.run(conn, change, params, run_id, progress=progress))
        else:
            done.append(apply.apply(conn, change, params, run_id, found))
    send()
    return done
