"""Apply the plan's changes: verify first (already done -> no-op), deploy, verify, ledger.

Each change is one transaction of ``transaction.in_transaction`` (timeouts, bound settings,
bounded lock retries, its ledger row in the same transaction, one round trip). ``notx`` changes
(CREATE INDEX CONCURRENTLY) run outside a transaction and are ledgered right after, in a
transaction that re-runs their verify.
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass, field
from typing import Any

import psycopg
from psycopg import sql

from kbmigrate import db
from kbmigrate.engine import blockers, budget, failpoint, gates, ledger
from kbmigrate.engine.params import RunParams
from kbmigrate.paths import read_sql
from kbmigrate.engine.plan import Change
from kbmigrate.engine import transaction
from kbmigrate.engine.transaction import Work, error_text
from kbmigrate.errors import KbError, OverBudget

_INDEX_NAME = re.compile(r"create\s+index\s+concurrently\s+if\s+not\s+exists\s+(\w+)", re.IGNORECASE)


@dataclass
class Outcome:
    change: str
    outcome: str              # applied | noop | skipped
    rows_affected: int | None
    seconds: float
    detail: dict[str, Any] = field(default_factory=dict)


def composed(change: Change, params: RunParams) -> str | sql.Composed:
    """The deploy SQL, with identifiers filled by psycopg.sql.Identifier for template changes."""
    text = read_sql(change.deploy)
    if not change.has("template"):
        return text
    schema, table = params.membership_split
    return sql.SQL(text).format(
        membership_schema=sql.Identifier(schema), membership_table=sql.Identifier(table),
        user_column=sql.Identifier(params.membership_user_column),
        workspace_column=sql.Identifier(params.membership_workspace_column),
        joined_column=sql.Identifier(params.membership_joined_column),
    )




def verify_passes(conn: psycopg.Connection[Any], change: Change, params: RunParams,
                  settings: dict[str, str]) -> tuple[bool, str]:
    """Run the change's verify script in a transaction that is always rolled back (one round trip).
    A verify that could not get its lock, or ran out of time, has no verdict: that error goes on up."""
    return verify_all(conn, [change], params, settings)[0]


def verify_all(conn: psycopg.Connection[Any], changes: list[Change], params: RunParams,
               settings: dict[str, str]) -> list[tuple[bool, str]]:
    """``verify_passes`` for each of ``changes``, all in one round trip."""
    found = transaction.problems(conn, params, settings, [in_effect_check(c) for c in changes])
    return [(why is None, why or "") for why in found]


def in_effect_check(change: Change) -> str:
    """The script that says a change is in effect: its verify script."""
    return read_sql(change.verify)


def sources(change: Change) -> str | None:
    """The table in public an optional change reads (a legacy source), or None."""
    return str(json.loads(change.spec)["source"]) if change.has("optional") else None


def present(conn: psycopg.Connection[Any], changes: list[Change]) -> set[str]:
    """Which of the tables ``changes`` read (``sources``) exist, in one round trip."""
    return db.tables_present(conn, [name for c in changes if (name := sources(c))])


def skip_reason(conn: psycopg.Connection[Any], change: Change, params: RunParams,
                found: set[str] | None = None) -> str | None:
    """Why an optional change does not apply here (a legacy source), or None. ``found``: the
    sources known to exist (``present``), when asked already."""
    source = sources(change)
    if source is None:
        return None
    if params.import_legacy is False:
        return "import_legacy is false"
    if source not in (found if found is not None else present(conn, [change])):
        return f"table public.{source} does not exist"
    return None


def apply(conn: psycopg.Connection[Any], change: Change, params: RunParams, run_id: str,
          found: set[str] | None = None, *, tried: int = 0) -> Outcome:
    """Apply one change (not a batched one) and return what happened. Raises StepFailed, or
    GateClosed when the run lacks its GO or its proven backup of this database. ``tried``: times
    it already failed on its lock (``apply_together``'s round trip), counted among its retries."""

    gates.require(conn, run_id, f"{change.step} ({change.name})")
    started = time.monotonic()
    settings = {**params.settings(run_id), **change.settings()}
    deploy = composed(change, params)
    sha = change.sha256()

    # Production holds a change to its rehearsal (engine/budget.py); the rehearsal's copy does not.
    limit = None if gates.rehearsing_on(run_id, gates.identity(conn)) else budget.for_change(run_id, change.name, params)

    def as_change(work: Work) -> dict[str, Any]:
        return transaction.in_transaction(conn, params, run_id=run_id, step=change.step, change=change.name,
                                          sha=sha, settings=settings, work=work,
                                          limits=limit.limits(params) if limit else None, tried_before=tried)

    def ledger_only(detail: dict[str, Any]) -> Outcome:
        as_change(Work(None, outcome="noop", detail=detail, rows=0))
        return Outcome(change.name, "noop", 0, time.monotonic() - started, detail)

    reason = skip_reason(conn, change, params, found)
    if reason:
        return ledger_only({"skipped": reason})
    text = deploy.as_string(conn) if isinstance(deploy, sql.Composed) else deploy
    if not change.has("notx") and not params.accept_changed_sql:
        # The common case in one round trip: verify first (already in effect: noop), else deploy,
        # verify and record, all in the change's one statement.
        try:
            done = as_change(Work(text, slowed(change, read_sql(change.verify)), already=in_effect_check(change)))
        except psycopg.Error as exc:
            raise failed(conn, change, exc, params, run_id, limit, started) from None
        spent = {**held(done), **({"budget_seconds": round(limit.seconds, 3)} if limit else {})}
        if done["outcome"] == "noop":
            return Outcome(change.name, "noop", 0, time.monotonic() - started,
                           {"already": "verify passed before deploy", **spent})
        return Outcome(change.name, "applied", max(int(done["rows"]), 0), time.monotonic() - started, spent)
    already, _ = verify_passes(conn, change, params, settings)
    if already and change.has("notx"):
        built_by = _started_unrecorded(conn, change)
        if built_by:  # this migration built it; the run that did stopped before recording it
            as_change(Work(None, detail={"notx": True, "built_by_run": built_by,
                                         "recorded": "by a later attempt: the build was complete"}, rows=0))
            return Outcome(change.name, "applied", 0, time.monotonic() - started, {"built_by_run": built_by})
    if already:
        detail: dict[str, Any] = {"already": "verify passed before deploy"}
        if params.accept_changed_sql:
            edited = ledger.drift(conn, {change.name: sha})
            if edited:
                detail["accepted_sql_change"] = {"applied_with": edited[0]["applied_with"], "file_now": sha}
        return ledger_only(detail)

    try:
        if change.has("notx"):  # outside a transaction; its intent ledgered before, its outcome right after
            intent = [run_id, sha]  # ledgered with the first attempt's round trip, not again on a retry
            saved = transaction.with_lock_retries(params, change.step, change.name,
                                                  lambda: _deploy_notx(conn, change, params, deploy, intent), run_id, conn)
            rows = int(as_change(Work(None, read_sql(change.verify), detail={"notx": True}, rows=0,
                                      bounds=saved))["rows"])  # its bounds back, in the same round trip
        else:
            rows = int(as_change(Work(text, read_sql(change.verify)))["rows"])
    except psycopg.Error as exc:
        record_failure(conn, run_id, change, sha, exc, params)
        raise transaction.stopped(conn, exc, step=change.step, change=change.name, run_id=run_id) from None
    return Outcome(change.name, "applied", max(rows, 0), time.monotonic() - started)


def failed(conn: psycopg.Connection[Any], change: Change, exc: psycopg.Error, params: RunParams, run_id: str,
           limit: budget.Budget | None, started: float) -> KbError:
    """A change that failed (rolled back): its ledger row says so; the one-line error to raise."""
    record_failure(conn, run_id, change, change.sha256(), exc, params)
    if limit and not conn.broken and blockers.timed_out(exc):
        return OverBudget(step=change.step, change=change.name, took=f"{time.monotonic() - started:.3f} s",
                          statement=statement(exc, change), budget=limit.text(), run=run_id)
    return transaction.stopped(conn, exc, step=change.step, change=change.name, run_id=run_id)


def together(change: Change, params: RunParams) -> bool:
    """Whether ``change`` can be sent with its neighbours (``apply_together``): one transaction of
    its own, no edited SQL to weigh first."""
    return not (change.has("notx") or change.has("batched") or params.accept_changed_sql)


def apply_together(conn: psycopg.Connection[Any], changes: list[Change], params: RunParams, run_id: str,
                   found: set[str] | None = None) -> list[Outcome]:
    """``changes`` (each ``together``), each in its own transaction as ``apply`` makes it, all sent
    in one round trip (``transaction.in_one_round_trip``): 11 changes of 02_schema cost one round
    trip instead of 11. From the first that fails (rolled back, and nothing after it run), they go
    one by one through ``apply``: its lock retries (the round trip's try counted as the first), its
    failure record, its one-line error. One by one, too, while a test arms a failpoint."""
    if len(changes) < 2 or params.lock_retries < 1 or failpoint.armed_any():
        return [apply(conn, c, params, run_id, found) for c in changes]
    started = time.monotonic()
    sent: list[transaction.Sent] = []
    skipped: list[str | None] = []
    budgets: list[budget.Budget | None] = []
    for change in changes:
        gates.require(conn, run_id, f"{change.step} ({change.name})")
        limit = None if gates.rehearsing_on(run_id, gates.identity(conn)) else budget.for_change(run_id, change.name, params)
        reason = skip_reason(conn, change, params, found)
        if reason:
            work = Work(None, outcome="noop", detail={"skipped": reason}, rows=0)
        else:
            deploy = composed(change, params)
            text = deploy.as_string(conn) if isinstance(deploy, sql.Composed) else deploy
            work = Work(text, slowed(change, read_sql(change.verify)), already=in_effect_check(change))
        sent.append(transaction.Sent(change.step, change.name, change.sha256(), work,
                                     {**params.settings(run_id), **change.settings()},
                                     limit.limits(params) if limit else None))
        skipped.append(reason)
        budgets.append(limit)
    done, stopped = transaction.in_one_round_trip(conn, params, run_id, sent)
    took = time.monotonic() - started
    outcomes: list[Outcome] = []
    for change, reason, got, limit in zip(changes, skipped, done, budgets):
        shared = {"sent_with": len(changes)}  # its seconds: the round trip's, shared with the others
        if reason:
            outcomes.append(Outcome(change.name, "noop", 0, took, {"skipped": reason, **shared}))
            continue
        spent = {**held(got), **({"budget_seconds": round(limit.seconds, 3)} if limit else {}), **shared}
        if got["outcome"] == "noop":
            outcomes.append(Outcome(change.name, "noop", 0, took, {"already": "verify passed before deploy", **spent}))
        else:
            outcomes.append(Outcome(change.name, "applied", max(int(got["rows"]), 0), took, spent))
    if stopped is None:
        return outcomes
    rest = changes[len(done):]
    if not isinstance(stopped, (psycopg.errors.LockNotAvailable, psycopg.errors.DeadlockDetected)):
        # its own error (its SQL, its budget, a lost connection): not tried again, as apply would not
        raise failed(conn, rest[0], stopped, params, run_id, budgets[len(done)], started)
    outcomes.append(apply(conn, rest[0], params, run_id, found, tried=1))  # its lock busy: its retries, alone
    return outcomes + [apply(conn, c, params, run_id, found) for c in rest[1:]]


def slowed(change: Change, verify: str) -> str:
    """The verify script, made to sleep first when a test slows the change (``failpoint.slowdown``):
    it runs after the change's work, in its transaction, its locks held."""
    pause = failpoint.slowdown(change.name)
    return f"select pg_sleep({float(pause):.3f});\n{verify}" if pause else verify


def statement(exc: psycopg.Error, change: Change) -> str:
    """The statement the server was running when it stopped, as its error's context names it, with
    the change's file."""
    context = (getattr(getattr(exc, "diag", None), "context", None) or "")
    found = re.search(r'SQL statement "(.*?)"', context, re.DOTALL)
    if not found:
        return f"in sql/{change.deploy} or sql/{change.verify}"
    running = found.group(1).strip()
    where = change.verify if running and running[:200] not in read_sql(change.deploy) else change.deploy
    return f"{' '.join(running.split())[:160]!r} in sql/{where}"


def held(done: dict[str, Any]) -> dict[str, Any]:
    """What a change's transaction held on the application's relations, and how long (``change.sql``)."""
    return {k: done[k] for k in ("locks", "held_seconds") if k in done}


def _started_unrecorded(conn: psycopg.Connection[Any], change: Change) -> str | None:
    """The run that started building ``change`` and never recorded an outcome, if its latest row says so."""
    if not ledger.exists(conn):
        return None
    latest = db.rows(conn, "select run_id, outcome from kbmigrate.ledger where change = %s order by id desc limit 1",
                     (change.name,))
    return latest[0]["run_id"] if latest and latest[0]["outcome"] == "started" else None


_BUILD_BOUNDS = """with saved as materialized (
                       select current_setting('lock_timeout') as lock_timeout,
                              current_setting('statement_timeout') as statement_timeout)
                   select saved.*, set_config('lock_timeout', %s, false), set_config('statement_timeout', %s, false),
                          array(select n.nspname || '.' || c.relname from pg_index i
                                join pg_class c on c.oid = i.indexrelid join pg_namespace n on n.oid = c.relnamespace
                                where c.relname = any(%s) and not i.indisvalid) as invalid
                   from saved"""


def _deploy_notx(conn: psycopg.Connection[Any], change: Change, params: RunParams,
                 deploy: str | sql.Composed, intent: list[str]) -> tuple[str, str]:
    """Outside a transaction: the ledger says the build began, and who began it (``intent``: [run
    id, sha], emptied once written); drop an INVALID index of the same name (a failed earlier
    build), then build. Returns the session's bounds from before, for the build's record to put back."""
    text = deploy.as_string(conn) if isinstance(deploy, sql.Composed) else deploy
    # A concurrent build blocks no one but may take long: it gets index_timeout, then the session
    # gets its own bounds back (RESET would go to the server's default, which may be none at all).
    # The intent ledgered in its own transaction, then the bounds saved and set and the invalid
    # leftovers looked up, in one round trip (not set when the intent's row failed).
    index = params.limits("index")
    bounds = (_BUILD_BOUNDS, (index.lock_timeout, index.statement_timeout, _INDEX_NAME.findall(text)))
    if intent:
        run_id, sha = intent
        found = transaction.record(conn, params, run_id=run_id, step=change.step, change=change.name, sha=sha,
                                   outcome="started", detail={"notx": True}, then=bounds)[0]
        intent.clear()
    else:
        found = db.rows(conn, *bounds)[0]
    saved = (found["lock_timeout"], found["statement_timeout"])
    try:
        for qualified in found["invalid"]:
            conn.execute(sql.SQL("drop index concurrently if exists {}").format(sql.Identifier(*qualified.split(".", 1))))
        with failpoint.while_building(change.name, conn.info.dsn, conn.info.backend_pid), blockers.in_flight():
            conn.execute(deploy)
    except BaseException:
        conn.execute("select set_config('lock_timeout', %s, false), set_config('statement_timeout', %s, false)", saved)
        raise
    return saved


def record_failure(conn: psycopg.Connection[Any], run_id: str, change: Change, sha: str, exc: psycopg.Error,
                   params: RunParams) -> None:
    """Best effort, in a transaction of its own: the failed change itself was rolled back."""
    try:
        if conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
            conn.rollback()
        if ledger.exists(conn):
            transaction.record(conn, params, run_id=run_id, step=change.step, change=change.name, sha=sha,
                               outcome="failed", detail={"sqlstate": getattr(exc, "sqlstate", None),
                                                         "error": error_text(exc)})
    except psycopg.Error:
        pass
