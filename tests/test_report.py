"""One archivable report per run: report.html holds the summary and every notebook, needs nothing
from the network, rebuilds byte for byte, and reads whole in a real browser (the verdict columns of
the isolation matrix and the summary are on screen, not clipped)."""

from __future__ import annotations

import json
import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from kbmigrate.conninfo import Target
from kbmigrate.engine.params import RunParams
from kbmigrate.paths import REPO_ROOT, RUNS_DIR, from_evidence
from kbmigrate.run import manifest, runner

from conftest import drop, new_demo, run_cli
from test_runbook import QUIET

CHROMIUM, CHROMEDRIVER = shutil.which("chromium") or "/usr/bin/chromium", shutil.which("chromedriver") or "/usr/bin/chromedriver"


@pytest.fixture(scope="module")
def run_with_report(server: Target) -> Iterator[tuple[Target, str, Path]]:
    target = new_demo(server, "kbt_report")
    run_id = f"t-rep-{uuid.uuid4().hex[:6]}"
    record = runner.run(target, RunParams(), run_id=run_id, **QUIET)
    yield target, run_id, from_evidence(record["report"]["path"])
    drop(server, target)


def test_the_report_is_whole_and_self_contained(run_with_report: Any) -> None:
    target, run_id, report = run_with_report
    text = report.read_text(encoding="utf-8")
    record = manifest.load(run_id)
    assert record["report"]["sha256"] == manifest.sha256_file(report)
    assert 'id="summary"' in text and f"kbmigrate run {run_id}" in text and "PROVED" in text
    for step in record["steps"]:
        assert f'id="step-{Path(step["notebook"]).stem}"' in text
    assert record["backup"]["sha256"] in text and record["code"]["git_commit"] in text
    assert 'src="http' not in text and 'import("http' not in text  # nothing loaded from the network
    assert ">NaN<" not in text
    assert run_cli("verify", run_id, "--dsn", target.conninfo).returncode == 0


def test_the_reports_css_breaks_no_word_that_fits_on_its_line() -> None:
    """overflow-wrap: anywhere (and word-break: break-word, which acts as it) lets a table shrink its
    columns below their words: the report showed 'authenticate/d', 'Tru/e'. Only a word wider
    than its whole line may break."""
    from kbmigrate.run import report

    rules = report.CSS.replace(" ", "")
    assert "overflow-wrap:anywhere" not in rules and "word-break:break-word" not in rules and "word-break:break-all" not in rules
    assert "overflow-wrap:break-word" in rules


def test_the_report_rebuilds_byte_for_byte(run_with_report: Any) -> None:
    _, run_id, report = run_with_report
    before = report.read_bytes()
    done = run_cli("report", run_id)
    assert done.returncode == 0 and "identical" in done.stdout, done.stdout + done.stderr
    assert report.read_bytes() == before


def test_a_notebook_cut_short_by_a_kill_still_gives_a_report(run_with_report: Any) -> None:
    """A run killed while papermill saves a notebook leaves it truncated; the report of its resume
    says so instead of failing (seen in the crash tests through the CLI)."""
    _, run_id, _ = run_with_report
    copy = f"{run_id}-cut"
    shutil.copytree(RUNS_DIR / run_id, RUNS_DIR / copy)
    try:
        record = json.loads((RUNS_DIR / copy / "manifest.json").read_text())
        record["run_id"] = copy
        (RUNS_DIR / copy / "manifest.json").write_text(json.dumps(record))
        cut = RUNS_DIR / copy / "03_backfill.ipynb"
        cut.write_bytes(cut.read_bytes()[:1000])
        from kbmigrate.run import report

        built = report.build(copy)
        text = from_evidence(built["path"]).read_text(encoding="utf-8")
        assert "This notebook cannot be read" in text and "03_backfill.ipynb" in text
        assert 'id="step-04_seed_sections"' in text  # and the steps after it are all there
    finally:
        shutil.rmtree(RUNS_DIR / copy, ignore_errors=True)


NO_BROWSER = "no Chromium and chromedriver here (Debian: apt install chromium chromium-driver; .ci/run does)"


def have_browser() -> bool:
    return os.access(CHROMIUM, os.X_OK) and os.access(CHROMEDRIVER, os.X_OK)


def chromium(size: str = "1280,900") -> Any:
    """A headless Chromium through chromedriver, as the browser tests use it; the test is skipped
    where there is none (make test needs no system package; .ci/run installs them)."""
    if not have_browser():
        pytest.skip(NO_BROWSER)
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 f"--window-size={size}"):
        options.add_argument(flag)
    return webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)


def test_the_report_reads_whole_in_a_browser(run_with_report: Any) -> None:
    from selenium.webdriver.common.by import By

    _, run_id, report = run_with_report
    browser = chromium()
    try:
        browser.get(report.resolve().as_uri())
        summary = browser.find_element(By.ID, "summary")
        assert summary.is_displayed() and run_id in summary.text and "Outcome" in summary.text and "PROVED" in summary.text
        assert "7 of 7 steps run" in summary.text and "users lost access to" in summary.text, summary.text[:600]
        shots = RUNS_DIR / run_id / "screenshots"
        shots.mkdir(exist_ok=True)
        assert summary.screenshot(str(shots / "summary.png")) and (shots / "summary.png").stat().st_size > 10_000
        # progress is progress: the backfill's bar is plain output, not an error-coloured stderr box
        stderr = browser.find_elements(By.CSS_SELECTOR, '[data-mime-type="application/vnd.jupyter.stderr"]')
        assert not [e.text for e in stderr if "backfill" in e.text], [e.text[:200] for e in stderr]
        bar = next(e for e in browser.find_elements(By.CSS_SELECTOR, '.jp-RenderedText')
                   if "backfill:" in e.text)
        assert "100%" in bar.text and bar.text.count("backfill:") == 1, bar.text  # its last state, once
        browser.execute_script("arguments[0].scrollIntoView()", bar)
        assert bar.screenshot(str(shots / "backfill_progress.png"))
        cells = [td.text for td in browser.find_elements(By.CSS_SELECTOR, ".jp-RenderedHTMLCommon td")]
        assert "NULL" in cells and "None" not in cells  # SQL NULL reads as NULL
        # rehearsal and production side by side: one row per change, both figures in each cell
        side = browser.find_element(By.ID, "side-by-side")
        browser.execute_script("arguments[0].scrollIntoView()", side)
        table = side.find_element(By.XPATH, "following::table[1]")
        rows = table.find_elements(By.TAG_NAME, "tr")[1:]
        assert table.is_displayed() and len(rows) == len(_changes_of_the_plan()), len(rows)
        assert any("kb_columns" in r.text and "AccessExclusiveLock" in r.text for r in rows)
        assert table.screenshot(str(shots / "side_by_side.png"))
        undone = browser.find_element(By.ID, "rehearsal-rollback").text  # the copy rolled back, and proved
        assert "rolled the copy back" in undone and "as before the changes" in undone, undone
        tables = json.loads((RUNS_DIR / run_id / "rehearsal.json").read_text())["rollback"]["tables"]
        assert f"{len(tables)} of {len(tables)} tables equal to the backup" in undone, undone
        width = browser.execute_script("return document.documentElement.clientWidth")
        smoke = browser.find_element(By.ID, "step-06_smoke_tests")
        headers = [th for th in smoke.find_elements(By.XPATH, "following::th")
                   if th.text.strip() in ("pass", "leaked", "missing", "expected")]
        assert len([th for th in headers if th.text.strip() == "pass"]) >= 2  # the read and the write halves
        for th in headers[:12]:
            browser.execute_script("arguments[0].scrollIntoView({block: 'center', inline: 'nearest'})", th)
            box = browser.execute_script("const r = arguments[0].getBoundingClientRect();"
                                         "return [r.left, r.right, r.top, r.bottom];", th)
            assert 0 <= box[0] and box[1] <= width, f"column {th.text!r} is off screen: {box} (page width {width})"
            on_top = browser.execute_script(
                "const r = arguments[0].getBoundingClientRect();"
                "const e = document.elementFromPoint((r.left + r.right) / 2, (r.top + r.bottom) / 2);"
                "return e === arguments[0] || arguments[0].contains(e);", th)
            assert on_top, f"column {th.text!r} is hidden or clipped"
        scrolled = browser.execute_script("return document.documentElement.scrollWidth")
        assert scrolled <= width + 1, f"the page is {scrolled}px wide in a {width}px window: something does not wrap"
    finally:
        browser.quit()


def _changes_of_the_plan() -> list[str]:
    """The changes of steps 02-05 the demo applies, read from sql/plan.txt and the legacy sources file."""
    import csv

    out = []
    for line in (REPO_ROOT / "sql" / "plan.txt").read_text().splitlines():
        parts = line.split()
        if not parts or parts[0].startswith("#"):
            continue
        if "per_legacy_source" in parts:
            with (REPO_ROOT / "sql" / "data" / "legacy_sources.csv").open(newline="") as fh:
                out += ["import_legacy_" + row["source"].removeprefix("legacy_").removesuffix("_data")  # legacy.py's rule
                        for row in csv.DictReader(fh)]
        else:
            out.append(parts[1])
    return out


def test_kbmigrate_diff_puts_the_rehearsal_beside_production(run_with_report: Any) -> None:
    """The same data on the copy and in production: every change, the same outcome and rows."""
    _, run_id, _ = run_with_report
    done = run_cli("diff", run_id, "--json")
    assert done.returncode == 0, done.stderr
    rows = json.loads(done.stdout)
    assert [r["change"] for r in rows] == _changes_of_the_plan()
    assert all(r["rehearsal rows"] == r["production rows"] and r["rehearsal outcome"] == r["production outcome"] == "applied"
               for r in rows), [r for r in rows if "rows" in r["differs"] or "outcome" in r["differs"]]
    assert not any(w in r["differs"] for r in rows for w in ("rows", "outcome", "only in", "locks")), rows


def test_a_difference_between_two_sides_is_named() -> None:
    """Planted: other rows, another outcome, another lock, a hold 10× as long, a change on one side only."""
    from kbmigrate.run import compare

    lock = [{"relation": "public.knowledge_base", "mode": "AccessExclusiveLock"}]
    base = {"step": "02_schema", "outcome": "applied", "rows": 5, "locks": lock, "held_seconds": 0.1}
    a = [{**base, "change": c} for c in ("same", "rows", "outcome", "locks", "slow", "gone")]
    b = [{**base, "change": "same"}, {**base, "change": "rows", "rows": 6}, {**base, "change": "outcome", "outcome": "noop"},
         {**base, "change": "locks", "locks": [{**lock[0], "mode": "ShareRowExclusiveLock"}]},
         {**base, "change": "slow", "held_seconds": 1.0}, {**base, "change": "new"}]
    said = {r["change"]: r["differs"] for r in compare.side_by_side(a, b)}
    assert said == {"same": "", "rows": "rows 5 / 6", "outcome": "outcome applied / noop", "locks": "other locks",
                    "slow": "held 10.0× as long in production", "gone": "only in rehearsal", "new": "only in production"}


def test_a_chart_only_where_it_has_something_to_show(run_with_report: Any) -> None:
    """The demo's backfill is one batch: its throttle chart would be empty axes; it is a sentence."""
    import nbformat

    _, run_id, _ = run_with_report
    nb = nbformat.read(RUNS_DIR / run_id / "03_backfill.ipynb", as_version=4)
    cell = next(c for c in nb.cells if c.cell_type == "code" and "batches.plot" in c.source)
    assert not any("image/png" in o.get("data", {}) for o in cell.outputs), "a chart of one batch"
    assert "nothing for the throttle to adapt" in json.dumps(cell.outputs)
    assert "the throttle acted after 0" not in json.dumps([c.get("outputs", []) for c in nb.cells])


def _record(status: str, steps: dict[str, str], **more: Any) -> dict[str, Any]:
    return {"run_id": "r", "status": status, "target": {}, "plan": [f"0{i}_x" for i in range(7)],
            "steps": [{"step": k, "notebook": f"runs/r/{k}.ipynb", "status": v} for k, v in steps.items()], **more}


def test_verdict_colours_say_only_what_was_shown() -> None:
    """Green only for what was proved, red only for what failed, neutral for what was not tested."""
    from kbmigrate.run.report import summary_html

    def classes(record: dict[str, Any]) -> list[str]:
        import re
        return re.findall(r'class="verdict-(\w+)">([^<]*)<', summary_html(record))[:2]

    hand = _record("manual", {"00_x": "succeeded", "01_x": "succeeded", "02_x": "partly run", "06_smoke_tests": "not run"})
    assert [c for c, _ in classes(hand)] == ["neutral", "neutral"] and "3 of 7 steps run" in summary_html(hand)
    no_go = _record("failed", {"00_x": "failed"}, preflight_verdict={"verdict": "NO-GO", "no_go": ["search_path: x first"]})
    assert [c for c, _ in classes(no_go)] == ["bad", "neutral"] and "not tested" in classes(no_go)[1][1]
    assert '<div class="no-go">' in summary_html(no_go) and "<li>search_path: x first</li>" in summary_html(no_go)
    proved = _record("succeeded", {"06_smoke_tests": "succeeded"})
    assert [c for c, _ in classes(proved)] == ["ok", "ok"] and "no-go" not in summary_html(proved)
    leaked = _record("failed", {"06_smoke_tests": "failed"})
    assert [c for c, _ in classes(leaked)] == ["bad", "bad"]


def test_a_failed_run_also_leaves_a_report(server: Target) -> None:
    target = new_demo(server, "kbt_report_fail")
    run_id = f"t-repf-{uuid.uuid4().hex[:6]}"
    try:
        done = run_cli("run", "--dsn", target.conninfo, "--run-id", run_id, "--no-progress",
                       "-p", "membership_table=public.no_such_members")
        assert done.returncode != 0
        record = json.loads((RUNS_DIR / run_id / "manifest.json").read_text())
        assert record["status"] == "failed" and (RUNS_DIR / run_id / "report.html").is_file()
        assert "verdict-bad" in (RUNS_DIR / run_id / "report.html").read_text(encoding="utf-8")
    finally:
        drop(server, target)
