do $$
declare
  source text := format('%I.%I', current_setting('kbmigrate.membership_schema', true),
                        current_setting('kbmigrate.membership_table', true));
  columns text := format('%I, %I, %I', current_setting('kbmigrate.user_column', true),
                         current_setting('kbmigrate.workspace_column', true), current_setting('kbmigrate.joined_column', true));
  differs boolean;
begin
  if not coalesce(to_regclass('kbmigrate.membership') is not null, false) then
    raise exception '%', 'view kbmigrate.membership is missing';
  end if;
  perform user_id, workspace_id, joined_at from kbmigrate.membership limit 1;
  -- A view of that name from elsewhere (a stale one, another tool's) is not this change: it must
  -- show exactly the rows of the run's membership table (when the run's settings name it).
  if coalesce(current_setting('kbmigrate.membership_table', true), '') <> '' then
    execute format('select exists (select user_id, workspace_id, joined_at from kbmigrate.membership
                                   except all select %1$s from %2$s)
                        or exists (select %1$s from %2$s
                                   except all select user_id, workspace_id, joined_at from kbmigrate.membership)',
                   columns, source) into differs;
    if differs then
      raise exception 'view kbmigrate.membership does not show the rows of %', source;
    end if;
  end if;
end $$;
