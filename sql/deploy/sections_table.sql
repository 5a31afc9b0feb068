-- squawk-ignore-file prefer-bigint-over-int
-- (display_order is a section's place in a list of nine, and the application reads it as an
-- integer; an existing table of some deployments has it so. 32 bits cannot run out here.)
--
-- knowledge_base_sections, created when absent. An existing table (some deployments already
-- have one) is kept with its rows; the constraints the migration relies on are added if missing.
create table if not exists public.knowledge_base_sections (
  id             uuid primary key default gen_random_uuid(),
  workspace_id   uuid not null references public.workspaces (id) on delete cascade,
  name           text not null,
  description    text,
  display_order  integer not null default 0,
  icon           text,
  is_active      boolean not null default true,
  created_at     timestamptz not null default now(),
  updated_at     timestamptz not null default now()
);

do $$
begin
  if not exists (select 1 from pg_constraint where conrelid = 'public.knowledge_base_sections'::regclass
                 and conname = 'knowledge_base_sections_workspace_id_name_key') then
    alter table public.knowledge_base_sections
      add constraint knowledge_base_sections_workspace_id_name_key unique (workspace_id, name);
  end if;
  -- the target of knowledge_base's composite foreign key (an entry's section is in its workspace)
  if not exists (select 1 from pg_constraint where conrelid = 'public.knowledge_base_sections'::regclass
                 and conname = 'knowledge_base_sections_id_workspace_id_key') then
    alter table public.knowledge_base_sections
      add constraint knowledge_base_sections_id_workspace_id_key unique (id, workspace_id);
  end if;
end $$;

-- Explicit grants, as Supabase gives tables created by its own roles: RLS decides the rows.
-- (Default privileges only cover tables created by the role they were defined for; the
-- migrating user may be another.)
grant select, insert, update, delete on public.knowledge_base_sections to authenticated;
grant all on public.knowledge_base_sections to service_role;
