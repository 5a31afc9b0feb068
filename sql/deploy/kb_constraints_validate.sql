-- Validate the constraints added NOT VALID: scans the table under SHARE UPDATE EXCLUSIVE,
-- which lets the application go on reading and writing.
alter table public.knowledge_base validate constraint knowledge_base_workspace_id_fkey;
alter table public.knowledge_base validate constraint knowledge_base_section_in_workspace_fkey;
alter table public.knowledge_base validate constraint knowledge_base_section_needs_workspace;
alter table public.knowledge_base validate constraint knowledge_base_shared_has_no_workspace;
