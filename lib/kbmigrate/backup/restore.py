"""Rollback: restore a run's backup in place, and prove the pre-migration state is back.

Only the tables the migration changed are restored (knowledge_base, and knowledge_base_sections
when it existed before), with their indexes, constraints, policies and dependent views; other
tables keep whatever the application wrote to them.

**All or nothing.** Everything happens in one transaction on one connection: the objects the
migration added are dropped (``sql/revert/rollback_prepare.sql``), the restore script that
``pg_restore`` (of the server's own major version) writes for those tables is executed, the
restored tables' checksums are compared with the backup's, and the ledger row is written. Any
failure (a lock not granted, a dependent object, a damaged archive, a checksum) rolls all of it
back: the application sees exactly what it saw before the rollback started, and a retry finds
the migration's own records (its legacy imports) intact. What can be checked before the first
destructive statement is checked first: the client, the archive, the privileges.
"""

from __future__ import annotations

import difflib
import gzip
import json
import os
import re
import subprocess
import tempfile
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

from kbmigrate import db
from kbmigrate.backup import dump as backup
from kbmigrate.checks import clients, preflight, scope
from kbmigrate.digest import sha256_file
from kbmigrate.engine import gates, ledger
from kbmigrate.conninfo import Target, libpq_env
from kbmigrate.errors import GateClosed, RollbackRefused, RollbackUndone
from kbmigrate.engine.params import RunParams
from kbmigrate.paths import REPO_ROOT, RUNS_DIR, from_evidence, read_sql
from kbmigrate.engine import transaction
from kbmigrate.engine.statistics import analyzed

KB_TABLES = ("knowledge_base", "knowledge_base_sections")
PREPARE = "revert/rollback_prepare.sql"  # what the migration added, dropped before the restore script runs


def run_folder(run_id: str) -> Path:
    return RUNS_DIR / run_id


def load(run_id: str) -> dict[str, Any]:
    """The run's manifest, its ``backup`` the one the run relies on as the engine's gates hold it
    (its own, or the run's it named): refused unless its drill passed and its file has its sha256."""
    path = run_folder(run_id) / "manifest.json"
    if not path.exists():
        raise RollbackRefused(reason=f"no run {run_id!r} (no {path})")
    manifest = json.loads(path.read_text())
    try:
        owner, info = gates.backup_for(run_id)
    except GateClosed as exc:
        raise RollbackRefused(reason=exc.message) from None
    return {**manifest, "backup": info, "backup_taken_by": owner}


def dump_path(info: dict[str, Any]) -> Path:
    return from_evidence(info["path"])


def _tool(info: dict[str, Any], name: str) -> str:
    return str(clients.find(name, int(info["server_major"])))


def app_writes(conn: psycopg.Connection[Any], manifest: dict[str, Any]) -> list[dict[str, Any]]:
    """Rows of the KB tables written by the application since the run's backup: a rollback would
    lose them. The migration's own changes (its new columns, imported entries, the sections it
    seeded from the run's own sections file) are not counted. Reads in a transaction (or a
    savepoint of the caller's) that is rolled back: ``restore`` counts again under its locks."""
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


def restore_list(pg_restore: str, info: dict[str, Any], tables: list[str], views: list[str]) -> str:
    """The dump's table of contents, filtered to the given tables and everything that hangs on them."""
    dump = str(dump_path(info))
    toc = subprocess.run([pg_restore, "--list", dump], capture_output=True, text=True, check=True).stdout
    schema = subprocess.run([pg_restore, "--schema-only", "--file", "-", dump],
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


def preconditions(conn: psycopg.Connection[Any], info: dict[str, Any], in_dump: list[str]) -> None:
    """What can fail for want of a client or a privilege, or go wrong under a setting the database
    or role carries (preflight's own checks of them), checked before anything is dropped."""
    wrong = [f"{r['check']}: {r['detail']}" for r in preflight.settings_rows(conn) if r["status"] == "NO-GO"]
    if wrong:
        raise RollbackRefused(reason="; ".join(wrong))
    major = int(db.scalar(conn, "show server_version_num")) // 10000
    if major != int(info["server_major"]):
        raise RollbackRefused(reason=f"the backup is of a PostgreSQL {info['server_major']} server, this one is {major}")
    clients.find("pg_restore", major)
    for table in [*in_dump, "knowledge_base"]:
        ok = db.scalar(conn, """select coalesce(pg_has_role(current_user, c.relowner, 'USAGE'), false)
                                from pg_class c where c.oid = to_regclass(%s)""", (f"public.{table}",))
        if ok is False:
            raise RollbackRefused(reason=f"{db.scalar(conn, 'select current_user')} does not own public.{table}: "
                                         "run the rollback as the role that owns the KB tables")
    if not db.scalar(conn, "select has_schema_privilege('public', 'create')"):
        raise RollbackRefused(reason="the current user may not create objects in schema public")


_HEADER_TIMEOUTS = re.compile(r"^SET (statement_timeout|lock_timeout|idle_in_transaction_session_timeout|"
                              r"transaction_timeout) = 0;$")


def script_parts(lines: Iterable[str]) -> Iterator[tuple[str, str, Iterator[str]]]:
    """Split a pg_restore script, as it streams, into ("sql", text, empty) and
    ("copy", "COPY ... FROM stdin", its data lines); the caller reads each part's data lines to
    the end before asking for the next part, so a large table is never held in memory.

    A COPY block is recognised only right after pg_restore's "Data for Name: ...; Type: TABLE DATA"
    header. The header's own "SET ... timeout = 0" lines are left out, so the rollback's timeouts
    hold; psql's \\restrict meta-commands are left out too (they are for psql, not the server).
    """
    lines = iter(lines)

    def data(statement: str) -> Iterator[str]:
        for row in lines:
            if row.rstrip("\n") == "\\.":
                return
            yield row if row.endswith("\n") else row + "\n"
        raise RollbackRefused(reason=f"the restore script ends inside the data of {statement}")

    buffer: list[str] = []
    expect_copy = False
    for raw in lines:
        line = raw.rstrip("\n")
        if line.startswith("-- Data for Name: ") and "; Type: TABLE DATA;" in line:
            expect_copy = True
        if expect_copy and line.startswith("COPY ") and line.endswith(" FROM stdin;"):
            if buffer:
                yield "sql", "\n".join(buffer), iter(())
                buffer = []
            yield "copy", line.removesuffix(";"), data(line)
            expect_copy = False
            continue
        if _HEADER_TIMEOUTS.match(line) or line.startswith(("\\restrict ", "\\unrestrict ")):
            continue
        buffer.append(line)
    if buffer:
        yield "sql", "\n".join(buffer), iter(())


def lost_writes(counts: list[dict[str, Any]]) -> int:
    return sum(int(c["inserted"]) + int(c["updated"]) + int(c["deleted"]) for c in counts)


def restore(target: Target, rollback_of: str, manifest: dict[str, Any], params: RunParams,
            rollback_id: str, *, accept_loss: bool = False) -> dict[str, Any]:
    """Restore the KB tables from the run's backup, all in one transaction (see the module's
    docstring). The gates are the library's: the backup is proven (its drill passed, its file has
    its sha256) and of this very database, and the application's writes since the backup are
    counted inside the restore's transaction, after its locks are granted, so no write can slip in
    between the count and the restore; any loss refuses unless ``accept_loss``."""
    try:
        owner, info = gates.backup_for(rollback_of)
    except GateClosed as exc:
        raise RollbackRefused(reason=exc.message) from None
    in_dump = [t for t in KB_TABLES if f"public.{t}" in info["row_counts"]]
    with db.connect(target, autocommit=True, application_name=f"kbmigrate rollback {rollback_id}"[:63]) as conn:
        here, of = gates.identity(conn), gates.Identity(**info["identity"])
        if here != of:
            raise RollbackRefused(reason=f"run {owner}'s backup is of {of.label()}, not {here.label()}")
        preconditions(conn, info, in_dump)
        return restore_in(conn, rollback_of, (owner, info), manifest, params, rollback_id, pg_restore=_tool(info, "pg_restore"),
                          accept_loss=accept_loss, redact=target.redact)


def restore_in(conn: psycopg.Connection[Any], rollback_of: str, backup_of: tuple[str, dict[str, Any]], manifest: dict[str, Any],
               params: RunParams, rollback_id: str, *, pg_restore: str, accept_loss: bool = False,
               options: tuple[str, ...] = (), leave_out: Callable[[str], bool] = lambda line: False,
               redact: Callable[[str], str] = str) -> dict[str, Any]:
    """The restore's one transaction on ``conn`` (checked already: which database, the client, the
    privileges). ``backup_of``: the run whose backup it is, and the backup (``gates.backup_for``).
    ``pg_restore`` writes the script, with ``options`` and without the table of
    contents' lines ``leave_out`` names: the rehearsal's rollback on the copy
    (``backup/rollback_proof.py``) restores as the drill did, without owners, privileges and the
    foreign keys into the platform's tables."""
    owner, info = backup_of
    in_dump = [t for t in KB_TABLES if f"public.{t}" in info["row_counts"]]
    manifest = {**manifest, "backup": info}
    views = [r["v"] for r in db.rows(conn, """
        select distinct c.relname as v from pg_depend d join pg_rewrite r on r.oid = d.objid
        join pg_class c on c.oid = r.ev_class
        where d.refobjid = any(array[to_regclass('public.knowledge_base'), to_regclass('public.knowledge_base_sections')])
          and c.relname <> 'vw_workspace_sections' and c.oid <> d.refobjid""")]
    listing = "".join(f"{line}\n" for line in restore_list(pg_restore, info, in_dump, views).splitlines()
                      if not leave_out(line))
    expected_copies = sum(1 for line in listing.splitlines() if " TABLE DATA " in line)
    settings = {**params.settings(rollback_id), "kbmigrate.sections_in_dump": str("knowledge_base_sections" in in_dump).lower()}
    with tempfile.NamedTemporaryFile("w", suffix=".list", delete=False) as fh:
        fh.write(listing)
    stderr_file = tempfile.TemporaryFile("w+", encoding="utf-8")  # a pipe could fill up and stall pg_restore
    script = subprocess.Popen([pg_restore, "--clean", "--if-exists", *options, "--use-list", fh.name,
                               "--file", "-", str(dump_path(info))],
                              stdout=subprocess.PIPE, stderr=stderr_file, text=True, encoding="utf-8")
    copies = rows_loaded = 0
    try:
        with conn.transaction():
            transaction.begin(conn, params, settings)  # no lock retries: the restore stream cannot be replayed
            present = [t for t in KB_TABLES if db.scalar(conn, "select to_regclass(%s) is not null", (f"public.{t}",))]
            conn.execute(sql.SQL("lock table {} in access exclusive mode").format(
                sql.SQL(", ").join(sql.Identifier("public", t) for t in present)))
            counted = app_writes(conn, manifest)  # under the locks: no write can come after this count
            lost_rows = lost_writes(counted)
            if lost_rows and not accept_loss:
                raise RollbackRefused(reason=f"the application wrote {lost_rows} rows to the KB tables after the "
                                             "backup (counted under the restore's locks); a rollback loses them. "
                                             "Export what must be kept, then run again with --accept-loss",
                                      before_anything=True)
            conn.execute(read_sql(PREPARE))
            assert script.stdout is not None
            for kind, text, data in script_parts(iter(script.stdout.readline, "")):
                if kind == "sql":
                    conn.execute(text)
                    continue
                with conn.cursor().copy(text) as copy:
                    for row in data:
                        copy.write(row)
                        rows_loaded += 1
                copies += 1
            if script.wait() != 0:
                stderr_file.seek(0)
                raise RollbackRefused(reason="pg_restore could not write the restore script: "
                                             + (stderr_file.read().strip()[-200:] or "?"))
            if copies != expected_copies:
                raise RollbackRefused(reason=f"the restore script held {copies} tables' data, expected {expected_copies}")
            names = [f"public.{t}" for t in in_dump]
            restored = backup.table_checksums(conn, ["public"], only=names)
            wrong = [t for t in names if restored.get(t) != info["checksums"].get(t)]
            if wrong:
                raise RollbackRefused(reason=f"after the restore {', '.join(wrong)} do not match the backup's checksums")
            detail = {"restored_tables": [f"public.{t}" for t in in_dump], "dependent_views": views,
                      "toc_entries": listing.count("\n"), "rows_loaded": rows_loaded,
                      "lost_rows_accepted": lost_rows, "writes_counted_under_lock": counted,
                      # compared inside the transaction, before COMMIT: no write of the application can be in them
                      "equal_to_the_backup_before_commit": [t for t in names if restored.get(t) == info["checksums"].get(t)],
                      "backup_taken_by": owner}
            if ledger.exists(conn):
                ledger.record(conn, run_id=rollback_id, step="07_rollback", change=f"rollback of {rollback_of}",
                              sql_sha256=sha256_file(REPO_ROOT / "sql" / PREPARE),
                              rows_affected=rows_loaded, outcome="applied", detail=detail)
    except RollbackRefused as exc:
        if exc.details.get("before_anything"):  # refused under the locks, before the first change: nothing was undone
            raise RollbackRefused(reason=exc.details["reason"]) from None
        raise RollbackUndone(reason=redact(exc.details["reason"])) from None
    except psycopg.Error as exc:
        raise RollbackUndone(reason=redact(transaction.error_text(exc) + _diag_detail(exc)),
                             locked=isinstance(exc, psycopg.errors.LockNotAvailable)) from None
    finally:
        if script.poll() is None:
            script.kill()
        script.wait()
        stderr_file.close()
        os.unlink(fh.name)
    detail["analyzed"] = analyzed(conn, [f"public.{t}" for t in in_dump])
    return detail


def _diag_detail(exc: psycopg.Error) -> str:
    detail = getattr(getattr(exc, "diag", None), "message_detail", None)
    return f" ({detail.splitlines()[0]})" if detail else ""


# Column options the server stamps on each column it creates (PostgreSQL 15.20 writes
# pg_attver=<n>): a restored table is a new table with new stamps, as it has new OIDs.
_SERVER_STAMP = re.compile(r"(?:, )?\bpg_attver=\d+")
_EMPTY_OPTIONS = re.compile(r"^ALTER TABLE ONLY \S+ ALTER COLUMN \S+ SET \(\s*\);$")


def normalise(schema_sql: str) -> list[str]:
    """A schema dump without what differs between two equal schemas: pg_dump's header lines and
    psql's restrict keys, and the server's own per-column stamps."""
    out = []
    for line in schema_sql.splitlines():
        if line.startswith(("\\restrict", "\\unrestrict", "-- Dumped from", "-- Dumped by")):
            continue
        if "pg_attver=" in line:
            line = _SERVER_STAMP.sub("", line).replace("SET (, ", "SET (")
            if _EMPTY_OPTIONS.match(line):
                continue
        out.append(line)
    return [ln for i, ln in enumerate(out) if ln.strip() or (i and out[i - 1].strip())]


def compared_schemas(info: dict[str, Any]) -> list[str]:
    """The schemas the proof compares: the backup's, without the tool's ledger, plus kb_private
    (the migration's, which must be gone again when the backup predates it)."""
    return sorted({*backup.data_schemas(info["scope"]["schemas"]), "kb_private"})


def _schema_text(info: dict[str, Any], archive: Path, schemas: list[str]) -> str:
    return subprocess.run([_tool(info, "pg_restore"), "--schema-only", "--file", "-",
                           *[f"--schema={s}" for s in schemas], str(archive)],
                          capture_output=True, text=True, check=True).stdout


def schema_diff(target: Target, info: dict[str, Any]) -> list[str]:
    """Unified diff between the schema at backup time and now, over the backup's schemas (the
    ledger aside). Both sides go through the same pg_restore, so they are written alike."""
    schemas = compared_schemas(info)
    env = {**os.environ, **libpq_env(target)}
    with db.connect(target) as conn:
        env["PGDATABASE"] = conn.info.dbname
    with tempfile.TemporaryDirectory(prefix="kbmigrate-schema-") as tmp:
        archive = Path(tmp) / "now.dump"
        limits = RunParams()
        try:
            now = clients.run_bounded(Path(_tool(info, "pg_dump")), ["--schema-only", "--format=custom", "--file",
                                                                     str(archive), "--no-password",
                                                                     *scope.pg_dump_args(schemas)],
                                      env=env, seconds=limits.seconds("read_timeout"), lock_wait=limits.lock_timeout,
                                      application_name="kbmigrate schema diff")
        except subprocess.TimeoutExpired:
            raise RollbackRefused(reason=f"pg_dump --schema-only ran longer than {limits.read_timeout}") from None
        if now.returncode != 0:
            raise RollbackRefused(reason=f"pg_dump --schema-only failed: {target.redact(now.stderr.strip())[:200]}")
        after = _schema_text(info, archive, schemas)
    before = _schema_text(info, dump_path(info), schemas)
    return list(difflib.unified_diff(normalise(before), normalise(after), "at backup", "now", lineterm="", n=1))


def data_diff(conn: psycopg.Connection[Any], info: dict[str, Any]) -> list[dict[str, Any]]:
    with conn.transaction(force_rollback=True):
        now = backup.table_checksums(conn, compared_schemas(info))
    rows = []
    for table in sorted(set(now) | set(info["checksums"])):
        b, n = info["checksums"].get(table), now.get(table)
        rows.append({"table": table, "rows at backup": b and b["rows"], "rows now": n and n["rows"],
                     "equal": bool(b and n and b == n)})
    return rows
