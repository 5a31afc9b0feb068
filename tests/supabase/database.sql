-- The per-database half of a Supabase-faithful test server, as Supabase's init scripts and
-- migrations leave a project's database (supabase/postgres: migrations/db/init-scripts/*.sql,
-- migrations/db/migrations/*.sql; supabase/auth: migrations/20211202183645_update_auth_uid.up.sql).
-- Run by the test suite as the superuser (supabase_admin) in a database owned by postgres,
-- after roles.sql. The setting kbt.auth_uid chooses auth.uid(): 'current' (today's, reading
-- request.jwt.claim.sub or request.jwt.claims ->> 'sub') or 'claim_sub_only' (older projects,
-- before supabase/auth updated it: request.jwt.claim.sub only).

-- Realtime's publication (00000000000000-initial-schema.sql), owned by the platform.
do $pub$
begin
  if not exists (select from pg_publication where pubname = 'supabase_realtime') then
    create publication supabase_realtime;
  end if;
end
$pub$;

-- Extensions live in schema extensions, which the superuser owns (the Docker image's entrypoint
-- runs the init scripts as POSTGRES_USER=supabase_admin), as it owns each extension. Those this
-- server lacks are skipped.
create schema if not exists extensions authorization supabase_admin;
do $ext$
declare
  e text;
begin
  foreach e in array array['uuid-ossp', 'pgcrypto', 'pg_stat_statements'] loop
    if exists (select from pg_available_extensions where name = e) then
      execute format('create extension if not exists %I with schema extensions', e);
    end if;
  end loop;
end
$ext$;
grant usage on schema extensions to postgres, anon, authenticated, service_role;
grant all privileges on all tables in schema extensions to postgres with grant option;
grant all privileges on all routines in schema extensions to postgres with grant option;
grant all privileges on all sequences in schema extensions to postgres with grant option;

-- Schema auth: owned by supabase_admin; its tables and functions by supabase_auth_admin.
create schema if not exists auth authorization supabase_admin;
create table if not exists auth.users (
  instance_id          uuid,
  id                   uuid not null primary key,
  aud                  varchar(255),
  role                 varchar(255),
  email                varchar(255) unique,
  encrypted_password   varchar(255),
  email_confirmed_at   timestamptz,
  last_sign_in_at      timestamptz,
  raw_app_meta_data    jsonb,
  raw_user_meta_data   jsonb,
  is_super_admin       boolean,
  created_at           timestamptz,
  updated_at           timestamptz,
  phone                text unique default null,
  is_sso_user          boolean not null default false,
  deleted_at           timestamptz,
  is_anonymous         boolean not null default false
);
comment on table auth.users is 'Auth: Stores user login data within a secure schema.';
alter table auth.users owner to supabase_auth_admin;

do $uid$
begin
  if current_setting('kbt.auth_uid') = 'claim_sub_only' then
    create or replace function auth.uid() returns uuid language sql stable as $f$
      select nullif(current_setting('request.jwt.claim.sub', true), '')::uuid;
    $f$;
    create or replace function auth.role() returns text language sql stable as $f$
      select nullif(current_setting('request.jwt.claim.role', true), '')::text;
    $f$;
  else
    create or replace function auth.uid() returns uuid language sql stable as $f$
      select nullif(coalesce(current_setting('request.jwt.claim.sub', true),
                             (current_setting('request.jwt.claims', true)::jsonb ->> 'sub')), '')::uuid
    $f$;
    create or replace function auth.role() returns text language sql stable as $f$
      select nullif(coalesce(current_setting('request.jwt.claim.role', true),
                             (current_setting('request.jwt.claims', true)::jsonb ->> 'role')), '')::text
    $f$;
  end if;
end
$uid$;
create or replace function auth.jwt() returns jsonb language sql stable as $f$
  select coalesce(nullif(current_setting('request.jwt.claim', true), ''),
                  nullif(current_setting('request.jwt.claims', true), ''))::jsonb
$f$;
alter function auth.uid() owner to supabase_auth_admin;
alter function auth.role() owner to supabase_auth_admin;
alter function auth.jwt() owner to supabase_auth_admin;

grant usage on schema auth to anon, authenticated, service_role, postgres;
grant all privileges on schema auth to supabase_auth_admin;
grant all on all tables in schema auth to postgres;
grant all on all routines in schema auth to postgres;
grant execute on function auth.uid(), auth.role(), auth.jwt() to anon, authenticated, service_role;

-- Schema storage: owned by supabase_admin, its tables by supabase_storage_admin: platform data
-- that a backup made as postgres may leave out.
create schema if not exists storage authorization supabase_admin;
create table if not exists storage.buckets (
  id          text primary key,
  name        text not null unique,
  owner       uuid references auth.users (id),
  created_at  timestamptz default now(),
  updated_at  timestamptz default now()
);
alter table storage.buckets owner to supabase_storage_admin;
grant usage on schema storage to postgres, anon, authenticated, service_role;
grant all on all tables in schema storage to postgres, service_role;
insert into storage.buckets (id, name) values ('avatars', 'avatars') on conflict do nothing;

-- PostgREST's schema-cache event triggers (20220126121436_finer-postgrest-triggers.sql): they
-- fire on every DDL statement the migration runs, and belong to the superuser.
create or replace function extensions.pgrst_ddl_watch() returns event_trigger language plpgsql as $f$
declare
  cmd record;
begin
  for cmd in select * from pg_event_trigger_ddl_commands() loop
    if cmd.command_tag in ('CREATE SCHEMA', 'ALTER SCHEMA', 'CREATE TABLE', 'CREATE TABLE AS', 'SELECT INTO',
                           'ALTER TABLE', 'CREATE FOREIGN TABLE', 'ALTER FOREIGN TABLE', 'CREATE VIEW',
                           'ALTER VIEW', 'CREATE MATERIALIZED VIEW', 'ALTER MATERIALIZED VIEW',
                           'CREATE FUNCTION', 'ALTER FUNCTION', 'CREATE TRIGGER', 'CREATE TYPE',
                           'CREATE RULE', 'COMMENT')
       and cmd.schema_name is distinct from 'pg_temp' then
      notify pgrst, 'reload schema';
    end if;
  end loop;
end;
$f$;
create or replace function extensions.pgrst_drop_watch() returns event_trigger language plpgsql as $f$
declare
  obj record;
begin
  for obj in select * from pg_event_trigger_dropped_objects() loop
    if obj.object_type in ('schema', 'table', 'foreign table', 'view', 'materialized view', 'function',
                           'trigger', 'type', 'rule')
       and obj.is_temporary is false then
      notify pgrst, 'reload schema';
    end if;
  end loop;
end;
$f$;
do $evt$
begin
  if not exists (select from pg_event_trigger where evtname = 'pgrst_ddl_watch') then
    create event trigger pgrst_ddl_watch on ddl_command_end execute procedure extensions.pgrst_ddl_watch();
  end if;
  if not exists (select from pg_event_trigger where evtname = 'pgrst_drop_watch') then
    create event trigger pgrst_drop_watch on sql_drop execute procedure extensions.pgrst_drop_watch();
  end if;
end
$evt$;

-- Schema public: the database owner's (postgres); the API roles may use it, and what postgres
-- or supabase_admin create there is granted to them by default, so that RLS is the only barrier.
grant usage on schema public to postgres, anon, authenticated, service_role;
alter default privileges for role postgres in schema public grant all on tables to postgres, anon, authenticated, service_role;
alter default privileges for role postgres in schema public grant all on functions to postgres, anon, authenticated, service_role;
alter default privileges for role postgres in schema public grant all on sequences to postgres, anon, authenticated, service_role;
alter default privileges for role supabase_admin in schema public grant all on tables to postgres, anon, authenticated, service_role;
alter default privileges for role supabase_admin in schema public grant all on functions to postgres, anon, authenticated, service_role;
alter default privileges for role supabase_admin in schema public grant all on sequences to postgres, anon, authenticated, service_role;
