-- A slow form Supabase's RLS guidance warns about, for comparison only (applied in a transaction
-- that is rolled back): a security-definer membership function called with the row's value, so
-- it cannot be inlined or hoisted into an initplan and runs once per row.
create function kb_private.bench_is_member(ws uuid) returns boolean
language sql stable security definer
set search_path = ''
as $$
  select exists (select 1 from public.workspace_members m where m.workspace_id = ws and m.user_id = auth.uid())
$$;
grant execute on function kb_private.bench_is_member(uuid) to authenticated;
drop policy kb_select on public.knowledge_base;
create policy kb_select on public.knowledge_base for select to authenticated
  using (is_shared or kb_private.bench_is_member(workspace_id));
