"""The approval gate of a headless run: between the rehearsal (step 01) and production's first change.

The engine refuses every change of production without an approval of the rehearsal it is held to
(``engine/gates.py``: ``approved``). A run gets one, before its first changing step, in one of
these ways, each recorded with who, when, how and the sha256 of the rehearsal's evidence:

- already given: ``kbmigrate approve RUN`` from another terminal, or an earlier attempt;
- ``--approve-hash SHA256``: the operator read the evidence (of a rehearsal run before) and
  trusts that hash up front; any other evidence stops the run;
- ``--auto-approve``: automation and ``make demo``, recorded and reported as a self-approval;
- at a terminal (stdin and stdout are one), the run asks there, as ``terraform apply`` does: the
  approver types the hash's first 8 characters;
- otherwise the run waits, saying so, for ``kbmigrate approve RUN``, at most ``wait`` seconds,
  then stops (``NotApproved``; resumable).

With four eyes (``--four-eyes``), the run's operator may approve in none of these ways: someone
else runs ``kbmigrate approve``.
"""

from __future__ import annotations

import getpass
import sys
from typing import Any, Callable

from kbmigrate.engine import gates
from kbmigrate.errors import GateClosed, NotApproved

AUTO = "auto"


def who() -> str:
    """The approver's name: the OS user (as the manifest's operator)."""
    return getpass.getuser()


def obtain(run_id: str, *, approve: str | None, wait: float, echo: Callable[[str], None],
           stopped: Callable[[], bool] = lambda: False, ask: Callable[[str], str] | None = None) -> dict[str, Any]:
    """The run's approval (see the module's docstring); NotApproved when it gets none. ``stopped``:
    the run was told to stop (a signal). ``ask``: the terminal's prompt (default ``input`` when
    stdin and stdout are a terminal)."""
    try:
        return gates.approved(run_id)
    except GateClosed as exc:
        if exc.details.get("gate") != "approval":
            raise
    rehearsed = gates.to_approve(run_id)
    sha, evidence = rehearsed["sha256"], rehearsed["path"]
    four_eyes = bool(gates.read(run_id).get("four_eyes"))
    if approve == AUTO:
        if four_eyes:
            raise NotApproved(run=run_id, why="it asks for four eyes, so --auto-approve may not approve it", evidence=evidence)
        return _said(echo, gates.approve(run_id, by=who(), how="auto (--auto-approve)"))
    if approve:
        return _said(echo, gates.approve(run_id, by=who(), how="hash given up front (--approve-hash)", sha256=approve))
    echo(f"  ⏸ approval: the rehearsal's evidence is {evidence} (sha256 {sha})")
    if ask is None and sys.stdin.isatty() and sys.stdout.isatty():
        ask = input
    if ask is not None and not four_eyes:
        for line in show(run_id).splitlines():  # what is being approved, before the question
            echo(f"    {line}")
        answer = ask(f"  approve production's changes as {who()}? type {sha[:8]} (the hash's first 8 characters): ")
        if answer.strip().lower() != sha[:8]:
            raise NotApproved(run=run_id, why="not approved at the terminal", evidence=evidence)
        return _said(echo, gates.approve(run_id, by=who(), how="at the terminal", sha256=sha))
    echo(f"  ⏸ waiting for approval: in another terminal, 'kbmigrate approve {run_id}' "
         f"(at most {wait:g} s{'; four eyes: not by ' + who() if four_eyes else ''})")
    given = gates.wait_approved(run_id, wait, say=lambda line: echo(f"  {line}"), stopped=stopped)
    if given is not None:
        return _said(echo, given)
    raise NotApproved(run=run_id, why=f"nobody approved its rehearsal within {wait:g} s" if not stopped()
                      else "it was stopped while it waited for approval", evidence=evidence)


def _said(echo: Callable[[str], None], given: dict[str, Any]) -> dict[str, Any]:
    echo(f"  ✔ approved by {given['by']} ({given['how']}{', a self-approval' if given.get('self') else ''}) "
         f"at {given['at']}: sha256 {given['sha256'][:16]}…")
    return given


def show(run_id: str) -> str:
    """What an approver reads: the rehearsal's figures, per change, and the sha256 of its evidence."""
    import json

    from kbmigrate.errors import BadParameter
    from kbmigrate.paths import RUNS_DIR, from_evidence

    if not (RUNS_DIR / run_id).is_dir():
        raise BadParameter(name="RUN", reason=f"there is no run {run_id} under {RUNS_DIR}")
    rehearsed = gates.to_approve(run_id)
    evidence = json.loads(from_evidence(rehearsed["path"]).read_text(encoding="utf-8"))
    lines = [f"run {run_id}: the rehearsal of steps {', '.join(evidence['steps'])} on {evidence['database']} "
             f"({evidence['where']}), {evidence['seconds']} s",
             f"{'change':<28} {'outcome':<8} {'rows':>7} {'seconds':>8} {'held (s)':>8}  locks at commit"]
    for c in evidence["changes"]:
        locks = ", ".join(f"{x['relation']} {x['mode']}" for x in (c.get("locks") or []))
        lines.append(f"{c['change']:<28} {c['outcome']:<8} {c['rows'] if c['rows'] is not None else '':>7} "
                     f"{c['seconds']:>8} {c['held_seconds'] if c.get('held_seconds') is not None else '':>8}  {locks}")
    totals = (evidence.get("entries") or {}).get("totals") or {}
    if totals:
        lines.append("entries: " + ", ".join(f"{k} {v}" for k, v in totals.items()))
    access = evidence.get("access") or {}
    if access:
        gained = access.get("gained") or {}
        lines.append(f"isolation: {access['passed']} of {access['users_probed']} users probed see what they should; "
                     f"access lost: {access['users_losing']} users, {access['entries_lost']} entries they created"
                     + (f"; gained: {gained.get('users')} users, {gained.get('entries')} legacy entries" if gained else ""))
    undone = evidence.get("rollback") or {}
    if undone:
        lines.append(f"rollback on the copy: {undone['rows_loaded']} rows restored in {undone['rollback_seconds']} s, "
                     f"schema as before the changes, {sum(t['equal'] for t in undone['tables'])} of "
                     f"{len(undone['tables'])} tables equal to the backup, migrated again to the same outcome")
    lines.append(f"evidence {rehearsed['path']}")
    lines.append(f"sha256   {rehearsed['sha256']}")
    return "\n".join(lines)


def by_command(run_id: str, sha256: str) -> dict[str, Any]:
    """``kbmigrate approve RUN``: the approval of the one who ran it, of the hash they read."""
    return gates.approve(run_id, by=who(), how="kbmigrate approve", sha256=sha256)
