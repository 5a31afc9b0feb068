-- Concurrent load, write: a member edits one entry of their workspace.
update public.knowledge_base set content = content
where id = (select id from public.knowledge_base where workspace_id = %(workspace)s order by created_at desc limit 1);
