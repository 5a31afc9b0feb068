do $$
declare
  lacking bigint;
begin
  select count(*) into lacking
  from public.workspaces w
  cross join jsonb_to_recordset(current_setting('kbmigrate.sections')::jsonb) as s(name text)
  where w.is_active
    and not exists (select 1 from public.knowledge_base_sections k where k.workspace_id = w.id and k.name = s.name);
  if not coalesce(lacking = 0, false) then
    raise exception '%', lacking || ' (active workspace, default section) pairs are missing';
  end if;
end $$;
