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

from kbmigrate import db
from kbmigrate.conninfo import Target
from kbmigrate.errors import KernelHoldsDatabase, RunLocked

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
def run_lock(target: Target, label: str) -> Iterator[None]:
    """Hold the run lock for the duration of the block, or raise RunLocked at once."""
    conn = db.connect(target, autocommit=True, application_name=f"kbmigrate lock {label}"[:63])
    try:
        if not db.scalar(conn, "select pg_try_advisory_lock(%s, %s)", (LOCK_CLASS, LOCK_RUN)):
            h = holder(conn) or {"pid": "?", "application": "?", "since": "?"}
            raise RunLocked(database=target.label, **h)
        if not db.scalar(conn, "select pg_try_advisory_lock(%s, %s)", (LOCK_CLASS, LOCK_KERNELS)):
            h = holder(conn, LOCK_KERNELS) or {"pid": "?", "application": "?", "since": "?"}
            raise KernelHoldsDatabase(database=target.label, **h)
        conn.execute("select pg_advisory_unlock(%s, %s)", (LOCK_CLASS, LOCK_KERNELS))
        yield
    finally:
        conn.close()


HOLD_FOR_KERNEL = ("select pg_advisory_lock_shared(%s, %s)", (LOCK_CLASS, LOCK_KERNELS))


def hold_for_kernel(conn: Any) -> None:
    """Called by each notebook's connection: held (shared) until the kernel goes away."""
    conn.execute(*HOLD_FOR_KERNEL)
