-- Entries that already had a workspace but match a shared rule: listed for a person to review,
-- never published by the migration.
select kb.id, kb.workspace_id, w.name as workspace, left(kb.title, 60) as title,
       kb.metadata ->> 'is_shared' as meta_is_shared, kb.metadata ->> 'visibility' as meta_visibility
from public.knowledge_base kb
join public.workspaces w on w.id = kb.workspace_id
where not kb.is_shared
  and (kb.metadata ->> 'is_shared' = 'true' or kb.metadata ->> 'visibility' = 'global'
       or kb.title ilike '%[global]%') is true
  and kb.metadata ->> 'imported_from' is null
order by kb.id;
