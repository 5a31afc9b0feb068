"""Rehearsal and production side by side, and any two runs' figures (``kbmigrate diff``).

Per change: its outcome, the rows it touched, the locks its transaction held on the application's
tables and how long it held them (the server's time, first statement to COMMIT). Production's
figures come from the ledger (``per_change``, kept in the manifest as ``changes_by_change``), the
rehearsal's from ``rehearsal.json``. A row says where the two differ: another outcome, other rows,
other locks (the strongest mode per relation), or a hold more than ``SLOWER`` times the other's
and above ``NOTICED`` seconds (a 3 ms change taking 9 ms is noise, not news).
"""

from __future__ import annotations

import json
from typing import Any

import psycopg

from kbmigrate.engine import held, ledger
from kbmigrate.paths import RUNS_DIR, from_evidence

SLOWER = 3.0    # a hold this many times the other's is a difference worth a line
NOTICED = 0.05  # seconds: below this a hold is not compared


def per_change(conn: psycopg.Connection[Any], run_id: str, ledgered: list[dict[str, Any]] | None = None) -> list[dict[str, Any]]:
    """Production's figures per change of steps 02-05 for run ``run_id``, from its ledger rows
    (``ledgered``, when already read; a batched change's batches added up; its hold is its
    longest batch's)."""
    out: dict[str, dict[str, Any]] = {}
    for r in (ledger.for_run(conn, run_id) if ledgered is None else ledgered):
        if r["step"] in ("run", "00_preflight", "01_backup"):
            continue
        detail = r["detail"] or {}
        row = out.setdefault(r["change"], {"step": r["step"], "change": r["change"], "outcome": r["outcome"], "rows": 0,
                                          "locks": [], "held_seconds": None, "batches": 0})
        row["outcome"] = "applied" if "applied" in (row["outcome"], r["outcome"]) else r["outcome"]
        if r["outcome"] == "applied":
            row["rows"] += int(r["rows_affected"] or 0)
            row["batches"] += 1 if r["step"] == "03_backfill" else 0
        for lock in detail.get("locks") or []:
            if lock not in row["locks"]:
                row["locks"].append(lock)
        if detail.get("held_seconds") is not None and not detail.get("notx"):  # a build's row: its record's, not its own
            row["held_seconds"] = max(row["held_seconds"] or 0.0, float(detail["held_seconds"]))
    return list(out.values())


def rehearsal(record: dict[str, Any]) -> dict[str, Any] | None:
    """The rehearsal evidence for a run's record: its own, or the one its approval names."""
    own = record.get("rehearsal") or {}
    of = (record.get("approval") or {}).get("rehearsal_of")
    path = from_evidence(own["path"]) if own.get("path") else (RUNS_DIR / of / "rehearsal.json" if of else None)
    if path is None or not path.is_file():
        return None
    found: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return found


def rehearsed_changes(record: dict[str, Any]) -> list[dict[str, Any]] | None:
    """The rehearsal's per-change rows for a run's record."""
    evidence = rehearsal(record)
    return None if evidence is None else list(evidence.get("changes") or [])


def _differs(a: dict[str, Any] | None, b: dict[str, Any] | None, names: tuple[str, str]) -> str:
    if a is None or b is None:
        return f"only in {names[0] if b is None else names[1]}"
    notes = []
    if a.get("outcome") != b.get("outcome"):
        notes.append(f"outcome {a.get('outcome')} / {b.get('outcome')}")
    if (a.get("rows") or 0) != (b.get("rows") or 0):
        notes.append(f"rows {a.get('rows') or 0} / {b.get('rows') or 0}")
    if held.strongest(a.get("locks")) != held.strongest(b.get("locks")):
        notes.append("other locks")
    ha, hb = a.get("held_seconds"), b.get("held_seconds")
    if ha is not None and hb is not None and max(ha, hb) >= NOTICED and max(ha, hb) > SLOWER * max(min(ha, hb), 1e-3):
        notes.append(f"held {max(ha, hb) / max(min(ha, hb), 1e-3):.1f}× as long in {names[0] if ha > hb else names[1]}")
    return "; ".join(notes)


def side_by_side(a: list[dict[str, Any]], b: list[dict[str, Any]],
                 names: tuple[str, str] = ("rehearsal", "production")) -> list[dict[str, Any]]:
    """One row per change, in ``a``'s order then ``b``'s: both sides' figures and where they differ."""
    left, right = {c["change"]: c for c in a}, {c["change"]: c for c in b}
    order = list(left) + [c for c in right if c not in left]
    rows = []
    for change in order:
        x, y = left.get(change), right.get(change)
        rows.append({"step": (x or y or {}).get("step"), "change": change,
                     **{f"{n} {k}": (side or {}).get(k) for n, side in zip(names, (x, y))
                        for k in ("outcome", "rows", "held_seconds")},
                     **{f"{n} locks": held.text((side or {}).get("locks")) for n, side in zip(names, (x, y))},
                     "differs": _differs(x, y, names)})
    return rows


def runs(a: dict[str, Any], b: dict[str, Any]) -> list[dict[str, Any]]:
    """``kbmigrate diff``: two runs' production figures, side by side."""
    return side_by_side(a.get("changes_by_change") or [], b.get("changes_by_change") or [],
                        (a["run_id"], b["run_id"]))
