do $$
declare
  f oid := to_regprocedure('kb_private.my_workspace_ids()');
begin
  assert f is not null, 'kb_private.my_workspace_ids() is missing';
  assert (select provolatile = 's' and prosecdef and proconfig @> array['search_path=""']
          from pg_proc where oid = f), 'kb_private.my_workspace_ids() must be stable, security definer, search_path fixed';
  assert not has_function_privilege('anon', f, 'execute'), 'anon can execute kb_private.my_workspace_ids()';
  assert has_function_privilege('authenticated', f, 'execute'), 'authenticated cannot execute kb_private.my_workspace_ids()';
end $$;
