-- Revert the RLS policies: drop them and disable RLS on both KB tables, which is the
-- pre-migration behaviour (the KB readable by every API role). Verified in this transaction.
drop policy if exists kb_select on public.knowledge_base;
drop policy if exists kb_insert on public.knowledge_base;
drop policy if exists kb_update on public.knowledge_base;
drop policy if exists kb_delete on public.knowledge_base;
drop policy if exists kb_sections_select on public.knowledge_base_sections;
drop policy if exists kb_sections_insert on public.knowledge_base_sections;
drop policy if exists kb_sections_update on public.knowledge_base_sections;
drop policy if exists kb_sections_delete on public.knowledge_base_sections;
alter table public.knowledge_base disable row level security;
alter table public.knowledge_base_sections disable row level security;
do $$
begin
  if not coalesce(not exists (select 1 from pg_policies where schemaname = 'public'
                              and tablename in ('knowledge_base', 'knowledge_base_sections')), false) then
    raise exception '%', 'KB policies remain';
  end if;
  if not coalesce(not (select relrowsecurity from pg_class where oid = 'public.knowledge_base'::regclass), false) then
    raise exception '%', 'RLS still on';
  end if;
end $$;
