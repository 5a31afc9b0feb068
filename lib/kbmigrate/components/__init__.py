"""Components the tool runs beside the target: the embedded PostgreSQL server."""
