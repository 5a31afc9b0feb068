-- What the objects inside the backup's schemas (the array bound as schemas) need from outside them: functions
-- (column defaults, policies, triggers, views), tables (views, foreign keys), types, and the
-- roles policies name. A restore elsewhere (the drill) must provide these first; a restore into
-- this database finds them in place.
with inside as (
  select oid from pg_namespace where nspname = any(%(schemas)s)
),
dep as (
  select d.refclassid, d.refobjid,
         case d.classid
           when 'pg_class'::regclass then (select c.relnamespace from pg_class c where c.oid = d.objid)
           when 'pg_attrdef'::regclass then (select c.relnamespace from pg_attrdef a join pg_class c on c.oid = a.adrelid where a.oid = d.objid)
           when 'pg_constraint'::regclass then (select coalesce(c.relnamespace, t.typnamespace, k.connamespace)
                                                from pg_constraint k left join pg_class c on c.oid = k.conrelid
                                                left join pg_type t on t.oid = k.contypid where k.oid = d.objid)
           when 'pg_policy'::regclass then (select c.relnamespace from pg_policy p join pg_class c on c.oid = p.polrelid where p.oid = d.objid)
           when 'pg_rewrite'::regclass then (select c.relnamespace from pg_rewrite r join pg_class c on c.oid = r.ev_class where r.oid = d.objid)
           when 'pg_trigger'::regclass then (select c.relnamespace from pg_trigger t join pg_class c on c.oid = t.tgrelid where t.oid = d.objid)
           when 'pg_proc'::regclass then (select p.pronamespace from pg_proc p where p.oid = d.objid)
           when 'pg_type'::regclass then (select t.typnamespace from pg_type t where t.oid = d.objid)
         end as dependent_ns
  from pg_depend d
  where d.deptype = 'n'
),
needed as (
  select distinct refclassid, refobjid from dep where dependent_ns in (select oid from inside)
)
select 'function' as kind, p.pronamespace::regnamespace::text as schema, p.proname::text as name,
       pg_get_function_identity_arguments(p.oid) as args, pg_get_function_result(p.oid) as result,
       p.proretset as setof, p.prokind::text as prokind, null::jsonb as columns,
       null::text as on_table, null::text as refers_to
from needed n join pg_proc p on n.refclassid = 'pg_proc'::regclass and p.oid = n.refobjid
where p.pronamespace not in (select oid from inside) and p.pronamespace <> 'pg_catalog'::regnamespace
union all
select 'table', c.relnamespace::regnamespace::text, c.relname::text, null::text, null::text, null::boolean, null::text,
       (select jsonb_agg(jsonb_build_object('name', a.attname,
                                            'type', case when t.typnamespace = 'pg_catalog'::regnamespace
                                                         then format_type(a.atttypid, a.atttypmod) else 'text' end)
                         order by a.attnum)
        from pg_attribute a join pg_type t on t.oid = a.atttypid
        where a.attrelid = c.oid and a.attnum > 0 and not a.attisdropped), null::text, null::text
from needed n join pg_class c on n.refclassid = 'pg_class'::regclass and c.oid = n.refobjid
where c.relnamespace not in (select oid from inside) and c.relnamespace <> 'pg_catalog'::regnamespace
  and c.relkind in ('r', 'p', 'v', 'm', 'f')
union all
select 'type', t.typnamespace::regnamespace::text, t.typname::text, null::text, null::text, null::boolean, null::text,
       null::jsonb, null::text, null::text
from needed n join pg_type t on n.refclassid = 'pg_type'::regclass and t.oid = n.refobjid
where t.typnamespace not in (select oid from inside) and t.typnamespace <> 'pg_catalog'::regnamespace
  and t.typtype <> 'c'
union all
select distinct 'role', null::text, r.rolname::text, null::text, null::text, null::boolean, null::text,
       null::jsonb, null::text, null::text
from pg_policy p join pg_class c on c.oid = p.polrelid
cross join lateral unnest(p.polroles) as pr(oid)
join pg_roles r on r.oid = pr.oid
where c.relnamespace in (select oid from inside)
union all
select 'foreign key', c.relnamespace::regnamespace::text, k.conname::text,
       null::text, null::text, null::boolean, null::text, null::jsonb, c.relname::text, k.confrelid::regclass::text
from pg_constraint k join pg_class c on c.oid = k.conrelid join pg_class f on f.oid = k.confrelid
where k.contype = 'f' and c.relnamespace in (select oid from inside) and f.relnamespace not in (select oid from inside)
order by 1, 2, 3;
