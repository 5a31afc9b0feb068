-- After a lock wait ended in lock_timeout: the other sessions holding locks on the tables a run
-- works on (the application's schemas and the tool's own), strongest lock and oldest first.
-- %(pattern)s: a LIKE pattern for the application_name of the run's own sessions (left out).
select distinct on (a.pid)
       a.pid,
       coalesce(nullif(a.application_name, ''), '—') as application,
       coalesce(a.usename::text, '—') as "user",
       coalesce(a.state, '—') as state,
       round(extract(epoch from now() - coalesce(a.xact_start, a.query_start, a.backend_start))::numeric) as seconds,
       left(split_part(btrim(coalesce(a.query, '')), E'\n', 1), 160) as query,
       l.relation::regclass::text as relation,
       l.mode
from pg_locks l
join pg_stat_activity a on a.pid = l.pid
join pg_class c on c.oid = l.relation
join pg_namespace n on n.oid = c.relnamespace
where l.granted and l.locktype = 'relation'
  and l.database = (select oid from pg_database where datname = current_database())  -- relation oids are per database
  and n.nspname in ('public', 'kbmigrate', 'kb_private')
  and a.pid <> pg_backend_pid()
  and a.application_name not like %(pattern)s
order by a.pid,
         array_position(array['AccessExclusiveLock', 'ExclusiveLock', 'ShareRowExclusiveLock', 'ShareLock',
                               'ShareUpdateExclusiveLock', 'RowExclusiveLock', 'RowShareLock', 'AccessShareLock'],
                        l.mode::text)
