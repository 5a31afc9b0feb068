-- Revert the import of one legacy source (kbmigrate.legacy_spec): remove the KB entries it created
-- and its import log, so a later run would import those rows again. Touches nothing else.
-- Verified in this transaction.
delete from public.knowledge_base kb
using kbmigrate.legacy_imports i
where i.source = current_setting('kbmigrate.legacy_spec')::jsonb ->> 'source' and i.entry_id = kb.id;
delete from kbmigrate.legacy_imports where source = current_setting('kbmigrate.legacy_spec')::jsonb ->> 'source';
do $$
begin
  if not coalesce(not exists (select 1 from public.knowledge_base
                              where metadata ->> 'imported_from' = current_setting('kbmigrate.legacy_spec')::jsonb ->> 'source'), false) then
    raise exception '%', 'entries imported from ' || (current_setting('kbmigrate.legacy_spec')::jsonb ->> 'source') || ' remain';
  end if;
end $$;
