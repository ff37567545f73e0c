"""Benchmark: 1 vs N sessions at once on one Streamlit server, and the server's memory after.

Each session opens the Lesion lab and runs a single-block sweep of a shipped net (with its plain twin),
then opens the Path ensemble page (timed: it shows stored results, nothing is measured on arrival) and
presses Measure. One session runs alone first (a warm-up, not counted), then one alone (timed), then
N at once; ``--rounds`` repeats the timed pair. Printed: each step's time, the throughput ratio
N x t(1) / t(N) (the goal on two cores is >= 1.6), the CPU use of the server and of the whole machine
per phase (100 % = one core busy), and the server's resident memory before, right after the sessions
have closed, and 35 s after Streamlit has dropped their state (``--ttl``: the server runs with that
``server.disconnectedSessionTTL``; ui/runtime.py hands freed memory back every 30 s).

Two kinds of session (``--client``):
- ``protocol`` (default): a client speaking the app's own websocket protocol, sending what the browser
  sends (page, widget values, button clicks) and reading the elements back. Every session is a real
  Streamlit session on the real server; nothing is drawn, so on a two-core machine the numbers are
  the server's, not Chromium's (a browser tab takes as much CPU as the server drawing the charts).
- ``browser``: Playwright browser contexts in one Chromium (Debian's), driven concurrently from one
  asyncio loop.

    .venv/bin/python benchmarks/bench_concurrency.py [--sessions 4] [--rounds 1] [--client protocol]
        [--lesion-net digits_resnet20] [--paths-net digits_resnet20] [--torch-threads N]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import statistics
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ui.server import CHROMIUM, CHROMIUM_ARGS, serving

TIMEOUT_MS = 900_000


# ----------------------------------------------------------------------------- the server
def server_env(torch_threads: int | None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")}
    if torch_threads is not None:  # ui/runtime.py reads it; unset, the app's own setting applies
        env["RESNET_LENS_TORCH_THREADS"] = str(torch_threads)
    return env


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of the process, all its threads."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def machine_cpu() -> tuple[float, float]:
    """(busy, total) jiffies of all CPUs together, from /proc/stat."""
    values = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = values[3] + values[4]  # idle + iowait
    return float(sum(values) - idle), float(sum(values))


# ----------------------------------------------------------------------------- sessions
@dataclass
class Session:
    steps: dict[str, float] = field(default_factory=dict)


Steps = Callable[[str, str, str], Awaitable[Session]]


class Run:
    """The elements one script run sent, in order: (type, proto)."""

    def __init__(self) -> None:
        self.elements: list[tuple[str, Any]] = []

    def widget(self, kind: str, label: str) -> str:
        for t, w in self.elements:
            if t == kind and w.label == label:
                return str(w.id)
        raise RuntimeError(f"no {kind} labelled {label!r}; got {[(t, getattr(w, 'label', '')) for t, w in self.elements]}")

    def has(self, kind: str, label: str) -> bool:
        return any(t == kind and w.label == label for t, w in self.elements)

    def text(self) -> str:
        return "\n".join(w.body for t, w in self.elements if t in ("markdown", "alert"))

    def check(self) -> Run:
        errors = [w.message for t, w in self.elements if t == "exception"]
        errors += [w.body for t, w in self.elements if t == "alert" and w.format == 1]  # ERROR
        if errors:
            raise RuntimeError(f"the page showed errors: {errors}")
        return self


class ProtocolSession:
    """One Streamlit session over the app's websocket, sending BackMsgs as the browser does."""

    def __init__(self, url: str) -> None:
        self.url = url.replace("http://", "ws://") + "/_stcore/stream"
        self.ws: Any = None

    async def __aenter__(self) -> ProtocolSession:
        from websockets.asyncio.client import connect
        from websockets.typing import Subprotocol

        self.ws = await connect(self.url, subprotocols=[Subprotocol("streamlit")], max_size=None)
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.ws.close()

    async def run(self, page: str, widgets: Sequence[Any] = ()) -> Run:
        """Rerun ``page`` with these widget states (values, and a button's trigger) until it finishes."""
        from streamlit.proto.BackMsg_pb2 import BackMsg
        from streamlit.proto.ForwardMsg_pb2 import ForwardMsg

        msg = BackMsg()
        msg.rerun_script.page_name = page
        msg.rerun_script.widget_states.widgets.extend(widgets)
        await self.ws.send(msg.SerializeToString())
        out = Run()
        while True:
            fwd = ForwardMsg.FromString(await self.ws.recv())
            kind = fwd.WhichOneof("type")
            if kind == "delta" and fwd.delta.WhichOneof("type") == "new_element":
                element = fwd.delta.new_element
                t = element.WhichOneof("type")
                out.elements.append((t, getattr(element, t)))
            elif kind == "script_finished" and fwd.script_finished != ForwardMsg.FINISHED_EARLY_FOR_RERUN:
                return out


def choice(widget_id: str, option: str) -> Any:
    from streamlit.proto.WidgetStates_pb2 import WidgetState

    return WidgetState(id=widget_id, string_value=option)


def click(widget_id: str) -> Any:
    from streamlit.proto.WidgetStates_pb2 import WidgetState

    return WidgetState(id=widget_id, trigger_value=True)


async def protocol_session(url: str, lesion_net: str, paths_net: str) -> Session:
    out = Session()
    async with ProtocolSession(url) as s:
        t0 = time.perf_counter()
        first = (await s.run("lesion")).check()
        pick = choice(first.widget("selectbox", "Checkpoint"), f"shipped: {lesion_net}")
        page = (await s.run("lesion", [pick])).check()
        out.steps["lesion: open"] = time.perf_counter() - t0
        t = time.perf_counter()
        swept = (await s.run("lesion", [pick, click(page.widget("button", "Run the single-block sweep"))])).check()
        assert swept.has("download_button", "Download CSV"), "the sweep did not finish"
        out.steps["lesion: single-block sweep"] = time.perf_counter() - t

        t = time.perf_counter()
        opened = (await s.run("paths")).check()
        assert "Residual blocks n" in [w.label for k, w in opened.elements if k == "metric"]
        out.steps["paths: open (stored results)"] = time.perf_counter() - t
        pick = choice(opened.widget("selectbox", "Checkpoint"), f"shipped: {paths_net}")
        page = (await s.run("paths", [pick])).check()
        t = time.perf_counter()
        measured = (await s.run("paths", [pick, click(page.widget("button", "Measure"))])).check()
        assert "Measured in this session" in measured.text(), "the measurement did not finish"
        out.steps["paths: measure"] = time.perf_counter() - t
        out.steps["total"] = time.perf_counter() - t0
    return out


async def settled(page: Any) -> None:
    from playwright.async_api import expect

    await expect(page.locator("h1").first).to_be_visible(timeout=TIMEOUT_MS)
    await expect(page.get_by_test_id("stApp")).to_have_attribute("data-test-script-state", "notRunning",
                                                                 timeout=TIMEOUT_MS)
    await expect(page.get_by_test_id("stStatusWidget")).to_have_count(0, timeout=TIMEOUT_MS)


async def choose(page: Any, scope: Any, label: str, option: str) -> None:
    """Pick ``option`` in the selectbox labelled ``label`` (a rerun follows)."""
    from playwright.async_api import TimeoutError as PlaywrightTimeout
    from playwright.async_api import expect

    combo = scope.get_by_role("combobox", name=label, exact=True)
    if await combo.input_value() == option:
        return  # already chosen
    for _ in range(5):  # a rerun that redraws the page can close the list before the click lands
        await combo.click()
        try:
            await page.get_by_role("option", name=option, exact=True).click(timeout=15_000)
            break
        except PlaywrightTimeout:
            await page.keyboard.press("Escape")
            await settled(page)
    else:
        raise RuntimeError(f"could not choose {option!r} in {label!r}")
    await expect(combo).to_have_value(option, timeout=TIMEOUT_MS)
    await page.wait_for_timeout(300)
    await settled(page)


def browser_session(browser: Any) -> Steps:
    async def session(url: str, lesion_net: str, paths_net: str) -> Session:
        from playwright.async_api import expect

        out = Session()
        ctx = await browser.new_context(viewport={"width": 1400, "height": 2000})
        page = await ctx.new_page()
        try:
            t0 = time.perf_counter()
            await page.goto(f"{url}/lesion")
            await settled(page)
            await choose(page, page.get_by_test_id("stSidebar"), "Checkpoint", f"shipped: {lesion_net}")
            out.steps["lesion: open"] = time.perf_counter() - t0
            t = time.perf_counter()
            await page.get_by_role("button", name="Run the single-block sweep").click()
            await expect(page.get_by_role("button", name="Download CSV").first).to_be_visible(timeout=TIMEOUT_MS)
            await settled(page)
            out.steps["lesion: single-block sweep"] = time.perf_counter() - t

            t = time.perf_counter()
            await page.goto(f"{url}/paths")
            await settled(page)
            await expect(page.get_by_text("Residual blocks n").first).to_be_visible(timeout=TIMEOUT_MS)
            out.steps["paths: open (stored results)"] = time.perf_counter() - t
            await choose(page, page.get_by_test_id("stMain"), "Checkpoint", f"shipped: {paths_net}")
            t = time.perf_counter()
            await page.get_by_role("button", name="Measure").click()
            await expect(page.get_by_text("Measured in this session").first).to_be_visible(timeout=TIMEOUT_MS)
            await settled(page)
            out.steps["paths: measure"] = time.perf_counter() - t
            out.steps["total"] = time.perf_counter() - t0
        finally:
            await ctx.close()
        return out

    return session


# ----------------------------------------------------------------------------- phases
@dataclass
class Phase:
    wall: float
    server_cpu: float  # cores' worth, 1.0 = one core busy
    machine_cpu: float
    sessions: list[Session]


async def phase(steps: Steps, url: str, n: int, args: argparse.Namespace, pid: int) -> Phase:
    c0, (b0, a0), t0 = cpu_seconds(pid), machine_cpu(), time.perf_counter()
    results = await asyncio.gather(*(steps(url, args.lesion_net, args.paths_net) for _ in range(n)))
    wall = time.perf_counter() - t0
    b1, a1 = machine_cpu()
    cores = os.cpu_count() or 1
    return Phase(wall, (cpu_seconds(pid) - c0) / wall, cores * (b1 - b0) / max(a1 - a0, 1.0), list(results))


async def run(args: argparse.Namespace) -> int:
    pairs: list[tuple[Phase, Phase]] = []
    with serving("--server.disconnectedSessionTTL", str(args.ttl), env=server_env(args.torch_threads),
                 start_timeout_s=120) as (proc, url):
        pid = proc.pid
        async with contextlib.AsyncExitStack() as stack:
            if args.client == "browser":
                from playwright.async_api import async_playwright

                p = await stack.enter_async_context(async_playwright())
                browser = await p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
                stack.push_async_callback(browser.close)
                steps = browser_session(browser)
            else:
                steps = protocol_session
            await phase(steps, url, 1, args, pid)  # warm-up: imports, shipped nets, datasets
            await asyncio.sleep(args.ttl + 3)
            rss_before = rss_mb(pid)
            for _ in range(args.rounds):
                pairs.append((await phase(steps, url, 1, args, pid), await phase(steps, url, args.sessions, args, pid)))
        rss_closed = rss_mb(pid)
        # Streamlit drops a closed session's state after the TTL; ui/runtime.py returns freed memory
        # to the system every 30 s
        await asyncio.sleep(args.ttl + 35)
        rss_dropped = rss_mb(pid)

    threads = "app default (ui/runtime.py)" if args.torch_threads is None else args.torch_threads or "torch default"
    print(f"client: {args.client}; server torch threads: {threads}; {os.cpu_count()} CPUs; "
          f"lesion net {args.lesion_net}, paths net {args.paths_net}")
    ratios = []
    for r, (one, many) in enumerate(pairs, 1):
        print(f"round {r}")
        print(f"  {'step':30} {'alone':>8} " + " ".join(f"{'s' + str(i + 1):>7}" for i in range(len(many.sessions))))
        for step in one.sessions[0].steps:
            print(f"  {step:30} {one.sessions[0].steps[step]:7.1f}s "
                  + " ".join(f"{s.steps[step]:6.1f}s" for s in many.sessions))
        for name, ph in (("1 session", one), (f"{args.sessions} sessions", many)):
            print(f"  {name}: {ph.wall:.1f} s wall; CPU: server {100 * ph.server_cpu:.0f} %, "
                  f"whole machine {100 * ph.machine_cpu:.0f} % (of {100 * (os.cpu_count() or 1)} %)")
        ratios.append(args.sessions * one.wall / many.wall)
        print(f"  throughput ratio {args.sessions} x t(1) / t({args.sessions}) = {ratios[-1]:.2f}")
    print(f"throughput ratio, median of {len(ratios)}: {statistics.median(ratios):.2f} (goal >= 1.6 on 2 cores)")
    print(f"server RSS: {rss_before:.0f} MB before, {rss_closed:.0f} MB right after the sessions closed, "
          f"{rss_dropped:.0f} MB {args.ttl + 35} s later (their state dropped after the {args.ttl} s TTL)")
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sessions", type=int, default=4)
    ap.add_argument("--rounds", type=int, default=1, help="timed (1 session, N sessions) pairs; median ratio")
    ap.add_argument("--client", choices=["protocol", "browser"], default="protocol")
    ap.add_argument("--lesion-net", default="digits_resnet20")
    ap.add_argument("--paths-net", default="digits_resnet20")
    ap.add_argument("--torch-threads", type=int, default=None,
                    help="intra-op threads in the server (default: the app's own, ui/runtime.py)")
    ap.add_argument("--ttl", type=int, default=5, help="server.disconnectedSessionTTL in seconds")
    args = ap.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # run the finally blocks: stop the server too
    if args.client == "browser" and not Path(CHROMIUM).exists():
        print("needs Debian's chromium (apt-get install chromium)", file=sys.stderr)
        return 2
    return asyncio.run(run(args))


if __name__ == "__main__":
    raise SystemExit(main())
