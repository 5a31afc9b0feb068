do $$
declare
  expected text[] := array['kb_select', 'kb_insert', 'kb_update', 'kb_delete',
                           'kb_sections_select', 'kb_sections_insert', 'kb_sections_update', 'kb_sections_delete'];
  missing text;
begin
  assert (select relrowsecurity from pg_class where oid = 'public.knowledge_base'::regclass),
         'RLS is not enabled on knowledge_base';
  assert (select relrowsecurity from pg_class where oid = 'public.knowledge_base_sections'::regclass),
         'RLS is not enabled on knowledge_base_sections';
  select string_agg(p, ', ') into missing from unnest(expected) p
  where not exists (select 1 from pg_policies where schemaname = 'public' and policyname = p
                    and tablename in ('knowledge_base', 'knowledge_base_sections') and roles = '{authenticated}');
  assert missing is null, 'policies missing or not "to authenticated": ' || missing;
  assert not exists (select 1 from pg_policies where schemaname = 'public'
                     and tablename in ('knowledge_base', 'knowledge_base_sections')
                     and policyname <> all (expected)),
         'unexpected extra policies on the KB tables (policies are permissive: any extra one widens access)';
  -- the policy text is ours, not an older version of it
  assert (select qual from pg_policies where policyname = 'kb_select' and tablename = 'knowledge_base')
         like '%is_shared%my_workspace_ids%', 'kb_select is not the current policy';
  assert (select with_check from pg_policies where policyname = 'kb_update' and tablename = 'knowledge_base')
         like '%my_workspace_ids%', 'kb_update has no membership check on the new row';
end $$;
