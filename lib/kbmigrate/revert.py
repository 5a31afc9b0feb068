"""Partial rollback: undo one change with its sql/revert file, verified, ledgered, nothing else touched."""

from __future__ import annotations

import time
from typing import Any

import psycopg

from kbmigrate import ledger
from kbmigrate.changes import error_text, with_lock_retries
from kbmigrate.errors import BadParameter, StepFailed
from kbmigrate.params import RunParams
from kbmigrate.paths import SQL_DIR, read_sql
from kbmigrate.plan import load, sha256_text
from kbmigrate.scripts import begin_step

GROUPS = {"import_legacy": [f"import_legacy_{s}" for s in ("icp", "product", "competitor", "persona")]}


def revertible() -> list[str]:
    return sorted(p.stem for p in (SQL_DIR / "revert").glob("*.sql") if p.stem != "rollback_prepare")


def expand(name: str) -> list[str]:
    names = GROUPS.get(name, [name])
    unknown = [n for n in names if n not in revertible()]
    if unknown:
        raise BadParameter(name="change", reason=f"{name!r} cannot be reverted; one of: "
                                                 f"{', '.join(sorted(revertible() + list(GROUPS)))}")
    return names


def revert(conn: psycopg.Connection[Any], name: str, params: RunParams, run_id: str) -> list[dict[str, Any]]:
    steps = {c.name: c.step for c in load()}
    out = []
    if not ledger.exists(conn):
        raise StepFailed(step="revert", change=name, reason="this database has no kbmigrate ledger: nothing was migrated")
    for change in expand(name):
        text = read_sql(f"revert/{change}.sql")
        started = time.monotonic()

        def attempt() -> int:
            with conn.transaction():
                begin_step(conn, params.lock_timeout, params.statement_timeout)
                rows = max(conn.execute(text).rowcount, 0)
                ledger.record(conn, run_id=run_id, step=steps.get(change, "revert"), change=change,
                              sql_sha256=sha256_text(text), rows_affected=rows, outcome="reverted")
                return rows
        try:
            with_lock_retries(params, "revert", change, attempt)
        except psycopg.Error as exc:
            raise StepFailed(step="revert", change=change, reason=error_text(exc)) from None
        out.append({"change": change, "outcome": "reverted", "seconds": round(time.monotonic() - started, 3)})
    return out
