-- Users who can no longer read entries they created. Before the migration the KB was global:
-- every signed-in user could read every entry. After it, a user reads shared entries and the
-- entries of their own workspaces; an entry they created lands elsewhere (quarantine, another
-- workspace of theirs they left, an assignment made before) and they lose it.
-- Computed as the admin from the rules, straight from the tables; the notebook confirms a
-- sample of it by acting as those users.
select kb.created_by as user_id, u.email, count(*) as entries_lost,
       count(*) filter (where kb.workspace_id is null) as quarantined,
       count(*) filter (where kb.workspace_id is not null) as in_a_workspace_they_are_not_in,
       (array_agg(kb.id order by kb.id))[1:5] as example_ids
from public.knowledge_base kb
left join public.users u on u.id = kb.created_by
where kb.created_by is not null
  and not kb.is_shared
  and not exists (select 1 from kbmigrate.membership m
                  where m.user_id = kb.created_by and m.workspace_id = kb.workspace_id)
group by kb.created_by, u.email
order by entries_lost desc, kb.created_by;
