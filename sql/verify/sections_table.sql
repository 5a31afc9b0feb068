do $$
declare
  missing text;
begin
  assert to_regclass('public.knowledge_base_sections') is not null, 'knowledge_base_sections is missing';
  select string_agg(c, ', ') into missing
  from unnest(array['id', 'workspace_id', 'name', 'description', 'display_order', 'icon', 'is_active',
                    'created_at', 'updated_at']) c
  where not exists (select 1 from pg_attribute where attrelid = 'public.knowledge_base_sections'::regclass
                    and attname = c and not attisdropped);
  assert missing is null, 'knowledge_base_sections lacks columns: ' || missing;
  assert exists (select 1 from pg_constraint where conrelid = 'public.knowledge_base_sections'::regclass
                 and conname = 'knowledge_base_sections_workspace_id_name_key'), 'unique (workspace_id, name) is missing';
  assert exists (select 1 from pg_constraint where conrelid = 'public.knowledge_base_sections'::regclass
                 and conname = 'knowledge_base_sections_id_workspace_id_key'), 'unique (id, workspace_id) is missing';
  assert has_table_privilege('authenticated', 'public.knowledge_base_sections', 'select, insert, update, delete'),
         'authenticated lacks privileges on knowledge_base_sections';
  assert has_table_privilege('service_role', 'public.knowledge_base_sections', 'select, insert, update, delete'),
         'service_role lacks privileges on knowledge_base_sections';
end $$;
