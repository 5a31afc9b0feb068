-- Helpers for the legacy import, in the private kbmigrate schema (not exposed by the API).
-- kbmigrate.legacy_text renders a legacy field for a "Label: value" line: arrays as a comma
-- list, objects as "key: value" pairs, scalars as text; empty values as NULL (line omitted).
-- Both helpers are PL/pgSQL: called per row and per field, a SQL function with SET search_path
-- is never inlined, and costs about three times as much per call (bench: docs/performance.md).
create or replace function kbmigrate.legacy_text(v jsonb) returns text
language plpgsql immutable
set search_path = ''
as $$
declare
  kind text := jsonb_typeof(v);
  out text;
begin
  if kind is null or kind = 'null' then
    return null;
  elsif kind = 'array' then
    select string_agg(e #>> '{}', ', ') into out from jsonb_array_elements(v) e;
  elsif kind = 'object' then
    select string_agg(key || ': ' || (value #>> '{}'), ', ' order by key) into out from jsonb_each(v);
  else
    out := v #>> '{}';
  end if;
  return nullif(btrim(out), '');
end
$$;
revoke all on function kbmigrate.legacy_text(jsonb) from public;

-- The legacy row (as jsonb) to a KB row: one line per present field, in the given order.
create or replace function kbmigrate.legacy_content(r jsonb, labels text[], fields text[]) returns text
language plpgsql immutable
set search_path = ''
as $$
declare
  lines text[] := array[kbmigrate.legacy_text(r -> 'description')];
  value text;
begin
  for i in 1 .. coalesce(array_length(fields, 1), 0) loop
    value := kbmigrate.legacy_text(r -> fields[i]);
    if value is not null then
      lines := lines || (labels[i] || ': ' || value);
    end if;
  end loop;
  return nullif(array_to_string(lines, E'\n'), '');
end
$$;
revoke all on function kbmigrate.legacy_content(jsonb, text[], text[]) from public;

-- One legacy source into the KB (SPEC step 6), described by spec (a line of the legacy sources
-- file, as JSON): {source, section, title_prefix, name_fields[], labels[], fields[]}. Each row
-- not imported before becomes one entry in its workspace's <section>, if the workspace is active
-- and has that section; the others stay out and are listed by the notebook. The row is read as
-- jsonb, so a column a deployment lacks is simply absent. Title: the row's title, else the
-- prefix and the first non-empty name field, else "<section> entry <id>". The legacy metadata
-- is nested under legacy_metadata, never merged: a legacy key such as is_shared must not change
-- who can see the entry. Returns what it inserted; the caller logs it in kbmigrate.legacy_imports.
create or replace function kbmigrate.import_legacy(spec jsonb)
returns table (original_id text, entry_id uuid)
language plpgsql
set search_path = ''
as $fn$
begin
  return query execute format($q$
    with src as (
      select l.id::text as original_id, to_jsonb(l) as r
      from public.%I l
      where not exists (select 1 from kbmigrate.legacy_imports i
                        where i.source = $1 ->> 'source' and i.original_id = l.id::text)
    ),
    landing as (
      select s.original_id, s.r, w.id as workspace_id, sec.id as section_id
      from src s
      join public.workspaces w on w.id = (s.r ->> 'workspace_id')::uuid and w.is_active
      join public.knowledge_base_sections sec on sec.workspace_id = w.id and sec.name = $1 ->> 'section'
    ),
    inserted as (
      insert into public.knowledge_base
        (title, content, metadata, created_by, workspace_id, section_id, is_shared, created_at, updated_at)
      select coalesce(nullif(btrim(r ->> 'title'), ''),
                      ($1 ->> 'title_prefix') || (select nullif(btrim(r ->> f), '')
                                                  from jsonb_array_elements_text($1 -> 'name_fields') with ordinality as n(f, i)
                                                  where nullif(btrim(r ->> f), '') is not null
                                                  order by i limit 1),
                      ($1 ->> 'section') || ' entry ' || original_id),
             kbmigrate.legacy_content(r, array(select jsonb_array_elements_text($1 -> 'labels')),
                                         array(select jsonb_array_elements_text($1 -> 'fields'))),
             jsonb_strip_nulls(jsonb_build_object(
               'imported_from', $1 ->> 'source',
               'original_id', original_id,
               'import_date', to_char(now() at time zone 'utc', 'YYYY-MM-DD"T"HH24:MI:SS"Z"'),
               'legacy_metadata', r -> 'metadata')
               || (select coalesce(jsonb_object_agg(f, r -> f), '{}'::jsonb)
                   from jsonb_array_elements_text($1 -> 'name_fields') as n(f))),
             coalesce((r ->> 'created_by')::uuid, (r ->> 'user_id')::uuid),
             workspace_id, section_id, false,
             coalesce((r ->> 'created_at')::timestamptz, now()),
             coalesce((r ->> 'created_at')::timestamptz, now())
      from landing
      returning id, metadata ->> 'original_id' as original_id
    )
    select original_id, id from inserted
  $q$, spec ->> 'source') using spec;
end
$fn$;
revoke all on function kbmigrate.import_legacy(jsonb) from public;
