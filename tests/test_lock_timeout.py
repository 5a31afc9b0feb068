"""DDL waits at most lock_timeout for a busy table, retries with backoff, and stops cleanly."""

from __future__ import annotations

import threading
import time

import pytest

from kbmigrate import db
from kbmigrate.conninfo import Target
from kbmigrate.errors import Blocked
from kbmigrate.engine.params import RunParams
from kbmigrate.engine.steps import apply_step

from conftest import drop, new_demo, gated


HOLDER: list[int] = []


def _hold_lock(target: Target, seconds: float, ready: threading.Event) -> None:
    with db.connect(target, application_name="a long app read") as conn:
        conn.execute("lock table knowledge_base in access share mode")  # what any long app read holds
        HOLDER[:] = [db.scalar(conn, "select pg_backend_pid()")]
        ready.set()
        time.sleep(seconds)
        conn.rollback()


def test_busy_table_retries_then_succeeds_or_stops(server: Target) -> None:
    target = new_demo(server, "kbt_busy")
    try:
        gated(target, "busy")
        gated(target, "busy2", backup_of="busy")
        params = RunParams(lock_timeout="200ms", lock_retries=3)
        ready = threading.Event()
        blocker = threading.Thread(target=_hold_lock, args=(target, 5, ready))
        blocker.start()
        ready.wait(10)
        started = time.monotonic()
        with db.connect(target, autocommit=True) as conn, pytest.raises(Blocked) as exc:
            apply_step(conn, "02_schema", params, "busy", progress=False)
        waited = time.monotonic() - started
        assert "could not get a lock within 200ms after 4 tries" in exc.value.message
        assert f"blocked by pid {HOLDER[0]} (a long app read, user postgres, idle in transaction" in exc.value.message
        assert "AccessShareLock on knowledge_base" in exc.value.message
        assert waited < 10  # bounded: 4 x 200 ms plus backoff, never stuck behind the blocker
        with db.connect(target) as conn:
            assert db.scalar(conn, "select count(*) from pg_attribute where attrelid = 'knowledge_base'::regclass "
                                   "and attname = 'is_shared'") == 0  # the change was rolled back
        blocker.join()

        ready = threading.Event()
        blocker = threading.Thread(target=_hold_lock, args=(target, 0.5, ready))
        blocker.start()
        ready.wait(10)
        with db.connect(target, autocommit=True) as conn:
            done = apply_step(conn, "02_schema", RunParams(lock_timeout="200ms", lock_retries=6), "busy2", progress=False)
        blocker.join()
        assert all(o.outcome in ("applied", "noop") for o in done)
    finally:
        drop(server, target)


def test_the_blocker_named_is_on_this_database(server: Target) -> None:
    """Relation oids are per database, and two databases cloned from one template share them: a
    session holding the same-numbered table on another database is not this run's blocker."""
    target, elsewhere = new_demo(server, "kbt_busy_here"), new_demo(server, "kbt_busy_there")
    try:
        gated(target, "busy-here")
        with db.connect(elsewhere, application_name="an app of another database") as other, \
                db.connect(target, application_name="a long app read") as here:
            other.execute("lock table knowledge_base in access share mode")  # held longer: named first if counted
            time.sleep(1.1)
            here.execute("lock table knowledge_base in access share mode")
            with db.connect(target, autocommit=True) as conn, pytest.raises(Blocked) as exc:
                apply_step(conn, "02_schema", RunParams(lock_timeout="200ms", lock_retries=0), "busy-here", progress=False)
        assert "a long app read" in exc.value.message and "another database" not in exc.value.message, exc.value.message
    finally:
        drop(server, target)
        drop(server, elsewhere)
