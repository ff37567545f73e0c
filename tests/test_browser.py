"""Real-browser smoke test: serve the app, open every page in Debian's chromium through Playwright
and fail on any exception or error box. Set SCREENSHOTS=dir to save a PNG of each page."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = "/usr/bin/chromium"
PAGES = {"explorer": "", "blocks": "blocks", "depth": "depth", "diagrams": "diagrams?model=resnet34&level=layer",
         "training": "training", "lesion": "lesion", "paths": "paths", "theory": "theory"}
# Chromium flags for a closed network, as root, with no GPU.
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage"]

pytestmark = pytest.mark.browser

if not Path(CHROMIUM).exists() and not os.environ.get("CI"):
    pytest.skip("Debian's chromium is not installed (apt-get install chromium); CI installs it",
                allow_module_level=True)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server():
    port = _free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "streamlit", "run", str(ROOT / "app.py"), "--server.headless", "true",
         "--server.port", str(port), "--server.address", "127.0.0.1", "--browser.gatherUsageStats", "false"],
        cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        env={**os.environ, "OMP_NUM_THREADS": "1"},  # share two cores with the other test worker
    )
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(120):
            try:
                if urllib.request.urlopen(f"{url}/_stcore/health", timeout=1).status == 200:
                    break
            except OSError:
                time.sleep(0.5)
        else:
            raise RuntimeError("streamlit did not start")
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=20)


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=ARGS)
        try:
            yield b
        finally:
            b.close()


def wait_until_idle(page, timeout_s: float = 180) -> None:
    """Streamlit shows a running indicator while the script executes; wait for it to go."""
    page.wait_for_selector("h1", timeout=timeout_s * 1000)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if page.locator('[data-testid="stStatusWidget"]').count() == 0:
            time.sleep(0.5)
            if page.locator('[data-testid="stStatusWidget"]').count() == 0:
                return
        time.sleep(0.25)
    raise TimeoutError("page kept running")


@pytest.mark.parametrize("name", list(PAGES))
def test_page_renders_without_errors(server, browser, name):
    page = browser.new_page(viewport={"width": 1400, "height": 2400})
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(f"{server}/{PAGES[name]}")
    wait_until_idle(page)
    assert page.locator('[data-testid="stException"]').count() == 0
    assert page.locator('[data-testid="stAlertContentError"]').count() == 0
    assert not errors, errors
    title = page.locator("h1").first.inner_text()
    assert title
    # routed through app.py's st.navigation (titles), not Streamlit's legacy folder pages (file names)
    nav = page.locator('[data-testid="stSidebarNav"]').inner_text()
    assert "Architecture explorer" in nav and "Shortcut diagrams" in nav, nav
    shots = os.environ.get("SCREENSHOTS")
    if shots:
        Path(shots).mkdir(parents=True, exist_ok=True)
        page.wait_for_timeout(2500)  # let the last widgets and charts paint
        page.screenshot(path=str(Path(shots) / f"{name}.png"), full_page=True)
    page.close()


def test_upload_torchvision_checkpoint(server, browser, tmp_path):
    """A torchvision-format resnet18 state_dict uploaded in the explorer: architecture inferred,
    exact parameter count shown, no error box."""
    import json

    import torch

    from analysis.compat import deterministic_state_dict

    manifest = json.loads((ROOT / "tests" / "fixtures" / "torchvision_state_dicts.json").read_text())["keys"]
    path = tmp_path / "resnet18.pth"
    torch.save(deterministic_state_dict({k: tuple(s) for k, s in manifest["resnet18"]}), path)
    page = browser.new_page(viewport={"width": 1400, "height": 1600})
    page.goto(server)
    wait_until_idle(page)
    page.locator('[data-testid="stSidebar"]').get_by_text("Checkpoint", exact=True).click()
    wait_until_idle(page)
    page.locator('[data-testid="stSidebar"] [data-testid="stSelectbox"]').first.click()
    page.get_by_role("option", name="Upload a checkpoint…").click()
    wait_until_idle(page)
    page.locator('[data-testid="stSidebar"] input[type="file"]').set_input_files(str(path))
    page.wait_for_selector("text=11,689,512", timeout=60_000)
    wait_until_idle(page)
    assert page.locator('[data-testid="stAlertContentError"]').count() == 0
    assert page.locator('[data-testid="stException"]').count() == 0
    assert "Architecture inferred" in page.locator('[data-testid="stSidebar"]').inner_text()
    page.close()
