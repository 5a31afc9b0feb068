"""Who a step waits for: said while it waits, named when it stops.

A ``Watcher`` is a thread with a session of its own that looks, a few times a second, whether
any session of the run (its ``application_name`` names the run) waits for a lock, and for whom
(``pg_blocking_pids``). While one waits it says so, with the blocker's pid, application, user,
state, age and first line of query. When the wait ends in ``lock_timeout`` the waiter is no
longer waiting, so ``who()`` names the blocker the watcher saw last, or else the sessions holding
locks on the tables a run works on.

It looks only while this process has work on the server that could wait (``in_flight``: a
change's transaction, an index build, pg_dump, a step's query) and has been at it, without a
break, longer than ``FIRST_LOOK``; it connects the first time it looks. Each look waits on the server
(``sql/engine/watch.sql``) until a session of the run waits or ``LOOK_UP_TO`` seconds have
passed: a run far from its server pays no round trips for a watcher while nothing is in flight,
and one per ``LOOK_UP_TO`` seconds while its work runs without waiting. The kernels' watchers also write each line to the run's
``waits.log``, which ``relayed`` shows in the terminal of a headless run.
"""

from __future__ import annotations

import datetime as dt
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psycopg

from kbmigrate import db
from kbmigrate.conninfo import Target
from kbmigrate.errors import Blocked, TooSlow
from kbmigrate.paths import read_sql

SAY_EVERY = 5.0      # seconds between two "still waiting" lines
REMEMBER = 30.0      # how long a blocker seen stays the answer to who()
LOOK_UP_TO = 2.0     # the longest one look waits on the server for a session of the run to wait
FIRST_LOOK = 0.5     # work in flight this long, without a break, is looked at (a change's round trip is not),
                     # or a third of the step's lock_timeout when that is shorter

_lock = threading.Lock()
_seen: dict[str, Any] = {"at": 0.0, "rows": []}
_watchers: list["Watcher"] = []
in_flight = db.in_flight  # the engine marks its work with it; the watchers look while it lasts


def pattern(run_id: str) -> str:
    """The LIKE pattern of a run's own sessions: every one is named ``kbmigrate … <run_id>``."""
    escaped = run_id.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"kbmigrate%{escaped}%"


def describe(row: dict[str, Any]) -> str:
    """One blocker in one line."""
    age = dt.timedelta(seconds=int(row.get("seconds") or 0))
    held = f", holds {row['mode']} on {row['relation']}" if row.get("mode") else ""
    query = (row.get("query") or "").strip()
    doing = f' running "{query}"' if query and row.get("state") == "active" else f' (last query "{query}")' if query else ""
    return f"pid {row['pid']} ({row['application']}, user {row['user']}, {row['state']} for {age}{held}){doing}"


def waiting_line(rows: list[dict[str, Any]]) -> str:
    first = rows[0]
    what = f" on {first['waits_for']}" if first.get("waits_for") else ""
    return f"⏳ waiting {first['waited_seconds']} s for a lock{what}, held by " + " and ".join(describe(r) for r in rows[:3])


class Watcher:
    """Watch the sessions of a run for lock waits; ``say`` each wait (a line) as it goes on."""

    def __init__(self, target: Target, run_id: str, say: Callable[[str], None], *, interval: float = 0.2,
                 first_look: float = FIRST_LOOK) -> None:
        """``first_look``: how long work must be in flight before it is looked at; keep it well
        under the lock_timeout of the work watched, or a wait ends before anyone saw it."""
        self.target, self.run_id, self.say, self.interval = target, run_id, say, interval
        self.first_look = first_look
        self._stop = threading.Event()
        self._conn: psycopg.Connection[Any] | None = None
        self._thread = threading.Thread(target=self._loop, name=f"kbmigrate watch {run_id}", daemon=True)

    def __enter__(self) -> "Watcher":
        _watchers.append(self)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        conn = self._conn
        if conn is not None and not conn.closed:
            try:
                conn.cancel_safe(timeout=2)  # a look waiting on the server ends now
            except Exception:
                pass
        self._thread.join(timeout=5)
        if self in _watchers:
            _watchers.remove(self)

    def _loop(self) -> None:
        conn: psycopg.Connection[Any] | None = None
        query, said = read_sql("report/blockers.sql").replace("%(pattern)s", "$1"), 0.0
        look = "select value from pg_temp.kbmigrate_watch(%s, %s, %s, %s) as value"
        try:
            looked = 0
            while not self._stop.is_set():
                if not db.BUSY.wait(0.5):
                    said = 0.0
                    continue
                span = db.busy_span()
                if self._stop.wait(self.interval if span == looked else self.first_look) or db.busy_span() != span:
                    said = 0.0
                    continue  # nothing in flight, or that work done before the first look: nothing to look at
                looked = span
                if conn is None:
                    try:
                        conn = self._conn = db.connect(self.target, autocommit=True,
                                                       application_name=f"kbmigrate watch {self.run_id}"[:63])
                        conn.execute(read_sql("engine/watch.sql"))
                    except Exception:  # the step itself will meet (and name) the connection problem
                        return
                try:  # not db.rows: the watcher's own look is no work in flight
                    rows = [r[0] for r in conn.execute(look, (query, pattern(self.run_id), LOOK_UP_TO,
                                                              self.interval)).fetchall()]
                except psycopg.Error:
                    return
                if not rows:
                    said = 0.0
                    continue
                with _lock:
                    _seen.update(at=time.monotonic(), rows=rows)
                if time.monotonic() - said >= SAY_EVERY:
                    said = time.monotonic()
                    self.say(waiting_line(rows))
        finally:
            if conn is not None:
                conn.close()


@contextmanager
def relayed(log: Path, say: Callable[[str], None], every: float = 0.2) -> Iterator[None]:
    """Say each line the run's kernels write to ``log`` (their watchers' lines), as they come."""
    stop = threading.Event()

    def follow() -> None:
        offset = 0
        while True:
            stopping = stop.wait(every)
            try:
                with log.open("rb") as fh:
                    fh.seek(offset)
                    data = fh.read()
            except FileNotFoundError:
                data = b""
            complete = data[:data.rfind(b"\n") + 1]
            offset += len(complete)
            for line in complete.decode("utf-8", "replace").splitlines():
                say(line)
            if stopping:
                return

    thread = threading.Thread(target=follow, name="kbmigrate relay", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(2)


def who(run_id: str = "", conn: psycopg.Connection[Any] | None = None) -> str:
    """The session the last lock wait was for, in words: as the watcher saw it, else the sessions
    holding locks on the run's tables (asked on ``conn`` when it is idle, or on a new session)."""
    with _lock:
        rows = list(_seen["rows"]) if time.monotonic() - _seen["at"] <= REMEMBER else []
    if rows:
        return " and ".join(describe(r) for r in rows[:3])
    query, args = read_sql("report/lock_holders.sql"), {"pattern": pattern(run_id or "\x00")}
    held: list[dict[str, Any]] = []
    try:
        if conn is not None and conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE:
            held = db.rows(conn, query, args)
        elif _watchers:
            with db.connect(_watchers[-1].target, autocommit=True,
                            application_name=f"kbmigrate who {run_id}"[:63]) as own:
                held = db.rows(own, query, args)
    except psycopg.Error:
        pass
    if held:
        return " and ".join(describe(r) for r in sorted(held, key=lambda r: -int(r["seconds"] or 0))[:3])
    return "a session that let go before it could be named (see pg_stat_activity)"


def timed_out(exc: psycopg.Error) -> bool:
    """The server cancelled the statement on its statement_timeout (not a cancel from elsewhere)."""
    diag = getattr(exc, "diag", None)
    return isinstance(exc, psycopg.errors.QueryCanceled) and "statement timeout" in str(diag.message_primary if diag else exc)


@contextmanager
def named(step: str, run_id: str, lock_timeout: str, statement_timeout: str) -> Iterator[None]:
    """A statement that stops on ``lock_timeout`` or ``statement_timeout`` becomes one line that
    names the blocker (or the limit) and what to do."""
    try:
        yield
    except psycopg.errors.LockNotAvailable:
        raise Blocked(step=step, within=f"within lock_timeout {lock_timeout}", blocker=who(run_id),
                      run=run_id) from None
    except psycopg.errors.QueryCanceled as exc:
        if not timed_out(exc):
            raise
        raise TooSlow(step=step, limit=statement_timeout, run=run_id) from None
