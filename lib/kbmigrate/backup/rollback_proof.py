"""The rehearsal's rollback: update, rollback, update again, on the copy (Liquibase's
update-testing-rollback, on the real data).

After the rehearsal's changes, the copy is rolled back as 07 rolls production back: the same
transaction (``restore.restore_in``: the lost-writes count under the locks, what the migration
added dropped, the KB tables restored from the run's backup, their checksums compared before
COMMIT, the ledger row). pg_restore writes the script as the drill restored the copy: the local
server's own client, without owners and privileges, without the foreign keys into the platform's
tables. Then it proves:

- **the schema is the copy's before the changes**: ``pg_dump --schema-only`` of the backup's
  schemas (and ``kb_private``), taken before the first change and after the rollback, on the same
  server by the same client, compared line by line;
- **the data is the backup's**: every table's row count and checksum against those recorded at
  dump time;
- **the lost-writes check counts nothing**: nobody writes to the copy, so a count there means the
  check takes the migration's own rows for the application's, and production's rollback would
  refuse (or, accepted, lose nothing it claims);
- **the migration applies again** after it, to the same outcome: the same entries per workspace,
  shared, quarantined and listed for review as the first time.

Any of these failing fails the rehearsal: production is a NO-GO. What the copy cannot prove (its
objects have no owners or privileges of production's) production's own rollback proves, comparing
its schema dump with the backup's (07).
"""

from __future__ import annotations

import difflib
import os
import subprocess
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import psycopg

from kbmigrate import db
from kbmigrate.backup import drill, restore
from kbmigrate.checks import clients, scope
from kbmigrate.conninfo import Target, libpq_env
from kbmigrate.engine.params import RunParams
from kbmigrate.errors import CopyUnreadable, KbError

WITHOUT = ("--no-owner", "--no-privileges")  # as the drill restored the copy
COPY_LOCK_WAIT, COPY_ATTEMPTS = "5s", 3  # the rollback's lock wait on the copy, and its tries
SCHEMA_SECONDS = 600


def _client(conn: psycopg.Connection[Any], program: str) -> str:
    return str(clients.find(program, int(db.scalar(conn, "show server_version_num")) // 10000))


def schema_text(copy: Target, conn: psycopg.Connection[Any], info: dict[str, Any]) -> list[str]:
    """The copy's schema as the local pg_dump writes it (owners and privileges aside), normalised
    as production's rollback proof normalises its own (``restore.normalise``)."""
    env = {**os.environ, **libpq_env(copy)}
    try:
        done = clients.run_bounded(Path(_client(conn, "pg_dump")),
                                   ["--schema-only", *WITHOUT, "--no-password",
                                    *scope.pg_dump_args(restore.compared_schemas(info))],
                                   env=env, seconds=SCHEMA_SECONDS, application_name="kbmigrate rehearsal schema")
    except subprocess.TimeoutExpired:
        raise CopyUnreadable(reason=f"pg_dump --schema-only ran longer than {SCHEMA_SECONDS} s") from None
    if done.returncode != 0:
        raise CopyUnreadable(reason=f"pg_dump --schema-only failed: {done.stderr.strip()[:200]}")
    return in_name_order(restore.normalise(done.stdout))


def in_name_order(lines: list[str]) -> list[str]:
    """The dump's objects (each from its "-- Name: ...; Type: ...; Schema: ..." header to the
    next) sorted by that header. pg_dump writes tables of one schema in the order their
    dependencies and OIDs give, and a table the rollback re-created has a new OID: the same
    schema can come out in another order, and only the order would differ."""
    blocks: list[list[str]] = [[]]
    for i, line in enumerate(lines):
        if line.startswith("-- Name: ") and i and lines[i - 1] == "--":
            blocks[-1].pop()  # the "--" above the header belongs to the header's block
            blocks.append(["--"])
        blocks[-1].append(line)
    head, objects = blocks[0], sorted(blocks[1:], key=lambda b: b[1])
    return [*head, *(line for block in objects for line in block)]


def prove(copy: Target, conn: psycopg.Connection[Any], run_id: str, backup_of: tuple[str, dict[str, Any]],
          params: RunParams, before: list[str], update: Callable[[], dict[str, Any]],
          first: dict[str, Any]) -> dict[str, Any]:
    """Roll the changed copy back, prove it is the copy of ``before`` (its schema text, taken before
    the first change) and of the backup, then ``update`` again (it returns where the entries went,
    to compare with ``first``). Returns the evidence; its ``failure`` is None when all held."""
    info = backup_of[1]
    started = time.monotonic()
    out: dict[str, Any] = {"how": "restored as 07 restores production, in one transaction; pg_restore of the local "
                                  "server, without owners, privileges and the foreign keys into the platform's "
                                  "tables, as the drill restored the copy",
                           "schemas_compared": restore.compared_schemas(info)}
    refs = info.get("outside_references", [])
    # Nobody works on the copy but autovacuum, which the changes' rows wake: it yields to a lock
    # request only after deadlock_timeout (1 s by default), as long as the run's lock_timeout.
    waits = replace(params, lock_timeout=COPY_LOCK_WAIT) if params.seconds("lock_timeout") < 5 else params
    for attempt in range(1, COPY_ATTEMPTS + 1):
        try:
            detail = restore.restore_in(conn, run_id, backup_of, {"parameters": params.as_dict()}, waits,
                                        f"{run_id}-rehearsal-rollback", pg_restore=_client(conn, "pg_restore"),
                                        options=WITHOUT, accept_loss=True,  # a count here is judged below
                                        leave_out=lambda line: drill.outside_foreign_key(line, refs) is not None)
            break
        except KbError as exc:  # all or nothing: a rollback undone for a lock may be tried again from the start
            if exc.details.get("locked") and attempt < COPY_ATTEMPTS:
                continue
            return {**out, "failure": f"the rollback failed on the copy: {exc.message.rstrip('.')}",
                    "attempts": attempt, "seconds": round(time.monotonic() - started, 2)}
    out["attempts"] = attempt
    out.update(rows_loaded=detail["rows_loaded"], restored_tables=detail["restored_tables"],
               lost_writes_counted=restore.lost_writes(detail["writes_counted_under_lock"]))
    try:
        after = schema_text(copy, conn, info)
    except KbError as exc:
        return {**out, "failure": exc.message, "seconds": round(time.monotonic() - started, 2)}
    diff = list(difflib.unified_diff(before, after, "before the changes", "after the rollback", lineterm="", n=1))
    tables = restore.data_diff(conn, info)
    out.update(schema_diff=diff[:80], schema_diff_lines=len(diff), tables=tables)
    failure = None
    if diff:
        failure = (f"after the rollback the copy's schema differs from before the changes ({len(diff)} lines of "
                   "diff): the rollback leaves something of the migration, or takes something away")
    elif not all(t["equal"] for t in tables):
        failure = ("after the rollback these tables differ from the backup: "
                   + ", ".join(t["table"] for t in tables if not t["equal"]))
    elif out["lost_writes_counted"]:
        failure = (f"the lost-writes check counted {out['lost_writes_counted']} rows on the copy, where nobody "
                   "writes: it takes the migration's own rows for the application's")
    out["rollback_seconds"] = round(time.monotonic() - started, 2)
    if failure is None:
        try:
            again = update()
        except KbError as exc:
            again, failure = {}, f"after the rollback the migration did not apply again: {exc.message}"
        if failure is None and again != first:
            differs = sorted(k for k in set(first) | set(again) if first.get(k) != again.get(k))
            failure = f"applied again after the rollback, the backfill's outcome differs ({', '.join(differs)})"
        out["applied_again"] = {"same_outcome": failure is None, "entries": again}
    return {**out, "failure": failure, "seconds": round(time.monotonic() - started, 2)}
