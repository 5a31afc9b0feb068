"""`make edit` as a DBA meets it: JupyterLab opens the MyST notebooks as notebooks on a double click,
and saving one after running it changes nothing in the text file (no outputs, no metadata churn)."""

from __future__ import annotations

import json
import secrets
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from kbmigrate.paths import NOTEBOOK_DIR, REPO_ROOT

SETTINGS = REPO_ROOT / "tools" / "jupyterlab"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Any, Path]]:
    """JupyterLab started as `make lab` starts it, on a copy of the notebooks folder."""
    assert f"--LabServerApp.app_settings_dir=../{SETTINGS.relative_to(REPO_ROOT)}" in (REPO_ROOT / "Makefile").read_text()  # make edit
    root = tmp_path_factory.mktemp("lab") / "notebooks"
    shutil.copytree(NOTEBOOK_DIR, root)
    port, token = _free_port(), secrets.token_hex(8)
    proc = subprocess.Popen([str(Path(sys.executable).parent / "jupyter"), "lab", "--no-browser", f"--port={port}",
                             "--ServerApp.ip=127.0.0.1", f"--IdentityProvider.token={token}", "--allow-root",
                             f"--ServerApp.root_dir={root}", f"--LabServerApp.app_settings_dir={SETTINGS}"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=root)

    def call(method: str, url: str, body: Any = None) -> Any:
        request = urllib.request.Request(f"http://127.0.0.1:{port}{url}", method=method,
                                         headers={"Authorization": f"token {token}", "Content-Type": "application/json"},
                                         data=json.dumps(body).encode() if body is not None else None)
        with urllib.request.urlopen(request, timeout=30) as response:
            return json.load(response)

    deadline = time.monotonic() + 60
    while True:
        try:
            call("GET", "/api/status")
            break
        except OSError:
            if time.monotonic() > deadline or proc.poll() is not None:
                proc.kill()
                pytest.fail("jupyter lab did not start")
            time.sleep(0.3)
    yield call, root
    proc.terminate()
    proc.wait(timeout=20)


def test_markdown_notebooks_open_as_notebooks(lab: Any) -> None:
    call, _ = lab
    settings = call("GET", "/lab/api/settings/@jupyterlab/docmanager-extension:plugin")
    viewers = {**settings["schema"]["properties"]["defaultViewers"].get("default", {}), **settings["settings"].get("defaultViewers", {})}
    assert viewers.get("markdown") == viewers.get("myst") == "Jupytext Notebook"
    model = call("GET", "/api/contents/02_schema.md?type=notebook&content=1")
    assert model["type"] == "notebook" and any("parameters" in c["metadata"].get("tags", []) for c in model["content"]["cells"])


def test_saving_a_run_notebook_writes_no_outputs(lab: Any) -> None:
    call, root = lab
    before = (root / "03_backfill.md").read_text(encoding="utf-8")
    nb = call("GET", "/api/contents/03_backfill.md?type=notebook&content=1")["content"]
    code = next(c for c in nb["cells"] if c["cell_type"] == "code")
    code["outputs"] = [{"output_type": "stream", "name": "stdout", "text": "a KB title, an email\n"}]
    code["execution_count"] = 3
    code["metadata"]["execution"] = {"iopub.status.busy": "2026-11-25T12:00:00Z"}
    call("PUT", "/api/contents/03_backfill.md", {"type": "notebook", "format": "json", "content": nb})
    assert (root / "03_backfill.md").read_text(encoding="utf-8") == before
    # an edit made in JupyterLab is an edit of the text file, and only that
    nb["cells"][0]["source"] += "\n\nA DBA's note."
    call("PUT", "/api/contents/03_backfill.md", {"type": "notebook", "format": "json", "content": nb})
    after = (root / "03_backfill.md").read_text(encoding="utf-8")
    assert after.replace("\n\nA DBA's note.", "", 1) == before and "a KB title" not in after
