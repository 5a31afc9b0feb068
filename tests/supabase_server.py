"""A Supabase-faithful test server: the roles and the per-database layout of a Supabase project
(tests/supabase/roles.sql, tests/supabase/database.sql), built on whatever server the suite runs on.

Two logins: the server's superuser (``supabase_admin`` on the embedded test server, as Supabase
names it), which only the fixtures use to lay the platform out, and ``postgres``, a
non-superuser with a password, as which the migration and its tests connect.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

from psycopg import sql
from psycopg.conninfo import make_conninfo

from kbmigrate import db
from kbmigrate.conninfo import Target, known_secrets

HERE = Path(__file__).resolve().parent / "supabase"
APP_USER = "postgres"
AUTH_UID_FORMS = ("current", "claim_sub_only")
PASSWORDS: dict[str, str] = {}  # this session's passwords, by login (they are in its pgpass file too)


class LayoutRefused(Exception):
    pass


def add_password(passfile: Path, user: str, password: str) -> None:
    """One pgpass line for ``user`` on any host (the file is this test session's own)."""
    escaped = password.replace("\\", "\\\\").replace(":", "\\:")
    with passfile.open("a", encoding="utf-8") as fh:
        fh.write(f"*:*:*:{user}:{escaped}\n")
    passfile.chmod(0o600)


def install_roles(admin: Target, passfile: Path) -> Target:
    """Lay out the roles (once per server) and give ``postgres`` a new password, written to the
    session's pgpass file. Returns ``postgres``'s target on the admin's database."""
    with db.connect(admin, autocommit=True) as conn:
        me = db.rows(conn, "select current_user as name, rolsuper from pg_roles where rolname = current_user")[0]
        if not me["rolsuper"]:
            raise LayoutRefused(f"the test server's login {me['name']!r} is not a superuser; the Supabase layout needs one")
        if me["name"] == APP_USER:
            raise LayoutRefused("the test server's login is 'postgres', which the Supabase layout demotes to a "
                                "non-superuser: connect as another superuser (Supabase's is supabase_admin; "
                                "initdb -U supabase_admin, see the README)")
        conn.execute((HERE / "roles.sql").read_text(encoding="utf-8"))
        password = "pg-" + secrets.token_urlsafe(18)
        conn.execute(sql.SQL("alter role {} password {}").format(sql.Identifier(APP_USER), sql.Literal(password)))
    add_password(passfile, APP_USER, password)
    PASSWORDS[APP_USER] = password
    app = make_conninfo(admin.conninfo, user=APP_USER)
    return Target(app, "dsn", known_secrets(app))


def install_database(admin: Target, dbname: str, *, auth_uid: str = "current") -> None:
    """The per-database layout, as the superuser, in an existing database."""
    if auth_uid not in AUTH_UID_FORMS:
        raise ValueError(f"auth_uid must be one of {AUTH_UID_FORMS}")
    with db.connect(admin.with_database(dbname), autocommit=True) as conn, conn.transaction():
        conn.execute("select set_config('kbt.auth_uid', %s, true)", (auth_uid,))
        conn.execute((HERE / "database.sql").read_text(encoding="utf-8"))


def create_database(admin: Target, name: str, *, layout: bool = True, auth_uid: str = "current") -> None:
    """A database owned by postgres (as Supabase's is), with the platform's layout unless ``layout`` is false."""
    with db.connect(admin, autocommit=True) as conn:
        conn.execute(sql.SQL("create database {} owner {}").format(sql.Identifier(name), sql.Identifier(APP_USER)))
    if layout:
        install_database(admin, name, auth_uid=auth_uid)


def session_passfile(scratch: str) -> Path:
    """This session's pgpass file: a copy of the user's (PGPASSFILE or ~/.pgpass), and PGPASSWORD
    moved into it for the server's login, so that the postgres login is not given another's password."""
    path = Path(scratch) / "pgpass"
    source = Path(os.environ.get("PGPASSFILE") or os.path.expanduser("~/.pgpass"))
    text = source.read_text(encoding="utf-8") if source.is_file() else ""
    path.write_text(text if not text or text.endswith("\n") else text + "\n", encoding="utf-8")
    path.chmod(0o600)
    return path
