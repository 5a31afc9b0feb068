"""The test server is laid out as Supabase hands a project over (the facts of supabase/postgres and
supabase/auth): what every other test's "as Supabase's postgres" rests on."""

from __future__ import annotations

from kbmigrate import db
from kbmigrate.conninfo import Target


def test_postgres_is_not_a_superuser_and_has_what_supabase_gives_it(small_demo: Target) -> None:
    with db.connect(small_demo) as conn:
        me = db.rows(conn, """select current_user as name, rolsuper, rolcreatedb, rolcreaterole, rolreplication,
                                     rolbypassrls from pg_roles where rolname = current_user""")[0]
        assert me == {"name": "postgres", "rolsuper": False, "rolcreatedb": True, "rolcreaterole": True,
                      "rolreplication": True, "rolbypassrls": True}
        member_of = {r["r"] for r in db.rows(conn, "select r.rolname as r from pg_roles r "
                                                   "where pg_has_role(current_user, r.oid, 'member') and r.rolname <> current_user")}
        assert {"anon", "authenticated", "service_role", "supabase_auth_admin", "pg_read_all_data"} <= member_of
        assert "supabase_admin" not in member_of


def test_the_platform_owns_its_schemas_and_objects(small_demo: Target) -> None:
    with db.connect(small_demo) as conn:
        owners = {r["n"]: r["o"] for r in db.rows(conn, "select nspname as n, pg_get_userbyid(nspowner) as o from pg_namespace "
                                                         "where nspname in ('auth', 'storage', 'extensions', 'public')")}
        super_ = db.scalar(conn, "select rolname from pg_roles where rolsuper order by oid limit 1")
        assert owners["auth"] == owners["storage"] == owners["extensions"] == super_ != "postgres"
        assert db.scalar(conn, "select pg_get_userbyid(relowner) from pg_class where oid = 'auth.users'::regclass") == "supabase_auth_admin"
        assert db.scalar(conn, "select pg_get_userbyid(proowner) from pg_proc where oid = 'auth.uid()'::regprocedure") == "supabase_auth_admin"
        assert db.scalar(conn, "select pg_get_userbyid(relowner) from pg_class where oid = 'public.knowledge_base'::regclass") == "postgres"
        triggers = {r["e"]: r["o"] for r in db.rows(conn, "select evtname as e, pg_get_userbyid(evtowner) as o from pg_event_trigger")}
        assert triggers.keys() >= {"pgrst_ddl_watch", "pgrst_drop_watch"} and set(triggers.values()) == {super_}
        assert db.scalar(conn, "select pg_get_userbyid(pubowner) from pg_publication where pubname = 'supabase_realtime'") == super_
        extensions = {r["e"]: r["s"] for r in db.rows(conn, "select extname as e, extnamespace::regnamespace::text as s "
                                                             "from pg_extension where extname <> 'plpgsql'")}
        assert extensions and set(extensions.values()) == {"extensions"}


def test_the_api_roles_have_supabases_timeouts_and_default_privileges(small_demo: Target) -> None:
    with db.connect(small_demo) as conn:
        settings = {r["r"]: r["c"] for r in db.rows(conn, """select r.rolname as r, s.setconfig as c from pg_db_role_setting s
                                                             join pg_roles r on r.oid = s.setrole where s.setdatabase = 0""")}
        assert "statement_timeout=3s" in settings["anon"] and "statement_timeout=8s" in settings["authenticated"]
        # what postgres creates in public is granted to the API roles: RLS is the only barrier
        grants = {r["g"] for r in db.rows(conn, "select grantee as g from information_schema.role_table_grants "
                                                "where table_schema = 'public' and table_name = 'knowledge_base' "
                                                "and privilege_type = 'SELECT'")}
        assert {"anon", "authenticated", "service_role"} <= grants
