"""Run every case of tests/fuzz/shapes.py in a process of its own and print the table
category | cases | clean | crash | silent | hang | memory > 2 GB.

``python -m tests.fuzz.isolated [--timeout S] [--jobs N] [--only CATEGORY]``. A case that gives no
answer within the timeout is a hang (killed); one whose process's peak resident memory passed 2 GB
is a memory blow-up (killed at 3 GB to protect the machine), whatever it answered. The cases call
only public entry points, so the same file measures an older checkout (copy tests/fuzz there and run
it from that checkout's root). Not part of the suite: it takes minutes.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

MEMORY_LIMIT = 2 * 1024**3
KILL_AT = 3 * 1024**3
OUTCOMES = ("clean", "crash", "silent", "hang", "memory")


def _child(category: str, index: int, folder: str) -> None:
    from tests.fuzz import shapes
    from tests.fuzz.harness import classify

    os.environ["RESNET_LENS_HOME"] = str(Path(folder) / "home")
    os.environ.setdefault("RESNET_LENS_MEMORY_BUDGET", "2G")
    made = {"reference-dags": shapes.reference_dags, "deep-nesting": shapes.deep_nesting,
            "header-bombs": shapes.header_bombs, "damaged-sqlite": shapes.damaged_stores,
            "other-digits": shapes.other_digits, "link-values": shapes.link_values}[category]
    sub = Path(folder) / f"{category}-{index}"
    sub.mkdir(parents=True, exist_ok=True)
    case = made(sub)[index]
    outcome, detail = classify(case)
    print(json.dumps({"name": case.name, "outcome": outcome, "detail": detail[:300]}), flush=True)


def _rss(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def _run_one(category: str, index: int, folder: str, timeout: float) -> dict:
    proc = subprocess.Popen([sys.executable, "-m", "tests.fuzz.isolated", "--child", category, str(index), folder],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, start_new_session=True)
    peak = [0]
    done = threading.Event()

    def watch() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], _rss(proc.pid))
            if peak[0] > KILL_AT:
                os.killpg(proc.pid, signal.SIGKILL)
            time.sleep(0.05)
    threading.Thread(target=watch, daemon=True).start()
    try:
        out, _ = proc.communicate(timeout=timeout)
        hung = False
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate()
        hung = True
    finally:
        done.set()
    rusage_peak = peak[0]
    lines = [line for line in (out or "").splitlines() if line.startswith("{")]
    row = json.loads(lines[-1]) if lines else {"name": f"{category}[{index}]", "outcome": "crash",
                                                "detail": f"exit {proc.returncode}"}
    if hung:
        row["outcome"], row["detail"] = "hang", f"no answer in {timeout:g} s"
    elif rusage_peak > MEMORY_LIMIT:
        row["outcome"], row["detail"] = "memory", f"peak {rusage_peak / 2**30:.2f} GiB"
    row["peak_mib"] = round(rusage_peak / 2**20)
    return row


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--child", nargs=3)
    p.add_argument("--timeout", type=float, default=20.0)
    p.add_argument("--jobs", type=int, default=2)
    p.add_argument("--only", default=None)
    p.add_argument("--json", default=None, help="write every case's outcome here")
    a = p.parse_args()
    if a.child:
        _child(a.child[0], int(a.child[1]), a.child[2])
        return
    from tests.fuzz import shapes

    with tempfile.TemporaryDirectory() as tmp:
        counts = {name: len(cases) for name, cases in shapes.categories(Path(tmp) / "count").items()}
        jobs = [(c, i) for c, n in counts.items() if a.only in (None, c) for i in range(n)]
        with ThreadPoolExecutor(a.jobs) as pool:
            rows = list(pool.map(lambda job: {**_run_one(job[0], job[1], tmp, a.timeout), "category": job[0]},
                                 jobs))
    if a.json:
        Path(a.json).write_text(json.dumps(rows, indent=1))
    print("| category | cases | " + " | ".join(OUTCOMES) + " |")
    print("|---|---|" + "---|" * len(OUTCOMES))
    for c in counts:
        mine = [r for r in rows if r["category"] == c]
        if mine:
            print(f"| {c} | {len(mine)} | " + " | ".join(str(sum(r["outcome"] == o for r in mine)) for o in OUTCOMES)
                  + " |")


if __name__ == "__main__":
    main()
