"""Naming the target database, and keeping its password out of everything we print or save.

A target is a libpq connection string. Three sources, in this order:
``--dsn`` (a string or URI), ``--embedded`` (the local demo server), otherwise the standard
libpq settings (PGHOST, PGPORT, PGDATABASE, PGUSER, PGPASSWORD / PGPASSFILE / PGSERVICE),
which psycopg reads from the environment when the string is empty.
"""

from __future__ import annotations

import getpass
import os
import re
from dataclasses import dataclass, field

from psycopg.conninfo import conninfo_to_dict, make_conninfo
from psycopg.pq import Conninfo

from kbmigrate.errors import BadParameter

_SECRET_KEYS = ("password", "sslpassword")
_URI_PASSWORD = re.compile(r"(postgres(?:ql)?(?:\+\w+)?://[^:/@\s]*):[^@\s]*@")
_KV_PASSWORD = re.compile(r"\b(password|sslpassword)\s*=\s*('(?:\\.|[^'])*'|\S+)", re.IGNORECASE)


@dataclass(frozen=True)
class Target:
    """Where to connect. ``conninfo`` may hold a password: never print or store it; use ``label``."""

    conninfo: str
    source: str  # "dsn" | "libpq" | "embedded"
    secrets: frozenset[str] = field(default_factory=frozenset, repr=False)

    def with_database(self, dbname: str) -> "Target":
        return Target(make_conninfo(self.conninfo, dbname=dbname), self.source, self.secrets)

    def via(self, host: str, port: int) -> "Target":
        """The same database reached through ``host:port`` (a proxy in front of the server)."""
        return Target(make_conninfo(self.conninfo, host=host, port=str(port)), self.source, self.secrets)

    @property
    def params(self) -> dict[str, str]:
        """Connection parameters without secrets, filled from the libpq environment."""
        given = {k: str(v) for k, v in conninfo_to_dict(self.conninfo).items() if k not in _SECRET_KEYS}
        env = {"host": "PGHOST", "port": "PGPORT", "dbname": "PGDATABASE", "user": "PGUSER", "service": "PGSERVICE"}
        for key, var in env.items():
            if key not in given and os.environ.get(var):
                given[key] = os.environ[var]
        return given

    @property
    def label(self) -> str:
        """``user@host:port/dbname`` for messages; no password, ever."""
        p = self.params
        if "service" in p and "host" not in p:
            where = f"service {p['service']}"
        else:
            where = f"{p.get('host', 'localhost')}:{p.get('port', '5432')}"
        user = p.get("user") or os.environ.get("USER") or getpass.getuser()  # as libpq picks it
        db = p.get("dbname") or user
        return f"{user}@{where}/{db}"

    def redact(self, text: str) -> str:
        return redact(text, self.secrets)


def known_secrets(conninfo: str = "") -> frozenset[str]:
    """Every password this process could use: in the string, in PGPASSWORD, in PGPASSFILE/~/.pgpass."""
    found: set[str] = set()
    try:
        parsed = conninfo_to_dict(conninfo) if conninfo else {}
    except Exception:  # an unparsable string is reported elsewhere; scrub what we can
        parsed = {}
    for key in _SECRET_KEYS:
        if parsed.get(key):
            found.add(str(parsed[key]))
    if os.environ.get("PGPASSWORD"):
        found.add(os.environ["PGPASSWORD"])
    passfile = os.environ.get("PGPASSFILE") or os.path.expanduser("~/.pgpass")
    try:
        with open(passfile, encoding="utf-8") as fh:
            for line in fh:
                line = line.rstrip("\n")
                if line and not line.startswith("#"):
                    parts = re.split(r"(?<!\\):", line, maxsplit=4)
                    if len(parts) == 5 and parts[4]:
                        found.add(parts[4].replace("\\:", ":").replace("\\\\", "\\"))
    except OSError:
        pass
    return frozenset(s for s in found if len(s) >= 1)


def redact(text: str, secrets: frozenset[str] | set[str] = frozenset()) -> str:
    """Remove passwords from a message: URI passwords, ``password=`` pairs, and known values."""
    text = _URI_PASSWORD.sub(r"\1:***@", text)
    text = _KV_PASSWORD.sub(r"\1=***", text)
    for secret in sorted(secrets, key=len, reverse=True):
        if secret:
            text = text.replace(secret, "***")
    return text


def libpq_env(target: Target) -> dict[str, str]:
    """The target as libpq environment variables (PGHOST, PGPORT, ..., PGPASSWORD if given), for a
    child process: a notebook kernel, pg_dump. Secrets travel only in the environment."""
    env: dict[str, str] = {}
    if not target.conninfo:
        return env
    names = {opt.keyword.decode(): opt.envvar.decode() for opt in Conninfo.get_defaults() if opt.envvar}
    for key, value in conninfo_to_dict(target.conninfo).items():
        if key in names and value is not None:
            env[names[key]] = str(value)
    return env


def from_environment() -> bool:
    """Whether the libpq environment names a database (PGHOST, PGPORT, PGDATABASE, PGUSER, PGSERVICE)."""
    return any(os.environ.get(v) for v in ("PGHOST", "PGPORT", "PGDATABASE", "PGUSER", "PGSERVICE"))


def resolve(dsn: str | None = None, *, embedded: bool = False) -> Target:
    """The target named on the command line or by the environment."""
    if dsn and embedded:
        raise BadParameter(name="target", reason="give either --dsn or --embedded, not both")
    if dsn:
        try:
            conninfo_to_dict(dsn)
        except Exception:
            raise BadParameter(name="--dsn", reason="not a libpq connection string or postgresql:// URI") from None
        return Target(dsn, "dsn", known_secrets(dsn))
    if embedded:
        from kbmigrate.components.embedded import DEMO_DATABASE, EmbeddedServer

        server = EmbeddedServer().ensure_running()
        return Target(server, "embedded", known_secrets()).with_database(DEMO_DATABASE)
    return Target("", "libpq", known_secrets())
