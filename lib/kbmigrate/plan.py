"""The plan (``sql/plan.txt``): which changes each notebook step applies, in order."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

from kbmigrate.paths import SQL_DIR, read_sql

STEPS: tuple[str, ...] = (
    "00_preflight", "01_backup", "02_schema", "03_backfill", "04_seed_sections", "05_import_legacy", "06_smoke_tests",
)
FLAGS = {"notx", "template", "batched", "optional"}


@dataclass(frozen=True)
class Change:
    step: str
    name: str
    flags: frozenset[str]

    @property
    def deploy(self) -> str:
        return f"deploy/{self.name}.sql"

    @property
    def verify(self) -> str:
        return f"verify/{self.name}.sql"

    def has(self, flag: str) -> bool:
        return flag in self.flags


def load(path: Path | None = None) -> list[Change]:
    text = (path or SQL_DIR / "plan.txt").read_text(encoding="utf-8")
    changes: list[Change] = []
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        step, name, *flags = line.split()
        unknown = set(flags) - FLAGS
        if step not in STEPS or unknown:
            raise ValueError(f"sql/plan.txt line {number}: unknown step or flag in {raw!r}")
        changes.append(Change(step, name, frozenset(flags)))
    return changes


def for_step(step: str) -> list[Change]:
    return [c for c in load() if c.step == step]


def sha256_text(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def deploy_hashes() -> dict[str, str]:
    """change -> sha256 of its deploy file as it is now (what the ledger records when applying it)."""
    return {c.name: sha256_text(read_sql(c.deploy)) for c in load()}


def sql_files_used() -> dict[str, str]:
    """sha256 of every SQL file the plan uses (and the plan itself), by path under sql/."""
    out = {"plan.txt": sha256_text(read_sql("plan.txt"))}
    for change in load():
        for rel in (change.deploy, change.verify):
            out[rel] = sha256_text(read_sql(rel))
    for extra in sorted((SQL_DIR / "report").glob("*.sql")):
        rel = str(extra.relative_to(SQL_DIR))
        out[rel] = sha256_text(extra.read_text(encoding="utf-8"))
    return out
