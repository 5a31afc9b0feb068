-- Foreign keys are added NOT VALID (no scan of existing rows under a strong lock) and
-- validated by the next change, which only takes SHARE UPDATE EXCLUSIVE.
-- The strongest lock this change needs is taken first, once: adding the foreign keys takes SHARE
-- ROW EXCLUSIVE, the check constraints ACCESS EXCLUSIVE, and upgrading from one to the other in
-- the middle of the transaction deadlocks with any application transaction that reads the table
-- and then writes it (found by kbmigrate bench's concurrent load). Adding NOT VALID constraints
-- only touches the catalog: the lock is held for milliseconds, under lock_timeout.
lock table public.knowledge_base in access exclusive mode;
do $$
begin
  if not exists (select 1 from pg_constraint where conrelid = 'public.knowledge_base'::regclass
                 and conname = 'knowledge_base_workspace_id_fkey') then
    alter table public.knowledge_base
      add constraint knowledge_base_workspace_id_fkey foreign key (workspace_id)
      references public.workspaces (id) not valid;
  end if;
  -- an entry's section belongs to the entry's workspace
  if not exists (select 1 from pg_constraint where conrelid = 'public.knowledge_base'::regclass
                 and conname = 'knowledge_base_section_in_workspace_fkey') then
    alter table public.knowledge_base
      add constraint knowledge_base_section_in_workspace_fkey foreign key (section_id, workspace_id)
      references public.knowledge_base_sections (id, workspace_id) on delete set null (section_id) not valid;
  end if;
  -- a section needs a workspace (a composite key with a NULL part is not checked otherwise)
  if not exists (select 1 from pg_constraint where conrelid = 'public.knowledge_base'::regclass
                 and conname = 'knowledge_base_section_needs_workspace') then
    alter table public.knowledge_base
      add constraint knowledge_base_section_needs_workspace
      check (section_id is null or workspace_id is not null) not valid;
  end if;
  -- a shared entry belongs to no workspace (else its workspace's members could edit it)
  if not exists (select 1 from pg_constraint where conrelid = 'public.knowledge_base'::regclass
                 and conname = 'knowledge_base_shared_has_no_workspace') then
    alter table public.knowledge_base
      add constraint knowledge_base_shared_has_no_workspace
      check (not is_shared or workspace_id is null) not valid;
  end if;
end $$;
