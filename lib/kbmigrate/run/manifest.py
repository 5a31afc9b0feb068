"""The manifest of a run (``runs/<id>/manifest.json``): what ran, on what, by whom, with which
code, and the hashes that let anyone check the folder later (``kbmigrate verify``).

**The seal.** Each manifest names the previous run's manifest on the same database (its run id
and sha256), and when a run ends, its manifest's sha256 is written to the database's
``kbmigrate.seals`` (created by 02_schema). So a run folder cannot be edited or deleted without
breaking a link that the next run, or the database, still holds. A run on a database without the
tool's schema yet (e.g. a NO-GO preflight) is not sealed in the database; its files are still
hashed. Databases migrated by kbmigrate before the seals had a table kept them in the ledger
(step ``run``, change ``manifest``); ``sealed`` and ``previous`` still read those.
"""

from __future__ import annotations

import datetime as dt
import getpass
import json
import shutil
import socket
import subprocess
from pathlib import Path
from typing import Any

import psycopg

from kbmigrate import __version__, db
from kbmigrate.checks import clients
from kbmigrate.digest import sha256_file  # noqa: F401 - the run layer's name for it
from kbmigrate.conninfo import Target
from kbmigrate.engine import gates, ledger
from kbmigrate.engine.params import RunParams
from kbmigrate.engine import transaction
from kbmigrate.errors import ClientMissing, SecretInArtifact
from kbmigrate.paths import REPO_ROOT, RUNS_DIR, SQL_DIR, shown

SEAL_STEP, SEAL_CHANGE = "run", "manifest"


def utc_now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def operator() -> dict[str, str]:
    """Who ran it, from where: the OS user and host (never a secret)."""
    return {"os_user": getpass.getuser(), "host": socket.gethostname()}


def code() -> dict[str, Any]:
    """Which code ran: the kbmigrate version, the git commit, and whether the checkout differed from
    it (with the sha256 of every tracked file that did)."""
    def git(*args: str) -> str | None:
        done = subprocess.run(["git", *args], cwd=REPO_ROOT, capture_output=True, text=True)
        return done.stdout if done.returncode == 0 else None

    commit = (git("rev-parse", "HEAD") or "").strip() or None
    changed: dict[str, str | None] = {}
    for line in (git("status", "--porcelain", "--untracked-files=no") or "").splitlines():
        name = line[3:].split(" -> ")[-1]
        path = REPO_ROOT / name
        changed[name] = sha256_file(path) if path.is_file() else None  # None: deleted
    return {"kbmigrate_version": __version__, "git_commit": commit, "dirty": bool(changed), "changed_files": changed}


def new(run_id: str, conn: psycopg.Connection[Any], target: Target, params: RunParams,
        extra: dict[str, Any], *, status: str = "running") -> dict[str, Any]:
    server = db.rows(conn, "select current_setting('server_version_num')::int as num, "
                           "current_setting('server_version') as version, " + THERE + ", " + gates.SYSTEM_IDENTIFIER)[0]
    if server["system_identifier"]:  # one round trip: the gates' identity of this session too
        gates.knew(conn, server["system_identifier"])
    major = int(server["num"]) // 10000
    try:
        pg_dump = clients.version_line(clients.find("pg_dump", major))
    except ClientMissing as exc:
        pg_dump = exc.message
    return {
        "run_id": run_id, "started_at": utc_now(), "ended_at": None, "status": status,
        "operator": operator(),
        "target": {"host": conn.info.host, "port": conn.info.port, "database": conn.info.dbname,
                   "user": conn.info.user, "source": target.source},
        "server_version": server["version"], "pg_dump_version": pg_dump, "code": code(),
        "parameters": {**params.as_dict(), **extra}, "steps": [],
        "previous": previous(conn, server),
    }


def has_seals(conn: psycopg.Connection[Any]) -> bool:
    return bool(db.scalar(conn, "select to_regclass('kbmigrate.seals') is not null"))


THERE = "to_regclass('kbmigrate.seals') is not null as seals, to_regclass('kbmigrate.ledger') is not null as ledger"


def previous(conn: psycopg.Connection[Any], there: dict[str, Any] | None = None) -> dict[str, str] | None:
    """The run sealed last on this database: its run id and manifest sha256 (None: the first).
    ``there``: ``THERE`` as already asked on ``conn``."""
    there = there or db.rows(conn, f"select {THERE}")[0]
    if there["seals"]:
        rows = db.rows(conn, "select run_id, manifest_sha256 from kbmigrate.seals order by id desc limit 1")
        if rows:
            return rows[0]
    if not there["ledger"]:
        return None
    rows = db.rows(conn, "select run_id, sql_sha256 as manifest_sha256 from kbmigrate.ledger "
                         "where step = %s and change = %s order by id desc limit 1", (SEAL_STEP, SEAL_CHANGE))
    return rows[0] if rows else None


def sealed(conn: psycopg.Connection[Any], run_id: str) -> str | None:
    """The manifest sha256 this database holds for run ``run_id`` (its latest seal), or None."""
    if has_seals(conn):
        found = db.scalar(conn, "select manifest_sha256 from kbmigrate.seals where run_id = %s order by id desc limit 1",
                          (run_id,))
        if found:
            return str(found)
    if not ledger.exists(conn):
        return None
    return db.scalar(conn, "select sql_sha256 from kbmigrate.ledger where run_id = %s and step = %s and change = %s "
                           "order by id desc limit 1", (run_id, SEAL_STEP, SEAL_CHANGE))


def keep_sql(folder: Path, files: dict[str, str]) -> None:
    """Copies of the SQL files (and data) the run used, beside its notebooks: the evidence holds
    the code that ran, whatever the repository holds later."""
    for rel in files:
        dest = folder / "sql" / rel
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(SQL_DIR / rel, dest)


def write(folder: Path, manifest: dict[str, Any], target: Target) -> None:
    text = json.dumps(manifest, indent=2, default=str)
    if any(s and len(s) >= 4 and s in text for s in target.secrets):
        raise SecretInArtifact(path=shown(folder / "manifest.json"))
    tmp = folder / "manifest.json.tmp"
    tmp.write_text(text)
    tmp.chmod(0o600)
    tmp.replace(folder / "manifest.json")


def seal(conn: psycopg.Connection[Any], folder: Path, manifest: dict[str, Any]) -> str | None:
    """Write the final manifest's sha256 to kbmigrate.seals (when the database has it); returns it."""
    digest = sha256_file(folder / "manifest.json")
    if not has_seals(conn):
        return None
    insert = "insert into kbmigrate.seals (run_id, manifest_sha256, status, previous) values (%s, %s, %s, %s)"
    values = (manifest["run_id"], digest, manifest["status"], json.dumps(manifest.get("previous")))
    if conn.autocommit:  # BEGIN, its timeouts, the row and COMMIT in one round trip
        transaction.one_round_trip(conn, RunParams(), None, insert, values, functions=())
        return digest
    with conn.transaction():
        transaction.begin(conn, RunParams())
        conn.execute(insert, values)
    return digest


def load(run_id: str) -> dict[str, Any]:
    return json.loads((RUNS_DIR / run_id / "manifest.json").read_text(encoding="utf-8"))


RESUMABLE = ("failed", "interrupted", "running")


def load_for_resume(run_id: str, *, more: bool = False) -> dict[str, Any]:
    """The manifest of a run that can be continued: it stopped (failed, interrupted) or its process
    died (still "running"; the run lock, taken next, proves no process still runs it); with
    ``more`` (steps named to run in it) also one that succeeded with the steps it had."""
    from kbmigrate.errors import BadParameter, NoSuchRun

    path = RUNS_DIR / run_id / "manifest.json"
    if not path.exists():
        raise NoSuchRun(run=run_id, folder=shown(RUNS_DIR))
    record = json.loads(path.read_text(encoding="utf-8"))
    if record.get("status") not in (*RESUMABLE, *(("succeeded",) if more else ())):
        raise BadParameter(name="--resume", reason=f"run {run_id} is {record.get('status')}; only a failed or "
                                                   "interrupted run can be resumed")
    return record
