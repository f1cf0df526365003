"""``python -m vsedvr`` and the ``vsedvr`` console script; see :mod:`vsedvr.cli`."""
from __future__ import annotations

import sys

from .cli import main

__all__ = ["main"]

if __name__ == "__main__":
    sys.exit(main())
