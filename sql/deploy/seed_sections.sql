-- The default sections (SPEC step 5) for every active workspace. The list is data: the
-- runner reads the sections file and passes it as the JSON setting kbmigrate.sections.
-- Existing sections are kept (unique (workspace_id, name)); re-running adds nothing.
insert into public.knowledge_base_sections (workspace_id, name, description, display_order, icon)
select w.id, s.name, s.description, s.display_order, s.icon
from public.workspaces w
cross join jsonb_to_recordset(current_setting('kbmigrate.sections')::jsonb)
       as s(name text, description text, display_order int, icon text)
where w.is_active
order by w.id, s.display_order
on conflict (workspace_id, name) do nothing;
