"""Expected failures. Each class's docstring is its message; the CLI prints it as one line.

Raise them with keyword details that fill the docstring's ``{placeholders}``; never put a
password in a detail (``conninfo.redact`` strips one from anything that came from libpq).
"""

from __future__ import annotations


class KbError(Exception):
    """kbmigrate failed: {reason}"""

    exit_code = 1

    def __init__(self, **details: object) -> None:
        self.details = details
        super().__init__(self.message)

    @property
    def message(self) -> str:
        doc = (self.__doc__ or "").strip().splitlines()[0]
        try:
            return doc.format(**self.details)
        except (KeyError, IndexError):
            return f"{doc} {self.details}"


class ServerUnreachable(KbError):
    """Cannot connect to {target}: {reason}. Check the host, port and that the server is running."""


class AuthenticationFailed(KbError):
    """The server at {target} refused the login: {reason}. Check the user and the password in PGPASSWORD, ~/.pgpass or the service file (never on the command line)."""


class DatabaseMissing(KbError):
    """Database {database!r} does not exist on {target}. Create it, or name another with PGDATABASE or --dsn."""


class EmbeddedServerFailed(KbError):
    """The embedded PostgreSQL server did not start: {reason}. Its log is {log}."""


class NotADemoDatabase(KbError):
    """Database {database!r} exists and was not made by 'kbmigrate demo-db'; refusing to replace it. Choose another --name."""


class BadParameter(KbError):
    """Invalid {name}: {reason}."""

    exit_code = 2


class StepFailed(KbError):
    """Step {step} stopped at change {change}: {reason}"""


class CheckFailed(KbError):
    """Check failed: {what}"""


class ClientMissing(KbError):
    """No {program} of PostgreSQL {major} (the server's version) found; found: {found}. Install it (Debian/Ubuntu: apt install postgresql-client-{major}) or set KBMIGRATE_PG_BINDIR to its bin directory."""


class NoGo(KbError):
    """NO-GO on {target}: {reason}"""
