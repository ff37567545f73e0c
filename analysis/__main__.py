"""``python -m analysis``: the command line, :mod:`analysis.cli` (one module per command)."""

import sys

from analysis.cli.main import main

if __name__ == "__main__":
    sys.exit(main())
