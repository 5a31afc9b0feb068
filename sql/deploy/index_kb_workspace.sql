-- Built CONCURRENTLY: the application keeps writing while it builds. Runs outside a transaction.
create index concurrently if not exists knowledge_base_workspace_id_idx on public.knowledge_base (workspace_id);
