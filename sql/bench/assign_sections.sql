-- Bench setup: give every workspace entry a section (General), so a section page has rows.
update public.knowledge_base kb set section_id = s.id
from public.knowledge_base_sections s
where s.workspace_id = kb.workspace_id and s.name = 'General' and kb.section_id is null;
