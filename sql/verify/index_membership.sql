-- Passes when any valid index on the membership table leads with (user, workspace).
-- The names arrive as settings (kbmigrate.membership_schema, ...), bound by the runner.
do $$
declare
  rel regclass := to_regclass(format('%I.%I', current_setting('kbmigrate.membership_schema'),
                                     current_setting('kbmigrate.membership_table')));
begin
  if not coalesce(exists (
             select 1 from pg_index i
             where i.indrelid = rel and i.indisvalid
               and i.indkey[0] = (select attnum from pg_attribute where attrelid = rel and attname = current_setting('kbmigrate.user_column'))
               and i.indkey[1] = (select attnum from pg_attribute where attrelid = rel and attname = current_setting('kbmigrate.workspace_column'))), false) then
    raise exception '%', 'no valid index on the membership table leads with (user, workspace)';
  end if;
end $$;
