"""Preflight's "long transactions and locks": the application's own short reads are no NO-GO, a
lock held past lock_timeout or by a transaction sitting idle is.

On a live database the application always has some statement on knowledge_base in flight; the
check used to say NO-GO for any lock seen at that instant (a bench run met a 1 ms read of its
own probe application and stopped at preflight)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import psycopg
import pytest

from kbmigrate.checks import preflight
from kbmigrate.conninfo import Target
from kbmigrate.engine.params import RunParams

from conftest import drop, new_demo

CHECK = "long transactions and locks"


@pytest.fixture(scope="module")
def demo(server: Target) -> Iterator[Target]:
    target = new_demo(server, "kbt_activity")
    yield target
    drop(server, target)


def verdict(target: Target, params: RunParams) -> dict[str, str]:
    with psycopg.connect(target.conninfo, autocommit=True) as conn:
        return next(r for r in preflight.checks(conn, target, params) if r["check"] == CHECK)


@contextmanager
def reading(target: Target, *, then_idle: bool, seconds: float) -> Iterator[int]:
    """Another session in a transaction holding ACCESS SHARE on knowledge_base: busy in a
    statement for ``seconds`` (a slow read), or idle in its transaction; yields its pid."""
    conn = psycopg.connect(target.conninfo, application_name="test app")
    conn.execute("select count(*) from public.knowledge_base")
    pid = conn.info.backend_pid
    sleeper = None
    if not then_idle:
        sleeper = threading.Thread(target=lambda: conn.execute("select pg_sleep(%s)", (seconds,)), daemon=True)
        sleeper.start()
        time.sleep(0.3)  # the statement is in flight
    try:
        yield pid
    finally:
        if sleeper is not None:
            sleeper.join(seconds + 10)
        conn.close()


def test_the_applications_short_work_is_no_no_go_but_a_lock_held_long_is(demo: Target) -> None:
    with reading(demo, then_idle=False, seconds=4):  # in flight, its transaction younger than lock_timeout
        got = verdict(demo, RunParams(lock_timeout="30s"))
        assert got["status"] == "GO", got
    with reading(demo, then_idle=False, seconds=6) as pid:  # the same read, now older than lock_timeout
        time.sleep(1.5)
        got = verdict(demo, RunParams(lock_timeout="1s"))
        assert got["status"] == "NO-GO" and f"pid {pid}" in got["detail"] and "AccessShareLock" in got["detail"], got
    with reading(demo, then_idle=True, seconds=0) as pid:  # idle in its transaction, holding the lock
        got = verdict(demo, RunParams(lock_timeout="30s"))
        assert got["status"] == "NO-GO" and f"pid {pid}" in got["detail"] and "AccessShareLock" in got["detail"], got
