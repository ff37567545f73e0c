"""Command line: ``python -m analysis train ...`` (and ``lesion``, ``paths``, ``grid``, ``transfer``,
``units``, see --help); one module per command in :mod:`analysis.cli`.

Every setting is checked before any work starts (numbers finite and in range, the output path
writable), so a bad option costs a second, never a finished run. Outputs are written atomically.
Bad input prints one line, ``error: ...``, and exits 2. Ctrl-C (SIGINT) and SIGTERM print one line,
``interrupted: ...``, saying what was kept, and exit 130 / 143 (128 + the signal), with no temp file
left behind. During training the first signal stops the run at the next batch and saves the
finished epochs as a *cancelled* checkpoint; a second signal stops at once without saving.

:func:`run` is the command line without the catching (it raises :class:`~analysis.core.errors.LensError`
on bad input and :class:`~analysis.cli.common.Interrupted` on a signal); :func:`main` catches and prints.
"""

from __future__ import annotations

import argparse
import signal
import sys
from collections.abc import Sequence

from analysis.cli import grid, lesion, paths, train, transfer, units
from analysis.cli.common import EXIT_ERROR, Interrupted, Parser, Stop, signal_handlers
from analysis.core.errors import LensError


def build_parser() -> argparse.ArgumentParser:
    ap = Parser(prog="python -m analysis", description="ResNet Lens command line.")
    sub = ap.add_subparsers(dest="command", required=True)
    for add_parser in (train.add_parser, lesion.add_parser, paths.add_parser, grid.add_parser,
                       transfer.add_parser, units.add_parser):  # in the order --help lists them
        add_parser(sub)
    return ap


def run(argv: Sequence[str] | None = None, stop: Stop | None = None) -> int:
    """The command line without the catching: returns 0, raises a LensError on bad input (usage
    errors included) and :class:`~analysis.cli.common.Interrupted` when ``stop`` saw a signal."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    args.argv = argv
    result: int = args.func(args, stop or Stop())
    return result


def main(argv: Sequence[str] | None = None) -> int:
    stop = Stop()
    try:
        with signal_handlers(stop):
            return run(argv, stop)
    except LensError as exc:  # bad input: one clear line, no traceback (a bug still shows as one)
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt as exc:  # SIGINT / SIGTERM: one line saying what was kept
        signum = exc.signum if isinstance(exc, Interrupted) else signal.SIGINT
        kept = exc.kept if isinstance(exc, Interrupted) and exc.kept else "nothing written"
        print(f"interrupted: {kept}", file=sys.stderr)
        return 128 + int(signum)
