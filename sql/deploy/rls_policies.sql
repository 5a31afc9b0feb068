-- Row Level Security. For signed-in users (role authenticated):
--   members of a workspace read, create, edit and delete its entries and sections;
--   shared entries are readable by all, writable by none; quarantined entries (no workspace,
--   not shared) by none; moving a row into a workspace one is not a member of is refused.
-- anon gets no policy, so sees nothing. service_role bypasses RLS. Policies are dropped and
-- created again so a re-run leaves exactly these.
-- The strongest lock first, once, on both tables (as kb_constraints does): no lock upgrade in the
-- middle of the transaction to deadlock with the application's read-then-write transactions.
lock table public.knowledge_base, public.knowledge_base_sections in access exclusive mode;
alter table public.knowledge_base enable row level security;
alter table public.knowledge_base_sections enable row level security;

drop policy if exists kb_select on public.knowledge_base;
drop policy if exists kb_insert on public.knowledge_base;
drop policy if exists kb_update on public.knowledge_base;
drop policy if exists kb_delete on public.knowledge_base;

create policy kb_select on public.knowledge_base for select to authenticated
  using (is_shared or workspace_id in (select kb_private.my_workspace_ids()));
create policy kb_insert on public.knowledge_base for insert to authenticated
  with check (not is_shared and workspace_id in (select kb_private.my_workspace_ids()));
create policy kb_update on public.knowledge_base for update to authenticated
  using (not is_shared and workspace_id in (select kb_private.my_workspace_ids()))
  with check (not is_shared and workspace_id in (select kb_private.my_workspace_ids()));
create policy kb_delete on public.knowledge_base for delete to authenticated
  using (not is_shared and workspace_id in (select kb_private.my_workspace_ids()));

drop policy if exists kb_sections_select on public.knowledge_base_sections;
drop policy if exists kb_sections_insert on public.knowledge_base_sections;
drop policy if exists kb_sections_update on public.knowledge_base_sections;
drop policy if exists kb_sections_delete on public.knowledge_base_sections;

create policy kb_sections_select on public.knowledge_base_sections for select to authenticated
  using (workspace_id in (select kb_private.my_workspace_ids()));
create policy kb_sections_insert on public.knowledge_base_sections for insert to authenticated
  with check (workspace_id in (select kb_private.my_workspace_ids()));
create policy kb_sections_update on public.knowledge_base_sections for update to authenticated
  using (workspace_id in (select kb_private.my_workspace_ids()))
  with check (workspace_id in (select kb_private.my_workspace_ids()));
create policy kb_sections_delete on public.knowledge_base_sections for delete to authenticated
  using (workspace_id in (select kb_private.my_workspace_ids()));
