-- Concurrent load, read: a member's newest 50 entries of one workspace.
select id, title from public.knowledge_base where workspace_id = %(workspace)s order by created_at desc limit 50;
