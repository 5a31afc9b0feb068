do $$
declare
  expected text[] := array['kb_select', 'kb_insert', 'kb_update', 'kb_delete',
                           'kb_sections_select', 'kb_sections_insert', 'kb_sections_update', 'kb_sections_delete'];
  missing text;
begin
  if not coalesce((select relrowsecurity from pg_class where oid = 'public.knowledge_base'::regclass), false) then
    raise exception '%', 'RLS is not enabled on knowledge_base';
  end if;
  if not coalesce((select relrowsecurity from pg_class where oid = 'public.knowledge_base_sections'::regclass), false) then
    raise exception '%', 'RLS is not enabled on knowledge_base_sections';
  end if;
  select string_agg(p, ', ') into missing from unnest(expected) p
  where not exists (select 1 from pg_policies where schemaname = 'public' and policyname = p
                    and tablename in ('knowledge_base', 'knowledge_base_sections') and roles = '{authenticated}');
  if not coalesce(missing is null, false) then
    raise exception '%', 'policies missing or not "to authenticated": ' || missing;
  end if;
  if not coalesce(not exists (select 1 from pg_policies where schemaname = 'public'
                              and tablename in ('knowledge_base', 'knowledge_base_sections')
                              and policyname <> all (expected)), false) then
    raise exception '%', 'unexpected extra policies on the KB tables (policies are permissive: any extra one widens access)';
  end if;
  -- the policy text is ours, not an older version of it
  if not coalesce((select qual from pg_policies where policyname = 'kb_select' and tablename = 'knowledge_base')
                  like '%is_shared%my_workspace_ids%', false) then
    raise exception '%', 'kb_select is not the current policy';
  end if;
  if not coalesce((select with_check from pg_policies where policyname = 'kb_update' and tablename = 'knowledge_base')
                  like '%my_workspace_ids%', false) then
    raise exception '%', 'kb_update has no membership check on the new row';
  end if;
end $$;
