do $$
begin
  if not exists (select 1 from pg_constraint
                 where conrelid = 'kbmigrate.ledger'::regclass and conname = 'ledger_outcome_check'
                   and pg_get_constraintdef(oid) like '%''started''%') then
    raise exception 'kbmigrate.ledger cannot record a started change (ledger_outcome_check)';
  end if;
end $$;
