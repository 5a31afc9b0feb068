"""Where the project's files live. kbmigrate runs from its repository (installed editable)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

REPO_ROOT: Path = Path(__file__).resolve().parents[2]
SQL_DIR: Path = REPO_ROOT / "sql"
NOTEBOOK_DIR: Path = REPO_ROOT / "notebooks"
STATE_DIR: Path = REPO_ROOT / ".kbmigrate"          # ignored by git: embedded server data
EMBEDDED_DIR: Path = STATE_DIR / "embedded"
# The evidence of runs and the backups (ignored by git); tests point them elsewhere.
RUNS_DIR: Path = Path(os.environ.get("KBMIGRATE_RUNS_DIR") or REPO_ROOT / "runs")
BACKUP_ROOT: Path = Path(os.environ.get("KBMIGRATE_BACKUPS_DIR") or REPO_ROOT / "backups")


def sql_file(relative: str) -> Path:
    """The path of a file under ``sql/``; raises FileNotFoundError naming it when absent."""
    path = SQL_DIR / relative
    if not path.is_file():
        raise FileNotFoundError(f"SQL file missing: sql/{relative}")
    return path


def read_sql(relative: str) -> str:
    return sql_file(relative).read_text(encoding="utf-8")


def shown(path: Path) -> str:
    """A path as the evidence names it: relative to the repository when inside it."""
    try:
        return str(path.relative_to(REPO_ROOT))
    except ValueError:
        return str(path)


def from_evidence(name: str) -> Path:
    """The path a piece of evidence names (``shown``'s inverse)."""
    path = Path(name)
    return path if path.is_absolute() else REPO_ROOT / path


WAITS_LOG = "waits.log"  # a run's lock waits, as its kernels' watchers said them


def append_line(path: Path | str, line: str) -> None:
    """One line at the end of a run's log, readable by its owner only (one write: whole lines)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    with os.fdopen(fd, "a", encoding="utf-8") as out:
        out.write(line.replace("\n", " ") + "\n")


def append_json_line(path: Path | str, entry: dict[str, Any]) -> None:
    """One JSON line at the end of a run's log (sessions.jsonl, cells.jsonl), readable by its owner only."""
    append_line(path, json.dumps(entry, default=str))
