"""A hand-stepped run driven as a DBA drives it: `kbmigrate lab`, JupyterLab in a real (headless)
Chromium, Shift+Enter through the cells. 00_preflight is run to its end and saved (Shift+Enter on
its last cell leaves an empty cell, as JupyterLab does); 01_backup is run to its end and the
browser is closed without saving; then File > Shut Down. The run's record says exactly that."""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import sys
import time
import urllib.request
import uuid
from pathlib import Path
from typing import Any

import nbformat
import pytest

from kbmigrate.conninfo import Target
from kbmigrate.paths import RUNS_DIR

from conftest import drop, new_demo
from test_lab import _free_port
from test_report import NO_BROWSER, chromium, have_browser

pytestmark = pytest.mark.skipif(not have_browser(), reason=NO_BROWSER)


def _code_cells(path: Path) -> int:
    return sum(1 for c in nbformat.read(path, as_version=4).cells if c.cell_type == "code" and c.source.strip())


def _wait(what: str, ok: Any, seconds: float = 120) -> Any:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        got = ok()
        if got:
            return got
        time.sleep(0.3)
    pytest.fail(f"timed out waiting for {what}")


PANEL = ".jp-NotebookPanel:not(.lm-mod-hidden)"  # the notebook on screen (the one opened before stays in a tab)
IDLE = (f"const s = document.querySelector('{PANEL} .jp-Notebook-ExecutionIndicator');"
        "return s && s.getAttribute('data-status') === 'idle';")


def _step_through(browser: Any, url: str, notebook: Path, *, save: bool) -> None:
    """Open a notebook, Shift+Enter from its first cell through its last, wait for the kernel."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.common.action_chains import ActionChains

    from selenium.common.exceptions import StaleElementReferenceException

    cells, code = len(nbformat.read(notebook, as_version=4).cells), _code_cells(notebook)
    browser.get(url)
    name = notebook.name
    _wait(f"{name} on screen", lambda: browser.execute_script(
        f"const t = document.querySelector('.jp-mod-current .lm-TabBar-tabLabel, .lm-TabBar-tab.jp-mod-current');"
        f"return t && t.textContent.includes('{name}') && document.querySelector('{PANEL} .jp-Cell');"))
    _wait("the kernel", lambda: browser.execute_script(IDLE), 90)
    active = (f"const c = document.querySelectorAll('{PANEL} .jp-Cell');"
              "return c.length > INDEX && c[INDEX].classList.contains('jp-mod-active') && "
              f"!document.querySelector('.jp-Dialog') && !document.querySelector('{PANEL} .jp-mod-editMode');")

    def on_cell(i: int) -> bool:
        """Cell ``i`` active, in command mode: what a DBA sees before its Shift+Enter. A notebook
        that renders again while it settles may make another cell active (under load, the last
        one: the Shift+Enters then ran nothing; or a later one: the parameters never ran), so
        this is checked before each Shift+Enter, not assumed."""
        if browser.execute_script(active.replace("INDEX", str(i))):
            return True
        try:
            cell = browser.find_elements(By.CSS_SELECTOR, f"{PANEL} .jp-Cell")[i]
            ActionChains(browser).move_to_element(cell).click().send_keys(Keys.ESCAPE).perform()
        except (StaleElementReferenceException, IndexError):
            return False
        time.sleep(0.3)
        return bool(browser.execute_script(active.replace("INDEX", str(i))))
    for i in range(cells):
        _wait(f"cell {i + 1} of {name} to be active", lambda: on_cell(i), 60)
        ActionChains(browser).key_down(Keys.SHIFT).send_keys(Keys.ENTER).key_up(Keys.SHIFT).perform()
        time.sleep(0.15)

    def done() -> bool:  # every code cell with source shows a count, or one shows an error (the rest never run)
        got = browser.execute_script(
            f"const cs = [...document.querySelectorAll('{PANEL} .jp-CodeCell')];"
            "const p = cs.map(c => (c.querySelector('.jp-InputPrompt') || {textContent: ''}).textContent);"
            "return {running: p.some(t => t.includes('*')), counted: p.filter(t => /\\d/.test(t)).length,"
            f" error: !!document.querySelector('{PANEL} [data-mime-type=\"application/vnd.jupyter.stderr\"]')}};")
        return (not got["running"] and (got["counted"] >= code or got["error"])) and bool(browser.execute_script(IDLE))
    time.sleep(1)
    _wait("the cells to run", done, 180)
    if save:
        ActionChains(browser).key_down(Keys.CONTROL).send_keys("s").key_up(Keys.CONTROL).perform()
        time.sleep(1.5)


def test_a_run_stepped_through_in_jupyterlab_records_what_ran(server: Target, tmp_path: Path) -> None:
    target = new_demo(server, "kbt_labui")
    run_id = f"manual-t-{uuid.uuid4().hex[:6]}"
    port, token = _free_port(), secrets.token_hex(8)
    settings = tmp_path / "settings" / "@jupyterlab" / "docmanager-extension"
    settings.mkdir(parents=True)
    (settings / "plugin.jupyterlab-settings").write_text(json.dumps({"autosave": False}))  # closing unsaved is unsaved
    env = {**os.environ, "JUPYTER_PORT": str(port), "JUPYTER_TOKEN": token,
           "JUPYTERLAB_SETTINGS_DIR": str(tmp_path / "settings")}
    args = ["lab", "--dsn", target.conninfo, "--run-id", run_id, "--no-browser", "--auto-approve", *(["--allow-root"] if os.geteuid() == 0 else [])]
    lab = subprocess.Popen([str(Path(sys.executable).parent / "kbmigrate"), *args], env=env, text=True,
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
    browser = None
    try:
        def up() -> bool:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/api/status?token={token}", timeout=5)
                return True
            except OSError:
                assert lab.poll() is None, lab.communicate()
                return False
        _wait("JupyterLab", up, 90)
        folder = RUNS_DIR / run_id
        browser = chromium("1400,1000")
        base = f"http://127.0.0.1:{port}/lab/tree"
        _step_through(browser, f"{base}/00_preflight.ipynb?token={token}", folder / "00_preflight.ipynb", save=True)
        saved = nbformat.read(folder / "00_preflight.ipynb", as_version=4)
        assert saved.cells[-1].cell_type == "code" and not saved.cells[-1].source  # the empty cell Shift+Enter left
        _step_through(browser, f"{base}/01_backup.ipynb?token={token}", folder / "01_backup.ipynb", save=False)
        browser.quit()
        browser = None
        assert not any(c.get("execution_count") for c in nbformat.read(folder / "01_backup.ipynb", as_version=4).cells)

        request = urllib.request.Request(f"http://127.0.0.1:{port}/api/shutdown?token={token}", method="POST")
        urllib.request.urlopen(request, timeout=30)  # File > Shut Down
        out, err = lab.communicate(timeout=180)
        assert lab.returncode == 0, err
        record = json.loads((folder / "manifest.json").read_text())
        steps = {s["step"]: s for s in record["steps"]}
        logged = [json.loads(line) for line in (folder / "cells.jsonl").read_text().splitlines()] \
            if (folder / "cells.jsonl").exists() else []
        errors = [o.get("evalue") for c in saved.cells for o in c.get("outputs", []) if o.get("output_type") == "error"]
        assert steps["00_preflight"]["status"] == "succeeded" and "warning" not in steps["00_preflight"], \
            (errors, steps["00_preflight"].get("error"), [(e["step"], e["ok"], e["source"][:40]) for e in logged if not e["ok"]])
        assert steps["00_preflight"]["cells"]["run"] == _code_cells(folder / "00_preflight.ipynb")
        assert steps["01_backup"]["status"] == "succeeded" and "closed without saving" in steps["01_backup"]["warning"]
        assert steps["01_backup"]["cells"]["run"] == steps["01_backup"]["cells"]["of"] == _code_cells(folder / "01_backup.ipynb")
        assert all(steps[s]["status"] == "not run" for s in steps if s not in ("00_preflight", "01_backup"))
        assert any(e["cell_id"] for e in logged)  # JupyterLab names its cells; the record matched them by id
        assert "warning: 01_backup: closed without saving" in out and record["backup"]["sha256"]
    finally:
        if browser is not None:
            browser.quit()
        if lab.poll() is None:
            os.killpg(lab.pid, signal.SIGTERM)  # kbmigrate, its JupyterLab and their kernels
            lab.wait(timeout=60)
        drop(server, target)
