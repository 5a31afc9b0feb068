-- Integrity after the migration: each figure must be 0.
select
  (select count(*) from public.knowledge_base kb
    where kb.workspace_id is not null and not exists (select 1 from public.workspaces w where w.id = kb.workspace_id))
    as entries_in_unknown_workspace,
  (select count(*) from public.knowledge_base kb
    where kb.section_id is not null and not exists (select 1 from public.knowledge_base_sections s
                                                    where s.id = kb.section_id and s.workspace_id = kb.workspace_id))
    as entries_in_a_foreign_section,
  (select count(*) from public.knowledge_base where is_shared and workspace_id is not null) as shared_with_workspace,
  (select count(*) from public.knowledge_base kb where kb.workspace_id is null and not kb.is_shared
     and not exists (select 1 from kbmigrate.quarantine q where q.entry_id = kb.id)) as unlisted_quarantined,
  (select count(*) from kbmigrate.legacy_imports i
    where not exists (select 1 from public.knowledge_base kb where kb.id = i.entry_id)) as imports_without_entry,
  (select count(*) from (select metadata ->> 'imported_from', metadata ->> 'original_id' from public.knowledge_base
                         where metadata ? 'imported_from' group by 1, 2 having count(*) > 1) d) as legacy_rows_imported_twice;
