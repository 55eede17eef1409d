"""The notebooks' inspectors in JupyterLab, driven in headless Chromium: a slider moves, the figure redraws.

JupyterLab starts as ``make lab`` starts it (``jupyter lab`` with the project's ``python3``
kernel, ``--no-browser``), on a free local port with a random token, in a temporary root that
holds copies of ``02_masks`` and ``04_embeddings`` with tiny parameters injected by papermill
(synthetic data, 2 optimiser steps), so the kernel runs everything in seconds. Playwright drives
Debian's Chromium (``executable_path``, no browser download): it opens a notebook, runs all cells,
presses the right arrow key on an inspector slider and waits for the picture in the inspector's
output to change (its PNG data URI differs) and for the slider's readout to show the new value.

The server is shut down through its REST API at the end, even when a test fails, and the test
checks that it and its kernels are gone. In CI (``CI=1``) a missing Chromium or Playwright fails
the test instead of skipping it.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import papermill
import psutil
import pytest

from workbench.report.params import NOTEBOOK_DIR

CHROMIUM = shutil.which("chromium") or ("/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else None)
_IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}

if not _IN_CI:
    if CHROMIUM is None:
        pytest.skip("chromium is not installed (apt-get install -y chromium); CI must have it", allow_module_level=True)
    pytest.importorskip("playwright", reason="playwright is missing: pip install -e '.[dev]'")

from playwright.sync_api import Browser, Page, expect, sync_playwright  # noqa: E402  (after the skip above)
from playwright.sync_api import TimeoutError as PlaywrightTimeoutError  # noqa: E402

TRAINING = {
    "dataset": "synthetic-continuous-y",
    "window": 24,
    "methods": ["fewshot"],
    "presets": {"fewshot": "tiny", "jepa": "tiny"},
    "max_steps": 2,
    "batch_size": 16,
}
PARAMETERS = {
    "02_masks": {"training": TRAINING, "n_draws": 20},
    "04_embeddings": {"training": TRAINING, "stride": 48, "umap_neighbors": 10},
}
# JupyterLab settings of the test: no news or update check, every cell kept in the DOM
SETTINGS = {
    "@jupyterlab/apputils-extension/notification.jupyterlab-settings": {"fetchNews": "false", "checkForUpdates": False},
    "@jupyterlab/notebook-extension/tracker.jupyterlab-settings": {"windowingMode": "none"},
}
START_S, RUN_ALL_S, REDRAW_S, SHUTDOWN_S = 90, 300, 90, 30
SHOWN_MS = 30_000  # a widget drawn by the kernel appears in the page (the browser may lag on a busy machine)


@dataclass
class Lab:
    """A running JupyterLab: its URL, token, process and log."""

    url: str
    token: str
    process: subprocess.Popen
    log: Path

    def api(self, path: str, method: str = "GET") -> object:
        request = urllib.request.Request(
            f"{self.url}/api/{path}", method=method, headers={"Authorization": f"token {self.token}"}
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            body = response.read()
        return json.loads(body) if body else None


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _prepare_root(root: Path) -> None:
    """Copies of the notebooks with their tiny parameters injected (papermill, nothing executed)."""
    out_dir = root / "out"
    for name, params in PARAMETERS.items():
        papermill.execute_notebook(
            str(NOTEBOOK_DIR / f"{name}.ipynb"),
            str(root / f"{name}.ipynb"),
            parameters={**params, "out_dir": str(out_dir)},
            prepare_only=True,
            progress_bar=False,
        )


def _start(root: Path, tmp: Path, attempts: int = 3) -> Lab:
    """``jupyter lab`` on a free port with a random token; waits until its REST API answers.

    The port is free when chosen but may be taken before the server binds it: then another is tried.
    """
    env = {
        **os.environ,
        "WORKBENCH_CACHE": str(tmp / "cache"),
        "JUPYTER_CONFIG_DIR": str(tmp / "config"),  # no user configuration applies
        "JUPYTER_RUNTIME_DIR": str(tmp / "runtime"),
    }
    env.pop("WORKBENCH_CATALOG", None)
    for name, values in SETTINGS.items():
        path = tmp / "settings" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(values))
    token, log = secrets.token_hex(16), tmp / "jupyter-lab.log"
    for _ in range(attempts):
        port = _free_port()
        command = [
            sys.executable,
            "-m",
            "jupyter",
            "lab",
            "--no-browser",
            "--ServerApp.ip=127.0.0.1",
            f"--ServerApp.port={port}",
            "--ServerApp.port_retries=0",
            "--ServerApp.allow_root=True",  # CI runs as root
            f"--IdentityProvider.token={token}",
            f"--ServerApp.root_dir={root}",
            f"--LabApp.user_settings_dir={tmp / 'settings'}",
            f"--LabApp.workspaces_dir={tmp / 'workspaces'}",
            "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
            "--LabApp.expose_app_in_browser=True",  # window.jupyterapp, to run its commands
        ]
        with log.open("w") as sink:
            process = subprocess.Popen(command, env=env, stdout=sink, stderr=subprocess.STDOUT, start_new_session=True)
        lab = Lab(f"http://127.0.0.1:{port}", token, process, log)
        deadline = time.monotonic() + START_S
        while time.monotonic() < deadline and process.poll() is None:
            try:
                lab.api("status")
                return lab
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                time.sleep(0.5)
        if process.poll() is None:
            _stop(lab)
            raise AssertionError(f"jupyter lab did not answer within {START_S} s:\n{log.read_text()[-3000:]}")
        if "already in use" not in log.read_text():
            break
    raise AssertionError(f"jupyter lab exited with {process.returncode}:\n{log.read_text()[-3000:]}")


def _stop(lab: Lab) -> list[str]:
    """Shut the server and its kernels down; kill what is left. Returns what had to be killed."""
    try:
        children = psutil.Process(lab.process.pid).children(recursive=True)
    except psutil.NoSuchProcess:
        children = []
    with contextlib.suppress(urllib.error.URLError, ConnectionError, TimeoutError):
        lab.api("shutdown", method="POST")
    survivors = []
    try:
        lab.process.wait(SHUTDOWN_S)
    except subprocess.TimeoutExpired:
        survivors.append(f"jupyter lab (pid {lab.process.pid})")
        os.killpg(lab.process.pid, signal.SIGKILL)
        lab.process.wait(10)
    _, alive = psutil.wait_procs(children, timeout=10)
    for process in alive:
        with contextlib.suppress(psutil.NoSuchProcess):
            survivors.append(f"{' '.join(process.cmdline()[:4])} (pid {process.pid})")
            process.kill()
    return survivors


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    tmp = tmp_path_factory.mktemp("lab")
    root = tmp / "root"
    root.mkdir()
    _prepare_root(root)
    server = _start(root, tmp)
    try:
        yield server
    finally:
        survivors = _stop(server)
    assert not survivors, f"left running after the shutdown request and killed: {survivors}"


@pytest.fixture(scope="module")
def browser(lab: Lab) -> Iterator[Browser]:
    assert CHROMIUM is not None, "chromium must be installed in CI (apt-get install -y chromium)"
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, timeout=60_000)
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture
def page(browser: Browser, lab: Lab) -> Iterator[Page]:
    """A fresh browser page; afterwards the kernels it started are shut down."""
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    page = context.new_page()
    page.set_default_timeout(60_000)
    try:
        yield page
    finally:
        context.close()
        for kernel in lab.api("kernels"):
            lab.api(f"kernels/{kernel['id']}", method="DELETE")


# Done when every code cell shows an execution count, or when an output holds a traceback.
_RUN_STATE = """() => {
  const panel = window.jupyterapp.shell.currentWidget;
  const prompts = [...document.querySelectorAll('.jp-CodeCell .jp-InputArea-prompt')];
  const failed = [...document.querySelectorAll('.jp-OutputArea-output')]
    .some(o => o.textContent.includes('Traceback'));
  const done = prompts.length > 0 && prompts.every(p => /^\\[\\d+\\]:$/.test(p.textContent.trim()));
  const idle = panel.sessionContext.session?.kernel?.status === 'idle';
  return (failed || (done && idle)) ? {failed, n: prompts.length} : null;
}"""


_PROGRESS = """() => ({
  prompts: [...document.querySelectorAll('.jp-CodeCell .jp-InputArea-prompt')].map(p => p.textContent.trim()),
  kernel: window.jupyterapp.shell.currentWidget.sessionContext.session?.kernel?.status,
})"""


def run_all(page: Page, lab: Lab, name: str) -> None:
    """Open ``name`` in JupyterLab, run all its cells and wait until the kernel is idle."""
    # a workspace of its own, reset: this notebook is the only one open
    page.goto(f"{lab.url}/lab/workspaces/{name}/tree/{name}.ipynb?reset&token={lab.token}")
    page.wait_for_function(
        "() => window.jupyterapp?.shell?.currentWidget?.sessionContext?.session?.kernel?.status === 'idle'",
        timeout=START_S * 1000,
    )
    page.evaluate("() => { window.jupyterapp.commands.execute('notebook:run-all-cells'); }")
    try:
        state = page.wait_for_function(_RUN_STATE, timeout=RUN_ALL_S * 1000, polling=500).json_value()
    except PlaywrightTimeoutError:
        pytest.fail(f"{name} did not finish within {RUN_ALL_S} s in JupyterLab: {page.evaluate(_PROGRESS)}")
    if state["failed"]:
        errors = page.locator(".jp-OutputArea-output", has_text="Traceback").all_inner_texts()
        pytest.fail(f"{name} failed in JupyterLab:\n" + "\n".join(errors)[-3000:])


# True once the picture in the cell's widget output differs from ``before`` (a redraw replaces the img)
_REDRAWN = """([cell, before]) => {
  const img = cell.querySelector('.widget-output img');
  return img !== null && img.getAttribute('src') !== before;
}"""


def move_slider(page: Page, label: str) -> tuple[str, str]:
    """Press → on the inspector's ``label`` slider; the PNG in its output before and after the redraw."""
    cell = page.locator(".jp-CodeCell").filter(has=page.locator(".widget-slider"))
    slider = cell.locator(".widget-slider").filter(has=page.locator(".widget-label", has_text=re.compile(f"^{label}$")))
    picture = cell.locator(".widget-output img")
    expect(picture).to_have_count(1, timeout=SHOWN_MS)
    before = picture.get_attribute("src")
    readout = slider.locator(".widget-readout")
    start = int(readout.inner_text())
    slider.locator(".noUi-handle").press("ArrowRight")
    expect(readout).to_have_text(str(start + 1), timeout=SHOWN_MS)
    try:
        page.wait_for_function(
            _REDRAWN,
            arg=[cell.element_handle(), before],
            timeout=REDRAW_S * 1000,
            polling=250,
        )
    except PlaywrightTimeoutError:
        pytest.fail(f"{label} moved from {start} to {start + 1}, but the figure did not change within {REDRAW_S} s")
    return before, picture.get_attribute("src")


@pytest.mark.slow
def test_mask_inspector_redraws_when_the_seed_slider_moves(page: Page, lab: Lab) -> None:
    run_all(page, lab, "02_masks")
    before, after = move_slider(page, "seed")
    assert before.startswith("data:image/png;base64,") and after.startswith("data:image/png;base64,")


@pytest.mark.slow
def test_latent_inspector_redraws_when_the_window_slider_moves(page: Page, lab: Lab) -> None:
    run_all(page, lab, "04_embeddings")
    before, after = move_slider(page, "window")
    assert before.startswith("data:image/png;base64,") and after.startswith("data:image/png;base64,")
    expect(page.locator(".widget-output")).to_contain_text("window 1 (subject", timeout=SHOWN_MS)
