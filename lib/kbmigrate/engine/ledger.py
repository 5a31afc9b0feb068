"""The ledger (kbmigrate.ledger): what each run applied, written in the change's transaction."""

from __future__ import annotations

import json
import weakref
from typing import Any

import psycopg

from kbmigrate import db


_SEEN: "weakref.WeakSet[psycopg.Connection[Any]]" = weakref.WeakSet()  # connections that found it


def exists(conn: psycopg.Connection[Any]) -> bool:
    """Whether the database has the ledger; once a connection has found it, not asked again on it
    (nothing of the tool drops it: a rollback restores the application's schemas, not the ledger)."""
    if conn in _SEEN:
        return True
    found = bool(db.scalar(conn, "select to_regclass('kbmigrate.ledger') is not null"))
    if found:
        _SEEN.add(conn)
    return found


def written(conn: psycopg.Connection[Any]) -> None:
    """``conn`` has just committed a ledger row: the ledger exists, and is not asked about again on it."""
    _SEEN.add(conn)


def record(conn: psycopg.Connection[Any], *, run_id: str, step: str, change: str, sql_sha256: str,
           rows_affected: int | None, outcome: str, detail: dict[str, Any] | None = None) -> None:
    conn.execute(
        "insert into kbmigrate.ledger (run_id, step, change, sql_sha256, rows_affected, outcome, detail)"
        " values (%s, %s, %s, %s, %s, %s, %s)",
        (run_id, step, change, sql_sha256, rows_affected, outcome, json.dumps(detail or {})),
    )


def for_run(conn: psycopg.Connection[Any], run_id: str, step: str | None = None) -> list[dict[str, Any]]:
    if not exists(conn):
        return []
    return db.rows(conn, """
        select step, change, outcome, rows_affected, db_user, applied_at, left(sql_sha256, 12) as sql_sha256, detail
        from kbmigrate.ledger where run_id = %s and (%s::text is null or step = %s) order by id""",
        (run_id, step, step))


def drift(conn: psycopg.Connection[Any], current: dict[str, str]) -> list[dict[str, Any]]:
    """Changes in effect whose SQL differs from the SQL that applied them (``current``: change ->
    sha256 of its deploy file now), like Flyway's validate. A change's reference is its latest
    ``applied`` row, or a no-op that accepted an edited file; a change reverted since is not in effect."""
    if not exists(conn):
        return []
    rows = db.rows(conn, """
        select distinct on (change) change, sql_sha256, outcome, run_id, applied_at
        from kbmigrate.ledger
        where outcome in ('applied', 'reverted') or (outcome = 'noop' and detail ? 'accepted_sql_change')
        order by change, id desc""")
    return [{"change": r["change"], "applied_with": r["sql_sha256"], "file_now": current[r["change"]],
             "run_id": r["run_id"], "applied_at": r["applied_at"]}
            for r in rows if r["outcome"] != "reverted" and r["change"] in current
            and r["sql_sha256"] != current[r["change"]]]
