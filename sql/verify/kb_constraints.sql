do $$
declare
  missing text;
begin
  select string_agg(c, ', ') into missing
  from unnest(array['knowledge_base_workspace_id_fkey', 'knowledge_base_section_in_workspace_fkey',
                    'knowledge_base_section_needs_workspace', 'knowledge_base_shared_has_no_workspace']) c
  where not exists (select 1 from pg_constraint where conrelid = 'public.knowledge_base'::regclass and conname = c);
  if not coalesce(missing is null, false) then
    raise exception '%', 'knowledge_base constraints missing: ' || missing;
  end if;
end $$;
