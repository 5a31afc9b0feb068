do $$
begin
  if not coalesce(to_regclass('kbmigrate.ledger') is not null, false) then
    raise exception '%', 'kbmigrate.ledger is missing';
  end if;
  if not coalesce(to_regclass('kbmigrate.quarantine') is not null, false) then
    raise exception '%', 'kbmigrate.quarantine is missing';
  end if;
  if not coalesce(to_regclass('kbmigrate.legacy_imports') is not null, false) then
    raise exception '%', 'kbmigrate.legacy_imports is missing';
  end if;
end $$;
