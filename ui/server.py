"""Start the app in a child process on a free local port and wait until it answers, and tell when a
browser page of it has settled: one way to do it for the browser tests and the benchmarks that
drive a real server. Playwright is imported only by the functions that drive a page."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from analysis.core.errors import LensError

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = "/usr/bin/chromium"  # Debian's; Playwright's own browsers are never installed
# Chromium flags for a closed network, as root, with no GPU.
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-dev-shm-usage"]


RUN_TIMEOUT_MS = 180_000  # one script run of the slowest page on a loaded two-core machine


class ServerError(LensError):
    """The app's server did not start."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def serving(*options: str, env: Mapping[str, str] | None = None, start_timeout_s: float = 120.0) -> Iterator[
        tuple[subprocess.Popen, str]]:
    """``streamlit run app.py`` bound to 127.0.0.1 (never a public interface) with extra
    ``--option value`` pairs; yields the process and its URL once /_stcore/health answers, and
    stops it on exit."""
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "streamlit", "run", str(ROOT / "app.py"), "--server.headless", "true",
         "--server.address", "127.0.0.1", "--server.port", str(port), "--browser.gatherUsageStats", "false",
         *options],
        cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        env=dict(os.environ if env is None else env))
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + start_timeout_s
        while True:
            try:
                with urllib.request.urlopen(f"{url}/_stcore/health", timeout=1) as reply:
                    if reply.status == 200:
                        break
            except OSError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise ServerError(f"streamlit did not start on {url} (exit code {proc.poll()})")
            time.sleep(0.5)
        yield proc, url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


# ----------------------------------------------------------------------------- driving it (Playwright)
STEADY_MS = 300  # how long the script must stay finished: a run that ends in st.rerun (or a click's rerun
# not yet started) reads "notRunning" for a moment before the next run begins


def settled(page: Any, timeout_ms: int = RUN_TIMEOUT_MS) -> None:
    """The script has run to its end: a title is on screen, the app reports its script as not
    running (``data-test-script-state`` stays ``initial`` until the first run has started, so a page
    that has not begun cannot pass) and Streamlit's running indicator is gone — and stays so for
    STEADY_MS, so a rerun that follows at once (st.rerun, a click's) is waited for too."""
    from playwright.sync_api import expect

    deadline = time.monotonic() + timeout_ms / 1000
    while True:
        left = max(1, int(1000 * (deadline - time.monotonic())))
        expect(page.locator("h1").first).to_be_visible(timeout=left)
        expect(page.get_by_test_id("stApp")).to_have_attribute("data-test-script-state", "notRunning", timeout=left)
        expect(page.get_by_test_id("stStatusWidget")).to_have_count(0, timeout=left)
        steady = page.evaluate("""(ms) => new Promise(done => {
            const app = document.querySelector('[data-testid="stApp"]');
            const t0 = performance.now();
            const look = () => {
              if (app.getAttribute('data-test-script-state') !== 'notRunning') return done(false);
              if (performance.now() - t0 >= ms) return done(true);
              setTimeout(look, 25);
            };
            look();
          })""", STEADY_MS)
        if steady:
            return


def charts_painted(page: Any, timeout_ms: int = 60_000) -> None:
    """Every Plotly chart has drawn its SVG and every Graphviz chart its graph, and no element is
    still a skeleton (Streamlit's placeholder while a chart's or table's script loads)."""
    from playwright.sync_api import expect

    expect(page.get_by_test_id("stSkeleton")).to_have_count(0, timeout=timeout_ms)
    for chart in page.get_by_test_id("stPlotlyChart").all():
        expect(chart.locator(".main-svg").first).to_be_visible(timeout=timeout_ms)
    for chart in page.get_by_test_id("stGraphVizChart").all():
        expect(chart.locator("svg").first).to_be_visible(timeout=timeout_ms)
