-- One user's isolation probe, acting as that user the way the Supabase API does: the JWT claims in
-- request.jwt.claims, then the role (set_config('role', ...), as PostgREST sets it), all
-- transaction-local. checks/smoke.py calls it for many users in one statement, in a transaction
-- that is always rolled back, so the matrix costs one round trip, not dozens per user; what it
-- expects is computed by the admin beforehand, from the table's columns, and compared there.
--
-- subject: role, user_id (none for anon), own_ws, own_section, other_ws, shared_ids (the shared
-- entries each user tries to change), should_n and should_h (the figures of what they should
-- read). Returns what they did read (figures, and every id when the figures differ), the sections
-- and the view's workspaces they see, and each write's outcome: the rows it touched, or
-- 'refused' when RLS (or a check) rejected it. Each write runs in a subtransaction (as a
-- savepoint would); one that succeeds stays for the checks after it. The whole probe is a
-- subtransaction too, undone at its end: the next user meets the data as it was, not this one's
-- writes, and the caller's role again.
create or replace function pg_temp.kbmigrate_probe(subject jsonb)
returns jsonb language plpgsql as $kbmigrate$
declare
  own_ws uuid := (subject ->> 'own_ws')::uuid;
  own_section uuid := (subject ->> 'own_section')::uuid;
  other_ws uuid := (subject ->> 'other_ws')::uuid;
  shared_ids uuid[] := array(select jsonb_array_elements_text(subject -> 'shared_ids')::uuid);
  own_row uuid;
  out jsonb;
begin
 begin
  perform set_config('request.jwt.claims',
                     jsonb_strip_nulls(jsonb_build_object('role', subject ->> 'role', 'sub', subject ->> 'user_id'))::text, true);
  perform set_config('role', subject ->> 'role', true);

  -- what they read, as figures: count, sum of a hash of each id, quarantined and shared among them
  begin
    select jsonb_build_object('n', count(*), 'h', coalesce(sum(uuid_hash_extended(id, 0)::numeric), 0)::text,
                              'quarantined', count(*) filter (where workspace_id is null and not is_shared),
                              'shared', count(*) filter (where is_shared))
      into out from public.knowledge_base;
  exception when insufficient_privilege then
    out := jsonb_build_object('n', 0, 'h', '0', 'quarantined', 0, 'shared', 0);
  end;
  if (out ->> 'n') <> (subject ->> 'should_n') or (out ->> 'h') <> (subject ->> 'should_h') then
    begin  -- they differ: every id, to list exactly what leaks or is missing
      out := out || jsonb_build_object('seen', (select coalesce(jsonb_agg(id), '[]') from public.knowledge_base));
    exception when insufficient_privilege then
      out := out || jsonb_build_object('seen', '[]'::jsonb);
    end;
  end if;
  begin
    out := out || jsonb_build_object('sections', (select coalesce(jsonb_agg(id), '[]') from public.knowledge_base_sections));
  exception when insufficient_privilege then
    out := out || jsonb_build_object('sections', '[]'::jsonb);
  end;
  begin
    out := out || jsonb_build_object('view_workspaces',
                                     (select coalesce(jsonb_agg(workspace_id), '[]') from public.vw_workspace_sections));
  exception when insufficient_privilege then
    out := out || jsonb_build_object('view_workspaces', '[]'::jsonb);
  end;

  -- what they can write (values bound: $1, $2, $3 are kbmigrate_try's a, b, ids)
  if own_ws is not null then
    out := out || jsonb_build_object('create_own', pg_temp.kbmigrate_try(
      'insert into public.knowledge_base (title, content, workspace_id, section_id) values (''smoke test'', ''x'', $1, $2)',
      own_ws, own_section, null));
    select id into own_row from public.knowledge_base where workspace_id = own_ws order by id limit 1;
    out := out || jsonb_build_object('edit_own', pg_temp.kbmigrate_try(
      'update public.knowledge_base set title = title || '' (edited)'' where id = $1', own_row, null, null));
    out := out || jsonb_build_object('move_out', pg_temp.kbmigrate_try(
      'update public.knowledge_base set workspace_id = $1, section_id = null where id = $2', other_ws, own_row, null));
  end if;
  out := out || jsonb_build_object(
    'insert_other', pg_temp.kbmigrate_try('insert into public.knowledge_base (title, workspace_id) values (''x'', $1)',
                                          other_ws, null, null),
    'insert_shared', pg_temp.kbmigrate_try('insert into public.knowledge_base (title, is_shared) values (''x'', true)',
                                           null, null, null),
    'update_other', pg_temp.kbmigrate_try('update public.knowledge_base set title = ''x'' where workspace_id = $1',
                                          other_ws, null, null),
    'delete_other', pg_temp.kbmigrate_try('delete from public.knowledge_base where workspace_id = $1', other_ws, null, null),
    'update_shared', pg_temp.kbmigrate_try('update public.knowledge_base set title = ''x'' where id = any($3)',
                                           null, null, shared_ids),
    'delete_shared', pg_temp.kbmigrate_try('delete from public.knowledge_base where id = any($3)', null, null, shared_ids),
    'section_other', pg_temp.kbmigrate_try(
      'insert into public.knowledge_base_sections (workspace_id, name) values ($1, ''smoke'')', other_ws, null, null));

  raise exception using errcode = 'KBM01', message = 'the probe is over: undo its writes and its role';
 exception when sqlstate 'KBM01' then
  null;  -- out keeps what the probe saw: variables are not undone
 end;
 return out;
end
$kbmigrate$;
