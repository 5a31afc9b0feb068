-- Users 1..U in auth.users and their public profiles. u % 10 is the membership class (03).
insert into auth.users (id, email, raw_user_meta_data, created_at, updated_at)
select pg_temp.uid('user', u),
       'user' || u || '@example.test',
       jsonb_build_object('full_name',
         pg_temp.pick(array['Zoë O''Connor', 'José Núñez', '李雷', 'Ana "Nana" Silva', 'Bjørn Ødegård',
                            'Priya Raman', 'Ahmed Al-Farsi', 'Chloé Dubois'], u) || ' ' || u),
       t, t
from generate_series(1, current_setting('kbdemo.users')::int) as u,
     lateral (select timestamptz '2023-01-01 00:00:00+00'
                     + make_interval(hours => (pg_temp.h('user_t', u) % 8760)::int) as t) as ts;

insert into public.users (id, email, full_name, created_at)
select id, email, raw_user_meta_data ->> 'full_name', created_at
from auth.users
where email like '%@example.test';
