-- Concurrent load, write: a member edits one of their entries.
update public.knowledge_base set content = content where id = %(id)s;
