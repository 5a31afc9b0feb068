"""Where the project's files live. kbmigrate runs from its repository (installed editable)."""

from __future__ import annotations

from pathlib import Path

REPO_ROOT: Path = Path(__file__).resolve().parents[2]
SQL_DIR: Path = REPO_ROOT / "sql"
NOTEBOOK_DIR: Path = REPO_ROOT / "notebooks"
STATE_DIR: Path = REPO_ROOT / ".kbmigrate"          # ignored by git: embedded server data
EMBEDDED_DIR: Path = STATE_DIR / "embedded"


def sql_file(relative: str) -> Path:
    """The path of a file under ``sql/``; raises FileNotFoundError naming it when absent."""
    path = SQL_DIR / relative
    if not path.is_file():
        raise FileNotFoundError(f"SQL file missing: sql/{relative}")
    return path


def read_sql(relative: str) -> str:
    return sql_file(relative).read_text(encoding="utf-8")
