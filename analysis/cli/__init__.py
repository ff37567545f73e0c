"""Floor 7: the command line, ``python -m analysis`` (:mod:`analysis.cli.main`); one module per command,
what several share in :mod:`analysis.cli.common`. Nothing in the library imports it."""
