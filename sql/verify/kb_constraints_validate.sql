do $$
begin
  if not coalesce((select count(*) from pg_constraint
                   where conrelid = 'public.knowledge_base'::regclass and convalidated
                     and conname in ('knowledge_base_workspace_id_fkey', 'knowledge_base_section_in_workspace_fkey',
                                     'knowledge_base_section_needs_workspace', 'knowledge_base_shared_has_no_workspace')) = 4, false) then
    raise exception '%', 'the four knowledge_base constraints are not all validated';
  end if;
end $$;
