"""Benchmark: time until the browser has drawn a diagram, ResNet-152 at layer level (514 nodes)
against ResNet-34 at block level (the default view) in the same run. Needs Debian's chromium.

    .venv/bin/python benchmarks/bench_diagram_render.py [--repeats N]
"""

from __future__ import annotations

import argparse
import socket
import statistics
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage"]
VIEWS = {"baseline: resnet34 block level": "model=resnet34&level=block",
         "resnet152 layer level": "model=resnet152&level=layer"}


def serve() -> tuple[subprocess.Popen, str]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-m", "streamlit", "run", str(ROOT / "app.py"), "--server.headless",
                             "true", "--server.port", str(port), "--browser.gatherUsageStats", "false"],
                            cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    for _ in range(120):
        try:
            urllib.request.urlopen(f"{url}/_stcore/health", timeout=1)
            return proc, url
        except OSError:
            time.sleep(0.5)
    proc.terminate()
    raise RuntimeError("streamlit did not start")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    from playwright.sync_api import sync_playwright

    proc, url = serve()
    results: dict[str, list[float]] = {k: [] for k in VIEWS}
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path="/usr/bin/chromium", headless=True, args=ARGS)
            for _ in range(args.repeats + 1):  # the first round warms caches and is dropped
                for name, query in VIEWS.items():
                    page = browser.new_page(viewport={"width": 1400, "height": 1000})
                    t0 = time.perf_counter()
                    page.goto(f"{url}/diagrams?{query}")
                    page.wait_for_selector('[data-testid="stGraphVizChart"] svg g.node', timeout=120_000)
                    results[name].append(time.perf_counter() - t0)
                    page.close()
            browser.close()
    finally:
        proc.terminate()
    med = {k: statistics.median(v[1:]) for k, v in results.items()}
    for k, v in med.items():
        print(f"{k:34s}: {v:6.2f} s to first drawn node (median of {args.repeats})")
    base, big = med.values()
    print(f"ratio resnet152-layer / resnet34-block: {big / base:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
