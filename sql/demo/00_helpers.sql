-- Deterministic pseudo-random helpers for the demo generator, in pg_temp (gone at disconnect).
-- Everything derives from md5(seed / tag / i), so the data does not depend on query plans,
-- parallel workers or the order rows are produced in: the same seed gives the same database.
-- Parameters arrive as settings (set_config with bound values): kbdemo.seed, kbdemo.workspaces,
-- kbdemo.users, kbdemo.kb_from, kbdemo.kb_to, kbdemo.legacy_rows.

create or replace function pg_temp.h(tag text, i bigint) returns bigint
language sql stable parallel safe
as $$ select ('x' || substr(md5(current_setting('kbdemo.seed') || '/' || tag || '/' || i), 1, 12))::bit(48)::bigint $$;

create or replace function pg_temp.uid(tag text, i bigint) returns uuid
language sql stable parallel safe
as $$ select md5(current_setting('kbdemo.seed') || '/' || tag || '/' || i)::uuid $$;

create or replace function pg_temp.pick(arr text[], n bigint) returns text
language sql immutable parallel safe
as $$ select arr[1 + (n % array_length(arr, 1))::int] $$;

-- A member user (class 0..8 of u % 10) and a user with no workspace (class 9).
create or replace function pg_temp.member_user(n bigint, r bigint) returns uuid
language sql stable parallel safe
as $$ select pg_temp.uid('user', 10 + 10 * (n % (current_setting('kbdemo.users')::bigint / 10 - 1)) + (r % 9)) $$;

create or replace function pg_temp.loner_user(n bigint) returns uuid
language sql stable parallel safe
as $$ select pg_temp.uid('user', 10 * (n % (current_setting('kbdemo.users')::bigint / 10)) + 9) $$;

create or replace function pg_temp.any_workspace(n bigint) returns uuid
language sql stable parallel safe
as $$ select pg_temp.uid('ws', 1 + n % current_setting('kbdemo.workspaces')::bigint) $$;
