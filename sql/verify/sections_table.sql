do $$
declare
  missing text;
begin
  if not coalesce(to_regclass('public.knowledge_base_sections') is not null, false) then
    raise exception '%', 'knowledge_base_sections is missing';
  end if;
  select string_agg(c, ', ') into missing
  from unnest(array['id', 'workspace_id', 'name', 'description', 'display_order', 'icon', 'is_active',
                    'created_at', 'updated_at']) c
  where not exists (select 1 from pg_attribute where attrelid = 'public.knowledge_base_sections'::regclass
                    and attname = c and not attisdropped);
  if not coalesce(missing is null, false) then
    raise exception '%', 'knowledge_base_sections lacks columns: ' || missing;
  end if;
  if not coalesce(exists (select 1 from pg_constraint where conrelid = 'public.knowledge_base_sections'::regclass
                          and conname = 'knowledge_base_sections_workspace_id_name_key'), false) then
    raise exception '%', 'unique (workspace_id, name) is missing';
  end if;
  if not coalesce(exists (select 1 from pg_constraint where conrelid = 'public.knowledge_base_sections'::regclass
                          and conname = 'knowledge_base_sections_id_workspace_id_key'), false) then
    raise exception '%', 'unique (id, workspace_id) is missing';
  end if;
  if not coalesce(has_table_privilege('authenticated', 'public.knowledge_base_sections', 'select, insert, update, delete'), false) then
    raise exception '%', 'authenticated lacks privileges on knowledge_base_sections';
  end if;
  if not coalesce(has_table_privilege('service_role', 'public.knowledge_base_sections', 'select, insert, update, delete'), false) then
    raise exception '%', 'service_role lacks privileges on knowledge_base_sections';
  end if;
end $$;
