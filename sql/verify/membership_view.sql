do $$
begin
  assert to_regclass('kbmigrate.membership') is not null, 'view kbmigrate.membership is missing';
  perform user_id, workspace_id, joined_at from kbmigrate.membership limit 1;
end $$;
