do $$
begin
  if not coalesce((select atttypid = 'uuid'::regtype from pg_attribute
                   where attrelid = 'public.knowledge_base'::regclass and attname = 'workspace_id' and not attisdropped), false) then
    raise exception '%', 'knowledge_base.workspace_id uuid is missing';
  end if;
  if not coalesce((select atttypid = 'boolean'::regtype and attnotnull from pg_attribute
                   where attrelid = 'public.knowledge_base'::regclass and attname = 'is_shared' and not attisdropped), false) then
    raise exception '%', 'knowledge_base.is_shared boolean not null is missing';
  end if;
  if not coalesce((select atttypid = 'uuid'::regtype from pg_attribute
                   where attrelid = 'public.knowledge_base'::regclass and attname = 'section_id' and not attisdropped), false) then
    raise exception '%', 'knowledge_base.section_id uuid is missing';
  end if;
end $$;
