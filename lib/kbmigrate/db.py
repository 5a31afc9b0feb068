"""Connections that fail in one clear line, and small query helpers."""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg import sql
from psycopg.rows import dict_row

from kbmigrate.conninfo import Target
from kbmigrate.errors import AuthenticationFailed, DatabaseMissing, ServerUnreachable

APPLICATION_NAME = "kbmigrate"


def connect(target: Target, *, autocommit: bool = False, application_name: str = APPLICATION_NAME,
            connect_timeout: int = 10) -> psycopg.Connection[Any]:
    """Open a connection; an expected failure becomes a KbError whose message holds no password."""
    try:
        return psycopg.connect(
            target.conninfo, autocommit=autocommit, application_name=application_name,
            connect_timeout=connect_timeout,
        )
    except psycopg.OperationalError as exc:
        raise classify_connect_error(target, exc) from None


def classify_connect_error(target: Target, exc: psycopg.OperationalError) -> Exception:
    text = target.redact(str(exc)).strip()
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    reason = "no answer"
    for line in lines:  # libpq: 'connection to server at "h", port p failed: <why>'
        if "failed:" in line:
            reason = line.rsplit("failed:", 1)[1].strip() or reason
    reason = reason.removeprefix("FATAL:").strip().rstrip(".")
    code = getattr(exc, "sqlstate", None)
    if code in ("28P01", "28000") or "password authentication failed" in text or "no password supplied" in text:
        return AuthenticationFailed(target=target.label, reason=reason)
    if code == "3D000" or ("database" in text and "does not exist" in text):
        return DatabaseMissing(database=target.params.get("dbname", "?"), target=target.label)
    return ServerUnreachable(target=target.label, reason=reason)


def scalar(conn: psycopg.Connection[Any], query: str | sql.Composable, params: Any = None) -> Any:
    row = conn.execute(query, params).fetchone()
    return None if row is None else row[0]


def rows(conn: psycopg.Connection[Any], query: str | sql.Composable, params: Any = None) -> list[dict[str, Any]]:
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute(query, params)
        return cur.fetchall()


def server_version(conn: psycopg.Connection[Any]) -> str:
    return str(scalar(conn, "show server_version"))


def database_exists(conn: psycopg.Connection[Any], name: str) -> bool:
    return bool(scalar(conn, "select exists(select 1 from pg_database where datname = %s)", (name,)))


def create_database(conn: psycopg.Connection[Any], name: str, *, template: str | None = None) -> None:
    """CREATE DATABASE (needs an autocommit connection)."""
    query = sql.SQL("create database {}").format(sql.Identifier(name))
    if template:
        query = sql.SQL("{} template {}").format(query, sql.Identifier(template))
    conn.execute(query)


def drop_database(conn: psycopg.Connection[Any], name: str) -> None:
    """DROP DATABASE ... WITH (FORCE) (needs an autocommit connection)."""
    conn.execute(sql.SQL("drop database if exists {} with (force)").format(sql.Identifier(name)))

