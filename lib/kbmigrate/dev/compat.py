"""The Supabase compatibility layer (``sql/compat/supabase.sql``) for plain PostgreSQL."""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg.pq import TransactionStatus

from kbmigrate import db
from kbmigrate.engine.transaction import run_file

MARKER = "kbmigrate supabase compatibility layer"


def state(conn: psycopg.Connection[Any]) -> str:
    """``absent``, ``ours`` (installed by kbmigrate) or ``supabase`` (a real auth.uid() exists)."""
    if db.scalar(conn, "select to_regprocedure('auth.uid()') is null"):
        return "absent"
    comment = db.scalar(conn, "select obj_description(to_regnamespace('auth'), 'pg_namespace')")
    return "ours" if comment == MARKER else "supabase"


def install(conn: psycopg.Connection[Any]) -> str:
    """Install the layer where auth.uid() is absent. Returns what was found before:
    ``absent`` (now installed), ``ours`` (left as is) or ``supabase`` (left untouched)."""
    if conn.info.transaction_status != TransactionStatus.IDLE:
        raise RuntimeError("compat.install needs a connection outside any transaction")
    found = state(conn)
    if not conn.autocommit:
        conn.commit()  # ends only the read transaction that state() opened
    if found == "absent":
        run_file(conn, "compat/supabase.sql")
    return found
