"""``kbmigrate runs``: the runs of one database, newest first, from its ledger and the run folders."""

from __future__ import annotations

import json
from typing import Any

import psycopg

from kbmigrate import db
from kbmigrate.engine import ledger
from kbmigrate.paths import RUNS_DIR, read_sql
from kbmigrate.run.manifest import SEAL_STEP


def newest_target() -> dict[str, Any] | None:
    """The database of the newest run folder here (``runs`` without a target looks there, as
    ``verify`` looks in its run's manifest), or None when there is none."""
    newest: tuple[str, dict[str, Any]] | None = None
    for path in RUNS_DIR.glob("*/manifest.json"):
        try:
            record = json.loads(path.read_text(encoding="utf-8"))
            key = record["started_at"] or ""
        except (OSError, ValueError, KeyError, TypeError):
            continue
        if newest is None or key > newest[0]:
            newest = (key, record)
    return newest[1] if newest else None


def _folders(conn: psycopg.Connection[Any]) -> dict[str, dict[str, Any]]:
    here = (conn.info.host, int(conn.info.port), conn.info.dbname)
    out = {}
    for path in RUNS_DIR.glob("*/manifest.json"):
        try:
            record = json.loads(path.read_text(encoding="utf-8"))
            t = record["target"]
            if (t["host"], int(t["port"]), t["database"]) == here:
                out[record["run_id"]] = record
        except (OSError, ValueError, KeyError, TypeError):
            continue
    return out


def _what(record: dict[str, Any] | None, rows: dict[str, Any] | None) -> str:
    parts = []
    if record:
        ran = sorted({s["notebook"].rsplit("/", 1)[-1].split("_", 1)[0] for s in record.get("steps", [])
                      if s.get("status") not in ("not run", "running")})
        if record.get("parameters", {}).get("rollback_of"):
            parts.append(f"rollback of {record['parameters']['rollback_of']}")
        elif record.get("parameters", {}).get("revert"):
            parts.append(f"revert of {record['parameters']['revert']}")
        elif ran:
            parts.append(f"{'step' if len(ran) == 1 else 'steps'} {', '.join(ran)}")
        else:
            parts.append("no step run")
    if rows:
        counts = [f"{rows[k]} {k}" for k in ("applied", "noop", "reverted", "failed") if rows[k]]
        parts.append("ledger: " + ", ".join(counts))
    if record is None:
        parts.append("no run folder here")
    return "; ".join(parts) or "-"


def runs(conn: psycopg.Connection[Any]) -> list[dict[str, Any]]:
    folders = _folders(conn)
    in_ledger: dict[str, dict[str, Any]] = {}
    if ledger.exists(conn):
        for r in db.rows(conn, read_sql("report/runs_ledger.sql"), {"seal_step": SEAL_STEP}):
            in_ledger[r["run_id"]] = r
    out = []
    for run_id in set(folders) | set(in_ledger):
        record, rows = folders.get(run_id), in_ledger.get(run_id)
        started = record["started_at"] if record else rows["first_at"].strftime("%Y-%m-%dT%H:%M:%SZ")
        out.append({"run_id": run_id, "started_at": started, "status": record["status"] if record else "?",
                    "what": _what(record, rows)})
    return sorted(out, key=lambda r: (r["started_at"] or "", r["run_id"]), reverse=True)
