"""The ledger (kbmigrate.ledger): what each run applied, written in the change's transaction."""

from __future__ import annotations

import json
from typing import Any

import psycopg

from kbmigrate import db


def exists(conn: psycopg.Connection[Any]) -> bool:
    return bool(db.scalar(conn, "select to_regclass('kbmigrate.ledger') is not null"))


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
