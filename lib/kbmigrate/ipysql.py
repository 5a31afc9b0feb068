"""ipython-sql's ``%sql`` on a session kbmigrate opened (``runbook.Step.sql_magic``).

ipython-sql builds its SQLAlchemy engine from a URL; here it gets one built on a session that
``db.connect`` opened (its bounds set and read back, listed in the session log): the step's own,
lent (``Lent``: SQLAlchemy may use it, never close it), in autocommit
(no BEGIN and COMMIT around each query), without the hstore lookup, and with a dialect that
takes the server's version and ``standard_conforming_strings`` from what the server said as the
session began (libpq's parameter status) and the rest from what ``db.connect`` asked with the
session's bounds: no round trip to set up instead of the 10 SQLAlchemy's defaults take, each a
network's width away from a remote server.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sqlalchemy.dialects.postgresql.psycopg import PGDialect_psycopg

from kbmigrate import db

NAME = "postgresql.kbmigrate"


class Lent:
    """A session lent to SQLAlchemy: everything passes through to it but ``close()``, which its
    owner does (a pool's dispose, or its garbage collection, would otherwise end the step's session)."""

    def __init__(self, conn: Any) -> None:
        object.__setattr__(self, "lent", conn)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.lent, name)

    def __setattr__(self, name: str, value: Any) -> None:
        setattr(self.lent, name, value)

    def close(self) -> None:
        pass


class Dialect(PGDialect_psycopg):
    """SQLAlchemy's psycopg dialect, set up in one query."""

    _asked: dict[str, str] | None = None

    @staticmethod
    def _session(connection: Any) -> Any:
        session = connection.connection.dbapi_connection
        return session.lent if isinstance(session, Lent) else session

    def _get_server_version_info(self, connection: Any) -> tuple[int, ...]:
        number = int(self._session(connection).info.server_version)  # 150008, 170004, 180001
        return (number // 10000, number % 10000)

    def _ask(self, connection: Any) -> dict[str, str]:
        if self._asked is None:
            self._asked = db.began(self._session(connection))  # asked as db.connect set it up
        if self._asked is None:
            row = connection.exec_driver_sql(
                "select current_schema(), upper(current_setting('transaction_isolation'))").one()
            self._asked = {"schema": row[0], "isolation": row[1]}
        return self._asked

    def _get_default_schema_name(self, connection: Any) -> str:
        return self._ask(connection)["schema"]

    def get_default_isolation_level(self, dbapi_conn: Any) -> str:
        return self._asked["isolation"] if self._asked else "READ COMMITTED"

    def _set_backslash_escapes(self, connection: Any) -> None:
        self._backslash_escapes = self._session(connection).info.parameter_status("standard_conforming_strings") == "off"


def current_on(creator: Callable[[], Any], label: str) -> None:
    """Make ipython-sql's current connection one on the session ``creator`` opens."""
    import sqlalchemy
    from sqlalchemy.dialects import registry
    from sql.connection import Connection

    registry.register(NAME, __name__, "Dialect")
    engine = sqlalchemy.create_engine("postgresql+kbmigrate://", creator=creator, isolation_level="AUTOCOMMIT",
                                      use_native_hstore=False, pool_size=1, max_overflow=0,
                                      pool_reset_on_return=None)  # autocommit: no ROLLBACK (a round trip) on return
    made = Connection.__new__(Connection)  # its __init__ would build the engine from a URL
    made.url, made.dialect, made.name, made.connect_args = engine.url, engine.url.get_dialect(), label, {}
    made.internal_connection = engine.connect()
    for key, old in list(Connection.connections.items()):  # a step connected again replaces its own
        old.internal_connection.close()
        Connection.connections.pop(key)
    Connection.connections[label] = made
    Connection.current = made


def disconnect() -> None:
    """Close every session ``%sql`` holds (a step's kernel is made new for the next step)."""
    import sys

    if "sql.connection" not in sys.modules:  # %sql never loaded here: nothing to close
        return
    from sql.connection import Connection

    for key, made in list(Connection.connections.items()):
        made.internal_connection.close()
        made.internal_connection.engine.dispose()
        Connection.connections.pop(key)
    Connection.current = None
