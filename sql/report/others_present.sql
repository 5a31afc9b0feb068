-- The other client sessions of this database present at all (running, in a transaction, or active
-- in the last 2 s), not counting this run's own (their application_name holds the run id): what
-- the throttle yields to, as sql/report/throttle_probe.sql counts them inside a backfill batch.
select count(*) as present
from pg_stat_activity
where backend_type = 'client backend' and pid <> pg_backend_pid() and datname = current_database()
  and position(%(run_id)s in coalesce(application_name, '')) = 0
  and (state <> 'idle' or state_change > clock_timestamp() - interval '2 s')
