-- A member's typical page: the newest 50 entries of one section.
select id, title, created_at from public.knowledge_base
where section_id = %(section)s
order by created_at desc
limit 50;
