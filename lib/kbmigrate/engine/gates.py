"""The gates of a changing step: this run's GO and a proven backup, of *this* database.

A change (steps 02-05), a revert and a rollback refuse to start unless the run they belong to holds:

1. a **GO** from preflight, recorded by ``record_verdict`` on the same database: the same server
   (its system identifier), database, host and port as the connection about to change it;
2. a **rehearsal** that passed (``backup/rehearsal.py``: steps 02-05 on the restored copy of the
   backup the run relies on; a change on that copy needs the run's proven backup, not a GO: the
   copy is not production), and an **approval** of it (``approve``): who, when, and the sha256 of
   the rehearsal's evidence they were shown, which must still be the file's. Optionally four eyes:
   the approver is not the run's operator. A revert needs neither;
3. a **backup** of that database, recorded by ``record_backup`` when the dump was taken, whose
   **drill passed** (``record_drill``), whose file still has the sha256 recorded, and which was
   taken **before the migration's first change** (inside the dump's snapshot no change of the
   migration was in effect). Instead of its own, a run may name such a backup of another run
   (``link_backup``, ``kbmigrate run --backup-of RUN``), checked the same way.

The records are the engine's own file, ``runs/<run_id>/gates.json``, written only here; the
notebook cells show them and cannot grant them. Skipping a cell, a flag or a session setting
leaves a gate closed: the check runs in the engine, at the start of every change.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import time
import weakref
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import psycopg

from kbmigrate import db
from kbmigrate.digest import sha256_file
from kbmigrate.engine import ledger, plan
from kbmigrate.errors import GateClosed
from kbmigrate.paths import RUNS_DIR, from_evidence

FILE = "gates.json"


@dataclass(frozen=True)
class Identity:
    """Which database a connection reaches: the server (its system identifier), database, host, port."""

    system_identifier: str
    database: str
    host: str
    port: str

    def label(self) -> str:
        return f"{self.database} on {self.host}:{self.port} (server {self.system_identifier})"


_IDENTITIES: "weakref.WeakKeyDictionary[psycopg.Connection[Any], Identity]" = weakref.WeakKeyDictionary()


# A select-list item: the server's system identifier when this role may read it (pg_control_system()
# is granted to no one by default on some platforms), else NULL; read with a session's first query.
SYSTEM_IDENTIFIER = ("case when has_function_privilege('pg_control_system()', 'execute') "
                     "then (select system_identifier::text from pg_control_system()) end as system_identifier")


def knew(conn: psycopg.Connection[Any], system_identifier: str) -> None:
    """The system identifier ``conn`` already read (a kernel's first round trip): not asked again."""
    _IDENTITIES[conn] = Identity(system_identifier, conn.info.dbname, conn.info.host, str(conn.info.port))


def identity(conn: psycopg.Connection[Any]) -> Identity:
    """The identity of the database ``conn`` reaches (asked once per connection)."""
    known = _IDENTITIES.get(conn)
    if known is None:
        system = db.scalar(conn, "select system_identifier::text from pg_control_system()")
        known = Identity(str(system), conn.info.dbname, conn.info.host, str(conn.info.port))
        _IDENTITIES[conn] = known
    return known


def path(run_id: str) -> Path:
    return RUNS_DIR / run_id / FILE


def read(run_id: str) -> dict[str, Any]:
    try:
        return json.loads(path(run_id).read_text())
    except FileNotFoundError:
        return {}


def _write(run_id: str, gates: dict[str, Any]) -> None:
    file = path(run_id)
    file.parent.mkdir(parents=True, exist_ok=True)
    old = os.umask(0o077)
    try:
        temporary = file.with_suffix(".tmp")
        temporary.write_text(json.dumps(gates, indent=2, default=str))
        temporary.replace(file)
    finally:
        os.umask(old)


def record_verdict(conn: psycopg.Connection[Any], run_id: str, rows: list[dict[str, str]]) -> bool:
    """Record preflight's verdict for this run on this database; returns GO (True) or NO-GO."""
    failing = [f"{r['check']}: {r['detail']}" for r in rows if r["status"] == "NO-GO"]
    gates = read(run_id)
    gates["preflight"] = {"verdict": "NO-GO" if failing else "GO", "identity": asdict(identity(conn)),
                          "at": db.scalar(conn, "select now()::text"), "no_go": failing}
    _write(run_id, gates)
    return not failing


FIRST_CHANGE = """
select l.run_id, l.change, l.applied_at::text as applied_at from kbmigrate.ledger l
where l.outcome in ('applied', 'started') and l.step = any(%(changing)s)
  and l.id > coalesce((select max(r.id) from kbmigrate.ledger r where r.step = '07_rollback' and r.outcome = 'applied'), 0)
order by l.id limit 1"""


def first_change(conn: psycopg.Connection[Any], ledger_exists: bool | None = None) -> dict[str, Any] | None:
    """The migration's first change in effect on this database (since its last rollback), or None."""
    if not (ledger.exists(conn) if ledger_exists is None else ledger_exists):
        return None
    found = db.rows(conn, FIRST_CHANGE, {"changing": list(plan.CHANGING)})
    return found[0] if found else None


def in_snapshot(conn: psycopg.Connection[Any]) -> dict[str, Any]:
    """What the backup's record needs from the dump's own snapshot (call inside it): which
    database, when, and the migration's first change then in effect (None: none yet)."""
    now = db.rows(conn, "select now()::text as at, to_regclass('kbmigrate.ledger') is not null as ledger")[0]
    return {"identity": asdict(identity(conn)), "taken_at": now["at"],
            "changed_before": first_change(conn, ledger_exists=now["ledger"])}


def forget_backup(run_id: str) -> None:
    """A new attempt at this run's backup: the earlier one's record goes first."""
    gates = read(run_id)
    dropped = [gates.pop(k, None) for k in ("backup", "rehearsal", "rehearsal_copy")]  # a new backup, a new rehearsal
    if any(d is not None for d in dropped):
        _write(run_id, gates)


def record_backup(run_id: str, info: dict[str, Any], snapshot: dict[str, Any]) -> dict[str, Any]:
    """Record the backup just taken (``info``: its description; ``snapshot``: ``in_snapshot``'s),
    not yet proven: its drill is to come. Returns the record."""
    gates = read(run_id)
    gates["backup"] = {**info, **snapshot, "restore_drill": None}
    _write(run_id, gates)
    return gates["backup"]


def record_drill(run_id: str, sha256: str, result: dict[str, Any]) -> None:
    """Record the restore drill's outcome on the backup it restored (``sha256``)."""
    gates = read(run_id)
    taken = gates.get("backup")
    if not taken or taken["sha256"] != sha256:
        raise GateClosed(run=run_id, gate="backup", reason="the drill restored a dump this run did not record as "
                                                           "its backup; take the backup (01_backup) first")
    taken["restore_drill"] = result
    _write(run_id, gates)


def link_backup(run_id: str, other: str) -> dict[str, Any]:
    """This run uses the backup of run ``other`` (checked now for what does not need the database,
    and again against the database at each change)."""
    found = proven_backup(other)
    gates = read(run_id)
    gates["backup_of"] = other
    _write(run_id, gates)
    return found


def proven_backup(run_id: str) -> dict[str, Any]:
    """Run ``run_id``'s own backup, when its drill passed and its file has its sha256; else GateClosed."""
    taken = read(run_id).get("backup")
    if not taken:
        raise GateClosed(run=run_id, gate="backup", reason="it holds no backup (01_backup did not run in it)")
    drill = taken.get("restore_drill")
    if not drill or not drill.get("ok"):
        raise GateClosed(run=run_id, gate="backup", reason="its backup's restore drill "
                         + ("failed" if drill else "never ran") + ": a backup not proven restorable is no backup")
    _check_file(run_id, taken)
    return taken


_HASHED: dict[tuple[str, int, int], str] = {}


def forget() -> None:
    """Hash the backup file again in the next step: each step checks it for itself."""
    _HASHED.clear()


def _check_file(run_id: str, taken: dict[str, Any]) -> None:
    file = from_evidence(taken["path"])
    try:
        stat = file.stat()
    except FileNotFoundError:
        raise GateClosed(run=run_id, gate="backup", reason=f"its backup file {taken['path']} is missing") from None
    key = (str(file), stat.st_mtime_ns, stat.st_size)
    if key not in _HASHED:  # a large dump is hashed once per process, and again when it changes
        _HASHED[key] = sha256_file(file)
    if _HASHED[key] != taken["sha256"]:
        raise GateClosed(run=run_id, gate="backup", reason=f"its backup file {taken['path']} no longer has the "
                                                           "sha256 recorded when it was taken")


def backup_for(run_id: str) -> tuple[str, dict[str, Any]]:
    """The backup run ``run_id`` relies on (its own, or the one it names) and the run that took it."""
    gates = read(run_id)
    owner = gates.get("backup_of") or run_id
    return owner, proven_backup(owner)


def require(conn: psycopg.Connection[Any], run_id: str, what: str, *, forward: bool = True) -> None:
    """Refuse (GateClosed) unless run ``run_id`` holds a GO and a proven backup of the database
    ``conn`` reaches, taken before the migration's first change, and, for the migration's own
    changes (``forward``; not a revert), a rehearsal that passed and an approval of it. ``what``:
    the change about to start."""
    here = identity(conn)
    if rehearsing_on(run_id, here):  # the run's own restored copy of its proven backup: no GO of its own
        backup_for(run_id)
        return
    verdict = read(run_id).get("preflight")
    if not verdict:
        raise GateClosed(run=run_id, gate="GO", reason=f"preflight (00_preflight) has not run in it; {what} "
                                                       "needs its GO on this database first")
    if verdict["verdict"] != "GO":
        raise GateClosed(run=run_id, gate="GO", reason=f"its preflight said NO-GO ({'; '.join(verdict['no_go'])[:300]})")
    if Identity(**verdict["identity"]) != here:
        raise GateClosed(run=run_id, gate="GO", reason=f"its GO is for {Identity(**verdict['identity']).label()}, "
                                                       f"not {here.label()}")
    owner, taken = backup_for(run_id)
    of = "its" if owner == run_id else f"run {owner}'s"
    if Identity(**taken["identity"]) != here:
        raise GateClosed(run=run_id, gate="backup", reason=f"{of} backup is of {Identity(**taken['identity']).label()}, "
                                                           f"not {here.label()}")
    if taken.get("changed_before"):
        c = taken["changed_before"]
        raise GateClosed(run=run_id, gate="backup", reason=f"{of} backup was taken after the migration had begun "
                         f"({c['change']} by run {c['run_id']} at {c['applied_at']}): rolling back to it would not "
                         "restore the database as it was; name the backup taken before that with --backup-of RUN")
    if forward:
        approved(run_id)


def record_rehearsal_copy(conn: psycopg.Connection[Any], run_id: str, database: str) -> None:
    """The database ``conn`` reaches is this run's rehearsal copy (``backup/rehearsal.py``), which
    the rehearsal itself restored from the run's proven backup: the run's changes may run there,
    and nowhere else without the run's GO. Called only by the rehearsal, on the copy it made."""
    here = identity(conn)
    if here.database != database or not database.startswith(REHEARSAL_PREFIX):
        raise GateClosed(run=run_id, gate="rehearsal", reason=f"{here.label()} is not the rehearsal's own copy")
    gates = read(run_id)
    gates["rehearsal_copy"] = {"identity": asdict(here), "at": db.scalar(conn, "select now()::text")}
    _write(run_id, gates)


def rehearsing_on(run_id: str, here: Identity) -> bool:
    copy = read(run_id).get("rehearsal_copy")
    return bool(copy) and Identity(**copy["identity"]) == here and here.database.startswith(REHEARSAL_PREFIX)


def record_rehearsal(run_id: str, evidence: dict[str, Any]) -> None:
    """The rehearsal's verdict and the sha256 of its evidence file, for the run's record."""
    gates = read(run_id)
    gates["rehearsal"] = evidence
    _write(run_id, gates)


REHEARSAL_PREFIX = "kbmigrate_rehearsal_"


def rehearsal_of(run_id: str) -> tuple[str, dict[str, Any] | None]:
    """The rehearsal run ``run_id``'s changes are held to: that of the run whose backup it relies on
    (its own, or ``--backup-of``'s), as that backup's copy is the one rehearsed."""
    owner = read(run_id).get("backup_of") or run_id
    return owner, read(owner).get("rehearsal")


def to_approve(run_id: str) -> dict[str, Any]:
    """The rehearsal record run ``run_id`` needs approved, its evidence file checked against the
    sha256 recorded; GateClosed when there is none, it failed, or its file changed."""
    owner, rehearsed = rehearsal_of(run_id)
    of = "its" if owner == run_id else f"run {owner}'s"
    if not rehearsed:
        raise GateClosed(run=run_id, gate="rehearsal", reason=f"{of} backup has no rehearsal on its restored copy: "
                         "step 01 rehearses steps 02-05 there before production's first change (run 01 again: "
                         f"kbmigrate run --resume {owner} --only 01 --new-backup)")
    if not rehearsed.get("ok"):
        raise GateClosed(run=run_id, gate="rehearsal", reason=f"{of} rehearsal on the restored copy failed "
                         f"({str(rehearsed.get('failure'))[:300]}): production is a NO-GO; its evidence is {rehearsed['path']}")
    evidence = from_evidence(rehearsed["path"])
    if not evidence.is_file() or sha256_file(evidence) != rehearsed["sha256"]:
        raise GateClosed(run=run_id, gate="approval", reason=f"{of} rehearsal evidence {rehearsed['path']} no longer "
                         "has the sha256 recorded when the rehearsal wrote it")
    return {**rehearsed, "run": owner}


def approved(run_id: str) -> dict[str, Any]:
    """The approval run ``run_id`` holds of the rehearsal it is held to; GateClosed when none does."""
    rehearsed = to_approve(run_id)
    given = read(run_id).get("approval")
    if not given or given.get("sha256") != rehearsed["sha256"]:
        raise GateClosed(run=run_id, gate="approval", reason=f"nobody has approved its rehearsal (evidence "
                         f"{rehearsed['path']}, sha256 {rehearsed['sha256'][:16]}…): read it, then "
                         f"'kbmigrate approve {run_id}' (a headless run waits for that)")
    return dict(given)


def record_session(run_id: str, here: Identity, detail: str) -> None:
    """The runner found its session to ``here`` a session of its own (``checks/pooler.py``), just
    before it took the run lock: preflight takes that finding for the same database instead of
    probing again (two sessions, 10 round trips)."""
    gates = read(run_id)
    gates["session"] = {"identity": asdict(here), "detail": detail,
                        "at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds")}
    _write(run_id, gates)


def probed_session(run_id: str, here: Identity) -> str | None:
    """What the runner of ``run_id`` found of its session to ``here`` (None: not probed there)."""
    found = read(run_id).get("session")
    if not found or Identity(**found["identity"]) != here:
        return None
    return f"{found['detail']}: probed by the run at {found['at']}, before it took its lock"


def record_operator(run_id: str, operator: str, *, four_eyes: bool, auto_approve: bool = False) -> None:
    """Who runs ``run_id``; with ``four_eyes``, someone else must approve its rehearsal. Once set,
    four eyes stay asked for: a resume cannot lift them. ``auto_approve``: a hand-stepped run's
    approval cell records a self-approval (``kbmigrate lab --auto-approve``)."""
    gates = read(run_id)
    gates.setdefault("operator", operator)
    gates["four_eyes"] = bool(gates.get("four_eyes")) or four_eyes
    gates["auto_approve"] = auto_approve and not gates["four_eyes"]
    _write(run_id, gates)


def approve(run_id: str, *, by: str, how: str, sha256: str | None = None) -> dict[str, Any]:
    """Record that ``by`` approved the rehearsal run ``run_id`` is held to (``how``: at the
    terminal, by command, auto, ...). ``sha256``: the evidence's hash the approver was shown (or
    trusted up front; at least its first 12 hex digits): it must be the evidence's. Refused
    (GateClosed) when four eyes are asked for and ``by`` is the run's operator."""
    rehearsed = to_approve(run_id)
    if sha256 is not None and (len(sha256) < 12 or not rehearsed["sha256"].startswith(sha256.strip().lower())):
        raise GateClosed(run=run_id, gate="approval", reason=f"the hash approved ({sha256[:16]}) is not its "
                         f"rehearsal's ({rehearsed['sha256'][:16]}…, {rehearsed['path']}); read that evidence first")
    gates = read(run_id)
    operator = gates.get("operator")
    if gates.get("four_eyes") and by == operator:
        raise GateClosed(run=run_id, gate="approval", reason=f"it asks for four eyes: {by} runs it and may not "
                         "approve its rehearsal; someone else runs 'kbmigrate approve' for it")
    gates["approval"] = {"by": by, "at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds").replace("+00:00", "Z"),
                         "how": how, "sha256": rehearsed["sha256"], "rehearsal_of": rehearsed["run"],
                         "self": operator is None or by == operator}
    _write(run_id, gates)
    return dict(gates["approval"])


def wait_approved(run_id: str, seconds: float, *, say: Callable[[str], None],
                  stopped: Callable[[], bool] = lambda: False) -> dict[str, Any] | None:
    """Until someone approves run ``run_id``'s rehearsal (``kbmigrate approve``, from another
    terminal), at most ``seconds``, saying every 30 s that it still waits; the approval, or None
    when none came in time or ``stopped()``. Another gate closed is raised at once."""
    started = said = time.monotonic()
    while time.monotonic() - started < seconds and not stopped():
        time.sleep(0.25)
        try:
            return approved(run_id)
        except GateClosed as exc:
            if exc.details.get("gate") != "approval":
                raise
        if time.monotonic() - said >= 30:
            said = time.monotonic()
            say(f"⏳ still waiting for approval ({said - started:.0f} s)")
    return None
