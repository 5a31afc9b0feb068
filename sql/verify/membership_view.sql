do $$
begin
  if not coalesce(to_regclass('kbmigrate.membership') is not null, false) then
    raise exception '%', 'view kbmigrate.membership is missing';
  end if;
  perform user_id, workspace_id, joined_at from kbmigrate.membership limit 1;
end $$;
