-- Concurrent load, read: a member opens 20 of their entries by id. Primary-key lookups, so
-- the figure shows what the migration's locks cost, not what its new indexes save.
select id, title from public.knowledge_base where id = any(%(ids)s);
