"""Connections that fail in one clear line, never without limits, and small query helpers.

Every session the tool opens gets ``lock_timeout``, ``statement_timeout`` and
``idle_in_transaction_session_timeout`` right after it connects (``Limits``), read back from the
server, and ``client_connection_check_interval``, so that what it runs stops soon after it is
gone. When ``KBMIGRATE_SESSION_LOG`` names a file (a run sets it to runs/<id>/sessions.jsonl,
and its kernels inherit it), each session is listed there with the settings the server holds:
the evidence that no session of the run could wait without limit.
"""

from __future__ import annotations

import datetime as dt
import os
import threading
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg import sql
from psycopg.rows import dict_row

from kbmigrate.conninfo import Target
from kbmigrate.errors import AuthenticationFailed, DatabaseMissing, ServerUnreachable
from kbmigrate.paths import append_json_line

APPLICATION_NAME = "kbmigrate"
SESSION_LOG = "KBMIGRATE_SESSION_LOG"


@dataclass(frozen=True)
class Limits:
    """A session's bounds. ``RunParams.limits(kind)`` gives the ones of each kind of step."""

    lock_timeout: str
    statement_timeout: str
    idle_in_transaction: str = "10min"


# How often the server checks, while a statement runs, that this client is still there: a run
# whose laptop died stops its statement (a concurrent index build waiting for its turn, say) and
# lets its locks go within seconds, instead of going on alone (PostgreSQL 14 and newer).
CLIENT_CHECK = "2s"

# For sessions that are not part of a run (kbmigrate runs/verify, the dev tooling): short reads.
READ = Limits("2s", "1min")


def connect_reading(target: Target, queries: list[tuple[str | sql.Composable, Any]],
                    **options: Any) -> tuple[psycopg.Connection[Any], list[list[dict[str, Any]]]]:
    """``connect``, with ``queries`` sent right after the session's bounds, in the same round trip:
    the session and each query's rows. A query that fails closes the session and is raised."""
    found: list[list[dict[str, Any]]] = []
    return connect(target, then=(queries, found), **options), found


def connect(target: Target, *, limits: Limits = READ, autocommit: bool = False,
            application_name: str = APPLICATION_NAME, connect_timeout: int = 10,
            program: str = "psycopg",
            then: tuple[list[tuple[str | sql.Composable, Any]], list[list[dict[str, Any]]]] | None = None
            ) -> psycopg.Connection[Any]:
    """Open a connection under ``limits``; an expected failure becomes a KbError whose message
    holds no password. ``program``: who uses it, as the session log says (ipython-sql's %sql).
    ``then``: see ``connect_reading``."""
    try:
        conn = psycopg.connect(
            target.conninfo, autocommit=autocommit, application_name=application_name,
            connect_timeout=connect_timeout,
        )
    except psycopg.OperationalError as exc:
        raise classify_connect_error(target, exc) from None
    try:
        check = conn.info.server_version >= 140000  # client_connection_check_interval is new in 14
        with conn.pipeline():  # the bounds and ``then``'s queries: one round trip
            bounds = conn.execute(
                "select pg_backend_pid(), current_user, set_config('lock_timeout', %s, false), "
                "set_config('statement_timeout', %s, false), "
                "set_config('idle_in_transaction_session_timeout', %s, false), "
                "current_schema(), upper(current_setting('transaction_isolation'))"
                + (", set_config('client_connection_check_interval', %s, false)" if check else ""),
                (limits.lock_timeout, limits.statement_timeout, limits.idle_in_transaction,
                 *([CLIENT_CHECK] if check else [])))
            cursors = [conn.cursor(row_factory=dict_row).execute(q, a) for q, a in (then[0] if then else [])]
            if not autocommit:
                conn.commit()
        row = bounds.fetchone()
        if then:
            then[1].extend(c.fetchall() if c.description is not None else [] for c in cursors)
    except BaseException:
        conn.close()
        raise
    assert row is not None
    _BEGAN[conn] = {"schema": row[5], "isolation": row[6]}
    log_session(program=program, pid=row[0], user=row[1], application_name=application_name,
                lock_timeout=row[2], statement_timeout=row[3], idle_in_transaction_session_timeout=row[4])
    return conn


_BEGAN: "weakref.WeakKeyDictionary[psycopg.Connection[Any], dict[str, str]]" = weakref.WeakKeyDictionary()


def began(conn: psycopg.Connection[Any]) -> dict[str, str] | None:
    """What the server said as ``connect`` set the session up: its ``schema`` (current_schema())
    and ``isolation`` (the default transaction isolation, upper case); None for a session
    ``connect`` did not open. Asked in the same round trip as its bounds."""
    return _BEGAN.get(conn)


def log_session(**entry: Any) -> None:
    """One line in the session log (when a run keeps one): which session, and its bounds."""
    path = os.environ.get(SESSION_LOG)
    if not path:
        return
    append_json_line(path, {"utc": dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds"), "os_pid": os.getpid(),
                            **entry})


def terminate(conn: psycopg.Connection[Any], application_name: str) -> list[int]:
    """End every other session named ``application_name`` (a client program that was stopped
    leaves its backend waiting until it notices); returns their pids."""
    return terminate_where(conn, "application_name = %s", (application_name[:63],))


def terminate_where(conn: psycopg.Connection[Any], condition: str, params: tuple[Any, ...]) -> list[int]:
    """End the other sessions of pg_stat_activity that meet ``condition`` (SQL of this module's
    callers, values bound); returns their pids. The sessions are chosen first, in a materialized
    CTE, and only those are ended: in one WHERE the planner may call pg_terminate_backend on
    every row before the condition (it did: every session the role could end, the application's
    included)."""
    return [r[0] for r in conn.execute(
        "with chosen as materialized (select pid from pg_stat_activity where pid <> pg_backend_pid() and "
        + condition + ") select pid from chosen where pg_terminate_backend(pid)", params).fetchall()]


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


# Set while this process has a statement in flight on the server (``in_flight``): the lock
# watchers of engine/blockers.py look only then, so that a run far from its server pays no round
# trips for them while nothing could be waiting.
BUSY = threading.Event()
_in_flight = [0]
_span = [0]  # which stretch of work in flight this is: a new one each time BUSY is set
_flight_lock = threading.Lock()


def busy_span() -> int:
    """The stretch of work in flight now (0: none): the same number as long as work goes on
    without a break."""
    with _flight_lock:
        return _span[0] if _in_flight[0] else 0


@contextmanager
def in_flight() -> Iterator[None]:
    """Around work on the server that could wait for a lock (a query, a change, pg_dump)."""
    with _flight_lock:
        if not _in_flight[0]:
            _span[0] += 1
        _in_flight[0] += 1
        BUSY.set()
    try:
        yield
    finally:
        with _flight_lock:
            _in_flight[0] -= 1
            if not _in_flight[0]:
                BUSY.clear()


def scalar(conn: psycopg.Connection[Any], query: str | sql.Composable, params: Any = None) -> Any:
    with in_flight():
        row = conn.execute(query, params).fetchone()
    return None if row is None else row[0]


class Rows(list):  # type: ignore[type-arg]
    """A query's rows (dicts), and its ``columns`` in order: known even when no row came back."""

    columns: list[str]

    @classmethod
    def of(cls, cur: "psycopg.Cursor[Any]") -> "Rows":
        found = cls(cur.fetchall() if cur.description is not None else [])
        found.columns = [c.name for c in cur.description or []]
        return found


def rows(conn: psycopg.Connection[Any], query: str | sql.Composable, params: Any = None) -> list[dict[str, Any]]:
    """The rows of ``query`` (a ``Rows``: its columns too)."""
    with in_flight(), conn.cursor(row_factory=dict_row) as cur:
        cur.execute(query, params)
        return Rows.of(cur)


def batch(conn: psycopg.Connection[Any], queries: list[tuple[str | sql.Composable, Any]]) -> list[list[dict[str, Any]]]:
    """Several queries in one pipeline (one round trip); each query's rows (a ``Rows``), in order
    (none for a statement that returns none). The first error is raised (the rest are not run)."""
    if not queries:
        return []
    with in_flight(), conn.pipeline():
        cursors = []
        for query, params in queries:
            cur = conn.cursor(row_factory=dict_row)
            cur.execute(query, params, prepare=False)
            cursors.append(cur)
    return [Rows.of(cur) for cur in cursors]


def tables_present(conn: psycopg.Connection[Any], names: list[str], schema: str = "public") -> set[str]:
    """Which of the tables ``names`` (in ``schema``) exist, in one round trip."""
    if not names:
        return set()
    return {r["t"] for r in rows(conn, "select t from unnest(%s::text[]) as t where to_regclass(quote_ident(%s) || '.' "
                                       "|| quote_ident(t)) is not null", (list(names), schema))}


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

