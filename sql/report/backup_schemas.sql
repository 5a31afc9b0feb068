-- Every schema of the database, with what the backup needs to decide whether it can cover it:
-- its owner, whether the current user can act as that owner, and the relations in it the current
-- user cannot read (extension members aside: pg_dump does not dump them one by one).
select n.nspname as schema,
       pg_get_userbyid(n.nspowner) as owner,
       pg_has_role(current_user, n.nspowner, 'USAGE') as acts_as_owner,
       has_schema_privilege(n.oid, 'USAGE') as usable,
       coalesce((select array_agg(c.relname::text order by c.relname)
                 from pg_class c
                 where c.relnamespace = n.oid and c.relkind in ('r', 'p', 'm', 'S')
                   and not has_table_privilege(c.oid, 'SELECT')
                   and not exists (select 1 from pg_depend d where d.classid = 'pg_class'::regclass
                                   and d.objid = c.oid and d.deptype = 'e')), '{}') as unreadable
from pg_namespace n
where n.nspname not in ('pg_catalog', 'information_schema')
  and n.nspname !~ '^pg_(toast|temp_|toast_temp_)'
order by 1;
