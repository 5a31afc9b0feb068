"""The batched backfill: many short transactions, a progress bar, resumable by construction.

Each batch takes the next ``batch_size`` entries (by id) that still have no workspace and are
not shared, decides them, and writes its ledger row, all in one transaction. The state lives in
the data itself, so after an interruption a new run simply starts over and finds only the
entries not yet done (plus the quarantined ones, which it leaves as they are).
"""

from __future__ import annotations

import time
from typing import Any

import psycopg
from tqdm import tqdm

from kbmigrate import db, ledger
from kbmigrate.changes import Outcome, error_text, record_failure, verify_passes, with_lock_retries
from kbmigrate.errors import StepFailed
from kbmigrate.params import RunParams
from kbmigrate.paths import read_sql
from kbmigrate.plan import Change
from kbmigrate.scripts import begin_step

ZERO_ID = "00000000-0000-0000-0000-000000000000"


def pending(conn: psycopg.Connection[Any]) -> int:
    return int(db.scalar(conn, "select count(*) from public.knowledge_base where workspace_id is null and not is_shared"))


def run(conn: psycopg.Connection[Any], change: Change, params: RunParams, run_id: str,
        *, progress: bool = True) -> Outcome:
    started = time.monotonic()
    text = read_sql(change.deploy)
    sha = change.sha256()
    settings = params.settings(run_id)
    totals = {"batches": 0, "scanned": 0, "shared": 0, "assigned": 0, "quarantined": 0, "updated": 0,
              "max_batch_seconds": 0.0}
    after = ZERO_ID
    with tqdm(total=pending(conn), desc="backfill", unit="entry", disable=not progress) as bar:
        while True:
            def attempt() -> dict[str, Any]:
                t0 = time.monotonic()
                with conn.transaction():
                    begin_step(conn, params.lock_timeout, params.statement_timeout,
                               {**settings, "kbmigrate.after_id": after})
                    row = db.rows(conn, text)[0]
                    detail = {k: row[k] for k in ("scanned", "shared", "assigned", "quarantined", "newly_quarantined")}
                    detail["batch"] = totals["batches"] + 1
                    changed = row["updated"] + row["newly_quarantined"]
                    ledger.record(conn, run_id=run_id, step=change.step, change=change.name, sql_sha256=sha,
                                  rows_affected=row["updated"], outcome="applied" if changed else "noop",
                                  detail=detail)
                row["seconds"] = time.monotonic() - t0
                return row
            try:
                row = with_lock_retries(params, change.step, change.name, attempt)
            except psycopg.Error as exc:
                record_failure(conn, run_id, change, sha, exc)
                raise StepFailed(step=change.step, change=change.name, reason=error_text(exc)) from None
            totals["batches"] += 1
            for key in ("scanned", "shared", "assigned", "quarantined", "updated"):
                totals[key] += int(row[key])
            totals["max_batch_seconds"] = max(totals["max_batch_seconds"], round(row["seconds"], 3))
            bar.update(int(row["scanned"]))
            if row["scanned"] < params.batch_size or row["last_id"] is None:
                break
            after = str(row["last_id"])
    ok, why = verify_passes(conn, change, params, settings)
    if not ok:
        raise StepFailed(step=change.step, change=change.name, reason=f"verify failed: {why}")
    outcome = "applied" if totals["updated"] else "noop"
    return Outcome(change.name, outcome, totals["updated"], time.monotonic() - started, totals)
