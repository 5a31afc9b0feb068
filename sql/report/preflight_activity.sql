-- Other sessions that could block or be blocked by the migration: transactions open longer
-- than the threshold, and any lock held on the target tables.
select a.pid, a.usename as db_user, a.application_name, a.state,
       date_trunc('second', now() - a.xact_start) as transaction_age,
       left(a.query, 80) as query,
       (select string_agg(distinct l.relation::regclass::text || ' ' || l.mode, ', ')
        from pg_locks l
        where l.pid = a.pid and l.relation = any(%(relations)s::regclass[])) as locks_on_targets
from pg_stat_activity a
where a.pid <> pg_backend_pid() and a.datname = current_database()
  and (a.xact_start < now() - make_interval(secs => %(threshold)s)
       or exists (select 1 from pg_locks l where l.pid = a.pid and l.relation = any(%(relations)s::regclass[])))
order by a.xact_start;
