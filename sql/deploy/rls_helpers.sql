-- The membership helper the policies call. In schema kb_private, which the Supabase API does
-- not expose; SECURITY DEFINER so it reads memberships whatever RLS the membership table has;
-- STABLE with a fixed, empty search_path. The policies call it as
-- "workspace_id in (select kb_private.my_workspace_ids())": evaluated once per statement,
-- then a hashed lookup per row, instead of a membership join per row.
-- It reads the application's membership table itself, never the tool's kbmigrate schema: the
-- application's security must not depend on the migration tool's bookkeeping staying in place.
-- (a template: the names in braces are identifiers the runner fills with psycopg.sql.Identifier)
create schema if not exists kb_private;
revoke all on schema kb_private from public;
grant usage on schema kb_private to authenticated;

create or replace function kb_private.my_workspace_ids() returns setof uuid
language sql stable security definer
set search_path = ''
as $$
  select m.{workspace_column} from {membership_schema}.{membership_table} m
  where m.{user_column} = (select auth.uid())
$$;
revoke all on function kb_private.my_workspace_ids() from public, anon;
grant execute on function kb_private.my_workspace_ids() to authenticated;
