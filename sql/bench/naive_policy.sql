-- The naive policy, for comparison only (applied in a transaction that is rolled back):
-- auth.uid() unwrapped (called per row) and a membership join per row.
drop policy kb_select on public.knowledge_base;
create policy kb_select on public.knowledge_base for select to authenticated
  using (is_shared or exists (select 1 from public.workspace_members m
                              where m.workspace_id = knowledge_base.workspace_id and m.user_id = auth.uid()));
