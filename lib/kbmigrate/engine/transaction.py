"""A change's transaction: the one pattern every change of the plan follows (after sqlite-utils'
migrations: apply a step and record it in one transaction).

1. bounded lock retries: a change that cannot get its lock within ``lock_timeout`` is tried
   again, ``lock_retries`` times, with backoff, then stops naming the lock;
2. one transaction whose first statements set the step's ``lock_timeout`` and
   ``statement_timeout`` and the bound settings the SQL files read with ``current_setting()``
   (all transaction-local: nothing outlives the transaction);
3. the change's work;
4. its ledger row, in that same transaction: the change and its record commit or fail together.

The rollback (``backup/restore.py``) uses 2-4 without 1: its restore streams from pg_restore and
cannot be replayed. ``run_file`` serves the development tooling (demo data, compat layer).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import psycopg
from psycopg.pq import TransactionStatus

from kbmigrate.engine import blockers, failpoint, ledger
from kbmigrate.engine.params import RunParams
from kbmigrate.errors import Blocked, ConnectionLost, KbError, StepFailed
from kbmigrate.paths import read_sql

T = TypeVar("T")


@dataclass
class Done:
    """What a change's work did: its ledger row's rows, outcome and detail (and, for the caller, a value)."""

    rows: int | None
    outcome: str = "applied"
    detail: dict[str, Any] = field(default_factory=dict)
    value: Any = None


def error_text(exc: psycopg.Error) -> str:
    diag = getattr(exc, "diag", None)
    return (diag.message_primary if diag else None) or str(exc).strip().splitlines()[0]


def stopped(conn: psycopg.Connection[Any], exc: psycopg.Error, *, step: str, change: str, run_id: str) -> KbError:
    """The one-line error for a change that failed: its SQL's error, or, when the connection itself
    is gone (a server restart, a cut network), that, with the command to go on."""
    if conn.broken or conn.closed:
        return ConnectionLost(step=step, what=f"at change {change}: {error_text(exc)}", run=run_id or "RUN_ID")
    return StepFailed(step=step, change=change, reason=error_text(exc))


def begin(conn: psycopg.Connection[Any], params: RunParams, settings: dict[str, str] | None = None) -> None:
    """The first statements of a change's transaction: its timeouts, then the bound settings
    (values are bound, never formatted into the SQL)."""
    conn.execute("select set_config('lock_timeout', %s, true), set_config('statement_timeout', %s, true)",
                 (params.lock_timeout, params.statement_timeout))
    for name, value in (settings or {}).items():
        conn.execute("select set_config(%s, %s, true)", (name, value))


def with_lock_retries(params: RunParams, step: str, change: str, attempt: Callable[[], T], run_id: str = "",
                      conn: psycopg.Connection[Any] | None = None) -> T:
    """``attempt()`` again when it fails on lock_timeout (or a deadlock), with backoff, a bounded
    number of times; then Blocked, naming the session it waited for."""
    delay = 0.2
    for tried in range(params.lock_retries + 1):
        try:
            return attempt()
        except (psycopg.errors.LockNotAvailable, psycopg.errors.DeadlockDetected) as exc:
            if tried == params.lock_retries:
                blocker = blockers.who(run_id, conn) if isinstance(exc, psycopg.errors.LockNotAvailable) \
                    else f"a deadlock every time ({error_text(exc)})"
                tries = f"{params.lock_retries + 1} tries" if params.lock_retries else "1 try"
                raise Blocked(step=f"{step} ({change})", within=f"within {params.lock_timeout} after {tries}",
                              blocker=blocker, run=run_id or "RUN_ID") from None
            time.sleep(delay)
            delay = min(delay * 2, 5.0)
    raise AssertionError("unreachable")


def in_transaction(conn: psycopg.Connection[Any], params: RunParams, *, run_id: str, step: str, change: str,
                   sha: str, work: Callable[[], Done], settings: dict[str, str] | None = None) -> Done:
    """Do ``work`` as one change (1-4 above) and return what it did."""
    if conn.info.transaction_status != TransactionStatus.IDLE:
        raise RuntimeError(f"{change} must run in a transaction of its own; the connection is inside one")

    def attempt() -> Done:
        with conn.transaction():
            begin(conn, params, settings)
            done = work()
            ledger.record(conn, run_id=run_id, step=step, change=change, sql_sha256=sha,
                          rows_affected=done.rows, outcome=done.outcome, detail=done.detail)
            failpoint.reach(change)  # a crash test's power cut: after the work and its record, before COMMIT
            return done
    return with_lock_retries(params, step, change, attempt, run_id, conn)


def run_file(conn: psycopg.Connection[Any], relative: str, *, settings: dict[str, str] | None = None,
             params: RunParams | None = None) -> int:
    """Execute ``sql/<relative>`` in a transaction of its own under the timeouts of ``params``
    (RunParams' defaults when not given); returns the rows the last statement touched. Not
    ledgered: for the development tooling (demo data, compat layer)."""
    if conn.info.transaction_status != TransactionStatus.IDLE:
        raise RuntimeError(f"sql/{relative} must run in a transaction of its own; the connection is inside one")
    text = read_sql(relative)
    with conn.transaction():
        begin(conn, params or RunParams(), settings)
        return conn.execute(text).rowcount
