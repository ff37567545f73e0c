"""Benchmark: how long each page takes to open in a real browser, cold (the first visit after the
server started: its caches empty) and warm (later visits, the median of the rounds), against the
lightest page (Why shortcuts work: text, one small measurement) in the same run. Goal: every page
interactive in <= 3 s warm. Needs Debian's chromium.

"Interactive" = the script has run to its end (Streamlit reports it not running), every chart
has drawn and the page has stopped changing: Streamlit reports "not running" before the last
elements of a long run have arrived (metrics below heavy work appear up to 2 s later), so the clock
stops at the page's last change (a MutationObserver's timestamp from the navigation's start), read
once the page has been quiet for QUIET_S seconds. Each page is opened in a fresh tab (a new session) of one browser profile, so nothing a session
cached helps;
what the server process caches across sessions (shipped nets, datasets, cost tables) is warm after
the first round, which is reported as the cold time and left out of the warm ones.

    .venv/bin/python benchmarks/bench_pages.py [--repeats N] [--screenshots docs/screenshots]

With --screenshots, the last round also saves each page at 1,366 x 768 (laptop size; full page).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from typing import Any

from ui.server import CHROMIUM, CHROMIUM_ARGS, charts_painted, serving, settled

PAGES = {"explorer": "", "blocks": "blocks", "depth": "depth", "diagrams": "diagrams", "training": "training",
         "lesion": "lesion", "paths": "paths", "painters": "painters", "theory": "theory", "variants": "variants",
         "transfer": "transfer",
         # the shipped ViT's stored path measurement: a program's view of the Path ensemble
         "paths_vit": "paths?ckpt=shipped%3A+digits_vit"}
BASELINE = "theory"
GOAL_S = 3.0
QUIET_S = 1.0
# set in the page before any of its scripts: the time (ms since the navigation started) of the last
# change to the document, as a MutationObserver sees it. Reading it after the page has been quiet
# gives the moment the page was complete, to the millisecond, whatever the polling of the waits
# (Playwright's expect polls at up to 1 s intervals: timing those waits added up to a second)
WATCH_JS = """
window.__lensLastChange = 0;
new MutationObserver(() => { window.__lensLastChange = performance.now(); })
  .observe(document, {subtree: true, childList: true, attributes: true, characterData: true});
"""


def last_change(page: Any, limit_s: float = 120.0) -> float:
    """Seconds from the navigation's start to the page's last change, read once the page has not
    changed for QUIET_S; a page still changing after ``limit_s`` (an animation) is an error, not a hang."""
    deadline = time.monotonic() + limit_s
    while True:
        if time.monotonic() > deadline:
            raise RuntimeError(f"the page kept changing for {limit_s:.0f} s: no time to interactive")
        quiet_ms = page.evaluate("performance.now() - window.__lensLastChange")
        if quiet_ms >= 1000 * QUIET_S:
            return float(page.evaluate("window.__lensLastChange")) / 1000
        time.sleep(QUIET_S - quiet_ms / 1000 + 0.05)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--screenshots", type=Path, default=None)
    args = ap.parse_args()
    from playwright.sync_api import sync_playwright

    times: dict[str, list[float]] = {k: [] for k in PAGES}
    settle: dict[str, list[float]] = {k: [] for k in PAGES}
    cold: dict[str, float] = {}
    with serving() as (_, url), sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        # one browser profile, as one user has: its HTTP cache keeps Streamlit's and Plotly's scripts
        # after the first round (browser.new_page would make a fresh profile, fetching ~5 MB per tab)
        context = browser.new_context(viewport={"width": 1366, "height": 768})
        context.add_init_script(WATCH_JS)
        for r in range(args.repeats + 1):  # round 0: the cold visits, which warm the server's caches
            last = r == args.repeats
            for name, path in PAGES.items():
                page = context.new_page()
                t0 = time.perf_counter()
                page.goto(f"{url}/{path}")
                settled(page)
                charts_painted(page)
                ready = time.perf_counter() - t0  # as the waits saw it (their polling included)
                done = last_change(page)
                if r:
                    times[name].append(done)
                    settle[name].append(ready)
                else:
                    cold[name] = done
                if last and args.screenshots is not None:
                    args.screenshots.mkdir(parents=True, exist_ok=True)
                    page.screenshot(path=str(args.screenshots / f"{name}.png"), full_page=True)
                page.close()
        browser.close()
    base = statistics.median(times[BASELINE])
    print(f"{'page':10} {'cold s':>7} {'warm settled s':>15} {'warm last change s':>19} {'max s':>7} "
          f"{'ratio to ' + BASELINE:>16}")
    worst = 0.0
    for name, ts in times.items():
        med = statistics.median(ts)
        worst = max(worst, med)
        print(f"{name:10} {cold[name]:7.2f} {statistics.median(settle[name]):15.2f} {med:19.2f} {max(ts):7.2f} "
              f"{med / base:15.2f}x")
    print(f"slowest page warm: {worst:.2f} s (goal <= {GOAL_S:.0f} s): {'met' if worst <= GOAL_S else 'NOT met'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
