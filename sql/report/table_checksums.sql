-- Per-table row count and an order-independent checksum of the contents: the sum of a 60-bit
-- prefix of md5(row as text) over all rows. Run with timezone UTC so timestamps print alike.
-- A template: {table} is filled with psycopg.sql.Identifier.
select count(*) as row_count,
       coalesce(sum(('x' || substr(md5(t::text), 1, 15))::bit(60)::bigint::numeric), 0)::text as checksum
from {table} t;
