"""The backup step: a full pg_dump (custom format) taken before anything changes.

The dump and the per-table row counts come from one snapshot: a repeatable-read transaction
exports it, pg_dump reads it with --snapshot, and the counts are taken inside it. The file is
written to backups/<run_id>/ with mode 0600, and described in backups/<run_id>/backup.json
(which the runner copies into the manifest).
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import re
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

from kbmigrate import db
from kbmigrate.conninfo import Target, libpq_env
from kbmigrate.embedded import bin_dir
from kbmigrate.errors import KbError
from kbmigrate.paths import REPO_ROOT, read_sql

BACKUP_ROOT = Path(os.environ.get("KBMIGRATE_BACKUPS_DIR") or REPO_ROOT / "backups")


class BackupFailed(KbError):
    """The backup failed: {reason}"""


def client(program: str, server_major: int) -> tuple[Path, int]:
    """The embedded wheel's client, or the system's, whichever is at least the server's major version."""
    candidates = [bin_dir() / program]
    found = shutil.which(program)
    if found:
        candidates.append(Path(found))
    best: tuple[Path, int] | None = None
    for path in candidates:
        if not path.exists():
            continue
        out = subprocess.run([str(path), "--version"], capture_output=True, text=True).stdout
        m = re.search(r"(\d+)(?:\.\d+)?", out)
        if m and (best is None or int(m.group(1)) > best[1]):
            best = (path, int(m.group(1)))
    if best is None or best[1] < server_major:
        have = f"{best[0]} is version {best[1]}" if best else f"no {program} found"
        raise BackupFailed(reason=f"{have}, older than the server ({server_major}); install a newer PostgreSQL client")
    return best


def user_tables(conn: psycopg.Connection[Any], *, exclude_schemas: tuple[str, ...] = ()) -> list[tuple[str, str]]:
    return [(r["s"], r["t"]) for r in db.rows(conn, """
        select n.nspname as s, c.relname as t from pg_class c join pg_namespace n on n.oid = c.relnamespace
        where c.relkind in ('r', 'p') and n.nspname not in ('pg_catalog', 'information_schema')
          and n.nspname not like 'pg_toast%%' and n.nspname <> all(%s) order by 1, 2""", (list(exclude_schemas),))]


def table_checksums(conn: psycopg.Connection[Any], *, exclude_schemas: tuple[str, ...] = ("kbmigrate",)) -> dict[str, dict[str, Any]]:
    """{schema.table: {rows, checksum}} for every user table; call inside a transaction."""
    conn.execute("set local timezone = 'UTC'")
    conn.execute("set local extra_float_digits = 3")
    template = read_sql("report/table_checksums.sql")
    out: dict[str, dict[str, Any]] = {}
    for schema, table in user_tables(conn, exclude_schemas=exclude_schemas):
        row = db.rows(conn, sql.SQL(template).format(table=sql.Identifier(schema, table)))[0]
        out[f"{schema}.{table}"] = {"rows": int(row["row_count"]), "checksum": row["checksum"]}
    return out


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def dump(target: Target, run_id: str) -> dict[str, Any]:
    """Dump the target database; pg_dump gets the connection through its libpq environment."""
    snap = db.connect(target, autocommit=True, application_name="kbmigrate backup")
    major = int(db.scalar(snap, "show server_version_num")) // 10000
    pg_dump, dump_major = client("pg_dump", major)
    pg_restore, _ = client("pg_restore", major)
    folder = BACKUP_ROOT / run_id
    folder.mkdir(parents=True, exist_ok=True)
    folder.chmod(0o700)
    dbname = snap.info.dbname
    path = folder / f"{dbname}.dump"
    if path.exists():
        raise BackupFailed(reason=f"{path.relative_to(REPO_ROOT)} already exists; a run id is used once")
    env = {**os.environ, **libpq_env(target)}
    started = time.monotonic()
    try:
        snap.execute("begin isolation level repeatable read read only")
        snapshot = db.scalar(snap, "select pg_export_snapshot()")
        sums = table_checksums(snap)
        counts = {t: v["rows"] for t, v in sums.items()}
        write_fingerprints(snap, folder)
        old_umask = os.umask(0o077)
        try:
            done = subprocess.run([str(pg_dump), "--format=custom", f"--snapshot={snapshot}", "--file", str(path),
                                   "--no-password"], env=env, capture_output=True, text=True)
        finally:
            os.umask(old_umask)
        snap.execute("commit")
    finally:
        snap.close()
    if done.returncode != 0:
        raise BackupFailed(reason=(done.stderr.strip().splitlines() or ["pg_dump failed"])[-1])
    path.chmod(0o600)
    listing = subprocess.run([str(pg_restore), "--list", str(path)], capture_output=True, text=True, env=env)
    if listing.returncode != 0:
        raise BackupFailed(reason=f"pg_restore --list cannot read the dump: {listing.stderr.strip()[:200]}")
    entries = sum(1 for line in listing.stdout.splitlines() if line and not line.startswith(";"))
    version = subprocess.run([str(pg_dump), "--version"], capture_output=True, text=True).stdout.strip()
    try:
        shown = str(path.relative_to(REPO_ROOT))
    except ValueError:
        shown = str(path)
    info = {"path": shown, "sha256": sha256_file(path), "bytes": path.stat().st_size,
            "restore_list_entries": entries, "row_counts": counts, "pg_dump_version": version,
            "checksums": sums, "server_major": major, "seconds": round(time.monotonic() - started, 2)}
    (folder / "backup.json").write_text(json.dumps(info, indent=2))
    return info


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
    for table, query in FINGERPRINTS.items():
        if db.scalar(conn, "select to_regclass(%s) is null", (f"public.{table}",)):
            continue
        path = folder / f"{table}.fingerprints.gz"
        old = os.umask(0o077)
        try:
            with gzip.open(path, "wb") as out, conn.cursor().copy(f"copy ({query}) to stdout") as copy:
                for chunk in copy:
                    out.write(chunk)
        finally:
            os.umask(old)


def restore_drill(target: Target, info: dict[str, Any], run_id: str) -> dict[str, Any]:
    """Restore the dump into a scratch database and compare it with the dump-time figures.

    The scratch database goes on the target's server when the user may create databases,
    otherwise on the embedded server; it is dropped afterwards, whatever happens.
    """
    path = Path(info["path"]) if Path(info["path"]).is_absolute() else REPO_ROOT / info["path"]
    scratch = f"kbmigrate_drill_{re.sub(r'[^a-z0-9]', '_', run_id.lower())}"[:63]
    with db.connect(target, autocommit=True) as conn:
        may_create = bool(db.scalar(conn, "select rolcreatedb or rolsuper from pg_roles where rolname = current_user"))
    if may_create:
        server, where, flags = target, "the target's server", []
    else:
        from kbmigrate.embedded import EmbeddedServer

        server = Target(EmbeddedServer().ensure_running(), "embedded")
        where, flags = "the embedded server", ["--no-owner", "--no-privileges"]
    pg_restore, _ = client("pg_restore", int(info.get("server_major", 0)))
    admin_target = server.with_database("postgres") if server.source == "embedded" else server
    started = time.monotonic()
    with db.connect(admin_target, autocommit=True) as admin:
        db.drop_database(admin, scratch)
        db.create_database(admin, scratch, template="template0")
    try:
        env = {**os.environ, **libpq_env(server.with_database(scratch))}
        if not server.conninfo:
            env["PGDATABASE"] = scratch
        done = subprocess.run([str(pg_restore), "--exit-on-error", "--no-password", *flags, "--dbname", scratch, str(path)],
                              env=env, capture_output=True, text=True)
        if done.returncode != 0:
            raise BackupFailed(reason=f"the restore drill could not restore the dump: "
                                      f"{(done.stderr.strip().splitlines() or ['pg_restore failed'])[-1]}")
        with db.connect(server.with_database(scratch), autocommit=True) as conn, conn.transaction():
            restored = table_checksums(conn)
    finally:
        with db.connect(admin_target, autocommit=True) as admin:
            db.drop_database(admin, scratch)
    expected = info["checksums"]
    rows = []
    for table in sorted(set(expected) | set(restored)):
        e, r = expected.get(table), restored.get(table)
        rows.append({"table": table, "rows at dump": e and e["rows"], "rows restored": r and r["rows"],
                     "checksum equal": bool(e and r and e["checksum"] == r["checksum"])})
    return {"where": where, "scratch_database": scratch, "seconds": round(time.monotonic() - started, 2), "tables": rows,
            "ok": all(x["rows at dump"] == x["rows restored"] for x in rows)
                  and all(x["checksum equal"] for x in rows if x["table"].startswith("public.knowledge_base"))}


def record(run_id: str, key: str, value: Any) -> None:
    """Add ``key`` to backups/<run_id>/backup.json (the runner copies it into the manifest)."""
    path = BACKUP_ROOT / run_id / "backup.json"
    info = json.loads(path.read_text())
    info[key] = value
    path.write_text(json.dumps(info, indent=2, default=str))
