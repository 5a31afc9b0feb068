-- A write as the user the probe acts as (sql/checks/probe.sql), in a subtransaction of its own:
-- the rows it touched, or 'refused' when RLS (or a check) rejected it; any other error is raised.
-- Its values are bound (EXECUTE ... USING), never formatted into the statement. One that
-- succeeds stays, for the checks after it, until the probe undoes it.
create or replace function pg_temp.kbmigrate_try(statement text, a uuid, b uuid, ids uuid[])
returns jsonb language plpgsql as $kbmigrate$
declare
  touched bigint;
begin
  execute statement using a, b, ids;
  get diagnostics touched = row_count;
  return to_jsonb(touched);
exception when insufficient_privilege or check_violation then
  return to_jsonb('refused'::text);
end
$kbmigrate$;
