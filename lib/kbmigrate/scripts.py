"""Run a SQL file from ``sql/`` in one transaction, under lock and statement timeouts."""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg.pq import TransactionStatus

from kbmigrate.paths import read_sql

DEFAULT_LOCK_TIMEOUT = "5s"
DEFAULT_STATEMENT_TIMEOUT = "15min"


def set_local_timeouts(conn: psycopg.Connection[Any], lock_timeout: str, statement_timeout: str) -> None:
    """Transaction-local timeouts; values are bound, never formatted into the SQL."""
    conn.execute(
        "select set_config('lock_timeout', %s, true), set_config('statement_timeout', %s, true)",
        (lock_timeout, statement_timeout),
    )


def begin_step(conn: psycopg.Connection[Any], lock_timeout: str, statement_timeout: str,
               settings: dict[str, str] | None = None) -> None:
    """The first statements of every step transaction: its timeouts, then the bound settings the
    SQL files read with current_setting() (all transaction-local)."""
    set_local_timeouts(conn, lock_timeout, statement_timeout)
    for name, value in (settings or {}).items():
        conn.execute("select set_config(%s, %s, true)", (name, value))


def run_file(conn: psycopg.Connection[Any], relative: str, *, settings: dict[str, str] | None = None,
             lock_timeout: str = DEFAULT_LOCK_TIMEOUT,
             statement_timeout: str = DEFAULT_STATEMENT_TIMEOUT) -> int:
    """Execute ``sql/<relative>`` in its own transaction; return the rows the last statement touched.

    The connection must be idle (best: autocommit), so the transaction is a real one, not a
    savepoint inside someone else's. ``settings`` become transaction-local custom settings (``current_setting('x.y')`` in the file).
    """
    if conn.info.transaction_status != TransactionStatus.IDLE:
        raise RuntimeError(f"sql/{relative} must run in a transaction of its own; the connection is inside one")
    text = read_sql(relative)
    with conn.transaction():
        begin_step(conn, lock_timeout, statement_timeout, settings)
        cur = conn.execute(text)
        return cur.rowcount
