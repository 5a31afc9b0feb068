-- Quarantined entries: no workspace and not shared; visible to nobody but the service role.
select q.entry_id, q.reason, left(kb.title, 60) as title, kb.created_by, kb.created_at, q.run_id
from kbmigrate.quarantine q
join public.knowledge_base kb on kb.id = q.entry_id
where kb.workspace_id is null and not kb.is_shared
order by q.reason, q.entry_id;
