"""The batched backfill: many short transactions, a progress bar, resumable by construction.

Each batch takes the next ``batch_size`` entries (by id) that still have no workspace and are
not shared, decides them, and writes its ledger row, all in one transaction. The state lives in
the data itself, so after an interruption a new run simply starts over and finds only the
entries not yet done (plus the quarantined ones, which it leaves as they are).
"""

from __future__ import annotations

import sys
import time
from typing import Any

import psycopg
from tqdm import tqdm

from kbmigrate import db
from kbmigrate.engine.apply import Outcome, record_failure, verify_passes
from kbmigrate.errors import StepFailed
from kbmigrate.engine.params import RunParams
from kbmigrate.paths import read_sql
from kbmigrate.engine.plan import Change
from kbmigrate.engine.throttle import Throttle
from kbmigrate.engine import gates, transaction
from kbmigrate.engine.transaction import Done

ZERO_ID = "00000000-0000-0000-0000-000000000000"


def pending(conn: psycopg.Connection[Any]) -> int:
    return int(db.scalar(conn, "select count(*) from public.knowledge_base where workspace_id is null and not is_shared"))


def run(conn: psycopg.Connection[Any], change: Change, params: RunParams, run_id: str,
        *, progress: bool = True) -> Outcome:
    gates.require(conn, run_id, f"{change.step} ({change.name})")
    started = time.monotonic()
    text = read_sql(change.deploy)
    sha = change.sha256()
    settings = params.settings(run_id)
    totals = {"batches": 0, "scanned": 0, "shared": 0, "assigned": 0, "quarantined": 0, "updated": 0,
              "max_batch_seconds": 0.0}
    after = ZERO_ID
    throttle = Throttle.for_params(params)
    probe = read_sql("report/throttle_probe.sql")
    # on stdout: in a notebook (and its report) the bar reads as progress, not as an error on stderr
    with tqdm(total=pending(conn), desc="backfill", unit="entry", disable=not progress, file=sys.stdout) as bar:
        while True:
            size = throttle.size

            def batch() -> Done:
                t0 = time.monotonic()
                row = db.rows(conn, text)[0]
                held = time.monotonic() - t0
                cost = db.rows(conn, probe)[0]  # while this batch still holds its row locks
                decided = throttle.after_batch(held, int(cost["waiting"]), int(cost["active"]), int(cost["present"]))
                detail = {k: row[k] for k in ("scanned", "shared", "assigned", "quarantined", "newly_quarantined")}
                detail.update(batch=totals["batches"] + 1, size=size, seconds=decided.seconds, waiting=decided.waiting,
                              active=decided.active, present=decided.present, next_size=decided.next_size, pause=decided.pause, why=decided.why)
                changed = row["updated"] + row["newly_quarantined"]
                return Done(row["updated"], "applied" if changed else "noop", detail, value=row)

            t0 = time.monotonic()
            try:
                row = transaction.in_transaction(conn, params, run_id=run_id, step=change.step, change=change.name,
                                                 sha=sha, work=batch,
                                                 settings={**settings, "kbmigrate.after_id": after,
                                                           "kbmigrate.batch_size": str(size)}).value
            except psycopg.Error as exc:
                record_failure(conn, run_id, change, sha, exc, params)
                raise transaction.stopped(conn, exc, step=change.step, change=change.name, run_id=run_id) from None
            row["seconds"] = time.monotonic() - t0
            totals["batches"] += 1
            for key in ("scanned", "shared", "assigned", "quarantined", "updated"):
                totals[key] += int(row[key])
            totals["max_batch_seconds"] = max(totals["max_batch_seconds"], round(row["seconds"], 3))
            bar.update(int(row["scanned"]))
            if row["scanned"] < size or row["last_id"] is None:
                break
            after = str(row["last_id"])
            if throttle.pause:
                time.sleep(throttle.pause)
    totals.update(throttle.summary())
    ok, why = verify_passes(conn, change, params, settings)
    if not ok:
        raise StepFailed(step=change.step, change=change.name, reason=f"verify failed: {why}")
    outcome = "applied" if totals["updated"] else "noop"
    return Outcome(change.name, outcome, totals["updated"], time.monotonic() - started, totals)
