-- Legacy rows of one source that are not imported, and why. A template: {source} is the
-- legacy table (psycopg.sql.Identifier); the section name and source name are bound values.
select l.id::text as original_id,
       case when l.workspace_id is null then 'no workspace'
            when w.id is null then 'unknown workspace'
            when not w.is_active then 'inactive workspace'
            when s.id is null then 'workspace has no section ' || %(section)s
            else 'not imported yet'
       end as reason,
       l.workspace_id
from {source} l
left join public.workspaces w on w.id = l.workspace_id
left join public.knowledge_base_sections s on s.workspace_id = w.id and s.name = %(section)s
where not exists (select 1 from kbmigrate.legacy_imports i
                  where i.source = %(source_name)s and i.original_id = l.id::text)
order by reason, original_id;
