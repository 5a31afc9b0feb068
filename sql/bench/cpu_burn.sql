-- The traffic figures' calibration: work that only takes a core (no table, no lock, no I/O),
-- as long as the bench asks. What the members' p95 gives beside it is the price of a core's share.
select sum(i) from generate_series(1, %(n)s::bigint) i;
