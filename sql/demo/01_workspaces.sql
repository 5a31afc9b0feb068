-- Workspaces 1..W; every fourth is inactive. Names carry quotes and unicode.
insert into public.workspaces (id, name, is_active, created_at)
select pg_temp.uid('ws', w),
       pg_temp.pick(array['Acme', 'Globex', 'Initech', 'Café Ünïcode', 'O''Reilly & Sons',
                          '北京 Labs', '"Quoted" Co', 'Zürich AG', 'Søren & Co', 'Ørsted 🚀'], w) || ' ' || w,
       w % 4 <> 0,
       timestamptz '2023-01-01 00:00:00+00' + make_interval(days => (pg_temp.h('ws_t', w) % 365)::int)
from generate_series(1, current_setting('kbdemo.workspaces')::int) as w;
