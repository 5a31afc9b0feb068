-- The cluster-wide half of a Supabase-faithful test server: the roles, as Supabase's own setup
-- leaves them (supabase/postgres: migrations/db/init-scripts/00000000000000-initial-schema.sql,
-- 00000000000001-auth-schema.sql, and the migrations 10000000000000_demote-postgres.sql,
-- 20220609081115_grant-supabase-auth-admin-and-supabase-storage-admin-to-postgres.sql,
-- 20230201083204_grant_auth_roles_to_postgres.sql, 20230306081037_grant_pg_monitor_to_postgres.sql,
-- 20230529180330_alter_api_roles_for_inherit.sql, 20240606060239_grant_predefined_roles_to_postgres.sql,
-- 20221028101028_set_authenticator_timeout.sql, 20231130133139_set_lock_timeout_to_authenticator_role.sql).
-- Run by the test suite as the server's superuser (Supabase's is supabase_admin), once per
-- server. Idempotent. The password of postgres is set by the caller, not here.
do $roles$
begin
  if not exists (select from pg_roles where rolname = 'supabase_admin') then
    create role supabase_admin superuser createdb createrole replication bypassrls;
  end if;
  if not exists (select from pg_roles where rolname = 'postgres') then
    create role postgres login;
  end if;
  if not exists (select from pg_roles where rolname = 'supabase_auth_admin') then
    create role supabase_auth_admin noinherit createrole login noreplication;
  end if;
  if not exists (select from pg_roles where rolname = 'supabase_storage_admin') then
    create role supabase_storage_admin noinherit createrole login noreplication;
  end if;
  if not exists (select from pg_roles where rolname = 'authenticator') then
    create role authenticator noinherit login;
  end if;
  if not exists (select from pg_roles where rolname = 'anon') then
    create role anon nologin noinherit;
  end if;
  if not exists (select from pg_roles where rolname = 'authenticated') then
    create role authenticated nologin noinherit;
  end if;
  if not exists (select from pg_roles where rolname = 'service_role') then
    create role service_role nologin noinherit bypassrls;
  end if;
end
$roles$;

-- 10000000000000_demote-postgres.sql: the user's postgres is not a superuser.
alter role postgres nosuperuser createdb createrole login replication bypassrls;
alter role postgres set search_path to "$user", public, extensions;

-- 20230529180330_alter_api_roles_for_inherit.sql
alter role anon inherit;
alter role authenticated inherit;
alter role service_role inherit;

grant anon, authenticated, service_role to authenticator;
grant anon, authenticated, service_role to postgres;
grant supabase_auth_admin, supabase_storage_admin to postgres;
grant pg_monitor, pg_read_all_data, pg_signal_backend to postgres;

-- Short statement timeouts of the API roles (applied at login, and by PostgREST per request).
alter role anon set statement_timeout = '3s';
alter role authenticated set statement_timeout = '8s';
alter role authenticator set statement_timeout = '8s';
alter role authenticator set lock_timeout = '8s';
