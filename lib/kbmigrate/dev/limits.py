"""The bounds of the development tooling's sessions (demo data, benchmarks): bounded like every
session, but loose enough for building and copying a million-row database, and for the bench's
simulated application, which waits for the migration's locks the way a real one would."""

from kbmigrate.db import Limits

DEV = Limits(lock_timeout="30s", statement_timeout="1h")
