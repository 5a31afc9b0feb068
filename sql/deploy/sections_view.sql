-- Sections with their entry counts. security_invoker: the view runs with the caller's
-- rights, so RLS on both tables applies (a plain view would run as its owner and leak).
create or replace view public.vw_workspace_sections with (security_invoker = true) as
  select s.workspace_id, s.id as section_id, s.name, s.description, s.display_order, s.icon, s.is_active,
         count(kb.id) as entry_count
  from public.knowledge_base_sections s
  left join public.knowledge_base kb on kb.section_id = s.id and kb.workspace_id = s.workspace_id
  group by s.workspace_id, s.id;
revoke all on public.vw_workspace_sections from anon;
grant select on public.vw_workspace_sections to authenticated, service_role;
