#!/usr/bin/env python3
"""Entry point: `python embedlab.py embed|search|analyze ...` (see `--help`)."""

import sys

from embedlab.cli import main

if __name__ == "__main__":
    sys.exit(main())
