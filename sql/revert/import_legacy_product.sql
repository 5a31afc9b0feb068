-- Revert the import of legacy_product_data: remove the KB entries it created and its import log,
-- so a later run would import those rows again. Touches nothing else. Verified in this transaction.
delete from public.knowledge_base kb
using kbmigrate.legacy_imports i
where i.source = 'legacy_product_data' and i.entry_id = kb.id;
delete from kbmigrate.legacy_imports where source = 'legacy_product_data';
do $$
begin
  assert not exists (select 1 from public.knowledge_base where metadata ->> 'imported_from' = 'legacy_product_data'),
         'entries imported from legacy_product_data remain';
end $$;
