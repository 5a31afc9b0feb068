-- KB entries kbdemo.kb_from..kbdemo.kb_to; kind = j % 20 decides what the migration must do:
--   0  shared by metadata is_shared = true (JSON boolean or the string "true"), no workspace
--   1  shared by metadata visibility = global, no workspace
--   2  shared by a title containing [GLOBAL] in some letter case, no workspace
--   3..5  already assigned to a workspace
--   6  already assigned AND matching a shared rule (for review, never published)
--   7  no workspace, no creator                        -> quarantine
--   8  no workspace, creator has no workspace          -> quarantine
--   9..19  no workspace, creator is a member           -> backfilled from the creator
-- Decoys that must NOT count as shared: kind 9 has is_shared false / visibility private,
-- kind 10 says GLOBAL without brackets, kind 11 has visibility workspace.
-- Among kinds 0..6, every j divisible by 7 has no creator.
insert into public.knowledge_base
  (id, title, content, category, tags, metadata, created_by, workspace_id, created_at, updated_at)
select pg_temp.uid('kb', j),
       case
         when kind = 2 then pg_temp.pick(array['[GLOBAL] ', '[global] ', 'Pricing FAQ [Global] ', 'Shared [gLoBaL] '], j / 20) || topic
         when kind = 6 and (j / 20) % 3 = 2 then '[Global] ' || topic
         when kind = 10 then pg_temp.pick(array['Global strategy: ', 'GLOBAL rollout ', 'global-ish '], j / 20) || topic
         else topic
       end,
       case
         when j % 31 = 0 then null
         when j % 97 = 0 then repeat(body || E'\n', 250)
         else body
       end,
       pg_temp.pick(array['icp', 'product', 'competitor', 'persona', 'general'], hh / 7),
       array[pg_temp.pick(array['sales', 'onboarding', 'pricing', 'q3', 'étude', 'デモ'], hh / 11)],
       jsonb_build_object('source', pg_temp.pick(array['app', 'api', 'import'], hh / 13), 'version', 1 + hh % 5)
         || case
              when kind = 0 and j % 40 = 0 then '{"is_shared": true}'::jsonb
              when kind = 0 then '{"is_shared": "true"}'::jsonb
              when kind = 1 then '{"visibility": "global"}'::jsonb
              when kind = 6 and (j / 20) % 3 = 0 then '{"is_shared": true}'::jsonb
              when kind = 6 and (j / 20) % 3 = 1 then '{"visibility": "global"}'::jsonb
              when kind = 9 then '{"is_shared": false, "visibility": "private"}'::jsonb
              when kind = 11 then '{"visibility": "workspace"}'::jsonb
              else '{}'::jsonb
            end,
       case
         when kind = 7 then null
         when kind = 8 then pg_temp.loner_user(hh)
         when kind <= 6 and j % 7 = 0 then null
         else pg_temp.member_user(hh, j)
       end,
       case when kind between 3 and 6 then pg_temp.any_workspace(pg_temp.h('kb_ws', j)) end,
       created,
       created + make_interval(mins => (hh % 50000)::int)
from generate_series(current_setting('kbdemo.kb_from')::bigint, current_setting('kbdemo.kb_to')::bigint) as j,
     lateral (select j % 20 as kind, pg_temp.h('kb', j) as hh) as k,
     lateral (select pg_temp.pick(array['Onboarding checklist', 'O''Brien''s "pricing" notes', 'Café résumé — naïve',
                                        '日本語のメモ', 'Launch 🚀 plan', 'Path C:\temp\notes', 'Semicolon; drop table x; --',
                                        'Competitor teardown', 'Persona: Ops lead', 'ICP: mid-market SaaS'], hh) || ' #' || j as topic,
                     'Entry ' || j || ': ' || pg_temp.pick(array[
                       'Customers say "it just works" — usually.',
                       'Ünïcode ✓, tabs' || E'\t' || 'and newlines' || E'\n' || 'inside.',
                       'Quote''s and "double" quotes, backslash \ and percent % signs.',
                       'Plain text about pricing tiers and discounts.',
                       'Многоязычный текст 中文 العربية'], hh / 3) as body,
                     timestamptz '2024-01-01 00:00:00+00' + make_interval(mins => (hh % 800000)::int) as created) as t;
