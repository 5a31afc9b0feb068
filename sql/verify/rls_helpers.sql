do $$
declare
  f oid := to_regprocedure('kb_private.my_workspace_ids()');
begin
  assert f is not null, 'kb_private.my_workspace_ids() is missing';
  assert (select provolatile = 's' and prosecdef and proconfig @> array['search_path=""']
          from pg_proc where oid = f), 'kb_private.my_workspace_ids() must be stable, security definer, search_path fixed';
  assert not has_function_privilege('anon', f, 'execute'), 'anon can execute kb_private.my_workspace_ids()';
  assert has_function_privilege('authenticated', f, 'execute'), 'authenticated cannot execute kb_private.my_workspace_ids()';
  assert (select prosrc !~* 'kbmigrate"?\s*\.' from pg_proc where oid = f),
    'kb_private.my_workspace_ids() reads the tool''s kbmigrate schema: the application''s RLS must not depend on it';
  -- the deploy names it as psycopg.sql.Identifier writes identifiers: always double-quoted
  assert (select position(format('"%s"."%s"', replace(current_setting('kbmigrate.membership_schema'), '"', '""'),
                                 replace(current_setting('kbmigrate.membership_table'), '"', '""')) in prosrc) > 0
          from pg_proc where oid = f),
    'kb_private.my_workspace_ids() does not read the membership table named in the parameters';
end $$;
