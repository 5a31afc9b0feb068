"""Preflight: compare the database with what the runbook expects, and say GO or NO-GO.

Reads only; changes nothing (not even the ledger). Each check gives one row: the check,
GO / NO-GO / INFO, and what was found. ``verdict`` records the outcome as the run's GO gate
(``engine/gates.py``), which every change of the run requires, on this same database.
"""

from __future__ import annotations

import shutil
import uuid
from pathlib import Path
from typing import Any

import psycopg

from kbmigrate import db
from kbmigrate.checks import clients, pooler, rls, scope
from kbmigrate.components.embedded import EmbeddedServer
from kbmigrate.engine import gates, ledger, plan
from kbmigrate.conninfo import Target
from kbmigrate.errors import ClientMissing
from kbmigrate.engine.params import RunParams
from kbmigrate.paths import BACKUP_ROOT, read_sql

MIN_SERVER = 150000  # PostgreSQL 15: ON DELETE SET NULL (column), security_invoker views

# What the spec's "database before" requires: table -> {column: accepted types}.
EXPECTED: dict[str, dict[str, tuple[str, ...]]] = {
    "workspaces": {"id": ("uuid",), "name": ("text", "character varying"), "is_active": ("boolean",)},
    "users": {"id": ("uuid",), "current_workspace_id": ("uuid",)},
    "knowledge_base": {"id": ("uuid",), "title": ("text", "character varying"), "content": ("text",),
                       "metadata": ("jsonb",), "created_by": ("uuid",), "created_at": ("timestamp with time zone",),
                       "updated_at": ("timestamp with time zone",)},
}
OPTIONAL_KB = {"workspace_id": ("uuid",), "is_shared": ("boolean",), "section_id": ("uuid",)}
SECTIONS = {"id": ("uuid",), "workspace_id": ("uuid",), "name": ("text", "character varying"), "description": ("text",),
            "display_order": ("integer", "smallint", "bigint"), "icon": ("text", "character varying"),
            "is_active": ("boolean",), "created_at": ("timestamp with time zone",),
            "updated_at": ("timestamp with time zone",)}


def _row(check: str, ok: bool | None, detail: str) -> dict[str, str]:
    return {"check": check, "status": "INFO" if ok is None else ("GO" if ok else "NO-GO"), "detail": detail}


def _columns(found: list[dict[str, Any]]) -> dict[str, dict[str, str]]:
    """report/preflight_columns.sql's rows, by table."""
    out: dict[str, dict[str, str]] = {}
    for r in found:
        out.setdefault(r["table_name"], {})[r["column_name"]] = r["data_type"]
    return out


RELATIONS = ("knowledge_base", "knowledge_base_sections", "workspaces")


def _facts(conn: psycopg.Connection[Any], params: RunParams) -> dict[str, list[dict[str, Any]]]:
    """What most checks read, in one round trip."""
    schema, table = params.membership_split
    queries: dict[str, tuple[str, Any]] = {
        "settings": (SETTINGS, None),
        "server": ("""select current_setting('server_version_num')::int as num, current_setting('server_version') as version,
                             to_regprocedure('auth.uid()') is not null as has_uid,
                             pg_database_size(current_database()) as size,
                             array(select t from unnest(%s::text[]) as t where to_regclass('public.' || t) is not null) as present""",
                   (list(RELATIONS),)),
        "roles": ("select rolname from pg_roles where rolname in ('anon','authenticated','service_role')", None),
        "columns": (read_sql("report/preflight_columns.sql"), {"schema": "public", "tables": [*EXPECTED, "knowledge_base_sections"]}),
        "membership": (read_sql("report/preflight_columns.sql"), {"schema": schema, "tables": [table]}),
        "rls": ("""select t as tablename, c.relrowsecurity as rls,
                          (select count(*) from pg_policies p where p.schemaname = 'public' and p.tablename = c.relname) as policies
                   from unnest(array['knowledge_base', 'knowledge_base_sections']) with ordinality as u(t, n)
                   join pg_class c on c.oid = to_regclass('public.' || t) order by n""", None),
        "triggers": ("""select string_agg(t.tgname, ', ' order by t.tgname) as names from pg_trigger t
                        where t.tgrelid = to_regclass('public.knowledge_base') and not t.tgisinternal and t.tgenabled <> 'D'
                          and (t.tgtype & 16) <> 0""", None),
        "privileges": ("""select (select rolsuper from pg_roles where rolname = current_user) as superuser,
               coalesce((select pg_has_role(current_user, c.relowner, 'usage') from pg_class c
                         where c.oid = to_regclass('public.knowledge_base')), false) as owns_kb,
               has_database_privilege(current_database(), 'create') as can_create_schema,
               coalesce((select bool_and(pg_has_role(current_user, r.oid, 'member')) from pg_roles r
                         where r.rolname in ('anon', 'authenticated', 'service_role')), false) as acts_as_api_roles""", None),
        "rehearsal": (REHEARSAL_FACTS, None),
    }
    return dict(zip(queries, db.batch(conn, list(queries.values()))))


def _shape(table: str, have: dict[str, str] | None, want: dict[str, tuple[str, ...]]) -> tuple[bool, str]:
    if have is None:
        return False, "table missing"
    problems = [f"{c} missing" for c in want if c not in have]
    problems += [f"{c} is {have[c]}, expected {' or '.join(t)}" for c, t in want.items() if c in have and have[c] not in t]
    return (not problems), ("; ".join(problems) or f"{len(have)} columns as expected")


def auth_uid_reads_claims(conn: psycopg.Connection[Any]) -> tuple[bool, str]:
    """Does auth.uid() return the user for the claims the API sets today (request.jwt.claims)?
    Acted out as the API does it, in a transaction that is rolled back (one round trip)."""
    probe = str(uuid.uuid4())
    try:
        if conn.autocommit:  # the run's sessions: one pipeline
            got = rls.as_each(conn, [("authenticated", probe, [("select auth.uid()::text", None)])])[0][0][0][0]
        else:
            with conn.transaction(force_rollback=True):
                rls.claim(conn, probe)
                got = db.scalar(conn, "select auth.uid()::text")
    except psycopg.Error as exc:
        return False, f"cannot act as an API user to try auth.uid(): {exc.diag.message_primary or exc}"
    if got == probe:
        return True, "auth.uid() returns the user of request.jwt.claims, as the API sets it"
    return False, (f"auth.uid() returned {got or 'NULL'} for request.jwt.claims with sub {probe}: it reads only the "
                   "older request.jwt.claim.sub, which the API no longer sets, so after the migration every member "
                   "would see only the shared entries. Update auth.uid() as supabase/auth does (migration "
                   "20211202183645_update_auth_uid) first")


# Settings a database or role can carry that would change what the migration does (they reach
# every session of the run; a non-superuser cannot override the superuser-only ones).
SETTINGS = """select current_setting('session_replication_role') as replication_role,
                    current_setting('default_transaction_read_only') as read_only,
                    current_setting('default_transaction_isolation') as isolation,
                    current_setting('plpgsql.check_asserts', true) as check_asserts,
                    current_setting('search_path') as search_path,
                    'public' = any(current_schemas(false)) as public_on_path,
                    coalesce((current_schemas(false))[1], '') as first_schema"""


def settings_rows(conn: psycopg.Connection[Any], found: dict[str, Any] | None = None) -> list[dict[str, str]]:
    s = found or db.rows(conn, SETTINGS)[0]
    role = s["replication_role"]
    rows = [
        _row("setting session_replication_role", role == "origin",
             "origin" if role == "origin" else f"{role}: triggers and foreign-key checks do not fire in this "
             "database's sessions, so the migration's constraints would not be enforced while it runs; reset it "
             "(alter database/role ... reset session_replication_role) first"),
        _row("setting default_transaction_read_only", s["read_only"] == "off",
             "off" if s["read_only"] == "off" else "on: every change would fail; find out why the database is "
             "read-only (a replica, a maintenance setting) before migrating"),
        _row("setting search_path", bool(s["public_on_path"] and s["first_schema"] == "public"),
             f"{s['search_path']}" + ("" if s["public_on_path"] and s["first_schema"] == "public" else
                                     ": public must come first, or the names the application and its functions "
                                     "use could resolve to other objects; reset it for the database and the role")),
        _row("setting default_transaction_isolation", None, f"{s['isolation']} (each change sets what it needs)"),
        _row("setting plpgsql.check_asserts", None,
             f"{s['check_asserts'] or 'on (default)'}: the migration's verify scripts fail by raising, not by "
             "ASSERT, so they hold either way"),
    ]
    return rows


def drill_server() -> tuple[bool, str]:
    """Can the local server the restore drill restores into start? (Before anything, not at 01.)"""
    server = EmbeddedServer()
    try:
        with db.connect(Target(server.ensure_running(), "embedded"), autocommit=True, connect_timeout=10) as conn:
            return True, f"PostgreSQL {db.server_version(conn)} on 127.0.0.1:{conn.info.port} (the embedded server)"
    except Exception as exc:  # noqa: BLE001 - any reason it cannot start is a NO-GO, named
        return False, f"the local server for the restore drill does not start: {str(exc).splitlines()[0][:300]}"


REHEARSAL_CONNECTIONS = 6  # the drill's pg_restore: up to 4 jobs and its leader; then the rehearsal's session and its pg_dump


REHEARSAL_FACTS = """select r.rolsuper as superuser, r.rolcreatedb as createdb, pg_database_size(current_database()) as size,
       current_setting('max_connections')::int - current_setting('superuser_reserved_connections')::int
         - (select count(*) from pg_stat_activity where backend_type = 'client backend') as free_connections
from pg_roles r where r.rolname = current_user"""


def on_target(facts: dict[str, Any]) -> tuple[bool, str]:
    """With ``rehearse_on=target`` (``facts``: a row of REHEARSAL_FACTS): may the user create (and
    drop) the scratch databases there, and is there room for their connections? The copy needs
    about the database's size on the target's disk, which SQL cannot see on Supabase: the detail
    says how much, for the operator to check."""
    may = bool(facts["superuser"] or facts["createdb"])
    free, size = int(facts["free_connections"]), int(facts["size"])
    need = f"the copy needs about {size / 2**20:,.0f} MiB of the target's disk while it exists (SQL cannot see the " \
           "free disk of a Supabase project: see its dashboard)"
    if not may:
        return False, "the current user has no CREATEDB privilege: rehearse locally (rehearse_on=local) or " \
                      "grant it (Supabase's postgres has it)"
    if free < REHEARSAL_CONNECTIONS:
        return False, f"{free} connections left of max_connections, the rehearsal needs {REHEARSAL_CONNECTIONS}"
    return True, f"CREATEDB, {free} connections free; {need}"


def verdict(conn: psycopg.Connection[Any], target: Target, params: RunParams, run_id: str, **options: Any) -> list[dict[str, str]]:
    """The checks, and where the migration stands for this run's backup, recorded as the run's
    GO gate (or NO-GO) on this database."""
    rows = checks(conn, target, params, run_id=run_id, **options)
    rows.append(_row("migration begun, and the backup", *begun(conn, run_id)))
    gates.record_verdict(conn, run_id, rows)
    return rows


def begun(conn: psycopg.Connection[Any], run_id: str) -> tuple[bool | None, str]:
    """A run that takes its own backup must take it before the migration's first change: a backup
    of a half-migrated database is no way back. A run that relies on an earlier run's backup may go on."""
    first = gates.first_change(conn)
    relies_on = gates.read(run_id).get("backup_of")
    if first is None:
        return True, "not begun: this run's backup will hold the database as it was"
    started = f"begun by run {first['run_id']} ({first['change']} at {first['applied_at']})"
    if relies_on:
        return True, f"{started}; this run relies on run {relies_on}'s backup from before"
    held = gates.read(first["run_id"])
    before = held.get("backup_of") or (first["run_id"] if held.get("backup") else "RUN")
    return False, (f"{started}: a backup taken now would not hold the database as it was, so no change of this "
                   f"run could be rolled back. Rely on the backup from before the first change (--backup-of "
                   f"{before}), or continue run {first['run_id']} (kbmigrate run --resume {first['run_id']}, "
                   "with --only STEP when it succeeded)")


def checks(conn: psycopg.Connection[Any], target: Target, params: RunParams, *, long_tx_seconds: float = 60.0,
           backup_dir: Path | None = None, run_id: str | None = None) -> list[dict[str, str]]:
    backup_dir = backup_dir or BACKUP_ROOT
    rows: list[dict[str, str]] = []
    rows.append(_row("connection", *connection(conn, target, run_id)))
    try:
        rows.append(_row("database identity", True, gates.identity(conn).label()))
    except psycopg.Error as exc:
        rows.append(_row("database identity", False, "cannot read the server's system identifier "
                         f"(pg_control_system()): {exc.diag.message_primary or exc}; the gates need it"))
    facts = _facts(conn, params)
    server = facts["server"][0]
    rows += settings_rows(conn, facts["settings"][0])
    version = int(server["num"])
    rows.append(_row("server version", version >= MIN_SERVER, f"PostgreSQL {server['version']} (need 15 or newer)"))
    has_uid = bool(server["has_uid"])
    rows.append(_row("Supabase auth", has_uid, "auth.uid() present" if has_uid else
                     "auth.uid() missing: not a Supabase database (kbmigrate compat adds a stand-in)"))
    if has_uid:
        rows.append(_row("auth.uid() and the API's claims", *auth_uid_reads_claims(conn)))
    roles = {r["rolname"] for r in facts["roles"]}
    rows.append(_row("API roles", len(roles) == 3, ", ".join(sorted(roles)) or "none of anon, authenticated, service_role"))

    cols = _columns(facts["columns"])
    for table, want in EXPECTED.items():
        ok, detail = _shape(table, cols.get(table), want)
        if table == "knowledge_base" and table not in cols:
            similar = db.rows(conn, "select string_agg(relname, ', ') as names from pg_class c join pg_namespace n "
                                    "on n.oid = c.relnamespace where n.nspname = 'public' and relkind = 'r' "
                                    "and relname ilike '%%knowledge%%'")[0]["names"]
            if similar:
                detail += f" (found instead: {similar}; the runbook only migrates public.knowledge_base)"
        rows.append(_row(f"table public.{table}", ok, detail))
    if "knowledge_base" in cols:
        wrong = [f"{c} is {cols['knowledge_base'][c]}" for c, t in OPTIONAL_KB.items()
                 if c in cols["knowledge_base"] and cols["knowledge_base"][c] not in t]
        present = [c for c in OPTIONAL_KB if c in cols["knowledge_base"]]
        rows.append(_row("knowledge_base new columns", not wrong,
                         "; ".join(wrong) or (f"already there: {', '.join(present)}" if present else "none yet (added by 02_schema)")))
    if "knowledge_base_sections" in cols:
        ok, detail = _shape("knowledge_base_sections", cols["knowledge_base_sections"], SECTIONS)
        rows.append(_row("table public.knowledge_base_sections", ok, "exists; " + detail))
    else:
        rows.append(_row("table public.knowledge_base_sections", None, "absent (created by 02_schema)"))

    for state in facts["rls"]:
        table = state["tablename"]
        rls, policies = state["rls"], state["policies"]
        if rls and not policies:
            rows.append(_row(f"RLS on {table}", False, "LOCKOUT: RLS is enabled with no policy, so no API user can read "
                                                      "or write it today; find out why before migrating"))
        elif policies and not rls:
            rows.append(_row(f"RLS on {table}", False, f"LEAK: {policies} policies are defined but RLS is disabled, "
                                                      "so they protect nothing; find out why before migrating"))
        else:
            rows.append(_row(f"RLS on {table}", None, f"rls={'on' if rls else 'off'}, {policies} policies"))

    triggers = facts["triggers"][0]["names"] if "knowledge_base" in cols else None
    rows.append(_row("update triggers on knowledge_base", not triggers,
                     f"{triggers} fire on UPDATE: the backfill would run them (e.g. an updated_at trigger rewrites "
                     "content timestamps the migration must keep); disable them for the window, or review them first"
                     if triggers else "none"))

    schema, table = params.membership_split
    mcols = _columns(facts["membership"]).get(table)
    want = {params.membership_user_column: ("uuid",), params.membership_workspace_column: ("uuid",),
            params.membership_joined_column: ("timestamp with time zone", "timestamp without time zone")}
    ok, detail = _shape(table, mcols, want)
    rows.append(_row(f"membership table {schema}.{table}", ok, detail))

    privileges = facts["privileges"][0]
    rows.append(_row("privileges", bool((privileges["superuser"] or (privileges["owns_kb"] and privileges["can_create_schema"]))
                                        and privileges["acts_as_api_roles"]),
                     f"superuser={privileges['superuser']}, owns knowledge_base={privileges['owns_kb']}, "
                     f"create schema={privileges['can_create_schema']}, may act as anon/authenticated/service_role "
                     f"(the smoke tests do)={privileges['acts_as_api_roles']}"))

    changed = ledger.drift(conn, plan.deploy_hashes())
    listed = "; ".join(f"{d['change']}: applied by run {d['run_id']} with sql {d['applied_with']}, "
                       f"sql/deploy/{d['change']}.sql is now {d['file_now']}" for d in changed)
    rows.append(_row("ledger and the SQL files", not changed or params.accept_changed_sql,
                     "every change in effect was applied by the SQL files as they are now" if not changed else
                     (f"accepted (accept_changed_sql): {listed}" if params.accept_changed_sql else
                      f"{listed}. A change already applied is not applied again, so the edit would silently do "
                      "nothing: revert the file, or review the edit and run with -p accept_changed_sql=true")))

    relations = [f"public.{t}" for t in RELATIONS if t in server["present"]]
    busy = db.rows(conn, read_sql("report/preflight_activity.sql"), {"relations": relations, "threshold": long_tx_seconds,
                                                                   "lock_wait": params.lock_timeout})
    rows.append(_row("long transactions and locks", not busy,
                     "none" if not busy else "; ".join(f"pid {b['pid']} ({b['application_name'] or b['db_user']}, "
                                                       f"open {b['transaction_age']}, locks: {b['locks_on_targets'] or '-'})"
                                                       for b in busy[:5])))

    try:
        found = [clients.find(program, version // 10000) for program in ("pg_dump", "pg_restore")]
        rows.append(_row("backup and restore clients", True,
                         f"{' and '.join(str(f) for f in found)}, version {version // 10000} as the server"))
    except ClientMissing as exc:
        rows.append(_row("backup and restore clients", False, exc.message))

    covered = scope.decide(conn, params)
    left = "; ".join(f"{x['schema']} ({x['reason']})" for x in covered.left_out)
    rows.append(_row("backup scope", not covered.problems,
                     "; ".join(covered.problems) or f"dumps {', '.join(covered.schemas)}"
                     + (f"; leaves out {left}" if left else "")))

    if params.rehearse_on == "target":
        rows.append(_row("rehearsal on the target's server", *on_target(facts["rehearsal"][0])))
    else:
        rows.append(_row("restore drill server", *drill_server()))

    size = int(server["size"])
    backup_dir.mkdir(parents=True, exist_ok=True)
    free = shutil.disk_usage(backup_dir).free
    rows.append(_row("disk room for the backup", free > size * 1.2,
                     f"database {size / 2**20:,.0f} MiB, free in {backup_dir} {free / 2**20:,.1f} MiB "
                     "(a custom-format dump is smaller than the database; 1.2x is the margin)"))

    if "knowledge_base" in cols:
        counts = db.rows(conn, "select count(*) as n from public.knowledge_base")[0]["n"]
        rows.append(_row("knowledge_base rows", None, f"{counts:,}"))
    return rows


def connection(conn: psycopg.Connection[Any], target: Target, run_id: str | None) -> tuple[bool, str]:
    """A session of its own, or a transaction-mode pooler's (``checks/pooler.py``): as the runner
    of ``run_id`` found it for this same database moments ago (``gates.record_session``), else
    probed now."""
    if run_id and int(conn.info.port or 0) != pooler.TRANSACTION_MODE_PORT:
        try:
            found = gates.probed_session(run_id, gates.identity(conn))
        except psycopg.Error:  # no system identifier to compare: probe
            found = None
        if found:
            return True, found
    return pooler.own_session(target, conn if conn.autocommit else None)


def go(rows: list[dict[str, str]]) -> bool:
    return all(r["status"] != "NO-GO" for r in rows)
