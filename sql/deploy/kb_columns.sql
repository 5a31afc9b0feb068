-- New columns on knowledge_base. Adding a nullable column, or one with a constant default,
-- only touches the catalog (no table rewrite), so the ACCESS EXCLUSIVE lock is brief.
alter table public.knowledge_base add column if not exists workspace_id uuid;
alter table public.knowledge_base add column if not exists is_shared boolean not null default false;
alter table public.knowledge_base add column if not exists section_id uuid;
comment on column public.knowledge_base.is_shared is
  'Shared (global) entry: readable by every signed-in user, writable by none. NULL workspace alone means nothing.';
