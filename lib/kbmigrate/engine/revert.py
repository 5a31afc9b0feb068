"""Partial rollback: undo one change with its sql/revert file, verified, ledgered, nothing else touched."""

from __future__ import annotations

import time
from typing import Any

import psycopg

from kbmigrate.engine import gates, ledger
from kbmigrate.errors import BadParameter, StepFailed
from kbmigrate.engine.params import RunParams
from kbmigrate.paths import SQL_DIR, read_sql
from kbmigrate.engine.plan import Change, load, sha256_text
from kbmigrate.engine import transaction
from kbmigrate.engine.transaction import Work


def revertible(params: RunParams) -> dict[str, Change]:
    """The plan's changes that have a revert file, by name (each legacy source's import among them)."""
    return {c.name: c for c in load(params) if (SQL_DIR / c.revert).is_file()}


def groups(params: RunParams) -> dict[str, list[str]]:
    """Names that stand for several changes: import_legacy, every legacy source's import."""
    return {"import_legacy": [c.name for c in load(params) if c.file == "import_legacy"]}


def expand(name: str, params: RunParams) -> list[Change]:
    can = revertible(params)
    names = groups(params).get(name, [name])
    unknown = [n for n in names if n not in can]
    if unknown or not names:
        raise BadParameter(name="change", reason=f"{name!r} cannot be reverted; one of: "
                                                 f"{', '.join(sorted([*can, *groups(params)]))}")
    return [can[n] for n in names]


def revert(conn: psycopg.Connection[Any], name: str, params: RunParams, run_id: str) -> list[dict[str, Any]]:
    out = []
    if not ledger.exists(conn):
        raise StepFailed(step="revert", change=name, reason="this database has no kbmigrate ledger: nothing was migrated")
    gates.require(conn, run_id, f"the revert of {name}", forward=False)
    for change in expand(name, params):
        text = read_sql(change.revert)
        started = time.monotonic()
        try:
            transaction.in_transaction(conn, params, run_id=run_id, step=change.step, change=change.name,
                                       sha=sha256_text(text), settings=change.settings(),
                                       work=Work(text, outcome="reverted"))
        except psycopg.Error as exc:
            raise transaction.stopped(conn, exc, step="revert", change=change.name, run_id=run_id) from None
        out.append({"change": change.name, "outcome": "reverted", "seconds": round(time.monotonic() - started, 3)})
    return out
