"""The plan (``sql/plan.txt``): which changes each notebook step applies, in order."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

from kbmigrate.engine import legacy
from kbmigrate.engine.params import RunParams
from kbmigrate.paths import SQL_DIR, read_sql

STEPS: tuple[str, ...] = (
    "00_preflight", "01_backup", "02_schema", "03_backfill", "04_seed_sections", "05_import_legacy", "06_smoke_tests",
)
CHANGING: tuple[str, ...] = STEPS[2:6]  # the steps that change the database: 02-05
FLAGS = {"notx", "template", "batched", "optional", "per_legacy_source"}


@dataclass(frozen=True)
class Change:
    step: str
    name: str
    flags: frozenset[str]
    file: str = ""      # its deploy/verify/revert files, when not named after the change
    spec: str = ""      # JSON the SQL reads as the setting kbmigrate.legacy_spec (a legacy source)

    @property
    def deploy(self) -> str:
        return f"deploy/{self.file or self.name}.sql"

    @property
    def verify(self) -> str:
        return f"verify/{self.file or self.name}.sql"

    @property
    def revert(self) -> str:
        return f"revert/{self.file or self.name}.sql"

    def has(self, flag: str) -> bool:
        return flag in self.flags

    def settings(self) -> dict[str, str]:
        return {"kbmigrate.legacy_spec": self.spec} if self.spec else {}

    def sha256(self) -> str:
        """What the ledger records of the change's code: its deploy file, and its data if any."""
        return sha256_text(read_sql(self.deploy) + (f"\n-- spec: {self.spec}" if self.spec else ""))


def load(params: RunParams | None = None, path: Path | None = None) -> list[Change]:
    """The plan's changes in order; a per_legacy_source line becomes one change per line of the
    legacy sources file (the run's, else the default)."""
    params = params or RunParams()
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
        if "per_legacy_source" in flags:
            rest = frozenset(flags) - {"per_legacy_source"}
            changes += [Change(step, src.change, rest, file=name, spec=json.dumps(src.spec()))
                        for src in legacy.read(params.legacy_sources_path())]
        else:
            changes.append(Change(step, name, frozenset(flags)))
    return changes


def for_step(step: str, params: RunParams | None = None) -> list[Change]:
    return [c for c in load(params) if c.step == step]


def sha256_text(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def deploy_hashes(params: RunParams | None = None) -> dict[str, str]:
    """change -> the hash the ledger records when applying it, as the code is now."""
    return {c.name: c.sha256() for c in load(params)}


def sql_files_used() -> dict[str, str]:
    """sha256 of every SQL file the plan uses (and the plan itself), by path under sql/."""
    out = {"plan.txt": sha256_text(read_sql("plan.txt"))}
    for change in load():
        for rel in (change.deploy, change.verify):
            out[rel] = sha256_text(read_sql(rel))
    for data in sorted((SQL_DIR / "data").glob("*.csv")):
        out[str(data.relative_to(SQL_DIR))] = sha256_text(data.read_text(encoding="utf-8"))
    for extra in sorted((SQL_DIR / "report").glob("*.sql")):
        rel = str(extra.relative_to(SQL_DIR))
        out[rel] = sha256_text(extra.read_text(encoding="utf-8"))
    return out
