"""Planner statistics for tables whose contents just changed wholesale: a restored table has none,
and a backfilled column still has the distribution it had before (every ``workspace_id`` NULL),
until autovacuum gets to it. Meanwhile the application's queries (its policies' lookups of
``workspace_id``), and the runbook's own checks, are planned on what is no longer there."""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg import sql

from kbmigrate.engine import transaction


def analyzed(conn: psycopg.Connection[Any], tables: list[str]) -> list[str] | str:
    """ANALYZE ``tables`` (qualified names), outside any change's transaction and its locks: it takes
    SHARE UPDATE EXCLUSIVE, which blocks neither reads nor writes, under the session's own
    ``lock_timeout`` and ``statement_timeout``. Returns the tables analyzed, or why not (what was
    done stands either way; autovacuum will catch up)."""
    if not tables:
        return []
    try:
        conn.execute(sql.SQL("analyze {}").format(sql.SQL(", ").join(sql.Identifier(*t.split(".", 1)) for t in tables)))
        if not conn.autocommit:  # its locks go at once
            conn.commit()
    except psycopg.Error as exc:
        if conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
            conn.rollback()
        return f"not analyzed: {transaction.error_text(exc)}"
    return tables
