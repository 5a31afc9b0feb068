-- Memberships by class c = u % 10:
--   0..5  one workspace
--   6, 7  2 to 4 workspaces, joined days apart
--   8     two workspaces joined at the same instant (tie: the smaller workspace id wins)
--   9     no workspace at all
-- Workspace k of user u is 1 + (h(u) + k) mod W, so a user's workspaces are distinct.
insert into public.workspace_members (workspace_id, user_id, role, joined_at)
select pg_temp.uid('ws', 1 + (s.base + k) % s.w_count),
       pg_temp.uid('user', s.u),
       case when k = 0 then 'owner' when k = 1 then 'admin' else 'member' end,
       case when s.c = 8 then s.t0 else s.t0 + make_interval(days => k * 3) end
from (select u, u % 10 as c, pg_temp.h('m', u) as base,
             current_setting('kbdemo.workspaces')::bigint as w_count,
             timestamptz '2023-06-01 00:00:00+00' + make_interval(hours => (pg_temp.h('m_t', u) % 4000)::int) as t0
      from generate_series(1, current_setting('kbdemo.users')::int) as u) as s,
     lateral generate_series(0, case when s.c <= 5 then 0
                                     when s.c in (6, 7) then 1 + s.u % 3
                                     when s.c = 8 then 1
                                     else -1 end) as k;

-- current_workspace_id: the workspace joined last (so it differs from the first-joined rule
-- for multi-workspace users); left NULL for users without a workspace and for every u % 20 = 3.
update public.users as usr
set current_workspace_id = pg_temp.uid('ws', 1 + (s.base + s.last_k) % current_setting('kbdemo.workspaces')::bigint)
from (select u, pg_temp.h('m', u) as base,
             case when u % 10 <= 5 then 0 when u % 10 in (6, 7) then 1 + u % 3 else 1 end as last_k
      from generate_series(1, current_setting('kbdemo.users')::int) as u
      where u % 10 <> 9 and u % 20 <> 3) as s
where usr.id = pg_temp.uid('user', s.u);
