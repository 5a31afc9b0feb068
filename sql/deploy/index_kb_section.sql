-- Serves the policies (section_id) and the app's page query: the newest entries of a section.
create index concurrently if not exists knowledge_base_section_created_idx on public.knowledge_base (section_id, created_at desc);
