do $$
begin
  if not coalesce(exists (select 1 from pg_index i join pg_class c on c.oid = i.indexrelid
                          where c.oid = to_regclass('public.knowledge_base_workspace_id_idx') and i.indisvalid), false) then
    raise exception '%', 'index knowledge_base_workspace_id_idx is missing or invalid';
  end if;
end $$;
