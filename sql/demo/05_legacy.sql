-- The four legacy tables, rows 1..L each. Missing fields on purpose:
--   r % 25 = 0  no workspace;  otherwise any workspace (a quarter are inactive)
--   r % 4 = 0   no title (the importer falls back to the name field)
--   r % 10 = 0  no name field either (with r % 4 = 0 too: neither title nor name)
--   r % 5 = k   one descriptive field missing;  r % 7 = 0  no legacy metadata
-- Creator columns differ per table, as they do in the real legacy schema:
--   icp and persona have created_by and user_id, product only user_id, competitor only created_by;
--   r % 6 = 3 leaves icp/persona with neither.

insert into public.legacy_icp_data
  (id, workspace_id, created_by, user_id, title, company_name, description, industry,
   company_size, revenue_range, pain_points, metadata, created_at)
select pg_temp.uid('legacy_icp', r),
       case when r % 25 <> 0 then pg_temp.any_workspace(pg_temp.h('legacy_icp_ws', r)) end,
       case when r % 3 <> 0 then pg_temp.member_user(pg_temp.h('legacy_icp_u', r), r) end,
       case when r % 6 = 0 then pg_temp.member_user(pg_temp.h('legacy_icp_u2', r), r) end,
       case when r % 4 <> 0 then pg_temp.pick(array['Mid-market SaaS buyers', 'Enterprise "Fortune 500"', 'Café owners in Zürich'], r) end,
       case when r % 10 <> 0 then pg_temp.pick(array['Acme Corp', 'O''Hara Holdings', 'Société Générale'], r / 3) || ' ' || r end,
       case when r % 5 <> 1 then 'Ideal customers: ' || pg_temp.pick(array['fast-growing teams', 'regulated industries — banks', '日本のSaaS企業'], r) end,
       case when r % 5 <> 2 then pg_temp.pick(array['Fintech', 'Healthcare', 'Retail'], r) end,
       case when r % 5 <> 3 then pg_temp.pick(array['11-50', '51-200', '201-1000', '1000+'], r) end,
       case when r % 5 <> 4 then pg_temp.pick(array['$1M-$10M', '$10M-$50M', '€50M+'], r) end,
       case when r % 5 <> 0 then array['slow onboarding', 'manual "copy-paste" work'] end,
       case when r % 7 <> 0 then jsonb_build_object('legacy_score', r % 100, 'origin', 'crm-v1') end,
       timestamptz '2022-06-01 00:00:00+00' + make_interval(hours => (pg_temp.h('legacy_icp_t', r) % 9000)::int)
from generate_series(1, current_setting('kbdemo.legacy_rows')::int) as r;

insert into public.legacy_product_data
  (id, workspace_id, user_id, title, product_name, description, price, features, benefits, metadata, created_at)
select pg_temp.uid('legacy_product', r),
       case when r % 25 <> 0 then pg_temp.any_workspace(pg_temp.h('legacy_product_ws', r)) end,
       case when r % 3 <> 0 then pg_temp.member_user(pg_temp.h('legacy_product_u', r), r) end,
       case when r % 4 <> 0 then pg_temp.pick(array['Pro plan', 'Starter — “lite”', 'Enterprise add-on'], r) end,
       case when r % 10 <> 0 then pg_temp.pick(array['Widget', 'Gadget™', 'Gizmo'], r / 3) || ' ' || r end,
       case when r % 5 <> 1 then 'Product ' || r || ' does what it says; it''s "great".' end,
       case when r % 5 <> 2 then (r % 500) + 0.99 end,
       case when r % 5 <> 3 then array['SSO', 'Audit log', 'API'] end,
       case when r % 5 <> 4 then array['Saves time', 'Fewer errors'] end,
       case when r % 7 <> 0 then jsonb_build_object('sku', 'SKU-' || r) end,
       timestamptz '2022-06-01 00:00:00+00' + make_interval(hours => (pg_temp.h('legacy_product_t', r) % 9000)::int)
from generate_series(1, current_setting('kbdemo.legacy_rows')::int) as r;

insert into public.legacy_competitor_data
  (id, workspace_id, created_by, title, competitor_name, company_name, description, strengths,
   weaknesses, market_share, pricing, metadata, created_at)
select pg_temp.uid('legacy_competitor', r),
       case when r % 25 <> 0 then pg_temp.any_workspace(pg_temp.h('legacy_competitor_ws', r)) end,
       case when r % 3 <> 0 then pg_temp.member_user(pg_temp.h('legacy_competitor_u', r), r) end,
       case when r % 4 <> 0 then pg_temp.pick(array['Main rival', 'Low-cost "clone"', 'Incumbent'], r) end,
       case when r % 10 <> 0 and r % 3 <> 0 then pg_temp.pick(array['Rivalry Inc', 'Copycat GmbH', 'Ærø Systems'], r / 3) || ' ' || r end,
       case when r % 10 <> 0 and r % 3 = 0 then pg_temp.pick(array['BigCo', 'Legacy Ltd'], r) || ' ' || r end,
       case when r % 5 <> 1 then 'Competes on price; weak support.' end,
       case when r % 5 <> 2 then array['brand', 'distribution'] end,
       case when r % 5 <> 3 then array['support', 'UX'] end,
       case when r % 5 <> 4 then (r % 40) || '%' end,
       case when r % 5 <> 0 then '$' || (r % 90 + 10) || '/seat' end,
       case when r % 7 <> 0 then jsonb_build_object('tier', r % 3) end,
       timestamptz '2022-06-01 00:00:00+00' + make_interval(hours => (pg_temp.h('legacy_competitor_t', r) % 9000)::int)
from generate_series(1, current_setting('kbdemo.legacy_rows')::int) as r;

insert into public.legacy_persona_data
  (id, workspace_id, created_by, user_id, title, persona_name, description, job_title, goals,
   challenges, demographics, metadata, created_at)
select pg_temp.uid('legacy_persona', r),
       case when r % 25 <> 0 then pg_temp.any_workspace(pg_temp.h('legacy_persona_ws', r)) end,
       case when r % 3 <> 0 then pg_temp.member_user(pg_temp.h('legacy_persona_u', r), r) end,
       case when r % 6 = 0 then pg_temp.member_user(pg_temp.h('legacy_persona_u2', r), r) end,
       case when r % 4 <> 0 then pg_temp.pick(array['Ops Olivia', 'Dev "Dan"', 'CFO Zoë'], r) end,
       case when r % 10 <> 0 then pg_temp.pick(array['Olivia', 'Dan', 'Zoë'], r / 3) || ' ' || r end,
       case when r % 5 <> 1 then 'Persona ' || r || ': busy, pragmatic — wants answers fast.' end,
       case when r % 5 <> 2 then pg_temp.pick(array['Head of Ops', 'Staff Engineer', 'CFO'], r) end,
       case when r % 5 <> 3 then array['ship faster', 'cut costs'] end,
       case when r % 5 <> 4 then array['legacy tools', 'budget'] end,
       case when r % 5 <> 0 then jsonb_build_object('age_range', '30-45', 'region', 'EMEA') end,
       case when r % 7 <> 0 then jsonb_build_object('interviews', r % 12) end,
       timestamptz '2022-06-01 00:00:00+00' + make_interval(hours => (pg_temp.h('legacy_persona_t', r) % 9000)::int)
from generate_series(1, current_setting('kbdemo.legacy_rows')::int) as r;
