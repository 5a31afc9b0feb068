"""The backup step: a pg_dump (custom format) of the application's schemas, taken before anything changes.

The dump and the per-table row counts come from one snapshot: a repeatable-read transaction
exports it, pg_dump reads it with --snapshot, and the counts are taken inside it. What the dump
covers is decided by ``scope.py`` (on Supabase the platform's schemas are not the user's to
dump or restore) and recorded with the reason for everything left out. pg_dump and pg_restore
are of the server's major version (``clients.py``). The file is written to backups/<run_id>/
with mode 0600, and recorded as the run's backup by the engine's gates (``engine/gates.py``: which
database, when, whether the migration had begun), where the restore drill (``drill.py``) adds its
verdict; the runner copies that record into the manifest.
"""

from __future__ import annotations

import gzip
from concurrent.futures import ThreadPoolExecutor
import os
import subprocess
import time
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

from kbmigrate import db
from kbmigrate.digest import sha256_file
from kbmigrate.checks import clients, scope
from kbmigrate.engine import blockers, gates
from kbmigrate.conninfo import Target, libpq_env
from kbmigrate.errors import BackupFailed, Blocked
from kbmigrate.engine.params import RunParams
from kbmigrate.paths import BACKUP_ROOT, read_sql, shown



def user_tables(conn: psycopg.Connection[Any], schemas: list[str]) -> list[tuple[str, str]]:
    return [(r["s"], r["t"]) for r in db.rows(conn, """
        select n.nspname as s, c.relname as t from pg_class c join pg_namespace n on n.oid = c.relnamespace
        where c.relkind in ('r', 'p') and n.nspname = any(%s)
          and not exists (select 1 from pg_depend d where d.classid = 'pg_class'::regclass and d.objid = c.oid
                          and d.deptype = 'e')
        order by 1, 2""", (schemas,))]


def data_schemas(schemas: list[str]) -> list[str]:
    """The schemas whose tables the checksums cover: the backup's, less the tool's own ledger."""
    return [s for s in schemas if s != "kbmigrate"]


def table_checksums(conn: psycopg.Connection[Any], schemas: list[str], *,
                    only: list[str] | None = None) -> dict[str, dict[str, Any]]:
    """{schema.table: {rows, checksum}} for every table in ``schemas`` (or just those named in
    ``only``, as schema.table); call inside a transaction."""
    template = read_sql("report/table_checksums.sql")
    tables = [(schema, table) for schema, table in user_tables(conn, schemas)
              if only is None or f"{schema}.{table}" in only]
    found = db.batch(conn, [("select set_config('timezone', 'UTC', true), set_config('extra_float_digits', '3', true)",
                             None),
                            *((sql.SQL(template).format(table=sql.Identifier(schema, table)), None)
                              for schema, table in tables)])  # one round trip for every table
    return {f"{schema}.{table}": {"rows": int(rows[0]["row_count"]), "checksum": rows[0]["checksum"]}
            for (schema, table), rows in zip(tables, found[1:])}


def dump(target: Target, run_id: str, params: RunParams) -> dict[str, Any]:
    """Dump the target database; pg_dump gets the connection through its libpq environment."""
    snap = db.connect(target, limits=params.limits("backup"), autocommit=True,
                      application_name=f"kbmigrate backup {run_id}"[:63])
    try:
        major = snap.info.server_version // 10000  # as the server said when the session began
        pg_dump, pg_restore = clients.find("pg_dump", major), clients.find("pg_restore", major)
        covered = scope.decide(snap, params)
        if covered.problems:
            raise BackupFailed(reason="; ".join(covered.problems))
        folder = BACKUP_ROOT / run_id
        folder.mkdir(parents=True, exist_ok=True)
        folder.chmod(0o700)
        path = folder / f"{snap.info.dbname}.dump"
        # The folder is this run's (a run id is used once); a dump already there is from an attempt of
        # this step that did not succeed (a resumed run), and this attempt replaces it.
        gates.forget_backup(run_id)
        path.unlink(missing_ok=True)
        env = {**os.environ, **libpq_env(target)}
        started = time.monotonic()
        snapshot = db.batch(snap, [("begin isolation level repeatable read read only", None),
                                   ("select pg_export_snapshot() as id", None)])[1][0]["id"]  # one round trip
        seen = gates.in_snapshot(snap)

        def in_snapshot() -> tuple[dict[str, Any], Any]:
            """What the run checks the restore against, read in the dump's snapshot while pg_dump runs."""
            sums = table_checksums(snap, data_schemas(covered.schemas))
            outside = scope.outside_references(snap, covered.schemas)
            write_fingerprints(snap, folder)
            return sums, outside

        old_umask = os.umask(0o077)
        app = f"kbmigrate pg_dump {run_id}"
        try:
            with ThreadPoolExecutor(1, thread_name_prefix="kbmigrate-checksums") as pool:
                reading = pool.submit(in_snapshot)
                try:
                    # compression level 1: about twice as fast as the default (6), for an archive ~20% larger
                    with blockers.in_flight():
                        done = clients.run_bounded(
                            pg_dump, ["--format=custom", "--compress=1", f"--snapshot={snapshot}", "--file", str(path),
                                      "--no-password", *scope.pg_dump_args(covered.schemas)],
                            env=env, seconds=params.seconds("backup_timeout"), application_name=app,
                            lock_wait=params.lock_timeout)
                except subprocess.TimeoutExpired:
                    path.unlink(missing_ok=True)
                    reading.result()
                    db.terminate(snap, app)
                    raise BackupFailed(reason=f"pg_dump ran longer than backup_timeout {params.backup_timeout} and was "
                                              "stopped; raise it (-p backup_timeout=2h) or back up at a quieter time") from None
                sums, outside = reading.result()
        finally:
            os.umask(old_umask)
        snap.execute("commit")
    finally:
        snap.close()
    if done.returncode != 0:
        path.unlink(missing_ok=True)  # a partial archive is no backup; a new attempt writes it again
        if "lock timeout" in done.stderr:
            raise Blocked(step="01_backup (pg_dump)", within=f"within --lock-wait-timeout {params.lock_timeout}",
                          blocker=blockers.who(run_id), run=run_id)
        lines = [line for line in done.stderr.strip().splitlines() if not line.startswith("pg_dump: detail:")]
        raise BackupFailed(reason=target.redact((lines or ["pg_dump failed"])[-1]))
    path.chmod(0o600)
    listing = subprocess.run([str(pg_restore), "--list", str(path)], capture_output=True, text=True)
    if listing.returncode != 0:
        raise BackupFailed(reason=f"pg_restore --list cannot read the dump: {listing.stderr.strip()[:200]}")
    entries = sum(1 for line in listing.stdout.splitlines() if line and not line.startswith(";"))
    info = {"path": shown(path), "sha256": sha256_file(path), "bytes": path.stat().st_size,
            "restore_list_entries": entries, "row_counts": {t: v["rows"] for t, v in sums.items()},
            "pg_dump_version": clients.version_line(pg_dump), "pg_restore_version": clients.version_line(pg_restore),
            "server_major": major, "scope": covered.as_dict(), "outside_references": outside,
            "checksums": sums, "seconds": round(time.monotonic() - started, 2)}
    return gates.record_backup(run_id, info, seen)


# Columns the migration never changes: a difference there is the application's write.
FINGERPRINTS = {
    "knowledge_base": "select id, md5(row(title, content, metadata, created_by, created_at, updated_at)::text) as h "
                      "from public.knowledge_base",
    "knowledge_base_sections": "select id, md5(row(workspace_id, name, description, display_order, icon, is_active, "
                               "created_at, updated_at)::text) as h from public.knowledge_base_sections",
}


def write_fingerprints(conn: psycopg.Connection[Any], folder: Path) -> None:
    """Per-row fingerprints (id, md5 of the app's columns) of the KB tables at dump time: no
    content, just enough to count the application's writes after the backup (rollback)."""
    present = db.tables_present(conn, list(FINGERPRINTS))
    for table, query in FINGERPRINTS.items():
        if table not in present:
            continue
        path = folder / f"{table}.fingerprints.gz"
        old = os.umask(0o077)
        try:
            with gzip.open(path, "wb", compresslevel=1) as out, conn.cursor().copy(f"copy ({query}) to stdout") as copy:
                for chunk in copy:
                    out.write(chunk)
        finally:
            os.umask(old)
