do $$
begin
  assert (select atttypid = 'uuid'::regtype from pg_attribute
          where attrelid = 'public.knowledge_base'::regclass and attname = 'workspace_id' and not attisdropped),
         'knowledge_base.workspace_id uuid is missing';
  assert (select atttypid = 'boolean'::regtype and attnotnull from pg_attribute
          where attrelid = 'public.knowledge_base'::regclass and attname = 'is_shared' and not attisdropped),
         'knowledge_base.is_shared boolean not null is missing';
  assert (select atttypid = 'uuid'::regtype from pg_attribute
          where attrelid = 'public.knowledge_base'::regclass and attname = 'section_id' and not attisdropped),
         'knowledge_base.section_id uuid is missing';
end $$;
