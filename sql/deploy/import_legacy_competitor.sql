-- Import legacy_competitor_data (SPEC step 6): each row becomes one KB entry in its workspace's
-- "Competitors" section, once ever (kbmigrate.legacy_imports). Rows whose workspace is missing,
-- unknown or inactive, or lacks the section, cannot land: they stay out and are listed by
-- the notebook. The row is read as jsonb, so a column the deployment lacks is simply absent.
-- The legacy metadata is nested under legacy_metadata, never merged: a legacy key such as
-- is_shared must not change who can see the entry.
with src as (
  select l.id::text as original_id, to_jsonb(l) as r
  from public.legacy_competitor_data l
  where not exists (select 1 from kbmigrate.legacy_imports i
                    where i.source = 'legacy_competitor_data' and i.original_id = l.id::text)
),
landing as (
  select s.original_id, s.r, w.id as workspace_id, sec.id as section_id
  from src s
  join public.workspaces w on w.id = (s.r ->> 'workspace_id')::uuid and w.is_active
  join public.knowledge_base_sections sec on sec.workspace_id = w.id and sec.name = 'Competitors'
),
inserted as (
  insert into public.knowledge_base
    (title, content, metadata, created_by, workspace_id, section_id, is_shared, created_at, updated_at)
  select coalesce(nullif(btrim(r ->> 'title'), ''), coalesce(nullif(btrim(r ->> 'competitor_name'), ''), nullif(btrim(r ->> 'company_name'), '')), 'Competitors entry ' || original_id),
         kbmigrate.legacy_content(r, array['Strengths', 'Weaknesses', 'Market share', 'Pricing'], array['strengths', 'weaknesses', 'market_share', 'pricing']),
         jsonb_strip_nulls(jsonb_build_object(
           'imported_from', 'legacy_competitor_data',
           'original_id', original_id,
           'import_date', to_char(now() at time zone 'utc', 'YYYY-MM-DD"T"HH24:MI:SS"Z"'),
           'competitor_name', r -> 'competitor_name', 'company_name', r -> 'company_name',
           'legacy_metadata', r -> 'metadata')),
         coalesce((r ->> 'created_by')::uuid, (r ->> 'user_id')::uuid),
         workspace_id, section_id, false,
         coalesce((r ->> 'created_at')::timestamptz, now()),
         coalesce((r ->> 'created_at')::timestamptz, now())
  from landing
  returning id, metadata ->> 'original_id' as original_id
)
insert into kbmigrate.legacy_imports (source, original_id, entry_id, run_id)
select 'legacy_competitor_data', original_id, id, current_setting('kbmigrate.run_id') from inserted;
