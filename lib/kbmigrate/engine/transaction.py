"""A change's transaction: the one pattern every change of the plan follows (after sqlite-utils'
migrations: apply a step and record it in one transaction).

1. bounded lock retries: a change that cannot get its lock within ``lock_timeout`` is tried
   again, ``lock_retries`` times, with backoff, then stops naming the lock;
2. one transaction whose first statement sets the step's ``lock_timeout`` and
   ``statement_timeout`` and the bound settings the SQL files read with ``current_setting()``
   (all transaction-local: nothing outlives the transaction);
3. the change's work and its ledger row, in that same transaction, in one statement on the
   server (``sql/engine/change.sql``): the change and its record commit or fail together. The
   statement first runs the change's verify: a change already in effect is only recorded (noop);
4. all of it, BEGIN to COMMIT, sent in one pipeline: **one round trip**. No lock the change
   takes on an application table is held while the network is in between: a server 150 ms away
   holds it for the work's own time, as one on loopback does.

The rollback (``backup/restore.py``) uses 2 and its own ledger row without 1: its restore streams
from pg_restore and cannot be replayed. ``run_file`` serves the development tooling (demo data,
compat layer).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import psycopg
from psycopg.pq import TransactionStatus
from psycopg.rows import dict_row

from kbmigrate.engine import blockers, failpoint, ledger
from kbmigrate.db import Limits
from kbmigrate.engine.params import RunParams
from kbmigrate.errors import Blocked, ConnectionLost, KbError, StepFailed
from kbmigrate.paths import read_sql

T = TypeVar("T")


@dataclass
class Work:
    """A change's work, sent whole: its deploy script, then its verify script (``None``: not run),
    then its ledger row with ``outcome`` and ``detail``; ``rows``: the row's rows_affected
    (``None``: the deploy's row count)."""

    deploy: str | None
    verify: str | None = None
    outcome: str = "applied"
    detail: dict[str, Any] = field(default_factory=dict)
    rows: int | None = None
    already: str | None = None  # a verify script run first: when it passes, only a noop row is written
    bounds: tuple[str, str] | None = None  # the session's lock_timeout and statement_timeout to set first


# The server-side halves of the statements, each created in the transaction that calls it.
CHANGE, BATCH, VERIFY = ("engine/change.sql",), ("engine/batch.sql",), ("engine/verify.sql",)


def error_text(exc: psycopg.Error) -> str:
    diag = getattr(exc, "diag", None)
    return (diag.message_primary if diag else None) or str(exc).strip().splitlines()[0]


def stopped(conn: psycopg.Connection[Any], exc: psycopg.Error, *, step: str, change: str, run_id: str) -> KbError:
    """The one-line error for a change that failed: its SQL's error, or, when the connection itself
    is gone (a server restart, a cut network), that, with the command to go on."""
    if conn.broken or conn.closed:
        return ConnectionLost(step=step, what=f"at change {change}: {error_text(exc)}", run=run_id or "RUN_ID")
    return StepFailed(step=step, change=change, reason=error_text(exc))


def begin(conn: psycopg.Connection[Any], params: RunParams, settings: dict[str, str] | None = None,
          limits: Limits | None = None) -> None:
    """The first statement of a change's transaction: its timeouts (the change's, or ``limits``)
    and the bound settings, all transaction-local, in one statement (values are bound, never
    formatted into the SQL)."""
    bounds = limits or params.limits("change")
    names = ["lock_timeout", "statement_timeout", *(settings or {})]
    values = [bounds.lock_timeout, bounds.statement_timeout, *(settings or {}).values()]
    conn.execute("select count(set_config(name, value, true)) from unnest(%s::text[], %s::text[]) as s(name, value)",
                 (names, values), prepare=False)


def ledger_row(*, run_id: str, step: str, change: str, sha: str, outcome: str, detail: dict[str, Any],
               rows: int | None) -> str:
    """A ledger row as the server-side statement takes it (one bound JSON value)."""
    row: dict[str, Any] = {"run_id": run_id, "step": step, "change": change, "sql_sha256": sha, "outcome": outcome,
                           "detail": detail}
    if rows is not None:
        row["rows_affected"] = rows
    return json.dumps(row, default=str)


def one_round_trip(conn: psycopg.Connection[Any], params: RunParams, settings: dict[str, str] | None,
                   query: str, args: tuple[Any, ...], *, crash_point: str | None = None,
                   rollback: bool = False, functions: tuple[str, ...] = CHANGE,
                   limits: Limits | None = None, bounds: tuple[str, str] | None = None,
                   then: "list[Any] | None" = None) -> "psycopg.Cursor[Any]":
    """BEGIN, ``begin``'s settings, the server-side ``functions`` (sql/ files, each one CREATE),
    ``query`` and COMMIT (ROLLBACK when ``rollback``) in one pipeline: the server gets all of it
    before the client waits for anything. Returns ``query``'s cursor, its rows fetched.
    ``crash_point``: the failpoint reached with the work sent and COMMIT not yet. ``bounds``: the
    session's lock_timeout and statement_timeout, set first (before BEGIN). ``then``: ``[query,
    args]``, a statement of the session's sent after COMMIT, in the same round trip; it runs only
    when everything before it succeeded, and its rows are appended to that list."""
    if conn.info.transaction_status != TransactionStatus.IDLE or not conn.autocommit:
        raise RuntimeError("a change needs an autocommit connection outside any transaction: it sends BEGIN and COMMIT itself")
    early: psycopg.Error | None = None  # the server's error, when it came back while the rest was being sent
    try:
        # BEGIN and COMMIT by hand: psycopg's conn.transaction() syncs with the server on entering
        # and leaving a pipeline, 4 round trips instead of 1. An error makes the server skip the
        # rest up to the pipeline's Sync (COMMIT included); it is raised once, whenever it arrives.
        # Never prepared (psycopg prepares a statement run 5 times): a prepared call would name the
        # function of a transaction rolled back since.
        try:
            with blockers.in_flight(), conn.pipeline():
                try:
                    if bounds:  # the session's own, before its transaction (a concurrent build's put back)
                        conn.execute("select set_config('lock_timeout', %s, false), "
                                     "set_config('statement_timeout', %s, false)", bounds, prepare=False)
                    conn.execute("begin", prepare=False)
                    begin(conn, params, settings, limits)
                    for name in functions:
                        conn.execute(read_sql(name), prepare=False)
                    cursor = conn.execute(query, args, prepare=False)
                    if crash_point:
                        failpoint.reach(crash_point)  # a crash test's power cut: the work and its record sent, before COMMIT
                    conn.execute("rollback" if rollback else "commit", prepare=False)
                    after = conn.cursor(row_factory=dict_row).execute(then[0], then[1], prepare=False) if then else None
                except psycopg.Error as exc:
                    early = exc
        except psycopg.errors.PipelineAborted:
            if early is None:
                raise
        if early is not None:
            raise early.with_traceback(None)
        if then is not None and after is not None:
            then.append(after.fetchall())
    except BaseException:
        if not conn.broken and conn.info.transaction_status in (TransactionStatus.INTRANS, TransactionStatus.INERROR):
            conn.execute("rollback")
        if bounds and not conn.broken:  # set inside the transaction the rollback undid
            conn.execute("select set_config('lock_timeout', %s, false), set_config('statement_timeout', %s, false)",
                         bounds)
        raise
    return cursor


@dataclass
class Sent:
    """One change of ``in_one_round_trip``: its ledger row's parts, its work, its bounds."""

    step: str
    change: str
    sha: str
    work: Work
    settings: dict[str, str] | None = None
    limits: Limits | None = None


def in_one_round_trip(conn: psycopg.Connection[Any], params: RunParams, run_id: str,
                      changes: list[Sent]) -> tuple[list[dict[str, Any]], psycopg.Error | None]:
    """Several changes, each in a transaction of its own as ``in_transaction`` makes it (BEGIN,
    its settings, its work and ledger row, COMMIT), all sent in one pipeline: one round trip for
    all. Each commits before the next begins on the server, so no lock is held across a round
    trip or from one change to the next. The first to fail is rolled back, and the server skips
    every change after it: returns the outcomes of those that committed, in order, and the error
    that stopped the rest (None: all committed). No lock retries here: the caller applies the one
    that failed, and those after it, one by one."""
    if conn.info.transaction_status != TransactionStatus.IDLE or not conn.autocommit:
        raise RuntimeError("changes need an autocommit connection outside any transaction: they send BEGIN and COMMIT")
    cursors: list[tuple[psycopg.Cursor[Any], psycopg.Cursor[Any]]] = []  # each change's work, its COMMIT
    stopped: psycopg.Error | None = None
    try:
        with blockers.in_flight(), conn.pipeline():
            for c in changes:
                row = ledger_row(run_id=run_id, step=c.step, change=c.change, sha=c.sha, outcome=c.work.outcome,
                                 detail=c.work.detail, rows=c.work.rows)
                conn.execute("begin", prepare=False)
                begin(conn, params, c.settings, c.limits)
                for name in CHANGE:
                    conn.execute(read_sql(name), prepare=False)
                work = conn.execute("select pg_temp.kbmigrate_change(%s, %s, %s::jsonb, %s)",
                                    (c.work.deploy, c.work.verify, row, c.work.already), prepare=False)
                cursors.append((work, conn.execute("commit", prepare=False)))
    except psycopg.errors.PipelineAborted:
        pass
    except psycopg.Error as exc:
        stopped = exc
    if not conn.broken and conn.info.transaction_status in (TransactionStatus.INTRANS, TransactionStatus.INERROR):
        conn.execute("rollback")
    done: list[dict[str, Any]] = []
    for work, commit in cursors:
        try:
            got = first(work)
        except psycopg.Error as exc:  # this change's error, or "skipped after an error"
            stopped = stopped or (exc if not isinstance(exc, psycopg.errors.PipelineAborted) else None)
            break
        if got is None or commit.statusmessage != "COMMIT":  # a failed COMMIT says ROLLBACK, or nothing
            break
        done.append(dict(got))
    if done:
        ledger.written(conn)
    if len(done) < len(changes) and stopped is None:
        stopped = psycopg.OperationalError("the changes' pipeline ended before every change was done")
    return done, stopped


def first(cursor: "psycopg.Cursor[Any]") -> Any:
    row = cursor.fetchone()
    return None if row is None else row[0]


def problems(conn: psycopg.Connection[Any], params: RunParams, settings: dict[str, str] | None,
             scripts: list[str]) -> list[str | None]:
    """Run verify scripts in one round trip, in a transaction that is always rolled back: for each,
    None when the change is in effect, else why not (its error). A verify that could not get its
    lock, or ran out of time, has no verdict: that error is raised."""
    if not scripts:
        return []
    return list(first(one_round_trip(conn, params, settings, "select pg_temp.kbmigrate_verify(%s::text[])",
                                     (scripts,), rollback=True, functions=VERIFY)))


def with_lock_retries(params: RunParams, step: str, change: str, attempt: Callable[[], T], run_id: str = "",
                      conn: psycopg.Connection[Any] | None = None, *, tried_before: int = 0) -> T:
    """``attempt()`` again when it fails on lock_timeout (or a deadlock), with backoff, a bounded
    number of times; then Blocked, naming the session it waited for. ``tried_before``: tries
    already made elsewhere (``in_one_round_trip``), counted among them."""
    delay = 0.2
    if tried_before:  # its backoff, as if the try before had been here
        time.sleep(delay)
        delay *= 2
    for tried in range(min(tried_before, params.lock_retries), params.lock_retries + 1):
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
                   sha: str, work: Work, settings: dict[str, str] | None = None,
                   limits: Limits | None = None, tried_before: int = 0) -> dict[str, Any]:
    """Do ``work`` as one change (1-4 above); returns its outcome (``work.outcome``, or noop when
    ``work.already`` passed) and the deploy's row count (``rows``). ``limits``: the change's bounds
    when not the step's (its lock budget, ``engine/budget.py``)."""
    row = ledger_row(run_id=run_id, step=step, change=change, sha=sha, outcome=work.outcome, detail=work.detail,
                     rows=work.rows)
    done = dict(with_lock_retries(params, step, change, lambda: first(one_round_trip(
        conn, params, settings, "select pg_temp.kbmigrate_change(%s, %s, %s::jsonb, %s)",
        (work.deploy, work.verify, row, work.already), crash_point=change, bounds=work.bounds, limits=limits)),
        run_id, conn, tried_before=tried_before))
    ledger.written(conn)
    return done


def batch_in_transaction(conn: psycopg.Connection[Any], params: RunParams, *, run_id: str, step: str, change: str,
                         sha: str, batch: str, probe: str, detail: dict[str, Any], settings: dict[str, str]) -> dict[str, Any]:
    """One batch of a batched change as one change (1-4 above): the batch's statement, the probe of
    what it costs the others while its row locks are held, and its ledger row (``detail`` with the
    batch's figures added); returns the batch's row with the probe's figures and its seconds."""
    row = ledger_row(run_id=run_id, step=step, change=change, sha=sha, outcome="applied", detail=detail, rows=None)
    done = dict(with_lock_retries(params, step, change, lambda: first(one_round_trip(
        conn, params, settings, "select pg_temp.kbmigrate_batch(%s, %s, %s::jsonb)", (batch, probe, row),
        crash_point=change, functions=BATCH)), run_id, conn))
    ledger.written(conn)
    return done


def record(conn: psycopg.Connection[Any], params: RunParams, *, run_id: str, step: str, change: str, sha: str,
           outcome: str, detail: dict[str, Any], rows: int | None = None,
           then: tuple[str, Any] | None = None) -> list[dict[str, Any]]:
    """A ledger row alone, in a transaction of its own (one round trip, no lock retries): a build's
    intent before it starts, a failure after its change was rolled back. ``then``: a statement of
    the session, sent after its COMMIT in the same round trip (not run when the row failed);
    returns its rows (none without it)."""
    sent: list[Any] | None = [then[0], then[1]] if then else None
    one_round_trip(conn, params, None, "select pg_temp.kbmigrate_change(null, null, %s::jsonb)",
                   (ledger_row(run_id=run_id, step=step, change=change, sha=sha, outcome=outcome, detail=detail,
                               rows=rows),), then=sent)
    ledger.written(conn)
    return sent[2] if sent else []


def run_file(conn: psycopg.Connection[Any], relative: str, *, settings: dict[str, str] | None = None,
             params: RunParams | None = None) -> int:
    """Execute ``sql/<relative>`` in a transaction of its own under the timeouts of ``params``
    (RunParams' defaults when not given); returns the rows the last statement touched. Not
    ledgered: for the development tooling (demo data, compat layer) and the rehearsal's copy."""
    if conn.info.transaction_status != TransactionStatus.IDLE:
        raise RuntimeError(f"sql/{relative} must run in a transaction of its own; the connection is inside one")
    text = read_sql(relative)
    with conn.transaction():
        begin(conn, params or RunParams(), settings)
        return conn.execute(text).rowcount
