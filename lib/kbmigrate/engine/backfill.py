"""The batched backfill: many short transactions, a progress bar, resumable by construction.

Each batch takes the next ``batch_size`` entries (by id) that still have no workspace and are
not shared, decides them, measures what it costs the others while it holds its row locks, and
writes its ledger row, all in one transaction and one round trip (``sql/engine/batch.sql``).
The throttle's decision after a batch is recorded in the next batch's row: its size, why, and
the pause before it. The state lives in
the data itself, so after an interruption a new run simply starts over and finds only the
entries not yet done (plus the quarantined ones, which it leaves as they are). When it has
changed anything, ``knowledge_base`` is analyzed (``engine/statistics.py``): until then its
``workspace_id`` statistics say what they said before the backfill.
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
from kbmigrate.engine.statistics import analyzed
from kbmigrate.engine.throttle import Throttle
from kbmigrate.engine import gates, transaction

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
    reason, pause_before = "the first batch: batch_size", 0.0
    throttle = Throttle.for_params(params)
    probe = read_sql("report/throttle_probe.sql")
    # on stdout: in a notebook (and its report) the bar reads as progress, not as an error on stderr
    with tqdm(total=pending(conn), desc="backfill", unit="entry", disable=not progress, file=sys.stdout) as bar:
        while True:
            size = throttle.size
            detail = {"batch": totals["batches"] + 1, "size": size, "why": reason, "pause_before": pause_before}
            t0 = time.monotonic()
            try:
                row = transaction.batch_in_transaction(
                    conn, params, run_id=run_id, step=change.step, change=change.name, sha=sha, batch=text,
                    probe=probe, detail=detail,
                    settings={**settings, "kbmigrate.after_id": after, "kbmigrate.batch_size": str(size)})
            except psycopg.Error as exc:
                record_failure(conn, run_id, change, sha, exc, params)
                raise transaction.stopped(conn, exc, step=change.step, change=change.name, run_id=run_id) from None
            decided = throttle.after_batch(float(row["seconds"]), int(row["waiting"]), int(row["active"]),
                                           int(row["present"]))
            reason, pause_before = decided.why, decided.pause
            totals["batches"] += 1
            for key in ("scanned", "shared", "assigned", "quarantined", "updated"):
                totals[key] += int(row[key])
            totals["max_batch_seconds"] = max(totals["max_batch_seconds"], round(time.monotonic() - t0, 3))
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
    if totals["updated"]:  # workspace_id's statistics said "all NULL": the policies' lookups planned on that
        totals["analyzed"] = analyzed(conn, ["public.knowledge_base"])
    outcome = "applied" if totals["updated"] else "noop"
    return Outcome(change.name, outcome, totals["updated"], time.monotonic() - started, totals)
