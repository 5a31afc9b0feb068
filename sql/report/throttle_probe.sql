-- What the batch in progress costs the others, asked from inside its transaction while it still
-- holds its row locks: the sessions waiting for a lock this session holds, the other client
-- sessions running a statement, and the other client sessions present at all (running, in a
-- transaction, or active in the last 2 s), not counting this run's own (named by its run id).
-- pg_blocking_pids is only asked about sessions that wait for a lock. The application is this
-- database's: sessions on the server's other databases are not counted.
with waiters as materialized (
  select pid from pg_stat_activity where wait_event_type = 'Lock' and pid <> pg_backend_pid()
),
others as materialized (
  select state, state_change from pg_stat_activity
  where backend_type = 'client backend' and pid <> pg_backend_pid() and datname = current_database()
    and (coalesce(current_setting('kbmigrate.run_id', true), '') = ''
         or position(current_setting('kbmigrate.run_id', true) in coalesce(application_name, '')) = 0)
)
select (select count(*) from waiters w where pg_backend_pid() = any(pg_blocking_pids(w.pid))) as waiting,
       (select count(*) from pg_stat_activity
         where state = 'active' and backend_type = 'client backend' and pid <> pg_backend_pid()
           and datname = current_database()) as active,
       (select count(*) from others
         where state <> 'idle' or state_change > clock_timestamp() - interval '2 s') as present
