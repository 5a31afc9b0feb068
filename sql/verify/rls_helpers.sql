do $$
declare
  f oid := to_regprocedure('kb_private.my_workspace_ids()');
begin
  if not coalesce(f is not null, false) then
    raise exception '%', 'kb_private.my_workspace_ids() is missing';
  end if;
  if not coalesce((select provolatile = 's' and prosecdef and proconfig @> array['search_path=""']
                   from pg_proc where oid = f), false) then
    raise exception '%', 'kb_private.my_workspace_ids() must be stable, security definer, search_path fixed';
  end if;
  if not coalesce(not has_function_privilege('anon', f, 'execute'), false) then
    raise exception '%', 'anon can execute kb_private.my_workspace_ids()';
  end if;
  if not coalesce(has_function_privilege('authenticated', f, 'execute'), false) then
    raise exception '%', 'authenticated cannot execute kb_private.my_workspace_ids()';
  end if;
  if not coalesce((select prosrc !~* 'kbmigrate"?\s*\.' from pg_proc where oid = f), false) then
    raise exception '%', 'kb_private.my_workspace_ids() reads the tool''s kbmigrate schema: the application''s RLS must not depend on it';
  end if;
  -- the deploy names it as psycopg.sql.Identifier writes identifiers: always double-quoted
  if not coalesce((select position(format('"%s"."%s"', replace(current_setting('kbmigrate.membership_schema'), '"', '""'),
                                          replace(current_setting('kbmigrate.membership_table'), '"', '""')) in prosrc) > 0
                   from pg_proc where oid = f), false) then
    raise exception '%', 'kb_private.my_workspace_ids() does not read the membership table named in the parameters';
  end if;
end $$;
