-- Every row of the legacy source (kbmigrate.legacy_spec) that can land is imported, exactly once.
do $$
declare
  spec jsonb := current_setting('kbmigrate.legacy_spec')::jsonb;
  pending bigint;
begin
  execute format($q$
    select count(*)
    from public.%I l
    join public.workspaces w on w.id = (to_jsonb(l) ->> 'workspace_id')::uuid and w.is_active
    join public.knowledge_base_sections sec on sec.workspace_id = w.id and sec.name = $1 ->> 'section'
    where not exists (select 1 from kbmigrate.legacy_imports i
                      where i.source = $1 ->> 'source' and i.original_id = l.id::text
                        and exists (select 1 from public.knowledge_base kb where kb.id = i.entry_id))
  $q$, spec ->> 'source') into pending using spec;
  if not coalesce(pending = 0, false) then
    raise exception '%', format('%s %s rows can land but are not imported', pending, spec ->> 'source');
  end if;
end $$;
