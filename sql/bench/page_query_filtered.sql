-- The same page as the service role, with the workspace filter written out.
select id, title, created_at from public.knowledge_base
where section_id = %(section)s and workspace_id = %(workspace)s
order by created_at desc
limit 50;
