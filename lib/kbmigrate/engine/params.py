"""The runbook's parameters: validated once, passed to SQL as bound settings, never secrets."""

from __future__ import annotations

import csv
import json
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from kbmigrate.db import Limits
from kbmigrate.errors import BadParameter
from kbmigrate.paths import REPO_ROOT

STRATEGIES = ("first_joined", "current_workspace")
REHEARSE_ON = ("local", "target")  # where 01's drill and rehearsal run (backup/drill.py)
_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_$]{0,62}$")
_INTERVAL = re.compile(r"^\d+(ms|s|min|h)?$")
# The limits a session runs under: none may be zero (no limit) or below a millisecond.
BOUNDS = ("lock_timeout", "statement_timeout", "read_timeout", "index_timeout", "backup_timeout", "batch_target",
          "lock_budget_floor")


def pause_for(worked: float, share: float, most: float) -> float:
    """The pause after ``worked`` seconds of work so that the work is ``share`` of the time, at most
    ``most`` seconds (the one formula behind the steps' and the backfill's give-way pauses)."""
    return min(worked * (1 - share) / share, most)


@dataclass(frozen=True)
class RunParams:
    membership_table: str = "public.workspace_members"
    membership_user_column: str = "user_id"
    membership_workspace_column: str = "workspace_id"
    membership_joined_column: str = "joined_at"
    backfill_strategy: str = "first_joined"
    sections_file: str = "sql/data/default_sections.csv"
    legacy_sources_file: str = "sql/data/legacy_sources.csv"
    batch_size: int = 5000
    throttle: bool = True                  # the backfill adapts batch size and pauses to what it costs the application
    batch_target: str = "250ms"            # the longest a backfill batch should hold its row locks
    max_pause: str = "2s"                  # the longest pause the throttle puts between two batches
    work_share: float = 0.25               # while the application is there, 02-05 work at most this share of the time (1: no pauses)
    import_legacy: bool | None = None      # None: yes when legacy tables exist
    lock_timeout: str = "1s"
    statement_timeout: str = "5min"
    lock_retries: int = 5
    read_timeout: str = "1min"             # statement_timeout of the read-only sessions (checks, reports)
    index_timeout: str = "1h"              # statement_timeout of a CREATE INDEX CONCURRENTLY
    backup_timeout: str = "1h"             # how long pg_dump may run in all
    accept_changed_sql: bool = False       # go on although a deploy file changed after it was applied
    lock_budget_margin: float = 5.0        # a change may hold its locks this many times its rehearsed time ...
    lock_budget_floor: str = "2s"          # ... or this long, whichever is more (engine/budget.py)
    rehearse_on: str = "local"             # where 01's drill and rehearsal run: local, or target (its own server)
    extra: dict[str, Any] = field(default_factory=dict)

    def validate(self) -> "RunParams":
        schema, table = self.membership_split
        for name, value in (("membership_table schema", schema), ("membership_table", table),
                            ("membership_user_column", self.membership_user_column),
                            ("membership_workspace_column", self.membership_workspace_column),
                            ("membership_joined_column", self.membership_joined_column)):
            if not _IDENT.match(value):
                raise BadParameter(name=name, reason=f"{value!r} is not a plain SQL identifier")
        if self.backfill_strategy not in STRATEGIES:
            raise BadParameter(name="backfill_strategy",
                               reason=f"{self.backfill_strategy!r} is not one of {', '.join(STRATEGIES)}")
        if not isinstance(self.batch_size, int) or isinstance(self.batch_size, bool) or not 1 <= self.batch_size <= 1_000_000:
            raise BadParameter(name="batch_size", reason=f"{self.batch_size!r} is not a whole number from 1 to 1000000")
        for name in ("lock_timeout", "statement_timeout", "read_timeout", "index_timeout", "backup_timeout",
                     "batch_target", "max_pause", "lock_budget_floor"):
            if not _INTERVAL.match(str(getattr(self, name))):
                raise BadParameter(name=name, reason=f"{getattr(self, name)!r} is not like 500ms, 1s or 5min")
        for name in BOUNDS:  # to PostgreSQL a 0 means no limit at all: a bound is never lifted from the command line
            if self.seconds(name) <= 0:
                raise BadParameter(name=name, reason=f"{getattr(self, name)!r} would lift the bound (to PostgreSQL "
                                                     "0 means no limit); give a time, like 1s or 5min")
        margin = self.lock_budget_margin
        if isinstance(margin, bool) or not isinstance(margin, (int, float)) or not 1 <= margin <= 1000:
            raise BadParameter(name="lock_budget_margin", reason=f"{margin!r} is not a number from 1 to 1000 "
                                                                 "(times the rehearsed lock time)")
        share = self.work_share
        if isinstance(share, bool) or not isinstance(share, (int, float)) or not 0.05 <= share <= 1:
            raise BadParameter(name="work_share", reason=f"{share!r} is not a number from 0.05 to 1 (the share of the "
                                                         "time the changing steps work while the application is there)")
        if self.rehearse_on not in REHEARSE_ON:
            raise BadParameter(name="rehearse_on", reason=f"{self.rehearse_on!r} is not local (the embedded server) "
                                                          "or target (a scratch database on the target's server)")
        if not isinstance(self.lock_retries, int) or isinstance(self.lock_retries, bool) or not 0 <= self.lock_retries <= 100:
            raise BadParameter(name="lock_retries", reason=f"{self.lock_retries!r} is not a whole number from 0 to 100")
        self.sections()
        from kbmigrate.engine import legacy  # the legacy sources file, read now so a bad one is refused before connecting

        legacy.read(self.legacy_sources_path())
        return self

    def pause_after(self, worked: float) -> float:
        """While the application is there: the pause after ``worked`` seconds of the server's work,
        so that the work is ``work_share`` of the time; at most ``max_pause``."""
        return pause_for(worked, self.work_share, self.seconds("max_pause"))

    @property
    def membership_split(self) -> tuple[str, str]:
        parts = self.membership_table.split(".")
        if len(parts) == 1:
            return "public", parts[0]
        if len(parts) == 2:
            return parts[0], parts[1]
        raise BadParameter(name="membership_table", reason=f"{self.membership_table!r} is not [schema.]table")

    def sections_path(self) -> Path:
        path = Path(self.sections_file)
        return path if path.is_absolute() else REPO_ROOT / path

    def legacy_sources_path(self) -> Path:
        path = Path(self.legacy_sources_file)
        return path if path.is_absolute() else REPO_ROOT / path

    def sections(self) -> list[dict[str, Any]]:
        """The default sections, from the sections file (CSV: name, description, display_order, icon).
        Read once per RunParams; every change's settings use the same list."""
        if "_sections" not in self.__dict__:
            self.__dict__["_sections"] = self._read_sections()  # frozen dataclass: a cache, not state
        return self.__dict__["_sections"]

    def _read_sections(self) -> list[dict[str, Any]]:
        path = self.sections_path()
        try:
            with path.open(encoding="utf-8", newline="") as fh:
                rows = list(csv.DictReader(fh))
        except OSError as exc:
            raise BadParameter(name="sections_file", reason=f"cannot read {path}: {exc.strerror}") from None
        except (csv.Error, UnicodeDecodeError) as exc:
            raise BadParameter(name="sections_file", reason=f"{path} is not a CSV file: {exc}") from None
        need = ["name", "description", "display_order", "icon"]
        if not rows or set(need) - set(rows[0].keys()):
            raise BadParameter(name="sections_file", reason=f"{path} needs the columns {', '.join(need)}")
        out, seen = [], set()
        for i, row in enumerate(rows, 2):
            name = (row.get("name") or "").strip()
            order = (row.get("display_order") or "").strip()
            if not name or not order.isdigit() or None in row.values():
                raise BadParameter(name="sections_file", reason=f"{path} line {i}: needs a name and a whole-number display_order")
            if name in seen:
                raise BadParameter(name="sections_file", reason=f"{path} line {i}: section {name!r} twice")
            seen.add(name)
            out.append({"name": name, "description": row["description"].strip() or None,
                        "display_order": int(order), "icon": (row.get("icon") or "").strip() or None})
        return out

    def settings(self, run_id: str) -> dict[str, str]:
        """Transaction-local settings every step file may read with current_setting()."""
        schema, table = self.membership_split
        return {
            "kbmigrate.run_id": run_id,
            "kbmigrate.strategy": self.backfill_strategy,
            "kbmigrate.membership_schema": schema,
            "kbmigrate.membership_table": table,
            "kbmigrate.user_column": self.membership_user_column,
            "kbmigrate.workspace_column": self.membership_workspace_column,
            "kbmigrate.joined_column": self.membership_joined_column,
            "kbmigrate.sections": json.dumps(self.sections()),
            "kbmigrate.batch_size": str(self.batch_size),
            "kbmigrate.after_id": "00000000-0000-0000-0000-000000000000",
        }

    def limits(self, kind: str = "change") -> Limits:
        """The bounds of a session of each kind: ``change`` (a change's transaction), ``read``
        (preflight, checks, reports, the lock), ``index`` (a concurrent index build, which blocks
        no one but may take long) and ``backup`` (the snapshot and its checksums)."""
        statement = {"change": self.statement_timeout, "read": self.read_timeout,
                     "index": self.index_timeout, "backup": self.statement_timeout}[kind]
        return Limits(self.lock_timeout, statement)

    def seconds(self, name: str) -> float:
        """An interval parameter (500ms, 1s, 5min, 1h; a bare number is milliseconds) in seconds."""
        value = str(getattr(self, name))
        number, unit = re.match(r"^(\d+)(ms|s|min|h)?$", value).groups()  # type: ignore[union-attr]
        return int(number) * {"ms": 0.001, None: 0.001, "s": 1, "min": 60, "h": 3600}[unit]

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d.pop("extra")
        return d

    @classmethod
    def from_mapping(cls, values: dict[str, Any]) -> "RunParams":
        known = set(cls.__dataclass_fields__) - {"extra"}
        unknown = sorted(set(values) - known)
        if unknown:
            raise BadParameter(name="parameter", reason=f"unknown: {', '.join(unknown)} (known: {', '.join(sorted(known))})")
        return cls(**values).validate()

