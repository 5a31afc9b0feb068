do $$
begin
  assert to_regclass('public.vw_workspace_sections') is not null, 'vw_workspace_sections is missing';
  assert (select coalesce(reloptions, '{}') @> array['security_invoker=true'] from pg_class
          where oid = 'public.vw_workspace_sections'::regclass),
         'vw_workspace_sections is not security_invoker: it would bypass RLS';
  assert not has_table_privilege('anon', 'public.vw_workspace_sections', 'select'), 'anon can read vw_workspace_sections';
  assert has_table_privilege('authenticated', 'public.vw_workspace_sections', 'select'), 'authenticated cannot read vw_workspace_sections';
end $$;
