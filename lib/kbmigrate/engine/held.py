"""What a change's transaction held: the locks it holds on the application's relations at COMMIT,
as ``sql/engine/change.sql`` reads them from ``pg_locks`` (relation and mode), told in words."""

from __future__ import annotations

from typing import Any

STRENGTH = ["AccessShareLock", "RowShareLock", "RowExclusiveLock", "ShareUpdateExclusiveLock", "ShareLock",
            "ShareRowExclusiveLock", "ExclusiveLock", "AccessExclusiveLock"]  # PostgreSQL's table lock modes, weakest first


def rank(mode: str) -> int:
    return STRENGTH.index(mode) if mode in STRENGTH else -1


def strongest(locks: list[dict[str, Any]] | None) -> dict[str, str]:
    """Per relation, the strongest mode held (the weaker ones beside it change nothing for others)."""
    out: dict[str, str] = {}
    for held in locks or []:
        now = out.get(held["relation"])
        if now is None or rank(held["mode"]) > rank(now):
            out[held["relation"]] = held["mode"]
    return out


def text(locks: list[dict[str, Any]] | None) -> str:
    """e.g. "public.knowledge_base AccessExclusiveLock, public.workspaces ShareRowExclusiveLock"."""
    return ", ".join(f"{rel} {mode}" for rel, mode in strongest(locks).items())
