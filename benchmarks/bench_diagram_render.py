"""Benchmark: time until the browser has drawn a diagram, ResNet-152 at layer level (514 nodes)
against ResNet-34 at block level (the default view) in the same run. Needs Debian's chromium.

    .venv/bin/python benchmarks/bench_diagram_render.py [--repeats N]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

from ui.server import CHROMIUM, CHROMIUM_ARGS, serving

VIEWS = {"baseline: resnet34 block level": "model=resnet34&level=block",
         "resnet152 layer level": "model=resnet152&level=layer"}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    from playwright.sync_api import sync_playwright

    results: dict[str, list[float]] = {k: [] for k in VIEWS}
    with serving() as (_, url), sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        for _ in range(args.repeats + 1):  # the first round warms caches and is dropped
            for name, query in VIEWS.items():
                page = browser.new_page(viewport={"width": 1400, "height": 1000})
                t0 = time.perf_counter()
                page.goto(f"{url}/diagrams?{query}")
                page.wait_for_selector('[data-testid="stGraphVizChart"] svg g.node', timeout=120_000)
                results[name].append(time.perf_counter() - t0)
                page.close()
        browser.close()
    med = {k: statistics.median(v[1:]) for k, v in results.items()}
    for k, v in med.items():
        print(f"{k:34s}: {v:6.2f} s to first drawn node (median of {args.repeats})")
    base, big = med.values()
    print(f"ratio resnet152-layer / resnet34-block: {big / base:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
