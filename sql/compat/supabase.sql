-- Supabase compatibility layer, for plain PostgreSQL only (the demo and test databases).
--
-- Gives a database what Supabase gives every project and what the migration relies on:
--   * the API roles anon, authenticated and service_role (BYPASSRLS);
--   * schema auth with auth.users and auth.uid() / auth.role() / auth.jwt(), which read the
--     request's JWT claims exactly as Supabase does: the JSON setting request.jwt.claims, or
--     the older per-claim settings request.jwt.claim.sub / request.jwt.claim.role;
--   * privileges on schema public for the API roles, now and by default for new tables, so
--     that Row Level Security is the only barrier, as on Supabase.
-- kbmigrate runs this only where auth.uid() does not exist; the guard below refuses otherwise.
-- Idempotent: running it twice changes nothing.

do $guard$
begin
  if to_regprocedure('auth.uid()') is not null
     and coalesce(obj_description(to_regnamespace('auth'), 'pg_namespace'), '')
         <> 'kbmigrate supabase compatibility layer' then
    raise exception 'auth.uid() already exists: this looks like a real Supabase database'
      using hint = 'The compatibility layer is for plain PostgreSQL only.';
  end if;
end
$guard$;

-- Roles are cluster-wide: create the ones that are missing.
do $roles$
declare
  r record;
begin
  for r in select * from (values ('anon', false), ('authenticated', false), ('service_role', true)) v(name, bypass)
  loop
    if not exists (select 1 from pg_roles where rolname = r.name) then
      execute format('create role %I nologin noinherit %s', r.name, case when r.bypass then 'bypassrls' else '' end);
    end if;
    -- The migrating user must be able to SET ROLE to the API roles (Supabase's postgres can).
    if not (select rolsuper from pg_roles where rolname = current_user)
       and not pg_has_role(current_user, r.name, 'member') then
      execute format('grant %I to %I', r.name, current_user);
    end if;
  end loop;
end
$roles$;

create schema if not exists auth;
comment on schema auth is 'kbmigrate supabase compatibility layer';

create table if not exists auth.users (
  id                 uuid primary key,
  aud                text default 'authenticated',
  role               text default 'authenticated',
  email              text unique,
  raw_user_meta_data jsonb default '{}'::jsonb,
  created_at         timestamptz not null default now(),
  updated_at         timestamptz not null default now()
);

create or replace function auth.uid() returns uuid
language sql stable
as $$
  select coalesce(
    nullif(current_setting('request.jwt.claim.sub', true), ''),
    (nullif(current_setting('request.jwt.claims', true), '')::jsonb ->> 'sub')
  )::uuid
$$;

create or replace function auth.role() returns text
language sql stable
as $$
  select coalesce(
    nullif(current_setting('request.jwt.claim.role', true), ''),
    (nullif(current_setting('request.jwt.claims', true), '')::jsonb ->> 'role')
  )::text
$$;

create or replace function auth.jwt() returns jsonb
language sql stable
as $$
  select coalesce(
    nullif(current_setting('request.jwt.claim', true), ''),
    nullif(current_setting('request.jwt.claims', true), '')
  )::jsonb
$$;

grant usage on schema auth to anon, authenticated, service_role;
grant execute on function auth.uid(), auth.role(), auth.jwt() to anon, authenticated, service_role;
grant all on auth.users to service_role;

-- Supabase grants the API roles everything in public; RLS decides what they may touch.
grant usage on schema public to anon, authenticated, service_role;
grant all on all tables in schema public to anon, authenticated, service_role;
grant all on all sequences in schema public to anon, authenticated, service_role;
grant all on all functions in schema public to anon, authenticated, service_role;
alter default privileges in schema public grant all on tables to anon, authenticated, service_role;
alter default privileges in schema public grant all on sequences to anon, authenticated, service_role;
alter default privileges in schema public grant all on functions to anon, authenticated, service_role;
