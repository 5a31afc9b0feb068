do $$
begin
  if to_regclass('kbmigrate.seals') is null then
    raise exception 'kbmigrate.seals is missing';
  end if;
  if (select count(*) from pg_attribute where attrelid = 'kbmigrate.seals'::regclass and not attisdropped
      and attname in ('run_id', 'manifest_sha256', 'status', 'previous')) <> 4 then
    raise exception 'kbmigrate.seals lacks a column of run_id, manifest_sha256, status, previous';
  end if;
end $$;
