-- After the backfill: no entry without a workspace could still be placed, and every one left
-- (quarantined) is listed in kbmigrate.quarantine.
do $$
declare
  placeable bigint;
  unlisted bigint;
begin
  select count(*) into placeable
  from public.knowledge_base kb
  where kb.workspace_id is null and not kb.is_shared
    and ((kb.metadata ->> 'is_shared' = 'true' or kb.metadata ->> 'visibility' = 'global'
          or kb.title ilike '%[global]%') is true
         or case current_setting('kbmigrate.strategy')
              when 'first_joined' then exists (select 1 from kbmigrate.membership m where m.user_id = kb.created_by)
              when 'current_workspace' then exists (select 1 from public.users u
                                                    where u.id = kb.created_by and u.current_workspace_id is not null)
            end);
  if not coalesce(placeable = 0, false) then
    raise exception '%', placeable || ' entries without a workspace could still be shared or assigned';
  end if;
  select count(*) into unlisted
  from public.knowledge_base kb
  where kb.workspace_id is null and not kb.is_shared
    and not exists (select 1 from kbmigrate.quarantine q where q.entry_id = kb.id);
  if not coalesce(unlisted = 0, false) then
    raise exception '%', unlisted || ' quarantined entries are not listed in kbmigrate.quarantine';
  end if;
end $$;
