"""Shared harness of the fuzz suite: run generated cases, classify each outcome, record the counts.

Every case says what a correct library does with it: ``expect="error"`` (bad input: must raise one of
our ``LensError`` types with a message) or ``expect="valid"`` (good input: must return a result the
case's ``check`` accepts). Outcomes:

- ``clean``: expected an error, got a ``LensError`` with a non-empty message;
- ``valid``: expected a result, got one and ``check`` passed;
- ``crash``: any other exception (a traceback a user would see), or a ``LensError`` for a valid case;
- ``silent``: expected an error but a result came back (invalid input accepted), or ``check`` failed.

Each category's counts are written to ``tests/fuzz/results/<category>.json`` (git-ignored) so that
``python -m tests.fuzz.table`` prints the table of the closing note after a run.
"""

from __future__ import annotations

import json
import os
import signal
import threading
import traceback
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from analysis.core.errors import LensError

RESULTS = Path(__file__).resolve().parent / "results"
Outcome = Literal["clean", "valid", "crash", "silent"]


@dataclass
class Case:
    """One generated input. ``run`` does the work; ``check`` judges a returned result (valid cases)."""

    name: str
    run: Callable[[], Any]
    expect: Literal["error", "valid"]
    check: Callable[[Any], bool] = field(default=lambda result: True)


@dataclass
class Report:
    category: str
    outcomes: dict[str, Outcome] = field(default_factory=dict)
    details: dict[str, str] = field(default_factory=dict)

    def count(self, outcome: Outcome) -> int:
        return sum(o == outcome for o in self.outcomes.values())

    @property
    def failures(self) -> dict[str, str]:
        return {k: self.details[k] for k, o in self.outcomes.items() if o in ("crash", "silent")}


def classify(case: Case) -> tuple[Outcome, str]:
    try:
        result = case.run()
    except LensError as exc:
        if case.expect == "error" and str(exc).strip():
            return "clean", str(exc)
        return "crash", f"{type(exc).__name__}: {exc!s} (expected a result)"
    except Exception as exc:  # the point is to see every other exception
        return "crash", "".join(traceback.format_exception_only(type(exc), exc)).strip()
    if case.expect == "error":
        return "silent", f"accepted, returned {type(result).__name__}"
    try:
        ok = bool(case.check(result))
    except Exception as exc:
        return "silent", f"check raised {type(exc).__name__}: {exc}"
    return ("valid", "") if ok else ("silent", "result failed its check")


def run_cases(category: str, cases: Iterable[Case]) -> Report:
    """Run every case, write the category's counts, return the report (tests assert on it)."""
    report = Report(category)
    for case in cases:
        if case.name in report.outcomes:
            raise RuntimeError(f"duplicate case name {case.name!r} in {category}")
        report.outcomes[case.name], report.details[case.name] = classify(case)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"{category}.json").write_text(json.dumps({
        "category": category, "cases": len(report.outcomes),
        **{o: report.count(o) for o in ("clean", "valid", "crash", "silent")},
        "failures": report.failures,
    }, indent=1))
    return report


def assert_no_failures(report: Report) -> None:
    bad = report.failures
    assert not bad, f"{report.category}: {len(bad)} crashes/silent accepts, e.g. " + "; ".join(
        f"{k}: {v}" for k, v in list(bad.items())[:5])


class Hang(Exception):
    """A case did not return in time (not an OSError: no loader can mistake it for a bad file)."""


def no_hang(fn: Callable[[], Any], fifos: Iterable[Path] = (), seconds: float = 10.0) -> Any:
    """``fn()``, or :class:`Hang` after ``seconds``: SIGALRM interrupts a blocking open() in the main
    thread; elsewhere ``fn`` runs in a thread and the FIFOs' write ends are opened to release it."""
    if threading.current_thread() is threading.main_thread() and hasattr(signal, "setitimer"):
        def alarm(signum: int, frame: object) -> None:
            raise Hang(f"no result after {seconds} s")
        previous = signal.signal(signal.SIGALRM, alarm)
        signal.setitimer(signal.ITIMER_REAL, seconds)
        try:
            return fn()
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, previous)
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["result"] = fn()
        except BaseException as exc:  # handed to the caller
            box["error"] = exc
    t = threading.Thread(target=target, daemon=True)
    t.start()
    t.join(seconds)
    if t.is_alive():
        for f in fifos:  # a reader blocked in open() returns once a writer appears
            try:
                os.close(os.open(f, os.O_WRONLY | os.O_NONBLOCK))
            except OSError:
                pass
        t.join(5)
        raise Hang(f"no result after {seconds} s")
    if "error" in box:
        raise box["error"]
    return box["result"]
