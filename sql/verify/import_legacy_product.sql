-- Every legacy_product_data row that can land is imported, exactly once.
do $$
declare
  pending bigint;
begin
  select count(*) into pending
  from public.legacy_product_data l
  join public.workspaces w on w.id = l.workspace_id and w.is_active
  join public.knowledge_base_sections sec on sec.workspace_id = w.id and sec.name = 'Products'
  where not exists (select 1 from kbmigrate.legacy_imports i
                    where i.source = 'legacy_product_data' and i.original_id = l.id::text
                      and exists (select 1 from public.knowledge_base kb where kb.id = i.entry_id));
  assert pending = 0, pending || ' legacy_product_data rows can land but are not imported';
end $$;
