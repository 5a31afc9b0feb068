"""One run at a time per database: a session-level advisory lock held for the whole run.

The lock lives in a connection of its own. If the process dies, the server ends the session
and the lock goes with it: a crashed run leaves no lock behind.

The notebook kernels a run starts hold a second lock, shared, for as long as they live. A new
run must get that one exclusively (and lets it go at once): so a kernel orphaned by a killed
run, or a notebook open in JupyterLab, keeps every other run out until it is gone.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import psycopg

from kbmigrate import db
from kbmigrate.conninfo import Target
from kbmigrate.errors import KernelHoldsDatabase, RunLocked
from kbmigrate.paths import read_sql

# pg_advisory_lock(int, int): a fixed class id for kbmigrate and one object id for "the run".
LOCK_CLASS = 0x6B626D67  # "kbmg"
LOCK_RUN = 1
LOCK_KERNELS = 2


def holder(conn: Any, objid: int = LOCK_RUN) -> dict[str, Any] | None:
    rows = db.rows(conn, """
        select a.pid, coalesce(nullif(a.application_name, ''), a.usename) as application,
               to_char(a.backend_start at time zone 'utc', 'YYYY-MM-DD HH24:MI:SS "UTC"') as since
        from pg_locks l join pg_stat_activity a on a.pid = l.pid
        where l.locktype = 'advisory' and l.granted and l.classid = %s and l.objid = %s and l.database =
              (select oid from pg_database where datname = current_database())""",
                   (LOCK_CLASS, objid))
    return rows[0] if rows else None


@contextmanager
def run_lock(target: Target, label: str, conn: psycopg.Connection[Any] | None = None) -> Iterator[psycopg.Connection[Any]]:
    """Hold the run lock for the duration of the block, or raise RunLocked at once; yields the
    lock's session. ``conn``: an autocommit session to hold it in, which its owner closes right
    after the block (the lock goes with the session; the runner probes for a pooler and opens the
    run on it too: fewer sessions, fewer round trips), else one opened here and closed at the end.
    Both locks are tried in one round trip (``sql/engine/run_lock.sql``)."""
    opened = conn is None
    session = db.connect(target, autocommit=True, application_name=f"kbmigrate lock {label}"[:63]) if conn is None else conn
    try:
        got = db.rows(session, read_sql("engine/run_lock.sql"),
                      {"class": LOCK_CLASS, "run": LOCK_RUN, "kernels": LOCK_KERNELS})[0]
        if not got["run"]:
            h = holder(session) or {"pid": "?", "application": "?", "since": "?"}
            raise RunLocked(database=target.label, **h)
        if not got["kernels"]:
            h = holder(session, LOCK_KERNELS) or {"pid": "?", "application": "?", "since": "?"}
            raise KernelHoldsDatabase(database=target.label, **h)
        yield session
    finally:
        if opened:
            session.close()


HOLD_FOR_KERNEL = ("select pg_advisory_lock_shared(%s, %s)", (LOCK_CLASS, LOCK_KERNELS))


def hold_for_kernel(conn: Any) -> None:
    """Called by each notebook's connection: held (shared) until the kernel goes away."""
    conn.execute(*HOLD_FOR_KERNEL)
