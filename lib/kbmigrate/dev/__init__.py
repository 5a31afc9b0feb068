"""Development tooling: the demo database, the Supabase compatibility layer for plain PostgreSQL,
the benchmarks. Nothing on the production path imports it (a test checks)."""
