-- Functions the migration created, and whether the API roles may call them. Supabase exposes
-- public functions over its API; only kb_private.my_workspace_ids() is meant for authenticated.
select n.nspname || '.' || p.proname || '(' || pg_get_function_identity_arguments(p.oid) || ')' as function,
       has_function_privilege('anon', p.oid, 'execute') as anon_can_execute,
       has_function_privilege('authenticated', p.oid, 'execute') as authenticated_can_execute,
       (n.nspname, p.proname) = ('kb_private', 'my_workspace_ids') as meant_for_authenticated
from pg_proc p join pg_namespace n on n.oid = p.pronamespace
where n.nspname in ('kb_private', 'kbmigrate')
   or (n.nspname = 'public' and exists (select 1 from pg_depend d where d.objid = p.oid and d.deptype = 'e') is false
       and p.proname like 'kb\_%')
order by 1;
