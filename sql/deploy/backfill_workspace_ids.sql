-- One batch of the backfill (SPEC step 4). The runner repeats it, each batch its own short
-- transaction, moving a keyset cursor (kbmigrate.after_id) over knowledge_base.id until a
-- batch comes back short. Only entries with no workspace and not shared are looked at; an
-- entry that already has a workspace is never moved. Timestamps are not touched.
--   1. shared rules first: metadata is_shared = 'true', visibility = 'global', or [GLOBAL] in
--      the title in any letter case -> is_shared = true, no workspace;
--   2. else the creator's workspace: first_joined = earliest join, ties to the smaller
--      workspace id, every membership counts; current_workspace = users.current_workspace_id;
--   3. else quarantined: left alone and listed in kbmigrate.quarantine.
-- "(...) is true": a missing metadata key gives NULL, which must count as "no", never as unknown.
with batch as (
  select kb.id, kb.title, kb.metadata, kb.created_by
  from public.knowledge_base kb
  where kb.workspace_id is null and not kb.is_shared
    and kb.id > current_setting('kbmigrate.after_id')::uuid
  order by kb.id
  limit current_setting('kbmigrate.batch_size')::int
  for update of kb
),
decided as (
  select b.id, b.created_by,
         (b.metadata ->> 'is_shared' = 'true'
          or b.metadata ->> 'visibility' = 'global'
          or b.title ilike '%[global]%') is true as shared,
         case current_setting('kbmigrate.strategy')
           when 'first_joined' then
             (select m.workspace_id from kbmigrate.membership m
              where m.user_id = b.created_by
              order by m.joined_at, m.workspace_id
              limit 1)
           when 'current_workspace' then
             (select u.current_workspace_id from public.users u where u.id = b.created_by)
         end as workspace_id
  from batch b
),
updated as (
  update public.knowledge_base kb
  set is_shared = d.shared,
      workspace_id = case when d.shared then null else d.workspace_id end
  from decided d
  where kb.id = d.id and (d.shared or d.workspace_id is not null)
  returning kb.id
),
quarantined as (
  insert into kbmigrate.quarantine (entry_id, reason, run_id)
  select d.id,
         case when d.created_by is null then 'no creator'
              else 'creator has no workspace (' || current_setting('kbmigrate.strategy') || ')' end,
         current_setting('kbmigrate.run_id')
  from decided d
  where not d.shared and d.workspace_id is null
  on conflict (entry_id) do nothing
  returning entry_id
)
select (select count(*) from batch) as scanned,
       (select count(*) from decided where shared) as shared,
       (select count(*) from decided where not shared and workspace_id is not null) as assigned,
       (select count(*) from decided where not shared and workspace_id is null) as quarantined,
       (select count(*) from updated) as updated,
       (select count(*) from quarantined) as newly_quarantined,
       (select id from batch order by id desc limit 1) as last_id;
