"""Rollback: restore a run's backup in place, and prove the pre-migration state is back.

Only the tables the migration changed are restored (knowledge_base, and knowledge_base_sections
when it existed before): the objects the migration added are dropped first, then pg_restore
--clean replaces those tables, their indexes, constraints, policies and dependent views from
the dump, in one transaction. Other tables keep whatever the application wrote to them.
"""

from __future__ import annotations

import difflib
import gzip
import json
import os
import re
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

from kbmigrate import backup, db, ledger
from kbmigrate.conninfo import Target, libpq_env
from kbmigrate.errors import KbError
from kbmigrate.params import RunParams
from kbmigrate.paths import REPO_ROOT, read_sql
from kbmigrate.scripts import begin_step

KB_TABLES = ("knowledge_base", "knowledge_base_sections")


class RollbackRefused(KbError):
    """Rollback refused: {reason}"""


def run_folder(run_id: str) -> Path:
    from kbmigrate.runner import RUNS_DIR

    return RUNS_DIR / run_id


def load(run_id: str) -> dict[str, Any]:
    """The run's manifest and backup description; refuses when the backup is missing or altered."""
    path = run_folder(run_id) / "manifest.json"
    if not path.exists():
        raise RollbackRefused(reason=f"no run {run_id!r} (no {path})")
    manifest = json.loads(path.read_text())
    info = manifest.get("backup")
    if not info:
        raise RollbackRefused(reason=f"run {run_id} has no backup in its manifest")
    dump = dump_path(info)
    if not dump.exists():
        raise RollbackRefused(reason=f"the backup file {info['path']} is missing")
    if backup.sha256_file(dump) != info["sha256"]:
        raise RollbackRefused(reason=f"the backup file {info['path']} no longer matches the sha256 in the manifest")
    return manifest


def dump_path(info: dict[str, Any]) -> Path:
    p = Path(info["path"])
    return p if p.is_absolute() else REPO_ROOT / p


def _tool(info: dict[str, Any], name: str) -> str:
    return str(backup.client(name, int(info.get("server_major", 0)))[0])


def app_writes(conn: psycopg.Connection[Any], manifest: dict[str, Any]) -> list[dict[str, Any]]:
    """Rows of the KB tables written by the application since the run's backup: a rollback would
    lose them. The migration's own changes (its new columns, imported entries, the sections it
    seeded from the run's own sections file) are not counted."""
    info = manifest["backup"]
    folder = dump_path(info).parent
    known = set(RunParams.__dataclass_fields__) - {"extra"}
    seeded = [s["name"] for s in RunParams(**{k: v for k, v in manifest["parameters"].items() if k in known}).sections()]
    out = []
    with conn.transaction(force_rollback=True):
        for table in KB_TABLES:
            if db.scalar(conn, "select to_regclass(%s) is null", (f"public.{table}",)):
                continue
            before = sql.Identifier(f"before_{table}")
            conn.execute(sql.SQL("create temp table {} (id uuid primary key, h text) on commit drop").format(before))
            prints = folder / f"{table}.fingerprints.gz"
            if prints.exists():
                with gzip.open(prints, "rb") as fh, conn.cursor().copy(sql.SQL("copy {} from stdin").format(before)) as copy:
                    while chunk := fh.read(1 << 20):
                        copy.write(chunk)
            migration_rows = sql.SQL(
                "select entry_id from kbmigrate.legacy_imports" if table == "knowledge_base" else
                "select s.id from public.knowledge_base_sections s where s.name = any(%(seeded)s) and s.updated_at = s.created_at")
            counts = db.rows(conn, sql.SQL("""
                with now_rows as ({now})
                select (select count(*) from now_rows n where not exists (select 1 from {before} b where b.id = n.id)
                          and n.id not in ({migration})) as inserted,
                       (select count(*) from {before} b where not exists (select 1 from now_rows n where n.id = b.id)) as deleted,
                       (select count(*) from {before} b join now_rows n on n.id = b.id where n.h <> b.h) as updated""").format(
                now=sql.SQL(backup.FINGERPRINTS[table]), before=before, migration=migration_rows), {"seeded": seeded})[0]
            out.append({"table": f"public.{table}", **counts})
    return out


def restore_list(info: dict[str, Any], tables: list[str], views: list[str]) -> str:
    """The dump's table of contents, filtered to the given tables and everything that hangs on them."""
    dump = str(dump_path(info))
    toc = subprocess.run([_tool(info, "pg_restore"), "--list", dump], capture_output=True, text=True, check=True).stdout
    schema = subprocess.run([_tool(info, "pg_restore"), "--schema-only", "--file", "-", dump],
                            capture_output=True, text=True, check=True).stdout
    indexes = set()
    for table in tables:
        indexes |= set(re.findall(rf"CREATE (?:UNIQUE )?INDEX (\w+) ON (?:ONLY )?public\.{table} ", schema))
    keep = []
    for line in toc.splitlines():
        if not line or line.startswith(";"):
            continue
        desc = line.split(" ", 3)[-1]  # "TABLE public knowledge_base owner", "INDEX public name owner", ...
        words = desc.split()
        names = set(words)
        if any(t in names or f"{t}." in desc for t in tables) and not desc.startswith(("SCHEMA", "DATABASE")):
            keep.append(line)
        elif words[0] == "INDEX" and len(words) > 2 and words[2] in indexes:
            keep.append(line)
        elif any(v in names for v in views):
            keep.append(line)
    return "\n".join(keep) + "\n"


def restore(target: Target, run_id: str, manifest: dict[str, Any], params: RunParams) -> dict[str, Any]:
    info = manifest["backup"]
    in_dump = [t for t in KB_TABLES if f"public.{t}" in info["row_counts"]]
    with db.connect(target, autocommit=True) as conn:
        dbname = conn.info.dbname
        views = [r["v"] for r in db.rows(conn, """
            select distinct c.relname as v from pg_depend d join pg_rewrite r on r.oid = d.objid
            join pg_class c on c.oid = r.ev_class
            where d.refobjid = any(array[to_regclass('public.knowledge_base'), to_regclass('public.knowledge_base_sections')])
              and c.relname <> 'vw_workspace_sections' and c.oid <> d.refobjid""")]
        settings = {**params.settings(run_id), "kbmigrate.sections_in_dump": str("knowledge_base_sections" in in_dump).lower()}
        with conn.transaction():
            begin_step(conn, params.lock_timeout, params.statement_timeout, settings)
            conn.execute(read_sql("revert/rollback_prepare.sql"))
    listing = restore_list(info, in_dump, views)
    with tempfile.NamedTemporaryFile("w", suffix=".list", delete=False) as fh:
        fh.write(listing)
    env = {**os.environ, **libpq_env(target)}
    done = subprocess.run([_tool(info, "pg_restore"), "--clean", "--if-exists", "--single-transaction", "--exit-on-error",
                           "--no-password", "--use-list", fh.name, "--dbname", dbname, str(dump_path(info))],
                          env=env, capture_output=True, text=True)
    os.unlink(fh.name)
    if done.returncode != 0:
        raise RollbackRefused(reason="pg_restore failed (the migration's own objects were already dropped; fix the "
                                     "cause and run the rollback again): "
                                     + target.redact((done.stderr.strip().splitlines() or ["?"])[-1]))
    return {"restored_tables": [f"public.{t}" for t in in_dump], "dependent_views": views,
            "toc_entries": listing.count("\n")}


def _normalise(schema_sql: str) -> list[str]:
    out = []
    for line in schema_sql.splitlines():
        if line.startswith(("\\restrict", "\\unrestrict", "-- Dumped from", "-- Dumped by")):
            continue
        out.append(line)
    return [ln for i, ln in enumerate(out) if ln.strip() or (i and out[i - 1].strip())]


def schema_diff(target: Target, info: dict[str, Any]) -> list[str]:
    """Unified diff between the schema at backup time and now (the kbmigrate schema left out)."""
    before = subprocess.run([_tool(info, "pg_restore"), "--schema-only", "--file", "-", str(dump_path(info))],
                            capture_output=True, text=True, check=True).stdout
    env = {**os.environ, **libpq_env(target)}
    with db.connect(target) as conn:
        env["PGDATABASE"] = conn.info.dbname
    now = subprocess.run([_tool(info, "pg_dump"), "--schema-only", "--exclude-schema=kbmigrate", "--no-password"],
                         env=env, capture_output=True, text=True)
    if now.returncode != 0:
        raise RollbackRefused(reason=f"pg_dump --schema-only failed: {target.redact(now.stderr.strip())[:200]}")
    return list(difflib.unified_diff(_normalise(before), _normalise(now.stdout), "at backup", "now", lineterm="", n=1))


def data_diff(conn: psycopg.Connection[Any], info: dict[str, Any]) -> list[dict[str, Any]]:
    with conn.transaction(force_rollback=True):
        now = backup.table_checksums(conn)
    rows = []
    for table in sorted(set(now) | set(info["checksums"])):
        b, n = info["checksums"].get(table), now.get(table)
        rows.append({"table": table, "rows at backup": b and b["rows"], "rows now": n and n["rows"],
                     "equal": bool(b and n and b == n)})
    return rows


def record(conn: psycopg.Connection[Any], run_id: str, rollback_id: str, detail: dict[str, Any]) -> None:
    if ledger.exists(conn):
        with conn.transaction():
            ledger.record(conn, run_id=rollback_id, step="07_rollback", change=f"rollback of {run_id}",
                          sql_sha256=backup.sha256_file(REPO_ROOT / "sql/revert/rollback_prepare.sql"),
                          rows_affected=None, outcome="applied", detail=detail)
