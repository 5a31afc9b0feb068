-- Users who can now read entries they could not before: the legacy import's new entries, read by
-- the members of the workspace each landed in (shared ones by every signed-in user). Every entry
-- of before stays readable to whoever's workspace it is in; none is gained there.
select count(distinct m.user_id) as users, count(distinct li.entry_id) as entries,
       count(distinct li.entry_id) filter (where kb.is_shared) as shared
from kbmigrate.legacy_imports li
join public.knowledge_base kb on kb.id = li.entry_id
left join kbmigrate.membership m on m.workspace_id = kb.workspace_id;
