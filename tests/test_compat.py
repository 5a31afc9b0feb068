"""The Supabase compatibility layer on plain PostgreSQL."""

from __future__ import annotations

import json

import psycopg
import pytest

from kbmigrate import db
from kbmigrate.dev import compat
from kbmigrate.conninfo import Target
from kbmigrate.paths import read_sql


def _installed(target: Target) -> psycopg.Connection:
    """An autocommit connection, so each ``conn.transaction()`` is a real BEGIN ... COMMIT
    (inside an open transaction it would be a savepoint, and set_config(..., true) would outlive it)."""
    conn = db.connect(target, autocommit=True)
    assert compat.install(conn) == "absent"
    return conn


def test_roles_and_auth_functions(fresh_db: Target) -> None:
    with _installed(fresh_db) as conn:
        roles = {r["rolname"]: r["rolbypassrls"] for r in db.rows(
            conn, "select rolname, rolbypassrls from pg_roles where rolname in ('anon','authenticated','service_role')")}
        assert roles == {"anon": False, "authenticated": False, "service_role": True}
        assert db.scalar(conn, "select to_regclass('auth.users') is not null")

        uid = "0b7c1e0e-1111-4222-8333-444455556666"
        with conn.transaction():
            conn.execute("select set_config('request.jwt.claims', %s, true)",
                         (json.dumps({"sub": uid, "role": "authenticated", "email": "a@b.test"}),))
            assert str(db.scalar(conn, "select auth.uid()")) == uid
            assert db.scalar(conn, "select auth.role()") == "authenticated"
            assert db.scalar(conn, "select auth.jwt() ->> 'email'") == "a@b.test"
        # the older per-claim settings
        with conn.transaction():
            conn.execute("select set_config('request.jwt.claim.sub', %s, true)", (uid,))
            conn.execute("select set_config('request.jwt.claim.role', 'anon', true)")
            assert str(db.scalar(conn, "select auth.uid()")) == uid
            assert db.scalar(conn, "select auth.role()") == "anon"
        # nothing set: no user
        assert db.scalar(conn, "select auth.uid()") is None


def test_rls_is_the_only_barrier(fresh_db: Target) -> None:
    with _installed(fresh_db) as conn:
        conn.execute("create table public.notes (id int primary key, body text)")
        conn.execute("insert into public.notes select g, 'n' || g from generate_series(1, 5) g")

        def count_as(role: str) -> int:
            with conn.transaction():
                conn.execute(psycopg.sql.SQL("set local role {}").format(psycopg.sql.Identifier(role)))
                n = db.scalar(conn, "select count(*) from public.notes")
                conn.execute("reset role")
                return int(n)

        # default privileges reach a table created after the layer: every API role can read it
        assert [count_as(r) for r in ("anon", "authenticated", "service_role")] == [5, 5, 5]
        conn.execute("alter table public.notes enable row level security")
        # RLS with no policy: the API roles see nothing, service_role bypasses RLS
        assert [count_as(r) for r in ("anon", "authenticated", "service_role")] == [0, 0, 5]


def test_install_twice_changes_nothing(fresh_db: Target) -> None:
    with _installed(fresh_db) as conn:
        before = db.scalar(conn, "select md5(string_agg(pg_get_functiondef(p.oid), '' order by proname)) "
                                 "from pg_proc p where pronamespace = 'auth'::regnamespace")
        assert compat.install(conn) == "ours"
        # the file itself is idempotent too
        with conn.transaction():
            conn.execute(read_sql("compat/supabase.sql"))
        after = db.scalar(conn, "select md5(string_agg(pg_get_functiondef(p.oid), '' order by proname)) "
                                "from pg_proc p where pronamespace = 'auth'::regnamespace")
        assert before == after


def test_never_installed_over_a_real_supabase_auth(fresh_db: Target) -> None:
    with db.connect(fresh_db) as conn:
        conn.execute("create schema auth")
        conn.execute("create function auth.uid() returns uuid language sql stable as $$ select null::uuid $$")
        conn.commit()
        conn.autocommit = True
        assert compat.install(conn) == "supabase"
        assert db.scalar(conn, "select to_regclass('auth.users')") is None
        with pytest.raises(psycopg.errors.RaiseException, match="real Supabase"):
            with conn.transaction():
                conn.execute(read_sql("compat/supabase.sql"))
