"""One archivable document per run: ``runs/<id>/report.html``.

First a summary (outcome, who ran it from where, the target, server and client versions, the code
with its dirty flag, the parameters, each step with its status and time, what changed in numbers,
the isolation verdict, the quarantine and review counts, the backup and its checksum), then every
notebook of the run as it executed, nothing clipped or hidden: wide tables wrap instead of
scrolling. One self-contained file: styles and images inline, no script from the network.
Built from the run folder alone, deterministically, so ``kbmigrate report RUN`` rebuilds the same bytes.
"""

from __future__ import annotations

import html
import re
from pathlib import Path
from typing import Any

import nbformat
from nbconvert import HTMLExporter
from nbconvert.preprocessors import CoalesceStreamsPreprocessor
from nbformat.v4 import new_markdown_cell, new_notebook

from kbmigrate.paths import RUNS_DIR, shown
from kbmigrate.run import manifest
from kbmigrate.run.summary import GAINED_ACCESS, LOST_ACCESS

# Evidence is read whole: tables wrap rather than scroll, long values break rather than hide.
CSS = """
<style id="kbmigrate-report">
  body { max-width: none !important; }
  .jp-OutputArea-output, .jp-RenderedHTMLCommon, .jp-OutputArea-child { overflow: visible !important; max-width: 100% !important; }
  .jp-RenderedHTMLCommon table { table-layout: auto; max-width: 100%; }
  .jp-RenderedHTMLCommon td, .jp-RenderedHTMLCommon th { white-space: normal !important; overflow-wrap: break-word;
                                                          max-width: none !important; }
  pre { white-space: pre-wrap !important; overflow-wrap: break-word; }
  #summary table { border-collapse: collapse; margin: 0.5em 0 1em; }
  #summary td, #summary th { border: 1px solid #bbb; padding: 2px 8px; text-align: left; vertical-align: top; }
  .verdict-ok { color: #176f2c; font-weight: bold; } .verdict-bad { color: #b00020; font-weight: bold; }
  .verdict-neutral { color: #444; font-weight: bold; }
  tr.differs td { background: #fff4e5; }
  .no-go { border-left: 4px solid #b00020; padding: 0 1em; margin: 0.5em 0; }
</style>
"""
# Scripts that would load code from the network (require.js, MathJax, mermaid): the report needs none.
_REMOTE_SCRIPT = re.compile(r'<script[^>]*\bsrc="https?://[^"]*"[^>]*>\s*</script>\s*'
                            r'|<script\b[^>]*>(?:(?!</script>).)*?import\(\s*"https?://(?:(?!</script>).)*?</script>\s*', re.I | re.S)


def _table(rows: list[tuple[str, Any]]) -> str:
    return "<table>" + "".join(f"<tr><th>{html.escape(k)}</th><td>{html.escape('none' if v is None else str(v))}</td></tr>"
                               for k, v in rows) + "</table>"


def _verdict(record: dict[str, Any]) -> tuple[str, str]:
    """The isolation verdict and its colour: ok only when proved, bad only when it failed."""
    smoke = [s for s in record.get("steps", []) if s["notebook"].endswith("06_smoke_tests.ipynb") and not s.get("superseded")]
    if not smoke or smoke[-1]["status"] == "not run":
        return "not tested in this run (06_smoke_tests did not run)", "neutral"
    last = smoke[-1]
    if last["status"] == "succeeded":
        return "PROVED: every user probed, acting as themselves, read, created, edited and deleted exactly what they should", "ok"
    if last["status"] == "failed":
        return f"FAILED: {last.get('error', 'failed')}", "bad"
    return f"not proved: 06_smoke_tests {last['status']}", "neutral"


def _outcome(record: dict[str, Any]) -> tuple[str, str]:
    status = record["status"]
    if status == "succeeded":
        return status, "ok"
    if status in ("failed", "interrupted"):
        return status, "bad"
    return ("hand-stepped" if status == "manual" else status), "neutral"


def steps_run(record: dict[str, Any]) -> str:
    """"3 of 7 steps run": the steps of the run's plan that ran at all (any attempt)."""
    order = record.get("plan") or [Path(s["notebook"]).stem for s in record.get("steps", [])]
    ran = {s["step"] if "step" in s else Path(s["notebook"]).stem for s in record.get("steps", []) if s["status"] != "not run"}
    return f"{len([s for s in order if s in ran])} of {len(order)} steps run"


def step_heading(step: dict[str, Any]) -> str:
    """A step's status in words: its time when known, its cells when stepped by hand."""
    words = [step["status"]]
    if step.get("cells"):
        words.append(f"{step['cells']['run']} of {step['cells']['of']} cells")
    if step.get("seconds") is not None:
        words.append(f"{step['seconds']} s")
    return ", ".join(words)


def _no_go(record: dict[str, Any]) -> str:
    held = record.get("preflight_verdict") or {}
    if held.get("verdict") != "NO-GO":
        return ""
    return ('<div class="no-go"><p><span class="verdict-bad">NO-GO</span>: the preflight stopped the run before any '
            "change, for:</p><ul>" + "".join(f"<li>{html.escape(r)}</li>" for r in held.get("no_go", [])) + "</ul></div>")


def _access(record: dict[str, Any]) -> str:
    changed = record.get("changed") or {}
    lost = changed.get(LOST_ACCESS)
    if lost is None:
        return ""
    gained = changed.get(GAINED_ACCESS)
    return (f"<p>Access: {html.escape(str(lost))} (each listed in 06_smoke_tests, the first confirmed by acting as them)"
            + (f"; {html.escape(str(gained))}" if gained else "") + ".</p>")


def _both(rehearsed: str, produced: str) -> str:
    return rehearsed if rehearsed == produced else f"R {rehearsed or '-'}<br>P {produced or '-'}"


def _side_by_side(record: dict[str, Any]) -> str:
    """Rehearsal and production, change by change (``run/compare.py``); the rows that differ marked."""
    from kbmigrate.run import compare

    rehearsed = compare.rehearsed_changes(record)
    if rehearsed is None or not record.get("changes_by_change"):
        return ""
    rows = compare.side_by_side(rehearsed, record["changes_by_change"])
    heads = ["step", "change", "outcome", "rows", "held in rehearsal (s)", "held in production (s)", "locks at commit", "differs"]
    cell = lambda v: html.escape("" if v is None else str(v))  # noqa: E731
    body = "".join(
        f'<tr class="{"differs" if r["differs"] else "same"}"><td>{cell(r["step"])}</td><td>{cell(r["change"])}</td>'
        + "".join(f"<td>{_both(cell(r['rehearsal ' + k]), cell(r['production ' + k]))}</td>" for k in ("outcome", "rows"))
        + f"<td>{cell(r['rehearsal held_seconds'])}</td><td>{cell(r['production held_seconds'])}</td>"
        + f"<td>{_both(cell(r['rehearsal locks']), cell(r['production locks']))}</td>"
        + f"<td>{cell(r['differs'])}</td></tr>" for r in rows)
    differing = sum(1 for r in rows if r["differs"])
    return (f'<h2 id="side-by-side">Rehearsal and production, side by side</h2><p>Where the two differ, a cell shows '
            f"the rehearsal on the restored copy (R) above production (P); one value is both's. "
            f"{differing} of {len(rows)} changes differ.</p>"
            f"<table><tr>{''.join(f'<th>{h}</th>' for h in heads)}</tr>{body}</table>"
            + _rehearsed_rollback((compare.rehearsal(record) or {}).get("rollback") or {}))


def _rehearsed_rollback(undone: dict[str, Any]) -> str:
    """What the rehearsal's rollback of the copy proved (``backup/rollback_proof.py``)."""
    if not undone or undone.get("failure"):
        return ""
    tables = undone.get("tables") or []
    again = undone.get("applied_again") or {}
    return (f'<p id="rehearsal-rollback">The rehearsal then rolled the copy back from this run\'s backup, as a '
            f"rollback of production would: {undone.get('rows_loaded')} rows restored in "
            f"{undone.get('rollback_seconds')} s; its schema ({html.escape(', '.join(undone.get('schemas_compared') or []))}) "
            f"as before the changes, {sum(1 for t in tables if t.get('equal'))} of {len(tables)} tables equal to the "
            f"backup, {undone.get('lost_writes_counted')} writes counted as lost"
            + ("; migrated again, to the same outcome" if again.get("same_outcome") else "") + ".</p>")


def summary_html(record: dict[str, Any]) -> str:
    outcome, outcome_class = _outcome(record)
    verdict, verdict_class = _verdict(record)
    who, code, target = record.get("operator", {}), record.get("code", {}), record["target"]
    parts = [f'<div id="summary"><h1>kbmigrate run {html.escape(record["run_id"])}</h1>',
             f'<p>Outcome: <span class="verdict-{outcome_class}">{html.escape(outcome)}</span>, {steps_run(record)}'
             f' &nbsp; Isolation: <span class="verdict-{verdict_class}">{html.escape(verdict)}</span></p>',
             _no_go(record), _access(record),
             "<h2>Who, where, with what</h2>",
             _table([("operator", f"{who.get('os_user', '?')} on {who.get('host', '?')}"),
                     ("target", f"{target.get('user')}@{target.get('host')}:{target.get('port')}/{target.get('database')}"),
                     ("started / ended (UTC)", f"{record.get('started_at')} / {record.get('ended_at') or '-'}"),
                     ("server", record.get("server_version", "?")), ("pg_dump", record.get("pg_dump_version", "?")),
                     ("kbmigrate", code.get("kbmigrate_version", "?")),
                     ("git commit", f"{code.get('git_commit')}" + (" (dirty: files differ from the commit)" if code.get("dirty") else " (clean)")),
                     *[(f"changed file {name}", digest or "deleted") for name, digest in sorted(code.get("changed_files", {}).items())],
                     ("previous run on this database", (record.get("previous") or {}).get("run_id", "none"))]),
             f"<h2>Steps: {steps_run(record)}</h2>",
             "<table><tr><th>step</th><th>status</th><th>seconds</th><th>notebook sha256</th><th>error or warning</th></tr>"
             + "".join(f"<tr><td>{html.escape(Path(s['notebook']).stem)}</td><td>{html.escape(step_heading({**s, 'seconds': None}))}</td>"
                       f"<td>{s.get('seconds', '')}</td><td>{s.get('sha256', '')}</td>"
                       f"<td>{html.escape(s.get('error') or s.get('warning') or '')}</td></tr>"
                       for s in record.get("steps", [])) + "</table>"]
    history = [(f"interrupted {r['interrupted_before']['at']}", f"{r['interrupted_before']['signal']}")
               for r in record.get("resumed", []) if r.get("interrupted_before")]
    history += [(f"resumed {r['at']}", f"was {r['status_before']}; by {r['operator'].get('os_user', '?')} on "
                f"{r['operator'].get('host', '?')}; code {r['code'].get('git_commit')}"
                + (" (dirty)" if r["code"].get("dirty") else "") + "; parameters changed: "
                + (", ".join(f"{k}={v}" for k, v in r.get("parameters_changed", {}).items()) or "none"))
               for r in record.get("resumed", [])]
    stop = record.get("interrupted")
    if stop:
        history.append((f"interrupted {stop.get('at')}", f"{stop.get('signal')}: sessions ended "
                        f"{', '.join(map(str, stop.get('sessions_ended', []))) or 'none'}; "
                        f"kernel interrupts {stop.get('kernels_interrupted', 0)}"))
    if history:
        history.sort(key=lambda row: row[0].split(" ", 1)[1])  # by time: "<event> <UTC time>"
        parts += ["<h2>History</h2>", _table(history)]
    changed = record.get("changed")
    if changed:
        parts += ["<h2>What changed</h2>", _table([(k, v) for k, v in changed.items()])]
    backup = record.get("backup")
    if backup:
        drill = backup.get("restore_drill", {})
        parts += ["<h2>Backup</h2>", _table([
            ("file", backup["path"]), ("sha256", backup["sha256"]), ("bytes", f"{backup['bytes']:,}"),
            ("schemas dumped", ", ".join(backup.get("scope", {}).get("schemas", []))),
            *[(f"left out: {x['schema']}", x["reason"]) for x in backup.get("scope", {}).get("left_out", [])],
            ("restore drill", f"{'ok' if drill.get('ok') else 'NOT OK'}, {drill.get('where', '-')}" if drill else "not run")])]
    rehearsed = record.get("rehearsal")
    if rehearsed:
        parts += ["<h2>Rehearsal on the restored copy</h2>", _table([
            ("verdict", "ok" if rehearsed.get("ok") else f"FAILED: {rehearsed.get('failure')}"),
            ("seconds", rehearsed.get("seconds")), ("evidence", rehearsed.get("path")),
            ("sha256", rehearsed.get("sha256"))])]
    parts += [_side_by_side(record)]
    given = record.get("approval")
    parts += ["<h2>Approval</h2>", _table([
        ("approved by", given.get("by")), ("at", given.get("at")), ("how", given.get("how")),
        ("self-approval", "yes" if given.get("self") else "no"), ("four eyes asked for", "yes" if record.get("four_eyes") else "no"),
        ("sha256 approved", given.get("sha256")), ("rehearsal of run", given.get("rehearsal_of"))])
        if given else "<p>Not approved: production's changes were refused by the engine.</p>"] if rehearsed or given else []
    parts += ["<h2>Parameters</h2>", _table(sorted(record.get("parameters", {}).items())), "</div>"]
    return "\n".join(p for p in parts if p)  # a blank line would end the HTML block of the markdown cell


def build(run_id: str, record: dict[str, Any] | None = None) -> dict[str, str]:
    """Write runs/<run_id>/report.html from the run folder and its manifest (``record``, or the one
    on disk); returns its path and sha256."""
    folder = RUNS_DIR / run_id
    record = record if record is not None else manifest.load(run_id)
    book = new_notebook()
    book.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    book.cells.append(new_markdown_cell(summary_html(record)))
    for step in record.get("steps", []):
        path = folder / Path(step["notebook"]).name
        if not path.exists():
            continue
        book.cells.append(new_markdown_cell(
            f'<h1 id="step-{Path(path).stem}">Step {Path(path).stem}: {html.escape(step_heading(step))}</h1>'))
        try:
            book.cells += nbformat.read(path, as_version=4).cells
        except (ValueError, nbformat.ValidationError, AttributeError):  # nbformat's own parse error is an AttributeError
            book.cells.append(new_markdown_cell(
                f"**This notebook cannot be read**: {path.name} ({path.stat().st_size:,} bytes, sha256 "
                f"`{manifest.sha256_file(path)}`) was cut short, most likely when its run was killed while "
                "saving it. The ledger holds what its step changed; the attempt after it shows the step whole."))
    for i, cell in enumerate(book.cells):  # stable ids, so the same run gives the same bytes
        cell["id"] = f"c{i:05d}"
    exporter = HTMLExporter(template_name="lab", embed_images=True)
    exporter.register_preprocessor(CoalesceStreamsPreprocessor, enabled=True)  # a progress bar shows its last state
    body, _ = exporter.from_notebook_node(book, resources={"metadata": {"name": f"kbmigrate run {run_id}"}})
    body = _REMOTE_SCRIPT.sub("", body).replace("</head>", CSS + "</head>", 1)
    out = folder / "report.html"
    out.write_text(body, encoding="utf-8")
    out.chmod(0o600)
    return {"path": shown(out), "sha256": manifest.sha256_file(out)}
