-- Helpers for the legacy import, in the private kbmigrate schema (not exposed by the API).
-- kbmigrate.legacy_text renders a legacy field for a "Label: value" line: arrays as a comma
-- list, objects as "key: value" pairs, scalars as text; empty values as NULL (line omitted).
create or replace function kbmigrate.legacy_text(v jsonb) returns text
language sql immutable
set search_path = ''
as $$
  select nullif(btrim(case jsonb_typeof(v)
    when 'array' then (select string_agg(e #>> '{}', ', ') from jsonb_array_elements(v) e)
    when 'object' then (select string_agg(key || ': ' || (value #>> '{}'), ', ' order by key) from jsonb_each(v))
    when 'null' then null
    else v #>> '{}'
  end), '')
$$;
revoke all on function kbmigrate.legacy_text(jsonb) from public;

-- The legacy row (as jsonb) to a KB row: one line per present field, in the given order.
create or replace function kbmigrate.legacy_content(r jsonb, labels text[], fields text[]) returns text
language sql immutable
set search_path = ''
as $$
  select nullif(concat_ws(E'\n',
           kbmigrate.legacy_text(r -> 'description'),
           (select string_agg(labels[i] || ': ' || kbmigrate.legacy_text(r -> fields[i]), E'\n' order by i)
            from generate_subscripts(fields, 1) i
            where kbmigrate.legacy_text(r -> fields[i]) is not null)), '')
$$;
revoke all on function kbmigrate.legacy_content(jsonb, text[], text[]) from public;
