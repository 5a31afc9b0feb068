-- Everything a member can read: the query where a per-row policy costs most.
select count(*) from public.knowledge_base;
