"""The backup step: a full pg_dump (custom format) taken before anything changes.

The dump and the per-table row counts come from one snapshot: a repeatable-read transaction
exports it, pg_dump reads it with --snapshot, and the counts are taken inside it. The file is
written to backups/<run_id>/ with mode 0600, and described in backups/<run_id>/backup.json
(which the runner copies into the manifest).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

from kbmigrate import db
from kbmigrate.conninfo import Target, libpq_env
from kbmigrate.embedded import bin_dir
from kbmigrate.errors import KbError
from kbmigrate.paths import REPO_ROOT

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


def table_counts(conn: psycopg.Connection[Any]) -> dict[str, int]:
    tables = db.rows(conn, """select n.nspname as s, c.relname as t from pg_class c join pg_namespace n on n.oid = c.relnamespace
                              where c.relkind in ('r', 'p') and n.nspname not in ('pg_catalog', 'information_schema')
                                and n.nspname not like 'pg_toast%%' order by 1, 2""")
    return {f"{r['s']}.{r['t']}": int(db.scalar(conn, sql.SQL("select count(*) from {}").format(sql.Identifier(r["s"], r["t"]))))
            for r in tables}


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
    try:
        snap.execute("begin isolation level repeatable read read only")
        snapshot = db.scalar(snap, "select pg_export_snapshot()")
        counts = table_counts(snap)
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
            "restore_list_entries": entries, "row_counts": counts, "pg_dump_version": version}
    (folder / "backup.json").write_text(json.dumps(info, indent=2))
    return info
