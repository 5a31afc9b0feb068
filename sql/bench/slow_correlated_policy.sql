-- A slow form Supabase's RLS guidance warns about, for comparison only (applied in a transaction
-- that is rolled back): auth.uid() unwrapped, in an `in` subquery correlated with the row, so
-- the membership is looked up again for every row (the guidance's rewrite is ours:
-- `workspace_id in (select … where user_id = (select auth.uid()))`).
drop policy kb_select on public.knowledge_base;
create policy kb_select on public.knowledge_base for select to authenticated
  using (is_shared or auth.uid() in (select m.user_id from public.workspace_members m
                                     where m.workspace_id = knowledge_base.workspace_id));
