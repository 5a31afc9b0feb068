"""``kbmigrate verify RUN``: the evidence of a run proves itself, or names what broke.

Recomputed from the files: the sha256 of every notebook, the report, a hand run's log of cells, the kept SQL files and the
backup, against the manifest. Then the seal (see ``manifest.py``): the manifest's own sha256
against the seal the run wrote (kbmigrate.seals), and, run by run back to the first, each manifest's record
of the previous one against that run's manifest and the ledger. Editing any file, a manifest or a
ledger row, or deleting a run folder, breaks one of these.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import psycopg

from kbmigrate import db
from kbmigrate.engine import ledger
from kbmigrate.paths import RUNS_DIR, from_evidence
from kbmigrate.run import manifest


@dataclass
class Check:
    what: str
    ok: bool
    detail: str = ""
    run: str = ""  # the run of the chain whose evidence this checks


def chain_length(checks: list[Check]) -> int:
    """How many runs of the chain the checks walked."""
    return len({c.run for c in checks if c.run})


def _files(run_id: str, record: dict[str, Any]) -> list[Check]:
    folder = RUNS_DIR / run_id
    out: list[Check] = []

    def same(what: str, path: Any, expected: str | None) -> None:
        if expected is None:
            return
        if not path.exists():
            out.append(Check(what, False, f"{path} is missing"))
            return
        got = manifest.sha256_file(path)
        out.append(Check(what, got == expected, "" if got == expected else f"sha256 {got}, the manifest says {expected}"))

    for step in record.get("steps", []):
        same(f"notebook {step['notebook']}", from_evidence(step["notebook"]), step.get("sha256"))
    report = record.get("report")
    if report:
        same(f"report {report['path']}", from_evidence(report["path"]), report["sha256"])
    for rel, digest in record.get("sql_files", {}).items():
        same(f"sql/{rel} as run", folder / "sql" / rel, digest)
    if record.get("cell_log"):
        same(f"cell log {record['cell_log']['path']}", from_evidence(record["cell_log"]["path"]), record["cell_log"]["sha256"])
    if record.get("backup"):
        same(f"backup {record['backup']['path']}", from_evidence(record["backup"]["path"]), record["backup"]["sha256"])
    if record.get("rehearsal"):
        same(f"rehearsal {record['rehearsal']['path']}", from_evidence(record["rehearsal"]["path"]),
             record["rehearsal"]["sha256"])
    if record.get("approval"):  # what was approved is the rehearsal the run recorded (or the one of its backup's run)
        given = record["approval"]
        of = record.get("rehearsal") if given.get("rehearsal_of") == record.get("run_id") else None
        ok = of is None or of.get("sha256") == given.get("sha256")
        out.append(Check(f"approval by {given.get('by')} ({given.get('how')})", ok,
                         "" if ok else f"it approved sha256 {str(given.get('sha256'))[:16]}…, not the rehearsal's "
                                       f"{str(of.get('sha256') if of else '')[:16]}…"))
    return out


def _seal_of(conn: psycopg.Connection[Any], run_id: str) -> str | None:
    return manifest.sealed(conn, run_id)


def _changed_anything(conn: psycopg.Connection[Any], run_id: str) -> bool:
    return ledger.exists(conn) and bool(db.scalar(
        conn, "select exists(select 1 from kbmigrate.ledger where run_id = %s and step <> %s)", (run_id, manifest.SEAL_STEP)))


def verify(conn: psycopg.Connection[Any], run_id: str) -> list[Check]:
    """Every check of the run and of the chain behind it, in order; the first failed one is the finding."""
    checks: list[Check] = []
    seen: set[str] = set()
    current: str | None = run_id
    while current and current not in seen:
        seen.add(current)
        path = RUNS_DIR / current / "manifest.json"
        if not path.exists():
            checks.append(Check(f"run {current}", False, f"its folder or manifest is gone ({path})"))
            break
        try:
            record = json.loads(path.read_text(encoding="utf-8"))
        except ValueError as exc:
            checks.append(Check(f"manifest of {current}", False, f"not JSON: {exc}"))
            break
        checks += [Check(c.what, c.ok, c.detail, current) for c in _files(current, record)] or \
            [Check(f"run {current}", True, "no files to hash", current)]
        digest, sealed = manifest.sha256_file(path), _seal_of(conn, current)
        if sealed is not None:
            checks.append(Check(f"manifest of {current} against its seal", sealed == digest,
                                "" if sealed == digest else f"sha256 {digest}, the seal says {sealed}"))
        elif _changed_anything(conn, current):
            checks.append(Check(f"manifest of {current} against its seal", False,
                                "the run changed the database but the database holds no seal of it"))
        prev = record.get("previous")
        if prev:
            before = RUNS_DIR / prev["run_id"] / "manifest.json"
            if not before.exists():
                checks.append(Check(f"run {prev['run_id']} (before {current})", False,
                                    f"its folder or manifest is gone ({before})"))
                break
            got = manifest.sha256_file(before)
            checks.append(Check(f"manifest of {prev['run_id']} as {current} recorded it", got == prev["manifest_sha256"],
                                "" if got == prev["manifest_sha256"] else
                                f"sha256 {got}, {current}'s manifest says {prev['manifest_sha256']}"))
        current = prev["run_id"] if prev else None
    return checks
