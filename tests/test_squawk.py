"""The deploy SQL passes Squawk's lock-hazard rules, as the engine runs it.

Each change is rendered as the engine executes it: template identifiers filled (with the
default parameters), and the statements ``engine/transaction.begin`` runs first in the change's
transaction (``lock_timeout``, ``statement_timeout``; ``test_never_hang`` proves every session
holds them). A ``notx`` change (CREATE INDEX CONCURRENTLY) is linted as outside a transaction,
every other one as inside. A rule the project knowingly breaks is disabled in that file
(``-- squawk-ignore-file <rule>``) with the reason beside it.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from kbmigrate.engine import plan
from kbmigrate.engine.apply import composed
from kbmigrate.engine.params import RunParams
from kbmigrate.paths import SQL_DIR

SQUAWK = Path(sys.executable).parent / "squawk"
PG_VERSION = "15.0"  # the oldest server the tool supports (Supabase)


def render(folder: Path) -> dict[str, list[Path]]:
    params = RunParams()
    limits = params.limits("change"), params.limits("index")
    out: dict[str, list[Path]] = {"tx": [], "notx": []}
    for change in plan.load(params):
        kind = "notx" if change.has("notx") else "tx"
        path = folder / kind / Path(change.deploy).name
        if path.exists():  # one file serves several changes (the legacy sources)
            continue
        text = composed(change, params)
        text = text if isinstance(text, str) else text.as_string(None)
        bound = limits[1] if kind == "notx" else limits[0]
        scope = "" if kind == "notx" else "local "
        preamble = (f"set {scope}lock_timeout = '{bound.lock_timeout}';\n"
                    f"set {scope}statement_timeout = '{bound.statement_timeout}';\n")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(preamble + text)
        out[kind].append(path)
    return out


def squawk(paths: list[Path], *, in_transaction: bool) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(SQUAWK), f"--pg-version={PG_VERSION}", "--reporter", "gcc",
                           "--assume-in-transaction" if in_transaction else "--no-assume-in-transaction", *map(str, paths)],
                          capture_output=True, text=True, timeout=120)


def test_deploy_sql_passes_squawk(tmp_path: Path) -> None:
    files = render(tmp_path)
    assert len(files["tx"]) + len(files["notx"]) == len({c.deploy for c in plan.load(RunParams())})
    assert files["notx"], "the concurrent index builds are linted too"
    for kind, paths in files.items():
        done = squawk(paths, in_transaction=kind == "tx")
        assert done.returncode == 0, done.stdout + done.stderr


def test_every_disabled_rule_says_why_and_is_still_needed(tmp_path: Path) -> None:
    """Each ``squawk-ignore-file`` has its reason on the next line, and without it the file fails
    that rule (an ignore nothing needs any more is one to delete)."""
    files = render(tmp_path)
    ignores = 0
    for kind, paths in files.items():
        for path in paths:
            lines = path.read_text().splitlines()
            for i, line in enumerate(lines):
                if not line.startswith("-- squawk-ignore"):
                    continue
                ignores += 1
                rule = line.split()[-1]
                reason = lines[i + 1] if i + 1 < len(lines) else ""
                assert reason.startswith("-- (") and len(reason) > 20, f"{path.name}:{i + 1}: the reason must follow"
                bare = tmp_path / "bare" / path.name
                bare.parent.mkdir(exist_ok=True)
                bare.write_text("\n".join(lines[:i] + lines[i + 1:]) + "\n")
                done = squawk([bare], in_transaction=kind == "tx")
                assert done.returncode != 0 and rule in done.stdout, f"{path.name}: {rule} is ignored but not broken"
    assert ignores == sum(p.read_text().count("-- squawk-ignore") for p in (SQL_DIR / "deploy").glob("*.sql"))


def test_squawk_catches_a_lock_hazard(tmp_path: Path) -> None:
    """The lint can fail: a blocking index build and a column with a volatile default are flagged."""
    bad = tmp_path / "bad.sql"
    bad.write_text("set local lock_timeout = '1s';\nset local statement_timeout = '5min';\n"
                   "create index kb_title on public.knowledge_base (title);\n"
                   "alter table public.knowledge_base add column stamp timestamptz default clock_timestamp();\n")
    done = squawk([bad], in_transaction=True)
    assert done.returncode != 0
    assert "require-concurrent-index-creation" in done.stdout and "adding-field-with-default" in done.stdout, done.stdout
