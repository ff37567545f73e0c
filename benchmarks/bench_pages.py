"""Benchmark: how long each page takes to open in a real browser on a warm server, against the
lightest page (Why shortcuts work: text, one small measurement) in the same run. Goal: every page
interactive in <= 3 s. Needs Debian's chromium.

"Interactive" = the script has run to its end (Streamlit reports it not running) and every chart
has drawn. Each page is opened in a fresh tab (a new session), so nothing a session cached helps;
what the server process caches across sessions (shipped nets, datasets, cost tables) is warm after
the first round, which is dropped.

    .venv/bin/python benchmarks/bench_pages.py [--repeats N] [--screenshots docs/screenshots]

With --screenshots, the last round also saves each page at 1,366 x 768 (laptop size; full page).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

from ui.server import CHROMIUM, CHROMIUM_ARGS, charts_painted, serving, settled

PAGES = {"explorer": "", "blocks": "blocks", "depth": "depth", "diagrams": "diagrams", "training": "training",
         "lesion": "lesion", "paths": "paths", "theory": "theory"}
BASELINE = "theory"
GOAL_S = 3.0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--screenshots", type=Path, default=None)
    args = ap.parse_args()
    from playwright.sync_api import sync_playwright

    times: dict[str, list[float]] = {k: [] for k in PAGES}
    with serving() as (_, url), sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        for r in range(args.repeats + 1):  # round 0 warms the server's caches and is dropped
            last = r == args.repeats
            for name, path in PAGES.items():
                page = browser.new_page(viewport={"width": 1366, "height": 768})
                t0 = time.perf_counter()
                page.goto(f"{url}/{path}")
                settled(page)
                charts_painted(page)
                if r:
                    times[name].append(time.perf_counter() - t0)
                if last and args.screenshots is not None:
                    args.screenshots.mkdir(parents=True, exist_ok=True)
                    page.screenshot(path=str(args.screenshots / f"{name}.png"), full_page=True)
                page.close()
        browser.close()
    base = statistics.median(times[BASELINE])
    print(f"{'page':10} {'median s':>9} {'max s':>7} {'ratio to ' + BASELINE:>16}")
    worst = 0.0
    for name, ts in times.items():
        med = statistics.median(ts)
        worst = max(worst, med)
        print(f"{name:10} {med:9.2f} {max(ts):7.2f} {med / base:15.2f}x")
    print(f"slowest page: {worst:.2f} s (goal <= {GOAL_S:.0f} s): {'met' if worst <= GOAL_S else 'NOT met'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
