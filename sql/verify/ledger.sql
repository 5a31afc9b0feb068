do $$
begin
  assert to_regclass('kbmigrate.ledger') is not null, 'kbmigrate.ledger is missing';
  assert to_regclass('kbmigrate.quarantine') is not null, 'kbmigrate.quarantine is missing';
  assert to_regclass('kbmigrate.legacy_imports') is not null, 'kbmigrate.legacy_imports is missing';
end $$;
