"""The backup step on a Supabase layout, as Supabase's postgres: the client of the server's version,
a scope that names what it leaves out, a private dump, and a drill on the local server."""

from __future__ import annotations

import stat
import uuid
from pathlib import Path

import pytest

from kbmigrate import db
from kbmigrate.backup import drill
from kbmigrate.backup import dump as backup
from kbmigrate.checks import clients
from kbmigrate.conninfo import Target
from kbmigrate.errors import ClientMissing
from kbmigrate.engine.params import RunParams
from kbmigrate.paths import REPO_ROOT


def test_only_a_client_of_the_servers_major_version_will_do(small_demo: Target) -> None:
    with pytest.raises(ClientMissing, match="No pg_dump of PostgreSQL 99") as refused:
        clients.find("pg_dump", 99)
    assert "KBMIGRATE_PG_BINDIR" in refused.value.message
    with db.connect(small_demo) as conn:
        major = int(db.scalar(conn, "show server_version_num")) // 10000
    path = clients.find("pg_restore", major)
    assert clients.major_of(str(path)) == major and f" {major}." in clients.version_line(path)


def test_the_dump_covers_the_application_and_says_what_it_leaves_out(small_demo: Target) -> None:
    with db.connect(small_demo) as conn:
        assert not db.scalar(conn, "select rolsuper from pg_roles where rolname = current_user")
        schemas = {r["n"]: r["o"] for r in db.rows(conn, "select nspname as n, pg_get_userbyid(nspowner) as o "
                                                         "from pg_namespace where nspname !~ '^(pg_|information_schema)'")}
        tables = {r["t"] for r in db.rows(conn, "select schemaname || '.' || tablename as t from pg_tables "
                                                "where schemaname = 'public'")}
    run_id = f"t-{uuid.uuid4().hex[:8]}"
    info = backup.dump(small_demo, run_id, RunParams())
    dump = Path(info["path"]) if Path(info["path"]).is_absolute() else REPO_ROOT / info["path"]
    assert stat.S_IMODE(dump.stat().st_mode) == 0o600 and stat.S_IMODE(dump.parent.stat().st_mode) == 0o700
    left_out = {x["schema"]: x["reason"] for x in info["scope"]["left_out"]}
    # every schema is either dumped or left out with a reason; the platform's are left out
    assert set(info["scope"]["schemas"]) | set(left_out) == set(schemas)
    assert {"auth", "storage", "extensions"} <= set(left_out) and "public" in info["scope"]["schemas"]
    assert all(reason for reason in left_out.values())
    # all of the application's tables are in, with the rows they hold
    assert set(info["row_counts"]) == set(tables)
    assert info["row_counts"]["public.knowledge_base"] == 800
    # what the dump needs from outside: auth.users (public.users refers to it), and it is named
    needed = {(r["kind"], r.get("schema"), r["name"]) for r in info["outside_references"]}
    assert ("table", "auth", "users") in needed and ("foreign key", "public", "users_id_fkey") in needed

    result = drill.run(info, run_id)
    assert result["ok"], result
    assert result["where"].startswith("local") and "table auth.users (empty)" in result["stand_ins"]
    assert result["unchecked_foreign_keys"] == ["public.users.users_id_fkey -> auth.users"]
    assert {t["table"] for t in result["tables"]} == set(tables)
    with db.connect(drill.local_server().with_database("postgres"), autocommit=True) as conn:
        assert not db.database_exists(conn, result["scratch_database"])


def test_a_damaged_dump_fails_the_drill(small_demo: Target) -> None:
    run_id = f"t-{uuid.uuid4().hex[:8]}"
    info = backup.dump(small_demo, run_id, RunParams())
    dump = Path(info["path"]) if Path(info["path"]).is_absolute() else REPO_ROOT / info["path"]
    data = bytearray(dump.read_bytes())
    dump.write_bytes(bytes(data[: len(data) * 2 // 3]))  # cut short, as a full disk would leave it
    with pytest.raises(drill.DrillFailed):
        drill.run(info, run_id)
