-- Where the KB entries stand: shared, in a workspace (active or not), quarantined.
select count(*) as total,
       count(*) filter (where is_shared) as shared,
       count(*) filter (where workspace_id is not null) as in_a_workspace,
       count(*) filter (where w.is_active is false) as in_inactive_workspaces,
       count(*) filter (where kb.workspace_id is null and not is_shared) as without_workspace
from public.knowledge_base kb
left join public.workspaces w on w.id = kb.workspace_id;
