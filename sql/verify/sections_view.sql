do $$
begin
  if not coalesce(to_regclass('public.vw_workspace_sections') is not null, false) then
    raise exception '%', 'vw_workspace_sections is missing';
  end if;
  if not coalesce((select coalesce(reloptions, '{}') @> array['security_invoker=true'] from pg_class
                   where oid = 'public.vw_workspace_sections'::regclass), false) then
    raise exception '%', 'vw_workspace_sections is not security_invoker: it would bypass RLS';
  end if;
  if not coalesce(not has_table_privilege('anon', 'public.vw_workspace_sections', 'select'), false) then
    raise exception '%', 'anon can read vw_workspace_sections';
  end if;
  if not coalesce(has_table_privilege('authenticated', 'public.vw_workspace_sections', 'select'), false) then
    raise exception '%', 'authenticated cannot read vw_workspace_sections';
  end if;
end $$;
