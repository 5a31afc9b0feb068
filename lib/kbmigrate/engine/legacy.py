"""The legacy sources (SPEC step 6) as data: one line each in ``sql/data/legacy_sources.csv``.

Columns: ``source`` (the legacy table in public), ``section`` (the default section its entries
land in), ``title_prefix`` (before the name field when the row has no title: "ICP: "),
``name_fields`` (space-separated; the first non-empty one names the entry, and each is kept in
its metadata), ``lines`` ("Label=field; ..." — the content's "Label: value" lines, in order).
Each source becomes its own change, ``import_legacy_<name>`` (the table name without ``legacy_``
and ``_data``): ledgered and revertible on its own. Adding a source is one line here.
"""

from __future__ import annotations

import csv
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kbmigrate.errors import BadParameter

_IDENT = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")


@dataclass(frozen=True)
class Source:
    source: str
    section: str
    title_prefix: str
    name_fields: tuple[str, ...]
    labels: tuple[str, ...]
    fields: tuple[str, ...]

    @property
    def change(self) -> str:
        return "import_legacy_" + self.source.removeprefix("legacy_").removesuffix("_data")

    def spec(self) -> dict[str, Any]:
        """What the SQL reads (the JSON setting kbmigrate.legacy_spec)."""
        return {"source": self.source, "section": self.section, "title_prefix": self.title_prefix,
                "name_fields": list(self.name_fields), "labels": list(self.labels), "fields": list(self.fields)}


def read(path: Path) -> list[Source]:
    def bad(line: int, why: str) -> BadParameter:
        return BadParameter(name="legacy_sources_file", reason=f"{path} line {line}: {why}")

    try:
        with path.open(encoding="utf-8", newline="") as fh:
            rows = list(csv.DictReader(fh))
    except OSError as exc:
        raise BadParameter(name="legacy_sources_file", reason=f"cannot read {path}: {exc.strerror}") from None
    need = {"source", "section", "title_prefix", "name_fields", "lines"}
    if rows and need - set(rows[0]):
        raise bad(1, f"needs the columns {', '.join(sorted(need))}")
    out: list[Source] = []
    for number, row in enumerate(rows, 2):
        if None in row.values() or None in row:
            raise bad(number, "not as many values as columns")
        pairs = [p.split("=", 1) for p in row["lines"].split(";") if p.strip()]
        names = tuple(row["name_fields"].split())
        if not _IDENT.match(row["source"]) or not all(_IDENT.match(n) for n in names) or not names:
            raise bad(number, "source and name_fields must be plain lower-case SQL names")
        if not row["section"].strip() or any(len(p) != 2 or not _IDENT.match(p[1].strip()) for p in pairs):
            raise bad(number, "needs a section, and lines as 'Label=field; ...'")
        out.append(Source(source=row["source"], section=row["section"].strip(), title_prefix=row["title_prefix"],
                          name_fields=names, labels=tuple(p[0].strip() for p in pairs),
                          fields=tuple(p[1].strip() for p in pairs)))
    if len({s.change for s in out}) != len(out):
        raise BadParameter(name="legacy_sources_file", reason=f"{path}: a source appears twice")
    return out
